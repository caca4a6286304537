"""The pipeline's commands end to end on a real logdir, in one process (UMAP compiles once)."""
import csv
import json
import os

import numpy as np
import pytest

from nipgboard_plugin import cli, predict, results
from nipgboard_plugin.store import Store
from pipeline_fixtures import copy_dataset

NETS = ("efficientnet_lite0", "mobilenet_v2")
FAST = ["--n-epochs", "60", "--n-neighbors", "10"]


def run(capsys, *argv):
    rc = cli.main(["--json", *map(str, argv)])
    out = capsys.readouterr().out
    return rc, json.loads(out)


def _files(logdir):
    return sorted(str(p.relative_to(logdir)) for p in logdir.rglob("*") if p.is_file())


def test_every_command_says_what_to_run_first(faces, tmp_path, capsys):
    ds = copy_dataset(faces, tmp_path)
    L = ds["logdir"]
    before = _files(L)
    for argv, hint in [
        (("cluster", L, "--network", NETS[0]), "nipgboard project"),
        (("predict", L, "--network", "efficientnet_lite1"), "nipgboard embed"),
        (("predict", L, "--network", NETS[0], "--method", "cluster"), "nipgboard cluster"),
        (("evaluate", L), "nipgboard project"),
        (("disagreements", L), "nipgboard predict"),
        (("projector", L), "nipgboard project"),
        (("project", L, "--network", NETS[0], "--n-neighbors", "100"), "--n-neighbors"),
        (("label", L, "--image", "no_such.png", "--label", "face"), "not in the dataset"),
        (("label", L, "--cluster", "0", "--network", NETS[0], "--label", "face"), "nipgboard cluster"),
        (("project", tmp_path / "nothing", "--network", NETS[0]), "nipgboard init"),
    ]:
        rc, out = run(capsys, *argv)
        assert rc == 2 and hint in out["error"], (argv, out)
    assert _files(L) == before  # nothing half-written, nothing written at all


def test_full_pipeline(faces, tmp_path, capsys):
    ds = copy_dataset(faces, tmp_path)
    L = ds["logdir"]
    for net in NETS:
        rc, r = run(capsys, "project", L, "--network", net, *FAST, "--no-projector")
        assert rc == 0 and r["fitted"] == 48
        rc, r = run(capsys, "cluster", L, "--network", net, "--resolution", "0.3", "--no-projector")
        assert rc == 0 and r["clusters"] >= 2
        rc, r = run(capsys, "predict", L, "--network", net, "--no-projector")
        assert rc == 0 and r["method"] in predict.AUTO_CANDIDATES
    rc, r = run(capsys, "evaluate", L)
    assert rc == 0 and {row["network"] for row in r["rows"]} == set(NETS)
    assert all(row["accuracy"] >= 0.8 for row in r["rows"] if row["split"] == "test")

    # Projector files, read the way TensorBoard's projector plugin reads them.
    rc, p = run(capsys, "projector", L)
    assert rc == 0 and p["points"] == 200 and set(p["networks"]) == set(NETS)
    from google.protobuf import text_format
    from tensorboard.plugins import projector
    from tensorboard.plugins.projector import projector_plugin as pp

    cfg = text_format.Parse((L / "projector_config.pbtxt").read_text(), projector.ProjectorConfig())
    assert len(cfg.embeddings) == 2 and any(f.startswith("events.out.tfevents") for f in os.listdir(L))
    for emb in cfg.embeddings:
        tensor = pp._read_tensor_tsv_file(pp._rel_to_abs_asset_path(emb.tensor_path, str(L / "projector_config.pbtxt")))
        assert tensor.shape == (200, 3)
        meta = list(csv.reader(open(L / emb.metadata_path), delimiter="\t"))
        assert meta[0][:3] == ["label", "predicted", "confidence"] and len(meta) == 201
        from PIL import Image

        sprite = Image.open(pp._rel_to_abs_asset_path(emb.sprite.image_path, str(L / "projector_config.pbtxt")))
        assert sprite.size[0] == sprite.size[1] == 15 * emb.sprite.single_image_dim[0]

    # The review queue, and resolving it.
    rc, q = run(capsys, "disagreements", L, "--networks", *NETS, "--all", "--limit", "140")
    assert rc == 0 and q["queue_length"] == 140
    doubts = [it["doubt"] for it in q["items"]]
    assert doubts == sorted(doubts, reverse=True)
    truth = ds["truth"]
    top = q["items"][:10]
    rc, lab = run(capsys, "label", L, "--image", top[0]["path"], "--label", truth[top[0]["path"]])
    assert rc == 0 and lab["changed"] == 1
    listing = tmp_path / "review.csv"
    listing.write_text("".join(f"{it['path']},{truth[it['path']]}\n" for it in top[1:]))
    rc, lab = run(capsys, "label", L, "--list", listing)
    assert rc == 0 and lab["changed"] == 9
    for net in NETS:
        e = lab["after_review"][net]["all_reviewed"]
        assert e["n"] == 10 and 0 <= e["agreed"] <= 10
    with Store(L) as st:
        hist = [h for h in st.label_history() if h["source"] == "user"]
        assert len(hist) == 10 and all(h["old_label"] is None for h in hist)
    rc, q2 = run(capsys, "disagreements", L, "--all", "--limit", "5")
    assert q2["unlabelled"] == 130 and q2["notes"]  # the predictions are now out of date, and it says so
    assert q2["stale"] == list(NETS)
    # Predicting again (the panel's "Update predictions") trains on the reviewed labels too.
    rc, r = run(capsys, "predict", L, "--network", NETS[0], "--no-projector")
    assert rc == 0 and r["roles"] == {"train": 48 + 10, "test": 12, "pool": 130}
    rc, q3 = run(capsys, "disagreements", L, "--all", "--limit", "5")
    assert q3["stale"] == [NETS[1]] and len(q3["notes"]) == 1

    # A whole cluster at once: only members without a label, unless --overwrite.
    arrays, meta = results.load_result(L, NETS[0], "clusters")
    with Store(L) as st:
        labelled = set(st.labels())
    c = int(np.bincount(arrays["cluster"]).argmax())
    members = {int(i) for i in arrays["image_ids"][arrays["cluster"] == c]}
    rc, lab = run(capsys, "label", L, "--cluster", c, "--network", NETS[0], "--label", "reviewed")
    assert rc == 0 and lab["changed"] == len(members - labelled)

    out = tmp_path / "labels.csv"
    rc, ex = run(capsys, "export", L, "--out", out)
    rows = list(csv.DictReader(open(out)))
    assert rc == 0 and len(rows) == 200 and list(rows[0]) == [
        "path", "role", "expert_label", "predicted", "confidence", "final_label", "cluster", "votes", "flagged"]
    assert all(r["final_label"] for r in rows)
    assert all(r["final_label"] == r["expert_label"] for r in rows if r["expert_label"])
    assert all(r["votes"].count("=") == 2 for r in rows)


def test_search_reports_every_config_and_applies_the_best(faces, tmp_path, capsys):
    ds = copy_dataset(faces, tmp_path)
    L = ds["logdir"]
    rc, r = run(capsys, "search", L, "--network", NETS[1], "--n-neighbors", "5", "10", "--min-dist", "0.1",
                "--n-epochs", "40", "--resolution", "0.3", "1.0", "--apply", "--no-projector")
    assert rc == 0 and len(r["configs"]) == 4
    best = r["configs"][0]
    assert r["applied"]["project"]["params"]["n_neighbors"] == best["umap"]["n_neighbors"]
    assert r["applied"]["cluster"]["resolution"] == best["graph"]["resolution"]
    assert (results.network_dir(L, NETS[1]) / "search.json").is_file()


def test_writes_are_atomic(tmp_path, monkeypatch):
    target = tmp_path / "r.npz"
    results.save_npz(target, {"a": np.arange(3)}, {"v": 1})

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        results.save_npz(target, {"a": np.arange(5)}, {"v": 2})
    monkeypatch.undo()
    arrays, meta = results.load_npz(target)
    assert meta == {"v": 1} and list(arrays["a"]) == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["r.npz"]  # no temporary file left behind


def test_networks_vote_by_logistic_regression_in_the_queue(digits, tmp_path):
    from nipgboard_plugin import export, predict, review

    ds = copy_dataset(digits, tmp_path)
    logdir = ds["logdir"]
    a, b = NETS
    assert predict.predict_dataset(logdir, a, method="all")["vote_method"] == "logreg"
    assert predict.predict_dataset(logdir, b, method="logreg")["vote_method"] == "logreg"
    arr_a, meta_a = predict.load_predictions(logdir, a)
    arr_b, _ = predict.load_predictions(logdir, b)
    assert meta_a["method"] == "all" and "vote_proba" not in arr_b  # stored once when it is the label
    classes = meta_a["classes"]
    q = review.review_queue(logdir, [a, b], flagged_only=False, limit=0)
    row = {int(i): k for k, i in enumerate(arr_a["image_ids"])}
    assert q["queue_length"] == len(q["items"]) > 0
    for it in q["items"]:
        k = row[it["id"]]
        assert it["votes"] == {a: classes[int(arr_a["vote_proba"][k].argmax())],
                               b: classes[int(arr_b["proba"][k].argmax())]}
    voted = {it["id"] for it in q["items"] if len(set(it["votes"].values())) > 1}
    assert voted == {it["id"] for it in q["items"] if it["dissenters"]} and q["disagreements"] == len(voted)
    # alone, a network is judged by its own labels
    alone = review.review_queue(logdir, [a], flagged_only=False, limit=0)
    assert {it["id"]: it["votes"][a] for it in alone["items"]} == {
        it["id"]: classes[int(arr_a["pred"][row[it["id"]]])] for it in alone["items"]}
    # the export hands out the committee's consensus
    export.export_csv(logdir, tmp_path / "labels.csv", networks=[a, b])
    with open(tmp_path / "labels.csv", newline="") as fh:
        predicted = {r["path"]: r["predicted"] for r in csv.DictReader(fh)}
    assert {it["path"]: it["consensus"] for it in q["items"]} == {
        it["path"]: predicted[it["path"]] for it in q["items"]}
