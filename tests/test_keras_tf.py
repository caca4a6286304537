"""Keras networks on the TensorFlow backend: exported once to ONNX, checked against Keras `predict`,
cached by the weights file's hash, and `predict` (with the reason shown) where the export fails.

Weights are made here (a MobileNetV2 whose batch-norm statistics are measured on Pillow images, so
its features are of order one) and saved under Keras's official file name: nothing downloads.
"""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from images import shape_image, write_shapes
from nipgboard_plugin import backbones, paths
from nipgboard_plugin.backbones import file_fingerprint
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.features import embed
from nipgboard_plugin.steps.embed import render

REPO = Path(__file__).resolve().parent.parent
keras = pytest.importorskip("keras")
if keras.backend.backend() != "tensorflow":
    pytest.skip(f"Keras runs on {keras.backend.backend()} in this process, these tests need "
                "TensorFlow", allow_module_level=True)


@pytest.fixture(scope="module")
def homes(tmp_path_factory):
    base = tmp_path_factory.mktemp("keras_tf")
    mp = pytest.MonkeyPatch()
    mp.setenv("NIPGBOARD_HOME", str(base / "home"))
    mp.setenv("KERAS_HOME", str(base / "keras"))
    yield base
    mp.undo()


def pictures(n, size=224, seed=0):
    shapes = ("circle", "square", "triangle")
    return np.stack([np.asarray(shape_image(shapes[i % 3], seed + i, size=size)) for i in range(n)])


def calibrated_mobilenet(seed):
    """MobileNetV2 with random weights whose batch-norm statistics come from real pictures.

    Untrained, its activations shrink layer by layer to 1e-11; measured statistics keep them of
    order one, so comparing features means something.
    """
    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(weights=None)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training call sets the statistics to that batch's
    x = backbones.get("keras_mobilenet_v2").preprocess.normalise(pictures(8, seed=seed))
    model(x, training=True)
    return model


def save_official(model, backbone):
    """Save where Keras looks for the ImageNet weights, as a download would."""
    path = backbone.weights_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras 3 calls .h5 legacy
        model.save(str(path))
    return path


def features_by_predict(model, x):
    head = model.get_layer("predictions").input
    return keras.Model(model.inputs, head).predict(x, verbose=0)


def test_official_weights_file_is_exported_once_and_matches_predict(homes):
    b = backbones.get("keras_mobilenet_v2")
    assert not b.availability().available
    model = calibrated_mobilenet(seed=1)
    weights = save_official(model, b)
    assert b.availability().available

    first = b.engine()
    assert first.kind == "onnxruntime" and first.exported and first.engine_note == ""
    assert first.export_max_diff < 1e-4
    assert first.path.parent == paths.engines_dir()
    assert file_fingerprint(weights) in first.path.name and b.preprocess.signature() in first.path.name

    x = b.preprocess.normalise(pictures(5, seed=7))
    expected = features_by_predict(model, x)
    got = first.run(x)
    assert got.shape == (5, 1280) and expected.std() > 1e-2
    assert np.abs(got - expected).max() < 1e-4

    again = b.engine()  # the cached file, no second export
    assert again.kind == "onnxruntime" and not again.exported
    assert again.path == first.path and again.path.stat().st_mtime_ns == first.path.stat().st_mtime_ns

    # Other weights under the same name: another key, another export, other features.
    other = calibrated_mobilenet(seed=2)
    save_official(other, b)
    changed = b.engine()
    assert changed.exported and changed.path != first.path and first.path.is_file()
    assert np.abs(changed.run(x) - features_by_predict(other, x)).max() < 1e-4
    assert np.abs(changed.run(x) - got).max() > 1e-2


def test_untrained_network_is_exported_but_not_cached(homes):
    b = backbones.get("keras_mobilenet_v2")
    before = set(paths.engines_dir().glob("*")) if paths.engines_dir().is_dir() else set()
    engine = b.engine(weights=None)
    assert engine.kind == "onnxruntime" and engine.exported
    assert engine.run(b.preprocess.normalise(pictures(2))).shape == (2, 1280)
    after = set(paths.engines_dir().glob("*")) if paths.engines_dir().is_dir() else set()
    assert after == before  # random weights differ at every build: nothing worth keeping


def tiny_keras_file(path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="predictions")(x)
    keras.Model(inputs, outputs).save(str(path))
    return path


def test_failed_export_runs_predict_and_embed_says_why(homes, tmp_path, monkeypatch):
    monkeypatch.setenv("NIPGBOARD_HOME", str(tmp_path / "home"))
    b = backbones.register_user_model(tiny_keras_file(tmp_path / "tiny.keras"), "tiny_keras",
                                      input_size=(32, 32))
    assert b.info.family == "keras-file" and b.info.feature_dim == 8
    paths.engines_dir().write_text("a file where the engine cache should be")  # the cache cannot be written

    with pytest.warns(RuntimeWarning, match="Keras predict"):
        engine = b.engine()
    assert engine.kind == "keras" and "ONNX Runtime engine unavailable" in engine.engine_note
    assert "FileExistsError" in engine.engine_note or "NotADirectoryError" in engine.engine_note
    x = b.preprocess.normalise(pictures(3, size=32))
    model = keras.models.load_model(str(tmp_path / "tiny.keras"), compile=False)
    expected = features_by_predict(model, x)
    assert np.abs(engine.run(x) - expected).max() < 1e-6

    images = tmp_path / "images"
    write_shapes(images, per_class=2, size=48)
    ingest(tmp_path / "run", images, folder_labels_from_subdirs=True)
    with pytest.warns(RuntimeWarning):
        result = embed(tmp_path / "run", "tiny_keras")
    assert result["engine"] == "keras" and result["extracted"] == 6
    assert "ONNX Runtime engine unavailable" in result["engine_note"]
    assert f"Warning: {result['engine_note']}." in render(result)

    # With a writable cache the same file is exported, and agrees with predict.
    os.unlink(paths.engines_dir())
    exported = b.engine()
    assert exported.kind == "onnxruntime" and exported.exported and exported.engine_note == ""
    assert np.abs(exported.run(x) - expected).max() < 1e-4


def test_another_backend_runs_predict_and_says_why(homes, tmp_path):
    """Keras on torch (KERAS_BACKEND or keras.json) cannot export: predict runs, the note says why."""
    pytest.importorskip("torch")
    model_path = tiny_keras_file(tmp_path / "tiny.keras")
    code = f"""
import json, numpy as np
from nipgboard_plugin import backbones
b = backbones.register_user_model({str(model_path)!r}, "tiny_torch_keras", input_size=(32, 32))
engine = b.engine()
x = b.preprocess.normalise(np.full((2, 32, 32, 3), 100, np.uint8))
print(json.dumps({{"kind": engine.kind, "note": engine.engine_note, "shape": list(engine.run(x).shape)}}))
"""
    env = {**os.environ, "KERAS_BACKEND": "torch", "NIPGBOARD_HOME": str(tmp_path / "home"),
           "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["kind"] == "keras" and got["shape"] == [2, 8]
    assert "TensorFlow backend, not torch" in got["note"] and "KERAS_BACKEND" in got["note"]
