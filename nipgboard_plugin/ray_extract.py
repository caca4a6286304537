"""Feature extraction on a Ray cluster: decoding in Ray Data tasks, inference in a pool of actors.

This process (the driver) lists the images that have no features yet, exactly as the local path does,
and hands Ray Data their paths only. Tasks decode and resize them with the package's own decoding
(:func:`..features.decode_image`, so pixels and error messages equal the local path's); a pool of actors,
each holding one ONNX Runtime session, turns the pixels into features; the features stream back here
(``iter_batches``) and this process alone writes them into ``features.sqlite`` under the same keys,
one transaction per batch. Local and cluster work therefore share one cache and resume each other.

The ONNX file reaches the actors as bytes through Ray's object store, so no node needs the engine
cache; the images must be readable on every node at the path this process sees. Every node needs
this package, ONNX Runtime and Pillow installed (``pip install 'nipgboard-plugin[ray]'``).

A worker that dies is restarted (actors: ``max_restarts``, their batches retried with
``max_task_retries``; decoding tasks are retried by Ray Data); a batch that is stored twice is stored
under the same key, so nothing is corrupt or counted twice.
"""
import logging
import math
import os
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from .backbones.onnx_engine import CPU, CUDA, DeviceUnavailable, OrtEngine
from .errors import InvalidParameter, Unavailable
from .features import Progress, _engine, decode_image, draft_size

INSTALL = "pip install 'nipgboard-plugin[ray]' (or pip install 'ray[data]')"
CONNECT_TIMEOUT = 3.0       # seconds to reach a cluster's address before saying it cannot be reached
ACTOR_CPUS = 0.5            # Ray's logical CPUs per inference actor and per decoding task: half a
DECODE_CPUS = 0.5           # CPU each, so a one-CPU node runs an actor and a decoding task side by side
MAX_RESTARTS = 4            # an actor that dies is restarted this often ...
MAX_TASK_RETRIES = 4        # ... and its batch in flight tried again this often
BLOCK_BATCHES = 2           # batches per block handed to a decoding task

log = logging.getLogger(__name__)
_CONNECTED = {"address": None}


def import_ray():
    """The ``ray`` module, or :class:`Unavailable` saying what to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"--ray needs Ray, which is not installed here ({exc.name or exc}): {INSTALL}") from None
    return ray


def parse_address(address):
    """(host, port) of 'HOST:PORT' or 'ray://HOST:PORT' (Ray Client's default port 10001)."""
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, sep, port = rest.rpartition(":")
    if not sep and address.startswith("ray://"):
        host, port = rest, "10001"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidParameter(f"ray address {address!r}: expected 'local', 'auto', HOST:PORT (e.g. "
                               f"10.0.0.5:6379, the head node's port) or ray://HOST:10001")
    return host, int(port)


def check_reachable(address):
    """Raise :class:`Unavailable` within seconds when nothing listens at ``address``."""
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else (exc.strerror or str(exc))
        raise Unavailable(f"cannot reach the Ray cluster at {address}: {reason}. Start it with "
                          f"`ray start --head --port {port}` on {host} (and `ray start --address "
                          f"{host}:{port}` on every other machine), or check the address and the firewall.") from None


def connect(address):
    """Connect this process to Ray at ``address`` ('local', 'auto', HOST:PORT, ray://HOST:PORT), once.

    A process stays connected between runs (the plugin's worker embeds many times); asking for another
    address disconnects first. Returns the ``ray`` module."""
    ray = import_ray()
    if ray.is_initialized() and _CONNECTED["address"] == address:
        return ray
    if ray.is_initialized():
        ray.shutdown()
    if address not in ("local", "auto"):
        check_reachable(address)
    kwargs = dict(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
    if address == "local":
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError: all mean the same to a user
        if ray.is_initialized():
            ray.shutdown()
        hint = (" (no Ray cluster runs on this machine: start one with `ray start --head`, or give its "
                "address)" if address == "auto" else "")
        raise Unavailable(f"cannot connect to Ray at {address}: {_first_line(exc)}{hint}") from None
    _CONNECTED["address"] = address
    return ray


def _first_line(exc):
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def onnx_model(backbone):
    """The ONNX file that runs ``backbone`` here (exported first when needed)."""
    engine = _engine(backbone, "cpu")
    if not isinstance(engine, OrtEngine):
        raise Unavailable(f"network {backbone.id} runs in {getattr(engine, 'kind', type(engine).__name__)} here, "
                          "not ONNX Runtime; extraction on Ray needs an ONNX engine: run it without --ray")
    return engine.path


class DecodeImages:
    """A Ray Data batch function: paths in, pixels (uint8, the network's input size) and reasons out."""

    def __init__(self, root, prep):
        self.root, self.prep = Path(root), prep

    def __call__(self, batch):
        if not self.root.is_dir():
            import ray

            raise FileNotFoundError(f"the images folder {self.root} is not readable on the Ray node "
                                    f"{ray.util.get_node_ip_address()}: every node must see it at this path")
        h, w = self.prep.size
        n = len(batch["index"])
        pixels = np.zeros((n, h, w, 3), np.uint8)
        errors = []
        draft = draft_size(self.prep)
        for i, rel in enumerate(batch["path"]):
            px, err = decode_image(self.prep, self.root, str(rel), draft)
            if px is not None:
                pixels[i] = px
            errors.append(err or "")
        return {"index": batch["index"], "error": np.asarray(errors, dtype=object), "pixels": pixels}


class Infer:
    """A Ray Data actor: one ONNX Runtime session built from the model's bytes, kept for its life."""

    def __init__(self, model, prep, device, workers_per_node, use_gpu):
        import ray

        data = ray.get(model[0])  # the bytes, through the object store: no node needs the file
        fd, path = tempfile.mkstemp(suffix=".onnx", prefix="nipgboard-ray-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            threads = None if use_gpu else _threads(ray, workers_per_node)
            self.engine = OrtEngine(path, threads=threads, device=device)
        finally:
            os.unlink(path)  # the session holds the graph in memory
        self.prep = prep
        h, w = prep.size
        shape = (1, 3, h, w) if prep.layout == "NCHW" else (1, h, w, 3)
        self.dim = self.engine.run(np.zeros(shape, np.float32)).shape[1]  # also warms the session up
        self.worker = f"{ray.util.get_node_ip_address()}:{os.getpid()}"

    def __call__(self, batch):
        errors = batch["error"]
        good = np.array([not e for e in errors], dtype=bool)
        n = len(errors)
        vec = np.zeros((n, self.dim), np.float32)
        if good.any():
            vec[good] = self.engine.run(self.prep.normalise(batch["pixels"][good]))
        return {"index": batch["index"], "error": errors, "vec": vec,
                "device": np.asarray([self.engine.device] * n, dtype=object),
                "worker": np.asarray([self.worker] * n, dtype=object)}


def _threads(ray, workers_per_node):
    """ONNX Runtime threads of one actor: its share of its node's CPUs as Ray counts them."""
    node_id = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 1) for n in ray.nodes() if n["NodeID"] == node_id), 1)
    return max(1, int(cpus // max(1, workers_per_node)))


def cluster_figures(ray):
    """(alive nodes, CPUs, GPUs) of the cluster this process is connected to."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    res = ray.cluster_resources()
    return len(nodes), res.get("CPU", 0), res.get("GPU", 0)


def describe_address(ray, address):
    if address in ("local", "auto"):
        gcs = ray.get_runtime_context().gcs_address
        return f"{gcs} ({'started here' if address == 'local' else 'auto'})"
    return address


def extract_on_ray(backbone, key, root, todo, cache, batch_size, progress, should_stop, result, device,
                   address, workers=0):
    """Extract the features of ``todo`` ([(sha256, relative path)]) on Ray; fill ``result`` as the
    local path does, plus ``where`` and ``ray`` (address, workers, nodes, start-up seconds)."""
    t_start = time.time()
    ray = connect(address)
    model_path = onnx_model(backbone)
    n_nodes, n_cpus, n_gpus = cluster_figures(ray)
    if device == "cuda" and n_gpus < 1:
        raise DeviceUnavailable("device cuda: the Ray cluster has no GPU; use device cpu or auto")
    use_gpu = device == "cuda" or (device == "auto" and n_gpus >= 1)
    workers = min(int(workers) or max(1, int(n_gpus) if use_gpu else n_nodes), _blocks(len(todo), batch_size))
    per_node = math.ceil(workers / max(1, n_nodes))
    model_ref = ray.put(Path(model_path).read_bytes())
    where = f"Ray at {describe_address(ray, address)} with {workers} worker{'s' if workers != 1 else ''}"
    result.update(engine="onnxruntime", where=where, ray={
        "address": address, "workers": workers, "nodes": n_nodes, "cpus": n_cpus, "gpus": n_gpus,
        "startup_seconds": round(time.time() - t_start, 3), "workers_seen": 0})
    stream = _dataset(ray, root, todo, batch_size, backbone.preprocess, model_ref, device, workers, per_node,
                      use_gpu)
    devices, seen, failed = set(), set(), []
    delivered = np.zeros(len(todo), bool)  # a batch retried after its first result arrived counts once
    t0 = time.time()
    done = 0
    batches = iter(stream.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2))
    if progress:  # say where it runs while the actors load the network
        progress(Progress(0, len(todo), 0.0, f"{where}, {'cuda' if use_gpu else 'cpu'}"))
    try:
        for batch in _stream(batches, address):
            new = ~delivered[batch["index"]]
            idx, errors, vec = batch["index"][new], batch["error"][new], batch["vec"][new]
            delivered[idx] = True
            good = np.array([not e for e in errors], dtype=bool)
            hashes = [todo[i][0] for i in idx[good]]
            bad = [(int(i), todo[i][0], str(e)) for i, e in zip(idx[~good], errors[~good])]
            cache.add_batch(key, hashes, vec[good], [(sha, err) for _, sha, err in bad])
            failed += [(i, err) for i, _, err in bad]
            devices.update(batch["device"])
            seen.update(batch["worker"])
            done += len(idx)
            result["extracted"] += len(hashes)
            if progress:
                progress(Progress(done, len(todo), time.time() - t0, f"{where}, {_device(devices)}"))
            if should_stop and should_stop():
                result["stopped"] = True
                break
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()  # stops the dataset's execution and its actors
    result["failed"] = [err for _, err in sorted(failed)]  # in the order the local path reports them
    result["device"] = _device(devices) if devices else ("cuda" if use_gpu else "cpu")
    result["providers"] = [CUDA, CPU] if result["device"] == "cuda" else [CPU]
    result["device_note"] = f"{result['device']} on the Ray workers"
    result["device_fallback"] = use_gpu and result["device"] != "cuda"
    result["ray"]["workers_seen"] = len(seen)
    result["ray"]["seconds"] = round(time.time() - t0, 3)


def _device(devices):
    return "+".join(sorted(devices)) if devices else ""


def _stream(batches, address):
    """The batches, with Ray's failures turned into a message for the user."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:
            disconnect()  # the next call connects afresh (the cluster may have gone)
            if isinstance(exc, (InvalidParameter, Unavailable)):
                raise
            raise Unavailable(f"extraction on Ray at {address} failed: {reason(exc)}") from exc
        yield batch


def disconnect():
    import ray

    if ray.is_initialized():
        ray.shutdown()
    _CONNECTED["address"] = None


_ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$", re.M)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def reason(exc):
    """What went wrong, from a Ray error: the first error a worker raised, not Ray's wrapping of it."""
    seen, chain = set(), []
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    for e in chain:
        for name, message in _ERROR_LINE.findall(_ANSI.sub("", str(e))):
            if not name.startswith("ray."):
                return message.strip()[:300]
    return _first_line(chain[0])


def _dataset(ray, root, todo, batch_size, prep, model_ref, device, workers, per_node, use_gpu):
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress lines would mix with ours
    items = [{"index": i, "path": rel} for i, (_sha, rel) in enumerate(todo)]
    ds = ray.data.from_items(items, override_num_blocks=_blocks(len(items), batch_size))
    ds = ds.map_batches(_decode_task, fn_kwargs={"root": str(root), "prep": prep}, batch_size=batch_size,
                        batch_format="numpy", num_cpus=DECODE_CPUS)
    with warnings.catch_warnings():
        # Ray Data still takes an actor's retry settings as keyword arguments, and warns that it will not.
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(
            Infer, fn_constructor_kwargs={"model": [model_ref], "prep": prep, "device": device,
                                          "workers_per_node": per_node, "use_gpu": use_gpu},
            batch_size=batch_size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=ACTOR_CPUS, num_gpus=1 if use_gpu else 0,
            max_restarts=MAX_RESTARTS, max_task_retries=MAX_TASK_RETRIES)


def _blocks(n, batch_size):
    return max(1, math.ceil(n / (batch_size * BLOCK_BATCHES)))


def _decode_task(batch, root, prep):
    return DecodeImages(root, prep)(batch)
