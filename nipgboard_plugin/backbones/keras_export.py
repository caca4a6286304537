"""Keras networks on the TensorFlow backend, exported once to ONNX and run by ONNX Runtime.

tf2onnx converts the model's inference function, in the steps of its ``from_keras`` with two
changes that keep memory in bounds. Freezing takes its large-model path, which keeps the weights
out of the TensorFlow graph copies: ``from_keras`` took over 20 GB for VGG16 (4 GB for
DenseNet201), this takes 8 GB (2 GB). tf2onnx's own graph optimisers are skipped: they copy every
weight on each pass (over 13 GB for VGG16) and gain nothing here, since Grappler has folded the
batch norms before and ONNX Runtime removes the layout transposes itself when it loads the file.
The weights are put back inside the one .onnx file, one file per network as for torch networks.
(Keras's own ``model.export(format="onnx")`` is ``from_function`` with the default freezing: it
converts correctly but runs out of memory on VGG16 the same way.)

Every export is checked against Keras ``predict`` before it is kept; where export or ONNX Runtime
fails, ``predict`` runs and the engine's ``engine_note`` says why.
"""
import contextlib
import functools
import logging
import tempfile
from pathlib import Path

import numpy as np

from .onnx_engine import (DEFAULT_BATCH, ExportMismatch, atomic_engine_file, engine_path,
                          exported_engine, verify_against)

log = logging.getLogger(__name__)

OPSET = 17
# Accepted |onnx - predict| <= ATOL + RTOL * |predict|: float32 rounding, not another graph.
ATOL = RTOL = 1e-4
SLOWER = "Keras predict, about half as fast on a CPU"


class ExportUnavailable(RuntimeError):
    """This Keras model cannot be exported to ONNX (another backend, no tf2onnx, several inputs)."""


def keras_engine(name, build_model, feature_dim, input_shape, cache_key=None, kind="auto",
                 threads=None, batch_size_hint=DEFAULT_BATCH):
    """ONNX Runtime on the network's cached export, else Keras ``predict`` (with the reason).

    ``build_model()`` returns the Keras feature model; it is called only when the export is not
    cached yet (a cached file runs without importing Keras). ``cache_key`` names the engine file;
    None (untrained weights, different at every build) exports into a temporary file that is not
    kept. ``kind``: 'auto', 'onnxruntime' (fail rather than fall back) or 'keras' (``predict``).
    """
    from .keras_apps import KerasEngine

    if kind not in ("auto", "onnxruntime", "keras"):
        raise ValueError(f"kind must be 'auto', 'onnxruntime' or 'keras', not {kind!r}")
    model = functools.lru_cache(maxsize=None)(build_model)  # built at most once
    checks = []

    def export(path):
        checks.append(export_keras(model(), path, input_shape))

    def fallback(note):
        return KerasEngine(model(), feature_dim, batch_size_hint, engine_note=note)

    def engine_at(path):
        engine = exported_engine(name, path, export, fallback, feature_dim,
                                 onnx_only=kind == "onnxruntime", fallback_only=kind == "keras",
                                 threads=threads, batch_size_hint=batch_size_hint, slower=SLOWER)
        if engine.kind == "onnxruntime" and checks:
            engine.export_max_diff = checks[-1]
        return engine

    if cache_key is not None:
        return engine_at(engine_path(cache_key))
    with tempfile.TemporaryDirectory(prefix="nipgboard-keras-") as folder:
        # ONNX Runtime has read the file once the session exists.
        return engine_at(Path(folder) / "untrained.onnx")


def export_keras(model, path, input_shape) -> float:
    """Export ``model`` to ``path`` atomically; return the max abs difference to ``predict``.

    Raises :class:`ExportUnavailable` off the TensorFlow backend, :class:`ExportMismatch` when the
    export disagrees with ``predict`` beyond the tolerance.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ExportUnavailable(f"ONNX export needs Keras's TensorFlow backend, not {backend} "
                                "(unset KERAS_BACKEND or set it to tensorflow)")
    with atomic_engine_file(path) as tmp:
        write_onnx(model, tmp)
        diff = verify_against(lambda x: model.predict(x, batch_size=len(x), verbose=0), tmp,
                              input_shape, rtol=RTOL, atol=ATOL, what="Keras predict")
    log.info("exported %s to ONNX; max abs difference to Keras predict %.3g", model.name, diff)
    return diff


def write_onnx(model, path, opset=OPSET) -> None:
    """Convert a one-input Keras model (TensorFlow backend) to one ONNX file at ``path``."""
    try:
        import tensorflow as tf
        from tf2onnx import tf_loader
        from tf2onnx.convert import _convert_common
    except ImportError as exc:
        raise ExportUnavailable(f"ONNX export needs tf2onnx: pip install tf2onnx ({exc})") from None
    from onnx.external_data_helper import _get_all_tensors

    if len(model.inputs) != 1:
        raise ExportUnavailable(f"ONNX export takes one image input; this model has {len(model.inputs)}")
    spec = (tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="images"),)
    function = tf.function(lambda images: model(images, training=False),
                           input_signature=spec).get_concrete_function()
    inputs = [t.name for t in function.inputs if t.dtype != tf.resource]  # not the captured weights
    outputs = [t.name for t in function.outputs]
    with _numpy2_aliases(), _quiet("tf2onnx"):
        # tf2onnx.convert.from_keras's steps, with the large-model freezing and without its optimisers.
        frozen = tf_loader.convert_variables_to_constants_large_model(function)
        with tf.Graph().as_default():
            frozen = tf_loader.tf_optimize(inputs, outputs, frozen)  # Grappler folds batch norms
        proto, storage = _convert_common(frozen, name=model.name, opset=opset, input_names=inputs,
                                         output_names=outputs, large_model=True, optimizers={})
    for tensor in _get_all_tensors(proto):
        if tensor.data_location == tensor.EXTERNAL:
            location = {e.key: e.value for e in tensor.external_data}["location"]
            tensor.raw_data = storage.name_to_tensor_data.pop(location)
            del tensor.external_data[:]
            tensor.data_location = tensor.DEFAULT
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())


@contextlib.contextmanager
def _numpy2_aliases():
    # tf2onnx 1.17's large-model path still calls np.product, which numpy 2 removed.
    added = not hasattr(np, "product")
    if added:
        np.product = np.prod
    try:
        yield
    finally:
        if added:
            del np.product


@contextlib.contextmanager
def _quiet(logger_name):
    """The converter logs every folded node and its own fallbacks: noise for users."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


__all__ = ["ExportMismatch", "ExportUnavailable", "export_keras", "keras_engine", "write_onnx"]
