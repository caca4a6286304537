"""The inference engines: ONNX Runtime first, eager PyTorch as the fallback.

A torch network is exported to ONNX once and the file is reused by every later run
(and every dataset): its name carries the backbone's cache key, so new weights or a new
preprocessing give a new file and never a stale one. The export is written to a temporary
file and renamed into place, so a killed export leaves no half-written engine behind.

Where ``onnxruntime-gpu`` and a GPU are there, ONNX Runtime runs on CUDA (:func:`choose_providers`);
the device asked for is ``device=`` or, for engines built by a backbone, :func:`use_device`. The
engine reports the device that actually ran (ONNX Runtime falls back to the CPU without raising when
the CUDA libraries fail to load). Features are the same within float tolerance on either device, so
the engine file and the feature cache key do not depend on it.
"""
import contextlib
import contextvars
import functools
import logging
import os
import re
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .. import paths
from ..errors import Unavailable
from .base import NetworkUnavailable

log = logging.getLogger(__name__)

# Bump when the exported graph changes for the same weights and preprocessing.
ENGINE_FORMAT = 1
DEFAULT_BATCH = 32
# Temp files older than this are left over from a killed export, not one in progress.
STALE_TEMP_SECONDS = 3600

DEVICES = ("auto", "cpu", "cuda")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
CUDA_HELP = ("install onnxruntime-gpu in place of onnxruntime (pip uninstall onnxruntime; "
             "pip install onnxruntime-gpu) and check the NVIDIA driver (nvidia-smi) and the CUDA "
             "and cuDNN libraries that this onnxruntime-gpu release requires")


class DeviceUnavailable(Unavailable):
    """``--device cuda`` was asked for and ONNX Runtime cannot run on CUDA here."""


def choose_providers(device="auto", available=None):
    """(ONNX Runtime providers to ask for, a sentence on the choice) for ``device``.

    'auto': CUDA first when this ONNX Runtime has the CUDA provider, else the CPU; 'cpu': the CPU
    only; 'cuda': CUDA (with the CPU for the operators CUDA lacks), or :class:`DeviceUnavailable`
    when the provider is missing: an explicit request never falls back silently to a slower device.
    ``available`` defaults to ``onnxruntime.get_available_providers()``.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    has_cuda = CUDA in available
    if device == "cpu":
        return [CPU], "cpu (asked for)"
    if has_cuda:
        return [CUDA, CPU], "cuda (CUDAExecutionProvider)"
    if device == "cuda":
        raise DeviceUnavailable(
            "device cuda: this ONNX Runtime has no CUDA provider (it offers "
            f"{', '.join(available) or 'none'}); {CUDA_HELP}. Or use device cpu or auto.")
    return [CPU], "cpu (no CUDA provider in this ONNX Runtime; install onnxruntime-gpu for a GPU)"


_DEVICE = contextvars.ContextVar("nipgboard_ort_device", default="auto")


@contextlib.contextmanager
def use_device(device):
    """ONNX Runtime engines built inside this block (by any backbone) run on ``device``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    token = _DEVICE.set(device)
    try:
        yield
    finally:
        _DEVICE.reset(token)


def current_device() -> str:
    return _DEVICE.get()


class OrtEngine:
    """Runs an ONNX file with ONNX Runtime, on CUDA where asked for and possible, else the CPU.

    ``device`` ('auto', 'cpu', 'cuda'; default: the one set by :func:`use_device`, else 'auto').
    After loading, ``device`` is the one that runs ('cpu' or 'cuda'), ``providers`` ONNX Runtime's
    list and ``device_note`` a sentence on why. ``available``: the providers to choose from
    (default: ONNX Runtime's list).
    """

    kind = "onnxruntime"
    engine_note = ""

    def __init__(self, path, feature_dim=None, batch_size_hint=DEFAULT_BATCH, threads=None,
                 exported=False, device=None, available=None):
        import onnxruntime as ort

        requested = device or current_device()
        providers, note = choose_providers(requested, available)
        opts = ort.SessionOptions()
        # One big convolution at a time uses all cores best; parallel branches would compete.
        opts.intra_op_num_threads = threads or usable_cpus()
        opts.inter_op_num_threads = 1
        # ONNX Runtime's threads busy-wait between operators by default: a core spent that the decoding
        # threads (and, on a shared machine, everyone else) need. Off, the whole embed path and the engine
        # alone both ran 10-20% faster on 2 busy cores (bench/panel_path.py); NIPGBOARD_ORT_SPINNING=1
        # turns it back on.
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning())
        opts.add_session_config_entry("session.inter_op.allow_spinning", spinning())
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), opts, providers=providers)
        self.providers = list(self.session.get_providers())
        self.requested_device = requested
        self.device = "cuda" if CUDA in self.providers else "cpu"
        if CUDA in providers and self.device != "cuda":
            # ONNX Runtime dropped CUDA while loading (driver, CUDA or cuDNN missing) and said so
            # only in its log.
            if requested == "cuda":
                raise DeviceUnavailable(f"device cuda: ONNX Runtime could not load its CUDA provider; "
                                        f"{CUDA_HELP}. Or use device cpu or auto.")
            note = ("cpu: ONNX Runtime's CUDA provider failed to load (check the NVIDIA driver and the "
                    "CUDA and cuDNN libraries)")
            log.warning("ONNX Runtime's CUDA provider failed to load; running on the CPU")
        self.device_note = note
        self.device_fallback = CUDA in providers and self.device != "cuda"  # CUDA tried, the CPU runs
        self.input_name = self.session.get_inputs()[0].name
        self.path = Path(path)
        self.feature_dim = feature_dim
        self.batch_size_hint = batch_size_hint
        self.exported = exported  # True when this engine's file was exported just now

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0 and self.feature_dim:
            return np.zeros((0, self.feature_dim), np.float32)
        out = self.session.run(None, {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)


class TorchEngine:
    """Eager PyTorch, used when export or ONNX Runtime fails."""

    kind = "torch"
    device = "cpu"
    providers = ()
    device_note = "cpu (eager PyTorch)"
    device_fallback = False

    def __init__(self, module, feature_dim=None, batch_size_hint=DEFAULT_BATCH, engine_note=""):
        self.module = module.eval()
        self.feature_dim = feature_dim
        self.batch_size_hint = batch_size_hint
        self.exported = False
        self.engine_note = engine_note  # why ONNX Runtime is not running, when it fell back

    def run(self, batch: np.ndarray) -> np.ndarray:
        import torch

        if len(batch) == 0 and self.feature_dim:
            return np.zeros((0, self.feature_dim), np.float32)
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            out = self.module(x)
        return out.numpy().astype(np.float32, copy=False).reshape(len(batch), -1)


def spinning() -> str:
    """'1' when ONNX Runtime's threads may busy-wait between operators ($NIPGBOARD_ORT_SPINNING), else '0'."""
    return "1" if os.environ.get("NIPGBOARD_ORT_SPINNING", "0").strip().lower() in ("1", "true", "yes", "on") else "0"


def usable_cpus() -> int:
    """CPUs this process may run on (a container's affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def engine_path(cache_key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", cache_key)
    return paths.engines_dir() / f"{safe}-v{ENGINE_FORMAT}.onnx"


def export_onnx(module, input_shape, path: Path) -> None:
    """Export ``module`` (eval mode) with a dynamic batch axis, atomically, to ``path``.

    ``input_shape`` is (C, H, W) or (H, W, C): one image without the batch axis.
    """
    import torch

    module = module.eval()
    example = torch.zeros((2, *input_shape), dtype=torch.float32)
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    try:
        # The exporter warns about absent torchvision ops and deprecations: noise for users.
        exporter_log.setLevel(logging.ERROR)
        with atomic_engine_file(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _export_dynamo(module, example, tmp)
            except Exception as exc:  # the TorchScript exporter still handles some graphs
                first_line = (str(exc).strip().splitlines() or [repr(exc)])[0]
                log.info("torch.export-based ONNX export failed (%s); trying TorchScript", first_line)
                _export_torchscript(module, example, tmp)
            verify_export(module, tmp, input_shape)
    finally:
        exporter_log.setLevel(level)


@contextlib.contextmanager
def atomic_engine_file(path: Path):
    """Yield a temporary file beside ``path``; it becomes ``path`` only if the block succeeds.

    A killed export leaves a temporary file that a later export sweeps once it is stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # engines are shared; mkstemp creates 0600
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class ExportMismatch(RuntimeError):
    """The exported graph computes something else than the module (e.g. a traced constant)."""


def verify_export(module, onnx_path, input_shape, rtol=1e-3, atol=1e-3) -> float:
    """Run the export and the torch module on the same random batch; raise if they disagree."""
    import torch

    def reference(x):
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return verify_against(reference, onnx_path, input_shape, rtol, atol, "the torch module")


def verify_against(reference, onnx_path, input_shape, rtol=1e-3, atol=1e-3, what="the model") -> float:
    """Max abs difference between the export and ``reference(batch)`` on a random batch of 3.

    Raises :class:`ExportMismatch` when they disagree beyond the tolerance. The batch size differs
    from the export example's, which also checks the dynamic batch axis.
    """
    x = np.random.default_rng(0).standard_normal((3, *input_shape)).astype(np.float32)
    expected = np.asarray(reference(x), dtype=np.float32).reshape(3, -1)
    got = OrtEngine(onnx_path, device="cpu").run(x)  # the check is the graph, not the device
    if got.shape != expected.shape or not np.allclose(got, expected, rtol=rtol, atol=atol):
        diff = np.abs(got - expected).max() if got.shape == expected.shape else float("inf")
        raise ExportMismatch(f"ONNX export differs from {what} (max abs diff {diff:.3g})")
    return float(np.abs(got - expected).max())


def _export_dynamo(module, example, out):
    import torch

    program = torch.onnx.export(
        module, (example,), dynamo=True, verbose=False, external_data=False,
        input_names=["images"], output_names=["features"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    program.save(out, external_data=False)


def _export_torchscript(module, example, out):
    import torch

    torch.onnx.export(
        module, (example,), out, dynamo=False, opset_version=17,
        input_names=["images"], output_names=["features"],
        dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
    )


def _remove_stale_temps(folder: Path) -> None:
    now = time.time()
    for tmp in folder.glob("*.tmp"):
        try:
            if now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass  # another process removed or is renaming it


def torch_engine(backbone, build_module, kind="auto", threads=None,
                 batch_size_hint=DEFAULT_BATCH):
    """The fastest engine for a torch network.

    ``build_module()`` returns the eval-mode feature extractor (called only when needed:
    a cached ONNX file runs without loading torch). ``kind`` is 'auto', 'onnxruntime'
    (fail rather than fall back) or 'torch' (eager, e.g. to compare with the export).
    ONNX Runtime runs on the device set by :func:`use_device`; a 'cuda' that cannot be honoured
    raises :class:`DeviceUnavailable` rather than falling back to eager PyTorch.
    """
    if kind not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"kind must be 'auto', 'onnxruntime' or 'torch', not {kind!r}")
    dim = backbone.info.feature_dim
    module = functools.lru_cache(maxsize=None)(build_module)  # built at most once, and only if needed
    shape = _input_shape(backbone.preprocess)
    return exported_engine(
        backbone.id, engine_path(backbone.cache_key()), lambda path: export_onnx(module(), shape, path),
        lambda note: TorchEngine(module(), dim, batch_size_hint, note), dim,
        onnx_only=kind == "onnxruntime", fallback_only=kind == "torch", threads=threads,
        batch_size_hint=batch_size_hint, slower="eager PyTorch, which is several times slower")


def exported_engine(name, path, export, fallback, dim, onnx_only=False, fallback_only=False,
                    threads=None, batch_size_hint=DEFAULT_BATCH, slower="the framework itself"):
    """ONNX Runtime on the engine file ``path``, exported first by ``export(path)`` when absent.

    ``fallback(note)`` builds the framework's own engine, used when export or ONNX Runtime fails
    (``note`` says why, for the user) or at once when ``fallback_only``; ``onnx_only`` raises
    instead of falling back. An unreadable cached file is exported afresh once.
    """
    if fallback_only:
        return fallback("")
    if current_device() == "cuda":
        choose_providers("cuda")  # before an export that could not run anyway
    try:
        exported = False
        if not path.is_file():
            export(path)
            exported = True
        try:
            return OrtEngine(path, dim, batch_size_hint, threads, exported)
        except DeviceUnavailable:
            raise
        except Exception:
            if exported:
                raise
            # An unreadable cached file (disk trouble, foreign copy): export it afresh once.
            log.warning("cached engine %s is unreadable; exporting it again", path)
            export(path)
            return OrtEngine(path, dim, batch_size_hint, threads, exported=True)
    except (NetworkUnavailable, DeviceUnavailable):
        raise
    except Exception as exc:
        if onnx_only:
            raise
        note = f"ONNX Runtime engine unavailable ({failure_text(exc)}); running {slower}"
        warnings.warn(f"{name}: {note}", RuntimeWarning)
        return fallback(note)


def failure_text(exc) -> str:
    """One line on why something failed, for users: the exception's type and first line."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _input_shape(pre):
    h, w = pre.size
    return (3, h, w) if pre.layout == "NCHW" else (h, w, 3)
