"""The network registry: listing, offline ImageNet networks, the ONNX engine cache,
Keras applications without their weights, and user-registered model files.
Keras engines with weights: tests/test_keras_tf.py."""
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from nipgboard_plugin import backbones, paths
from nipgboard_plugin.backbones import Backbone, BackboneInfo, NetworkUnavailable, Preprocess
from nipgboard_plugin.backbones import onnx_engine

OFFLINE_IDS = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"]
PAPER_IDS = ["vgg16", "vgg19", "nasnetlarge", "xception", "inceptionresnetv2", "densenet201"]
KERAS_IDS = PAPER_IDS + ["resnet50", "keras_mobilenet_v2", "efficientnetb0"]
EXPORTED_IDS = ["efficientnet_lite0", "mobilenet_v2"]  # exported once per test session


@pytest.fixture(scope="module", autouse=True)
def isolated_homes(tmp_path_factory):
    """NIPGBOARD_HOME and KERAS_HOME in a temp dir (Keras on its default backend, TensorFlow)."""
    home = tmp_path_factory.mktemp("nipgboard_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("NIPGBOARD_HOME", str(home))
    mp.setenv("KERAS_HOME", str(home / "keras"))
    yield home
    mp.undo()


@pytest.fixture(scope="module")
def ort_engines(isolated_homes):
    return {nid: backbones.get(nid).engine() for nid in EXPORTED_IDS}


def uint8_batch(n, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


# --- listing ---

def test_listing_covers_every_builtin_network():
    listed = {b.id: b.describe() for b in backbones.all_backbones()}
    assert set(OFFLINE_IDS + KERAS_IDS) <= set(listed)
    for d in listed.values():
        assert {"id", "name", "family", "input_size", "feature_dim", "weights", "available",
                "message"} <= set(d)
        assert d["available"] or d["message"]
    assert {b.id for b in backbones.paper_backbones()} == set(PAPER_IDS)
    sizes = {i: tuple(listed[i]["input_size"]) for i in listed}
    assert sizes["efficientnet_lite1"] == (240, 240) and sizes["efficientnet_lite2"] == (260, 260)
    assert sizes["nasnetlarge"] == (331, 331) and sizes["xception"] == (299, 299)
    assert sizes["inceptionresnetv2"] == (299, 299) and sizes["vgg16"] == (224, 224)
    dims = {i: listed[i]["feature_dim"] for i in listed}
    assert dims["vgg16"] == dims["vgg19"] == 4096 and dims["densenet201"] == 1920
    assert dims["nasnetlarge"] == 4032 and dims["inceptionresnetv2"] == 1536
    for nid in OFFLINE_IDS:
        assert listed[nid]["family"] == "offline-torch" and dims[nid] == 1280
        assert listed[nid]["available"], listed[nid]["message"]


def test_offline_input_sizes_match_the_package():
    from efficientnet_lite_pytorch.utils import efficientnet_params

    for v in range(3):
        size = efficientnet_params(f"efficientnet-lite{v}")[2]
        assert backbones.get(f"efficientnet_lite{v}").info.input_size == (size, size)


def test_listing_loads_no_framework():
    code = ("import sys; from nipgboard_plugin import backbones as b; "
            "[n.describe() for n in b.all_backbones()]; "
            "print([m for m in ('torch', 'keras', 'tensorflow', 'onnxruntime') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "[]"


def test_unknown_id_lists_the_known_ones():
    with pytest.raises(KeyError) as err:
        backbones.get("resnet9000")
    assert "resnet9000" in str(err.value) and "efficientnet_lite0" in str(err.value)
    assert "densenet201" in str(err.value)


# --- offline torch networks and the ONNX engine ---

@pytest.mark.parametrize("nid", OFFLINE_IDS)
def test_offline_networks_give_1280_features(nid, ort_engines):
    b = backbones.get(nid)
    engine = ort_engines[nid] if nid in ort_engines else b.engine(kind="torch")
    feats = engine.run(b.preprocess.normalise(uint8_batch(2, b.preprocess.size)))
    assert feats.shape == (2, 1280) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    assert engine.run(b.preprocess.normalise(uint8_batch(0, b.preprocess.size))).shape == (0, 1280)


@pytest.mark.parametrize("nid", EXPORTED_IDS)
def test_onnx_engine_matches_eager_torch(nid, ort_engines):
    b = backbones.get(nid)
    assert ort_engines[nid].kind == "onnxruntime"
    x = b.preprocess.normalise(uint8_batch(3, b.preprocess.size, seed=1))
    diff = np.abs(ort_engines[nid].run(x) - b.engine(kind="torch").run(x)).max()
    assert diff < 1e-4


def _photo_batch(pre, crops):
    from PIL import Image

    return pre.normalise(np.stack([pre.resize(Image.fromarray(c)) for c in crops]))


@pytest.mark.parametrize("nid", EXPORTED_IDS)
def test_features_come_from_the_pretrained_imagenet_network(nid, ort_engines):
    skdata = pytest.importorskip("skimage.data")
    import torch

    b = backbones.get(nid)
    cat, coffee = skdata.chelsea(), skdata.coffee()
    batch = _photo_batch(b.preprocess, [cat[:, 40:340], cat[20:, 80:420], coffee])
    feats = ort_engines[nid].run(batch)
    same_photo = np.linalg.norm(feats[0] - feats[1])
    other_photo = min(np.linalg.norm(feats[0] - feats[2]), np.linalg.norm(feats[1] - feats[2]))
    assert same_photo < 0.6 * other_photo

    # The classifier's own last layer, fed our features, agrees with the full network.
    from nipgboard_plugin.backbones import torch_nets

    net = b.load_classifier()
    with torch.inference_mode():
        full = net(torch.from_numpy(batch)).argmax(1).tolist()
        from_features = torch_nets.classifier_head(net)(torch.from_numpy(feats)).argmax(1).tolist()
    assert from_features == full
    assert full[0] in range(281, 286) and full[1] in range(281, 286)  # ImageNet cat classes
    assert full[2] in (967, 968, 504)                                 # espresso, cup, coffee mug


def test_export_is_cached_and_named_by_the_cache_key(ort_engines):
    b = backbones.get("mobilenet_v2")
    first = ort_engines["mobilenet_v2"]
    mtime = first.path.stat().st_mtime_ns
    again = b.engine()
    assert again.kind == "onnxruntime" and not again.exported
    assert again.path == first.path and again.path.stat().st_mtime_ns == mtime
    assert b.weights_fingerprint() in first.path.name
    assert b.preprocess.signature() in first.path.name
    assert first.path.parent == paths.engines_dir()


class TinyNet(Backbone):
    """A real (random-weight) torch network, small enough to export in a second."""

    def __init__(self, module_factory, tag="tiny"):
        self.module_factory = module_factory
        self.tag = tag
        self.preprocess = Preprocess(size=(16, 16))
        self.info = BackboneInfo(id="tiny", name="tiny", family="offline-torch",
                                 input_size=(16, 16), feature_dim=8, weights="random")

    def weights_fingerprint(self):
        return self.tag

    def engine(self, kind="auto"):
        return onnx_engine.torch_engine(self, self.module_factory, kind=kind)


def _tiny_module():
    import torch
    from torch import nn

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    return Tiny().eval()


def _untraceable_module():
    import torch
    from torch import nn

    class DataDependent(nn.Module):
        # A Python branch on tensor data: tracing would freeze one branch into the graph.
        def forward(self, x):
            if float(x.abs().sum()) > 0:
                return x.mean(dim=(2, 3))
            return torch.zeros(x.shape[0], 3)

    return DataDependent().eval()


def test_a_killed_export_leaves_nothing_that_breaks_the_next(isolated_homes):
    net = TinyNet(_tiny_module, tag="killed")
    final = onnx_engine.engine_path(net.cache_key())
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.parent / (final.name + ".abc123.tmp")  # what a killed export leaves
    partial.write_bytes(b"\x08\x07half an onnx file")
    stale = final.parent / "other.onnx.old.tmp"
    stale.write_bytes(b"")
    old = time.time() - 2 * onnx_engine.STALE_TEMP_SECONDS
    os.utime(stale, (old, old))

    engine = net.engine()
    assert engine.kind == "onnxruntime" and engine.exported and final.is_file()
    assert not stale.exists()  # swept: its writer is long gone
    x = net.preprocess.normalise(uint8_batch(4, (16, 16)))
    assert engine.run(x).shape == (4, 8)

    # A damaged engine file is exported afresh, not trusted.
    final.write_bytes(final.read_bytes()[:100])
    repaired = net.engine()
    assert repaired.exported and np.allclose(repaired.run(x), engine.run(x), atol=1e-5)


def test_an_export_that_differs_from_torch_falls_back_to_eager(isolated_homes):
    net = TinyNet(_untraceable_module, tag="untraceable")
    with pytest.warns(RuntimeWarning, match="eager PyTorch"):
        engine = net.engine()
    assert engine.kind == "torch"
    assert not onnx_engine.engine_path(net.cache_key()).exists()
    x = np.ones((2, 3, 16, 16), np.float32)
    assert np.allclose(engine.run(x), 1.0)
    with pytest.raises(onnx_engine.ExportMismatch):
        net.engine(kind="onnxruntime")


# --- Keras applications ---

@pytest.mark.parametrize("nid", KERAS_IDS)
def test_keras_without_weights_says_which_file_to_get(nid):
    b = backbones.get(nid)
    a = b.availability()
    assert not a.available and b.app.weights_file in a.message
    assert str(b.weights_path().parent) in a.message
    with pytest.raises(NetworkUnavailable) as err:
        b.engine()
    assert b.app.weights_file in str(err.value)


def _keras_or_skip():
    from nipgboard_plugin.backbones.keras_apps import keras_problem

    if keras_problem():
        pytest.skip(keras_problem())
    return pytest.importorskip("keras")


def test_keras_preprocess_matches_keras_preprocess_input():
    keras = _keras_or_skip()
    modules = {"vgg16": "vgg16", "vgg19": "vgg19", "nasnetlarge": "nasnet", "xception": "xception",
               "inceptionresnetv2": "inception_resnet_v2", "densenet201": "densenet",
               "resnet50": "resnet50", "keras_mobilenet_v2": "mobilenet_v2",
               "efficientnetb0": "efficientnet"}
    pixels = uint8_batch(2, (5, 5))
    for nid, module in modules.items():
        expected = getattr(keras.applications, module).preprocess_input(pixels.astype(np.float32))
        got = backbones.get(nid).preprocess.normalise(pixels)
        assert np.allclose(got, np.asarray(expected), atol=1e-4), nid


# --- user-registered model files ---

def _tiny_onnx(path):
    onnx_engine.export_onnx(_tiny_module(), (3, 16, 16), path)
    return path


def test_user_onnx_model_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("NIPGBOARD_HOME", str(tmp_path / "home"))
    model = _tiny_onnx(tmp_path / "tiny.onnx")

    b = backbones.register_user_model(model, "my_tiny", input_size=(16, 16), mean=0.5, std=0.25,
                                      name="Tiny net")
    assert b.info.family == "onnx" and b.info.feature_dim == 8 and b.preprocess.layout == "NCHW"
    registry = json.loads(paths.user_networks_file().read_text())
    assert [e["id"] for e in registry["networks"]] == ["my_tiny"]

    again = backbones.get("my_tiny")
    assert again.describe()["available"] and again.info.name == "Tiny net"
    assert again.preprocess == b.preprocess and again.preprocess.mean == (0.5, 0.5, 0.5)
    assert again.weights_fingerprint() == hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    assert "my_tiny" in [n.id for n in backbones.all_backbones()]
    engine = again.engine()
    feats = engine.run(again.preprocess.normalise(uint8_batch(5, (16, 16))))
    assert feats.shape == (5, 8) and feats.dtype == np.float32

    with pytest.raises(ValueError, match="built-in"):
        backbones.register_user_model(model, "vgg16")
    with pytest.raises(ValueError, match="takes 16x16"):
        backbones.register_user_model(model, "wrong_size", input_size=(32, 32))

    model.rename(tmp_path / "moved.onnx")
    a = backbones.get("my_tiny").availability()
    assert not a.available and a.message == f"file missing: {model}"
    with pytest.raises(NetworkUnavailable, match="file missing"):
        backbones.get("my_tiny").engine()

    assert backbones.unregister_user_model("my_tiny")
    assert not backbones.unregister_user_model("my_tiny")
    with pytest.raises(KeyError):
        backbones.get("my_tiny")


def test_user_onnx_with_symbolic_output_and_nhwc_input(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    monkeypatch.setenv("NIPGBOARD_HOME", str(tmp_path / "home"))
    # NHWC images -> mean over H and W -> a (3 -> 6) projection; output shape left symbolic.
    weight = numpy_helper.from_array(np.arange(18, dtype=np.float32).reshape(3, 6), "w")
    axes = numpy_helper.from_array(np.array([1, 2], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["features"])],
        "nhwc_tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 20, 24, 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", "d"])],
        initializer=[weight, axes],
    )
    path = tmp_path / "nhwc.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))

    b = backbones.register_user_model(path, "nhwc_tiny", scale=1.0)
    assert b.info.feature_dim == 6 and b.info.input_size == (20, 24)
    assert b.preprocess.layout == "NHWC"
    pixels = np.full((2, 20, 24, 3), 2, np.uint8)
    assert np.allclose(b.engine().run(b.preprocess.normalise(pixels)),
                       np.full((2, 3), 2.0) @ np.arange(18).reshape(3, 6))


# --- the device ---

def test_offline_engine_reports_its_device_and_shares_its_file_and_key(ort_engines):
    b = backbones.get("mobilenet_v2")
    key = b.cache_key()
    with onnx_engine.use_device("cpu"):
        cpu = b.engine()
    assert cpu.device == "cpu" and cpu.providers == ["CPUExecutionProvider"]
    assert not cpu.exported and cpu.path == ort_engines["mobilenet_v2"].path  # one export for every device
    assert b.cache_key() == key and "cpu" not in key and "cuda" not in key
    auto = ort_engines["mobilenet_v2"]
    assert auto.device in ("cpu", "cuda") and auto.providers[-1] == "CPUExecutionProvider"
    x = b.preprocess.normalise(uint8_batch(2, (224, 224)))
    assert np.allclose(cpu.run(x), auto.run(x), rtol=1e-3, atol=1e-3)
