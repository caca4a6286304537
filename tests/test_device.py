"""Where ONNX Runtime runs: the provider choice for auto, cpu and cuda (CUDA lists given explicitly,
as no GPU is needed to test the choice), real engines and real `nipgboard embed` runs that say which
device ran, and a feature cache shared between devices."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from images import write_shapes
from nipgboard_plugin import backbones
from nipgboard_plugin.backbones import Backbone, BackboneInfo, Preprocess, onnx_engine
from nipgboard_plugin.backbones.onnx_engine import (CPU, CUDA, DeviceUnavailable, OrtEngine,
                                                    choose_providers, use_device)
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.errors import Unavailable
from nipgboard_plugin.features import embed, load_features
from nipgboard_plugin.steps.embed import render

REPO = Path(__file__).resolve().parent.parent
HAS_CUDA = CUDA in ort.get_available_providers()
HERE = "cuda" if HAS_CUDA else "cpu"  # what auto picks on this machine
NET = "tiny_device_net"


# --- the choice, for any list of providers ---

def test_auto_prefers_cuda_when_onnxruntime_has_it():
    providers, note = choose_providers("auto", available=[CUDA, CPU])
    assert providers == [CUDA, CPU] and note.startswith("cuda")
    providers, note = choose_providers("auto", available=["AzureExecutionProvider", CPU])
    assert providers == [CPU] and note.startswith("cpu") and "onnxruntime-gpu" in note


def test_cpu_never_asks_for_cuda():
    assert choose_providers("cpu", available=[CUDA, CPU])[0] == [CPU]
    assert choose_providers("cpu", available=[CPU])[0] == [CPU]


def test_cuda_runs_on_cuda_or_says_what_to_install():
    assert choose_providers("cuda", available=["TensorrtExecutionProvider", CUDA, CPU])[0] == [CUDA, CPU]
    with pytest.raises(DeviceUnavailable) as err:
        choose_providers("cuda", available=[CPU])
    assert isinstance(err.value, Unavailable) and err.value.exit_code == 2 and err.value.http_status == 409
    message = str(err.value)
    assert "onnxruntime-gpu" in message and "driver" in message and CPU in message


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        choose_providers("gpu", available=[CPU])
    with pytest.raises(ValueError):
        with use_device("tpu"):
            pass


# --- real engines on this machine ---

def _tiny_onnx(path):
    """images (n, 3, 16, 16) -> per-channel means -> a 3 -> 6 projection: a real ONNX graph, no torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.arange(18, dtype=np.float32).reshape(3, 6) / 10, "w")
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images", "axes"], ["pooled"], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["features"])],
        "tiny_device", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, 16, 16])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 6])],
        initializer=[weight, axes])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_the_engine_reports_the_device_that_runs(tmp_path):
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    x = np.random.default_rng(0).random((4, 3, 16, 16), dtype=np.float32)
    cpu = OrtEngine(model, device="cpu")
    assert cpu.device == "cpu" and cpu.providers == [CPU] and not cpu.device_fallback
    auto = OrtEngine(model, device="auto")
    assert auto.device == HERE and auto.providers[-1] == CPU
    with use_device("cpu"):  # how features.embed reaches engines that backbones build
        assert OrtEngine(model).providers == [CPU]
    assert np.allclose(auto.run(x), cpu.run(x), atol=1e-5)
    if not HAS_CUDA:
        with pytest.raises(DeviceUnavailable, match="onnxruntime-gpu"):
            OrtEngine(model, device="cuda")


@pytest.mark.skipif(HAS_CUDA, reason="checks the machine without CUDA")
@pytest.mark.filterwarnings("ignore:Specified provider")
def test_cuda_that_onnxruntime_drops_while_loading_is_reported(tmp_path, caplog):
    # Asked for CUDA where it cannot load, ONNX Runtime only logs and runs on the CPU, as it does when
    # onnxruntime-gpu lacks its CUDA or cuDNN libraries: the engine reads what really runs.
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    listed = [CUDA, CPU]  # what onnxruntime-gpu lists on a machine whose driver is missing
    auto = OrtEngine(model, device="auto", available=listed)
    assert auto.device == "cpu" and auto.providers == [CPU] and auto.device_fallback
    assert "failed to load" in auto.device_note and "CUDA provider failed" in caplog.text
    with pytest.raises(DeviceUnavailable, match="could not load its CUDA provider.*onnxruntime-gpu"):
        OrtEngine(model, device="cuda", available=listed)


class _TinyTorchNet(Backbone):
    """A torch network exported on first use, as the offline networks are."""

    def __init__(self):
        self.preprocess = Preprocess(size=(16, 16))
        self.info = BackboneInfo(id="tiny_device_torch", name="tiny", family="offline-torch",
                                 input_size=(16, 16), feature_dim=3, weights="none")
        self.built = 0

    def weights_fingerprint(self):
        return "device-test"

    def build(self):
        import torch

        self.built += 1

        class Mean(torch.nn.Module):
            def forward(self, x):
                return x.mean(dim=(2, 3))

        return Mean().eval()

    def engine(self):
        return onnx_engine.torch_engine(self, self.build)


@pytest.mark.skipif(HAS_CUDA, reason="checks the machine without CUDA")
def test_cuda_without_cuda_neither_exports_nor_falls_back_to_eager_torch():
    net = _TinyTorchNet()
    with use_device("cuda"), pytest.raises(DeviceUnavailable, match="onnxruntime-gpu"):
        net.engine()
    assert net.built == 0 and not onnx_engine.engine_path(net.cache_key()).exists()


# --- `nipgboard embed --device` ---

@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Its own NIPGBOARD_HOME holding the tiny network, for this process and the CLI's."""
    base = tmp_path_factory.mktemp("device_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("NIPGBOARD_HOME", str(base / "home"))
    backbones.register_user_model(_tiny_onnx(base / "tiny.onnx"), NET, input_size=(16, 16))
    yield base
    mp.undo()


def _dataset(home, name):
    images = home / f"images_{name}"
    if not images.exists():
        write_shapes(images, per_class=2, size=32)
    logdir = home / name
    ingest(logdir, images, folder_labels_from_subdirs=True)
    return logdir


def nipgboard(*argv, json_out=True):
    args = [sys.executable, "-m", "nipgboard_plugin.cli", *map(str, argv)] + (["--json"] if json_out else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=REPO, env=os.environ.copy())
    if not json_out:
        return proc.returncode, proc.stdout, proc.stderr
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


def test_cli_says_which_device_ran_and_the_cache_is_shared(home):
    logdir = _dataset(home, "cpu_then_auto")
    rc, r, err = nipgboard("embed", logdir, "--network", NET, "--device", "cpu")
    assert rc == 0, err
    assert r["extracted"] == 6 and r["engine"] == "onnxruntime"
    assert r["requested_device"] == "cpu" and r["device"] == "cpu" and r["providers"] == [CPU]
    assert not r["device_fallback"]
    cpu_key = r["cache_key"]
    _, cpu_features = load_features(logdir, NET)

    # Features from one device are served to the other: the device is not in the cache key.
    rc, again, err = nipgboard("embed", logdir, "--network", NET, "--device", "auto")
    assert rc == 0, err
    assert again["cache_key"] == cpu_key and again["extracted"] == 0 and again["cached_before"] == 6
    assert again["device"] is None and again["engine"] is None  # nothing ran

    fresh = _dataset(home, "auto")
    rc, r, err = nipgboard("embed", fresh, "--network", NET)  # auto is the default
    assert rc == 0, err
    assert r["requested_device"] == "auto" and r["device"] == HERE and r["cache_key"] == cpu_key
    assert np.allclose(load_features(fresh, NET)[1], cpu_features, atol=1e-5)


def test_cli_text_names_the_device(home):
    logdir = _dataset(home, "text")
    rc, out, err = nipgboard("embed", logdir, "--network", NET, "--device", "cpu", json_out=False)
    assert rc == 0, err
    assert "engine onnxruntime on cpu" in out and "Warning" not in out


@pytest.mark.skipif(HAS_CUDA, reason="checks the machine without CUDA")
def test_cli_cuda_without_cuda_exits_2_and_says_what_to_install(home):
    logdir = _dataset(home, "cuda")
    rc, r, err = nipgboard("embed", logdir, "--network", NET, "--device", "cuda")
    assert rc == 2 and set(r) == {"error"}, err
    assert "onnxruntime-gpu" in r["error"] and "driver" in r["error"] and "Traceback" not in err
    rc, out, err = nipgboard("embed", logdir, "--network", NET, "--device", "cuda", json_out=False)
    assert rc == 2 and "onnxruntime-gpu" in err
    rc, _, err = nipgboard("embed", logdir, "--network", NET, "--device", "gpu")
    assert rc == 2 and "cuda" in err  # argparse lists the choices


def test_library_embed_checks_the_device(home):
    from nipgboard_plugin.errors import InvalidParameter

    with pytest.raises(InvalidParameter, match="auto, cpu, cuda"):
        embed(_dataset(home, "library"), NET, device="gpu")


def test_render_of_a_fallback_and_of_engines_without_a_device():
    base = {"network": "n", "extracted": 2, "cached_before": 0, "images": 2, "seconds": 0.1, "failed": []}
    cuda = render({**base, "engine": "onnxruntime", "device": "cuda"})
    assert "engine onnxruntime on cuda)" in cuda
    fell = render({**base, "engine": "onnxruntime", "device": "cpu", "device_fallback": True,
                   "device_note": "cpu: ONNX Runtime's CUDA provider failed to load (check ...)"})
    assert "on cpu)" in fell and "Warning: ran on the cpu: ONNX Runtime's CUDA provider failed" in fell
    assert "engine keras)" in render({**base, "engine": "keras", "device": None})
    assert render({**base, "engine": None}).endswith("(0.1 s)")
