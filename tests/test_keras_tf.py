"""Keras networks on the TensorFlow backend: exported once to ONNX, checked against Keras `predict`,
cached by the weights file's hash, and `predict` (with the reason shown) where the export fails or
where it was measured faster on this machine.

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
from nipgboard_plugin.backbones.keras_export import (ENGINE_ENV, MARGIN, MAX_TIMING_BATCH, engine_versions,
                                                      predict_wins, speed_path, this_machine,
                                                      trusted_entry)
from nipgboard_plugin.backbones.speeds import machine
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

    # ONNX Runtime forced: which engine 'auto' picks is measured, see the tests at the end.
    first = b.engine(kind="onnxruntime")
    assert first.kind == "onnxruntime" and first.exported and first.engine_note == ""
    assert first.export_max_diff < 1e-4
    assert first.path.parent == paths.engines_dir()
    assert file_fingerprint(weights) in first.path.name and b.preprocess.signature() in first.path.name
    assert trusted_entry(speed_path(first.path)) is not None  # both engines timed at export

    x = b.preprocess.normalise(pictures(5, seed=7))
    expected = features_by_predict(model, x)
    got = first.run(x)
    assert got.shape == (5, 1280) and expected.std() > 1e-2
    assert np.abs(got - expected).max() < 1e-4

    again = b.engine(kind="onnxruntime")  # the cached file, no second export
    assert again.kind == "onnxruntime" and not again.exported
    assert again.path == first.path and again.path.stat().st_mtime_ns == first.path.stat().st_mtime_ns

    # Other weights under the same name: another key, another export, other features.
    other = calibrated_mobilenet(seed=2)
    save_official(other, b)
    changed = b.engine(kind="onnxruntime")
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
    exported = b.engine(kind="onnxruntime")
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


# --- the faster engine on this machine: timed at export, the figures kept beside the engine file ---

@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """A MobileNetV2 saved under the official name in homes of its own, exported once by 'auto'."""
    base = tmp_path_factory.mktemp("keras_timed")
    env = {"NIPGBOARD_HOME": str(base / "home"), "KERAS_HOME": str(base / "keras")}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        mp.delenv(ENGINE_ENV, raising=False)
        b = backbones.get("keras_mobilenet_v2")
        model = calibrated_mobilenet(seed=3)
        save_official(model, b)
        engine = b.engine()
        path = engine_path_of(b)
    return {"env": env, "backbone": b, "model": model, "engine": engine, "path": path,
            "record": speed_path(path)}


@pytest.fixture
def timed_net(timed, monkeypatch):
    for k, v in timed["env"].items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    return timed


def engine_path_of(b):
    return b.engine(kind="onnxruntime").path


def write_record(record, entries):
    record.write_text(json.dumps({"format": 1, "machines": entries}))


def entry_here(keras_ips, ort_ips):
    """This machine's entry as an export writes it, with chosen figures."""
    return {**this_machine(), "keras_predict_images_per_s": keras_ips, "onnxruntime_images_per_s": ort_ips,
            "batch_size": 32, "rounds": 2, "measured_at": 1.0, "date": "2024-01-02 03:04",
            "when": "at export", "versions": engine_versions()}


def test_export_times_both_engines_and_keeps_the_figures(timed_net):
    engine, record = timed_net["engine"], timed_net["record"]
    assert record.is_file() and record.parent == paths.engines_dir()
    data = json.loads(record.read_text())
    assert list(data["machines"]) == [machine()]
    entry = data["machines"][machine()]
    assert entry["onnxruntime_images_per_s"] > 0 and entry["keras_predict_images_per_s"] > 0
    assert entry["batch_size"] == min(32, MAX_TIMING_BATCH) and entry["rounds"] in (1, 2)
    assert entry["when"] == "at export" and 0 < entry["seconds"] < 60
    assert entry["cpu"] and entry["cpus"] >= 1 and entry["date"] and entry["versions"]["onnxruntime"]
    assert trusted_entry(record) == entry

    # 'auto' ran the one measured faster; the export was checked either way.
    assert engine.exported and engine.speeds == entry
    if predict_wins(entry):
        assert engine.kind == "keras" and engine.engine_note.startswith("Keras predict runs")
    else:
        assert engine.kind == "onnxruntime" and engine.engine_note == ""
        assert engine.export_max_diff < 1e-4


def test_record_saying_predict_is_faster_runs_predict(timed_net, tmp_path):
    b, model, path, record = (timed_net[k] for k in ("backbone", "model", "path", "record"))
    exported_at = path.stat().st_mtime_ns
    key = b.cache_key()
    write_record(record, {machine(): entry_here(13.6, 11.2)})

    engine = b.engine()
    assert engine.kind == "keras" and not engine.exported
    note = engine.engine_note
    assert note.startswith("Keras predict runs: on this machine it ran 13.6 images/s, ONNX Runtime 11.2")
    assert "batches of 32" in note and "2024-01-02" in note and f"{ENGINE_ENV}=onnxruntime" in note

    # The same features either way (the export was checked against predict), under the same key.
    x = b.preprocess.normalise(pictures(4, seed=11))
    by_predict, by_ort = engine.run(x), b.engine(kind="onnxruntime").run(x)
    assert np.abs(by_predict - features_by_predict(model, x)).max() < 1e-5
    assert np.abs(by_predict - by_ort).max() < 1e-4 and by_predict.std() > 1e-2
    assert b.cache_key() == key and path.stat().st_mtime_ns == exported_at  # not exported again
    assert json.loads(record.read_text())["machines"][machine()]["keras_predict_images_per_s"] == 13.6

    images = tmp_path / "images"
    write_shapes(images, per_class=1, size=48)
    ingest(tmp_path / "run", images, folder_labels_from_subdirs=True)
    result = embed(tmp_path / "run", "keras_mobilenet_v2")
    assert result["engine"] == "keras" and result["cache_key"] == key and result["extracted"] == 3
    assert result["engine_note"] == note and f"Engine: {note}." in render(result)

    # A lead under the margin is no reason to leave ONNX Runtime.
    write_record(record, {machine(): entry_here(round(11.2 * MARGIN - 0.1, 1), 11.2)})
    engine = b.engine()
    assert engine.kind == "onnxruntime" and engine.engine_note == "" and not engine.exported


@pytest.mark.parametrize("stale", ["another machine", "another cpu", "other versions"])
def test_record_from_another_machine_is_not_trusted(timed_net, stale):
    b, record = timed_net["backbone"], timed_net["record"]
    fast_predict = entry_here(500.0, 1.0)
    if stale == "another machine":
        entries = {"elsewhere": {**fast_predict, "machine": "elsewhere"}}
    elif stale == "another cpu":
        entries = {machine(): {**fast_predict, "cpu": "a CPU from another time"}}
    else:
        entries = {machine(): {**fast_predict, "versions": {"onnxruntime": "0.1", "keras": "0.1"}}}
    write_record(record, entries)
    assert trusted_entry(record) is None

    engine = b.engine()  # timed again here, kept beside the others' figures
    data = json.loads(record.read_text())["machines"]
    fresh = data[machine()]
    assert fresh["when"] == "at first use here" and fresh["keras_predict_images_per_s"] != 500.0
    assert trusted_entry(record) == fresh and engine.speeds == fresh
    assert engine.kind == ("keras" if predict_wins(fresh) else "onnxruntime")
    assert "500.0" not in engine.engine_note
    if stale == "another machine":
        assert data["elsewhere"]["keras_predict_images_per_s"] == 500.0


def test_forcing_either_engine(timed_net, monkeypatch):
    b, record = timed_net["backbone"], timed_net["record"]
    x = b.preprocess.normalise(pictures(2, seed=5))

    write_record(record, {machine(): entry_here(13.6, 11.2)})  # predict measured faster
    assert b.engine().kind == "keras"
    forced = b.engine(kind="onnxruntime")
    assert forced.kind == "onnxruntime" and forced.engine_note == ""
    monkeypatch.setenv(ENGINE_ENV, "onnxruntime")
    by_env = b.engine()
    assert by_env.kind == "onnxruntime" and by_env.engine_note == ""
    assert b.engine(kind="keras").kind == "keras"  # the argument before the variable

    write_record(record, {machine(): entry_here(11.2, 13.6)})  # ONNX Runtime measured faster
    monkeypatch.delenv(ENGINE_ENV)
    assert b.engine().kind == "onnxruntime"
    forced = b.engine(kind="keras")
    assert forced.kind == "keras" and forced.engine_note == ""
    monkeypatch.setenv(ENGINE_ENV, "Keras")
    by_env = b.engine()
    assert by_env.kind == "keras" and by_env.engine_note == ""
    assert np.abs(by_env.run(x) - forced.run(x)).max() < 1e-5
    assert np.abs(by_env.run(x) - b.engine(kind="onnxruntime").run(x)).max() < 1e-4
    # Forcing neither times nor rewrites the record.
    assert json.loads(record.read_text())["machines"][machine()]["onnxruntime_images_per_s"] == 13.6

    monkeypatch.setenv(ENGINE_ENV, "tensorrt")
    with pytest.raises(ValueError, match=ENGINE_ENV):
        b.engine()
