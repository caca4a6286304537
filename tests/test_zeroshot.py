"""Zero-shot labels from class names with an image-text network (a tiny random CLIP: the plumbing, not the
accuracy): stored as the predict step's result that the panel and the export read, text embeddings cached,
clear errors for a network without text and for missing class names."""
import csv
import io
import json

import numpy as np
import pytest

from hf_tiny import hf_env, tiny_checkpoints  # noqa: F401 - fixtures
from images import write_shapes
from nipgboard_plugin import backbones, cli, paths, results, steps, zeroshot
from nipgboard_plugin.errors import InvalidParameter
from nipgboard_plugin.features import load_features
from nipgboard_plugin.run import Run
from nipgboard_plugin.store import Store

NET = "clip_vit_b32"
CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def unlabelled(hf_env, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("zeroshot")
    L, imgs = root / "run", root / "imgs"
    write_shapes(imgs, per_class=4, size=40)
    assert cli.main(["--json", "init", str(L), "--images", str(imgs)]) == 0
    return L


def test_zeroshot_labels_every_image_without_a_single_label(unlabelled, capsys):
    L = unlabelled
    capsys.readouterr()
    # no embed before: zero-shot extracts the features it needs
    rc = cli.main(["--json", "predict", str(L), "--network", NET, "--method", "zeroshot",
                   "--classes", " circle, square ,triangle,circle", "--no-projector"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0, r
    assert r["method"] == "zeroshot" and r["classes"] == CLASSES and r["images"] == 12
    assert r["prompts"] == ["a photo of a circle.", "a photo of a square.", "a photo of a triangle."]
    assert sum(r["pool_predicted"].values()) == 12 and r["labelled_accuracy"] is None

    arrays, meta = results.load_result(L, NET, "predictions")
    assert meta["method"] == "zeroshot" and meta["classes"] == CLASSES
    proba = arrays["proba"]
    assert proba.shape == (12, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (arrays["pred"] == proba.argmax(axis=1)).all()
    assert np.allclose(arrays["confidence"], proba.max(axis=1))

    # confidences: softmax of the logit-scaled cosine similarity, as CLIP computes its logits
    b = backbones.get(NET)
    _, X = load_features(L, NET)
    text, scale, _ = b.text_features(r["prompts"])
    logits = scale * (X / np.linalg.norm(X, axis=1, keepdims=True)) @ text.T
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    assert np.allclose(proba, expected / expected.sum(axis=1, keepdims=True), atol=1e-4)

    # what the panel and the export read
    meta_cols = Run(L).metadata(NET)
    assert len(meta_cols["predicted"]) == 12 and set(meta_cols["predicted"]) <= set(CLASSES)
    rows = list(csv.DictReader(io.StringIO(Run(L).export_bytes(networks=None, low_confidence=0.6).decode())))
    assert len(rows) == 12 and all(row["predicted"] in CLASSES for row in rows)

    # the text embeddings are cached: the same prompts are not encoded again
    cached = list(paths.text_features_dir().glob(f"{NET}-*.npz"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    rc = cli.main(["--json", "predict", str(L), "--network", NET, "--method", "zeroshot",
                   "--classes", "triangle,circle,square", "--no-projector"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["classes"] == ["triangle", "circle", "square"]
    assert cached[0].stat().st_mtime_ns == stamp


def test_zeroshot_takes_the_dataset_labels_as_classes_and_says_how_it_agrees(unlabelled, capsys):
    L = unlabelled
    with Store(L) as store:
        ids = [r[0] for r in store.image_rows("id, path") if "circle" in r[1]][:1]
        ids2 = [r[0] for r in store.image_rows("id, path") if "square" in r[1]][:1]
        store.set_labels([(ids[0], "circle"), (ids2[0], "square")])
    capsys.readouterr()
    assert cli.main(["predict", str(L), "--network", NET, "--method", "zeroshot", "--no-projector"]) == 0
    out = capsys.readouterr().out
    assert "zero-shot from 2 class names" in out and "agrees with" in out and "pool predictions: circle" in out
    _, meta = results.load_result(L, NET, "predictions")
    assert meta["classes"] == ["circle", "square"] and meta["labelled_accuracy"] is not None


def test_zeroshot_asks_for_class_names_when_there_are_none(hf_env, tmp_path, capsys):  # noqa: F811
    write_shapes(tmp_path / "imgs", per_class=1, size=40)
    assert cli.main(["--json", "init", str(tmp_path / "run"), "--images", str(tmp_path / "imgs")]) == 0
    capsys.readouterr()
    rc = cli.main(["predict", str(tmp_path / "run"), "--network", NET, "--method", "zeroshot"])
    err = capsys.readouterr().err
    assert rc != 0 and "at least two classes" in err and "--classes" in err and "Traceback" not in err


def test_a_network_without_text_is_refused_before_it_runs(hf_env, unlabelled):  # noqa: F811
    step = steps.get("predict")
    with pytest.raises(InvalidParameter, match="dinov2_vits14 has no text encoder.*clip_vit_b32"):
        step.clean({"network": "dinov2_vits14", "method": "zeroshot", "classes": "a,b"}, unlabelled)
    with pytest.raises(InvalidParameter, match="mobilenet_v2 has no text encoder"):
        zeroshot.predict_zeroshot(unlabelled, "mobilenet_v2", classes="a,b")
    with pytest.raises(InvalidParameter, match="must contain {label}"):
        step.clean({"network": NET, "method": "zeroshot", "prompt": "a photo"}, unlabelled)


def test_kinds_offer_zeroshot_to_the_panel(hf_env):  # noqa: F811
    kinds = {k["kind"]: k for k in (s.describe() for s in steps.job_steps().values())}
    p = {q["name"]: q for q in kinds["predict"]["params"]}
    assert "zeroshot" in p["method"]["choices"]
    assert p["classes"]["type"] == "str" and p["prompt"]["default"] == "a photo of a {label}."
    # a pipeline job's predict options accept it too
    cleaned = steps.get("pipeline").clean({"network": NET, "steps": ["embed", "predict"],
                                          "options": {"predict": {"method": "zeroshot", "classes": "a, b"}}})
    assert cleaned["options"]["predict"]["method"] == "zeroshot"
