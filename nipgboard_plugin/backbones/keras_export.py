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

Which of the two is faster depends on the CPU: TensorFlow's oneDNN uses AVX-512 better than ONNX
Runtime's kernels, so on such a CPU ``predict`` can win (VGG16), elsewhere ONNX Runtime wins
(1.6-1.9x). So when an export is kept, both engines are timed on the same random batch (one warm-up
each, then :data:`TIMED_ROUNDS` batches each, taken in turn so that other load falls on both alike)
and the figures are kept beside the engine file (:func:`speed_path`), per machine. Later loads on
this machine run ``predict`` where it was at least :data:`MARGIN` times as fast (``engine_note``
gives the figures), else ONNX Runtime. A record from another machine, another CPU or core count, or
other engine versions is not trusted: the engines are timed again (once) on this machine. Both
engines give the same features (within the export check's tolerance), so the features' cache key
does not depend on which runs. ``kind`` or ``$NIPGBOARD_KERAS_ENGINE`` ('onnxruntime', 'keras')
forces one.
"""
import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import atomic
from .onnx_engine import (DEFAULT_BATCH, ExportMismatch, atomic_engine_file,
                          choose_providers, current_device, engine_path, exported_engine,
                          usable_cpus, verify_against)
from .speeds import machine

log = logging.getLogger(__name__)

OPSET = 17
# Accepted |onnx - predict| <= ATOL + RTOL * |predict|: float32 rounding, not another graph.
ATOL = RTOL = 1e-4
SLOWER = "Keras predict, often slower on a CPU"

KINDS = ("auto", "onnxruntime", "keras")
ENGINE_ENV = "NIPGBOARD_KERAS_ENGINE"  # forces an engine where ``kind`` is 'auto'
# Keras predict runs instead of ONNX Runtime when it was measured at least this much faster: a smaller
# lead is within the noise of a batch or two timed on a busy machine.
MARGIN = 1.10
TIMED_ROUNDS = 2          # timed batches per engine, after one warm-up batch each
# Past this many seconds (warm-ups included) one timed round is enough.
TIMING_BUDGET_S = 5.0
# From 16 images on, a call's own cost (milliseconds) is small beside the images' (tens of ms each),
# and 16 halves the time of 32: VGG16 runs about 1.2 s a batch of 16 on 2 cores.
MAX_TIMING_BATCH = 16
RECORD_FORMAT = 1
KEPT_MACHINES = 16        # machine entries kept in one record (containers get new host names)


class ExportUnavailable(RuntimeError):
    """This Keras model cannot be exported to ONNX (another backend, no tf2onnx, several inputs)."""


def keras_engine(name, build_model, feature_dim, input_shape, cache_key=None, kind="auto",
                 threads=None, batch_size_hint=DEFAULT_BATCH):
    """The faster engine on this machine: ONNX Runtime on the network's cached export, or ``predict``.

    ``build_model()`` returns the Keras feature model; it is called only when needed (a cached file
    that ONNX Runtime runs loads without Keras). ``cache_key`` names the engine file; None
    (untrained weights, different at every build) exports into a temporary file that is not kept,
    nor timed: ONNX Runtime runs it. ``kind``: 'auto' (the engine measured faster here, see the
    module's docstring; ``$NIPGBOARD_KERAS_ENGINE`` may force one), 'onnxruntime' (fail rather than
    fall back) or 'keras' (``predict``). Export or ONNX Runtime failing falls back to ``predict``.
    """
    from .keras_apps import KerasEngine

    kind = engine_kind(kind)
    model = functools.lru_cache(maxsize=None)(build_model)  # built at most once
    checks = []

    def export(path):
        checks.append(export_keras(model(), path, input_shape))

    def fallback(note):
        return KerasEngine(model(), feature_dim, batch_size_hint, engine_note=note)

    def by_predict(entry, exported=False):
        engine = KerasEngine(model(), feature_dim, batch_size_hint, engine_note=predict_note(entry))
        engine.exported = exported
        engine.speeds = entry
        log.info("%s: %s", name, engine.engine_note)
        return engine

    def engine_at(path):
        record = speed_path(path)
        entry = trusted_entry(record) if kind == "auto" and path.is_file() else None
        predict_ok = True
        if entry is not None and predict_wins(entry) and _ort_on_cpu():
            try:
                return by_predict(entry)
            except Exception as exc:  # Keras gone since the record was made: ONNX Runtime runs
                predict_ok = False
                log.info("%s: Keras predict was measured faster but cannot run (%s); "
                         "running ONNX Runtime", name, exc)
        engine = exported_engine(name, path, export, fallback, feature_dim,
                                 onnx_only=kind == "onnxruntime", fallback_only=kind == "keras",
                                 threads=threads, batch_size_hint=batch_size_hint, slower=SLOWER)
        if engine.kind != "onnxruntime":
            return engine
        if checks:
            engine.export_max_diff = checks[-1]
        if cache_key is None or engine.device != "cpu":
            return engine  # nothing kept to record beside; a GPU is not what was compared
        if checks or (kind == "auto" and entry is None and _predict_can_run()):
            try:
                entry = time_engines(engine, KerasEngine(model(), feature_dim), input_shape,
                                     min(batch_size_hint, MAX_TIMING_BATCH))
            except Exception as exc:  # timing is an optimisation: never fail the engine for it
                log.info("%s: could not time Keras predict against ONNX Runtime (%s)", name, exc)
                return engine
            entry["when"] = "at export" if checks else "at first use here"
            write_entry(record, entry)
        engine.speeds = entry
        if kind == "auto" and predict_ok and entry is not None and predict_wins(entry):
            return by_predict(entry, exported=bool(checks))
        return engine

    if cache_key is not None:
        return engine_at(engine_path(cache_key))
    with tempfile.TemporaryDirectory(prefix="nipgboard-keras-") as folder:
        # ONNX Runtime has read the file once the session exists.
        return engine_at(Path(folder) / "untrained.onnx")


def engine_kind(kind="auto") -> str:
    """``kind``, or where it is 'auto' the one ``$NIPGBOARD_KERAS_ENGINE`` forces (default 'auto')."""
    if kind not in KINDS:
        raise ValueError(f"kind must be 'auto', 'onnxruntime' or 'keras', not {kind!r}")
    if kind == "auto":
        forced = os.environ.get(ENGINE_ENV, "").strip().lower() or "auto"
        if forced not in KINDS:
            raise ValueError(f"{ENGINE_ENV} must be auto, onnxruntime or keras, not {forced!r}")
        return forced
    return kind


# --- which engine is faster here: timed once, kept beside the engine file ---------------------------

def speed_path(path) -> Path:
    """The record of both engines' speeds for the engine file ``path``."""
    path = Path(path)
    return path.with_name(path.stem + ".speed.json")


def time_engines(ort_engine, keras_engine_, input_shape, batch_size) -> dict:
    """Images/s of both engines on one random batch: a warm-up each, then batches in turn.

    The order alternates from round to round, so neither engine always follows the other; past
    :data:`TIMING_BUDGET_S` no further round starts.
    """
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape)).astype(np.float32)
    engines = {"onnxruntime": ort_engine.run, "keras_predict": keras_engine_.run}
    started = time.perf_counter()
    for run in engines.values():
        run(x)  # graph tracing, ONNX Runtime's first allocations
    seconds = dict.fromkeys(engines, 0.0)
    order, rounds = list(engines), 0
    while rounds < TIMED_ROUNDS and (rounds == 0 or time.perf_counter() - started < TIMING_BUDGET_S):
        for key in order:
            t = time.perf_counter()
            engines[key](x)
            seconds[key] += time.perf_counter() - t
        order.reverse()
        rounds += 1
    entry = {f"{key}_images_per_s": round(rounds * batch_size / max(s, 1e-9), 2)
             for key, s in seconds.items()}
    entry.update(this_machine())
    entry.update(batch_size=int(batch_size), rounds=rounds,
                 seconds=round(time.perf_counter() - started, 2), measured_at=round(time.time(), 1),
                 date=time.strftime("%Y-%m-%d %H:%M"), versions=engine_versions())
    return entry


def this_machine() -> dict:
    """What a record must match to be trusted here: the host, its CPU and the cores we may use."""
    return {"machine": machine(), "cpu": cpu_name(), "cpus": usable_cpus()}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


VERSIONED = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino",
                             "onnxruntime-directml"),
             "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-intel", "tensorflow-macos",
                            "tf-nightly"),
             "keras": ("keras",)}


def engine_versions() -> dict:
    """Installed versions of what the figures depend on (read from metadata, nothing imported)."""
    found = {}
    for package, distributions in VERSIONED.items():
        for dist in distributions:
            try:
                found[package] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return found


def read_record(record) -> dict:
    try:
        data = json.loads(Path(record).read_text())
    except (OSError, ValueError):
        return {"format": RECORD_FORMAT, "machines": {}}
    if not isinstance(data, dict) or not isinstance(data.get("machines"), dict):
        return {"format": RECORD_FORMAT, "machines": {}}
    return data


def trusted_entry(record):
    """This machine's entry in ``record`` when it still describes this machine, else None."""
    entry = read_record(record)["machines"].get(machine())
    if not isinstance(entry, dict):
        return None
    here = this_machine()
    if any(entry.get(k) != v for k, v in here.items()) or entry.get("versions") != engine_versions():
        return None
    try:
        if float(entry["onnxruntime_images_per_s"]) > 0 and float(entry["keras_predict_images_per_s"]) > 0:
            return entry
    except (KeyError, TypeError, ValueError):
        pass
    return None


def write_entry(record, entry) -> bool:
    """Keep ``entry`` as this machine's in ``record`` (others kept, the oldest dropped past a few)."""
    data = read_record(record)
    machines = {k: v for k, v in data["machines"].items() if isinstance(v, dict)}
    machines[entry["machine"]] = entry
    newest = sorted(machines, key=lambda k: _number(machines[k].get("measured_at")), reverse=True)
    data = {"format": RECORD_FORMAT, "machines": {k: machines[k] for k in newest[:KEPT_MACHINES]}}
    try:
        atomic.write_text(record, json.dumps(data, indent=1, sort_keys=True))
    except OSError as exc:  # a read-only cache: the figures still choose for this process
        log.info("could not keep the engine speeds in %s (%s)", record, exc)
        return False
    return True


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def predict_wins(entry) -> bool:
    return float(entry["keras_predict_images_per_s"]) >= MARGIN * float(entry["onnxruntime_images_per_s"])


def predict_note(entry) -> str:
    return (f"Keras predict runs: on this machine it ran {float(entry['keras_predict_images_per_s']):.1f} "
            f"images/s, ONNX Runtime {float(entry['onnxruntime_images_per_s']):.1f} (batches of "
            f"{entry.get('batch_size')}, measured {entry.get('when', 'here')}, {entry.get('date', '')}; "
            f"{ENGINE_ENV}=onnxruntime runs ONNX Runtime)")


def _ort_on_cpu() -> bool:
    """Whether ONNX Runtime would run on the CPU here (the figures compare CPU engines)."""
    try:
        providers, _ = choose_providers(current_device())
    except Exception:
        return False
    return providers == ["CPUExecutionProvider"]


def _predict_can_run() -> bool:
    """Keras on TensorFlow is there (checked without importing it): the figures are for that."""
    from .keras_apps import keras_backend, keras_problem

    return keras_backend() == "tensorflow" and not keras_problem()


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


__all__ = ["ExportMismatch", "ExportUnavailable", "engine_kind", "export_keras", "keras_engine",
           "speed_path", "time_engines", "trusted_entry", "write_onnx"]
