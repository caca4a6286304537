"""Foundation models through transformers (DINOv2, CLIP): found in the Hugging Face cache or a local folder,
exported to ONNX once and checked against transformers itself, cached by weights hash, honest when absent;
the measured images/s in `nipgboard networks`. Tiny random checkpoints (hf_tiny.py); nothing downloads."""
import json
import os

import numpy as np
import pytest

from hf_tiny import CLIP_REPO, DINO_REPO, hf_env, tiny_checkpoints  # noqa: F401 - fixtures
from images import shape_image, write_shapes
from nipgboard_plugin import backbones, cli, paths, params
from nipgboard_plugin.backbones import onnx_engine, speeds
from nipgboard_plugin.backbones.base import NetworkUnavailable
from nipgboard_plugin.errors import Unavailable


def _pixels(backbone, n=5):
    shapes = ["circle", "square", "triangle"] * 2
    imgs = [shape_image(s, seed=i, size=48).convert("RGB") for i, s in enumerate(shapes[:n])]
    return np.stack([backbone.preprocess.resize(im) for im in imgs])


def test_missing_weights_say_what_to_put_where(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("NIPGBOARD_HOME", str(tmp_path / "home"))
    b = backbones.get("dinov2_vits14")
    a = b.availability()
    assert not a.available
    assert f"hf download {DINO_REPO}" in a.message
    assert str(tmp_path / "hub") in a.message and str(tmp_path / "home" / "models" / DINO_REPO) in a.message
    with pytest.raises(NetworkUnavailable, match="not on this machine"):
        b.engine()
    with pytest.raises(Unavailable, match="dinov2_vits14 is not available here"):
        params.check_network("dinov2_vits14")
    # the listing still knows the official sizes
    assert b.info.input_size == (224, 224) and b.info.feature_dim == 384
    assert cli.main(["networks"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("clip_vit_b32"))
    assert "224x224" in row and " 512 " in row and " no " in row
    assert f"hf download {CLIP_REPO}" in out


def test_dinov2_from_the_hub_cache_runs_in_onnxruntime_as_in_transformers(hf_env):  # noqa: F811
    import torch
    from transformers import Dinov2Model

    b = backbones.get("dinov2_vits14")
    assert b.availability().available, b.availability().message
    d = b.describe()
    assert d["family"] == "transformers" and d["input_size"] == [28, 28] and d["feature_dim"] == 32
    assert "Hugging Face cache" in d["weights"] and d["extra"]["location"] == str(hf_env["dino"])
    # the weights' fingerprint is the blob's sha256, which the hub cache names it by
    blob = os.path.basename(os.path.realpath(hf_env["dino"] / "model.safetensors"))
    assert b.weights_fingerprint() == blob[:16] and blob[:16] in b.cache_key()
    assert b.preprocess.mean == (0.485, 0.456, 0.406) and b.preprocess.resample == "bicubic"

    engine = b.engine()
    assert engine.kind == "onnxruntime" and engine.path == onnx_engine.engine_path(b.cache_key())
    x = b.preprocess.normalise(_pixels(b))
    feats = engine.run(x)
    assert feats.shape == (5, 32) and np.isfinite(feats).all()
    # the reference is transformers' own model, trained at 56 px and interpolating its positions to 28
    ref_model = Dinov2Model.from_pretrained(str(hf_env["dino"]), local_files_only=True).eval()
    with torch.inference_mode():
        ref = ref_model(pixel_values=torch.from_numpy(x)).pooler_output.numpy()
    assert np.abs(feats - ref).max() < 1e-4
    assert b.engine().exported is False  # the second time the cached export is loaded


def test_clip_from_a_local_folder_gives_the_projected_image_embedding(hf_env):  # noqa: F811
    import torch
    from transformers import CLIPModel

    b = backbones.get("clip_vit_b32")
    assert b.availability().available
    assert b.info.feature_dim == 16 and b.info.input_size == (32, 32)
    assert "local folder" in b.info.weights
    x = b.preprocess.normalise(_pixels(b, 4))
    feats = b.engine().run(x)
    model = CLIPModel.from_pretrained(str(hf_env["clip"]), local_files_only=True).eval()
    with torch.inference_mode():
        ref = model.get_image_features(pixel_values=torch.from_numpy(x)).pooler_output.numpy()
    assert feats.shape == (4, 16)
    assert np.abs(feats - ref).max() < 1e-4
    # ONNX Runtime and eager torch agree on the exported graph
    check = onnx_engine.verify_export(b.feature_module(), b.engine().path, (3, 32, 32))
    assert check < 1e-4


def test_siglip_gives_its_pooled_image_embedding_and_text_embeddings(hf_env):  # noqa: F811
    import torch
    from transformers import SiglipModel

    b = backbones.get("siglip_b16")
    assert b.info.feature_dim == 24 and b.info.input_size == (32, 32) and b.preprocess.mean == (0.5,) * 3
    x = b.preprocess.normalise(_pixels(b, 3))
    feats = b.engine().run(x)
    model = SiglipModel.from_pretrained(str(hf_env["siglip"]), local_files_only=True).eval()
    with torch.inference_mode():
        ref = model.get_image_features(pixel_values=torch.from_numpy(x)).pooler_output.numpy()
        # SigLIP reads the prompt padded to 64 tokens without an attention mask, as it was trained
        ids = b.tokenizer()(["a photo of a cat."], padding="max_length", max_length=64, return_tensors="pt")
        ref_text = model.get_text_features(input_ids=ids["input_ids"]).pooler_output
    assert feats.shape == (3, 24) and np.abs(feats - ref).max() < 1e-4
    text, scale, bias = b.text_features(["a photo of a cat.", "a photo of a dog."])
    assert text.shape == (2, 24) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert np.allclose(text[0], torch.nn.functional.normalize(ref_text, dim=-1)[0].numpy(), atol=1e-5)
    assert scale == pytest.approx(float(model.logit_scale.detach().exp()))
    assert bias == pytest.approx(float(model.logit_bias.detach()))


def test_new_weights_give_a_new_cache_key(hf_env, tmp_path, monkeypatch):  # noqa: F811
    b = backbones.get("clip_vit_b32")
    before = b.cache_key()
    other = tmp_path / "home"
    import shutil

    shutil.copytree(hf_env["clip"], other / "models" / CLIP_REPO)
    weights = other / "models" / CLIP_REPO / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\x00\x00\x00\x01")
    monkeypatch.setenv("NIPGBOARD_HOME", str(other))
    assert b.cache_key() != before and b.cache_key().split(":")[2] == before.split(":")[2]


def test_embed_records_images_per_second_and_networks_shows_it(hf_env, tmp_path, capsys):  # noqa: F811
    L, imgs = tmp_path / "run", tmp_path / "imgs"
    write_shapes(imgs, per_class=22, size=40)  # 66 images: enough to count
    assert cli.main(["--json", "init", str(L), "--images", str(imgs)]) == 0
    capsys.readouterr()
    assert cli.main(["--json", "embed", str(L), "--network", "dinov2_vits14", "--batch-size", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["extracted"] == 66
    rate = speeds.measured("dinov2_vits14")["cpu"]
    assert rate > 0
    entry = json.loads(paths.speeds_file().read_text())["machines"][speeds.machine()]["dinov2_vits14"]["cpu"]
    assert entry["images"] == 66 and entry["batch_size"] == 16

    assert cli.main(["--json", "networks"]) == 0
    nets = {n["id"]: n for n in json.loads(capsys.readouterr().out)["networks"]}
    assert nets["dinov2_vits14"]["speed"] == {"cpu": rate} and nets["dinov2_vits14"]["available"]
    assert nets["mobilenet_v2"]["speed"] == {}
    assert cli.main(["networks"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("dinov2_vits14"))
    assert f"{rate:.0f} cpu" in row and "28x28" in row

    # a few images are too few to say anything: the figure stays
    assert not speeds.record("dinov2_vits14", "cpu", 10, 0.01)
    assert speeds.measured("dinov2_vits14") == {"cpu": rate}
