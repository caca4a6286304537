"""Batched feature extraction with a cache keyed by (image content, network, preprocessing).

Decoding and resizing run in a thread pool (Pillow releases the GIL) and stay a
couple of batches ahead of inference, so the engine never waits for pixels.
Every batch is committed to ``features.sqlite`` in one transaction: a run stopped
by Ctrl-C or ``kill -9`` loses at most the batch in flight, never leaves a
corrupt entry, and the next run extracts only what is missing.

``device`` ('auto', 'cpu', 'cuda') picks where ONNX Runtime runs; the result says which one ran.
The cache key does not depend on it: features agree across devices within float tolerance.

``ray`` (an address) runs the extraction on a Ray cluster instead (:mod:`.ray_extract`): the same
decoding, the same cache and keys, this process the one writer. ``result["where"]`` says which ran.
"""
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import backbones, imaging, paths
from .backbones.base import NetworkUnavailable
from .backbones.onnx_engine import DEVICES, DeviceUnavailable, use_device
from .errors import InvalidParameter, MissingStep
from .feature_store import FeatureStore, cached_count, cached_per_network
from .store import Store

__all__ = ["FeaturesMissing", "Progress", "cached_count", "cached_per_network", "embed", "extracting",
           "load_features", "resolve_backbone"]


class FeaturesMissing(MissingStep):
    """Some image has no features for the network yet: run ``embed`` first."""


def resolve_backbone(network_id):
    """The backbone of a network that can run here (NotFound / Unavailable say why not)."""
    from .params import check_network

    return backbones.get(check_network(network_id))


@dataclass
class Progress:
    done: int
    total: int
    seconds: float
    where: str = ""   # 'local, cpu' or 'Ray at HOST:PORT with 2 workers, cpu'

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float:
        return (self.total - self.done) / self.rate if self.rate > 0 else float("nan")


_EXTRACTING = [0]             # extractions running in this process now
_EXTRACTING_LOCK = threading.Lock()


def extracting() -> bool:
    """Whether this process is extracting features now (the job worker keeps its warm-up out of the way)."""
    return _EXTRACTING[0] > 0


class _Extraction:
    def __init__(self, step=1):
        self.step = step

    def __enter__(self):
        with _EXTRACTING_LOCK:
            _EXTRACTING[0] += self.step

    def __exit__(self, *exc):
        with _EXTRACTING_LOCK:
            _EXTRACTING[0] -= self.step


def paused_extraction():
    """A context in which this process's extraction counts as stopped: for work between two batches
    that compiles (UMAP's fit), which the worker's paused background compile would otherwise block."""
    return _Extraction(-1)


def embed(logdir, network_id, batch_size=32, progress=None, should_stop=None, decode_threads=2,
          device="auto", ray=None, ray_workers=0, only=None):
    """Extract and cache features of every image of the dataset that has none for this network yet.

    ``progress(Progress)`` is called after every batch; ``should_stop()`` returning True stops after
    the current batch (what was done stays cached). ``device``: where ONNX Runtime runs ('auto':
    CUDA when there, else the CPU). Returns a summary dict; when an engine ran, ``device`` says
    where ('cpu' or 'cuda'; None for engines that do not report it, e.g. Keras), ``providers``
    ONNX Runtime's providers, ``device_note`` why, and ``device_fallback`` is True when CUDA was
    tried and failed to load (so the CPU ran). ``engine_note`` says why the network's framework
    runs instead of ONNX Runtime, when it does ('' otherwise).

    ``ray``: None, '' or 'off' extract here; 'local' (a Ray started on this machine), 'auto' (the
    cluster this machine joined), 'HOST:PORT' or 'ray://HOST:PORT' extract on that Ray cluster with
    ``ray_workers`` inference actors (0: one per node). ``where`` says which ran ('local' or 'Ray at
    ADDRESS with N workers') and ``ray`` holds the cluster's figures (None when local).

    ``only``: image ids to embed (in the order given) instead of every image; ``images`` and
    ``cached_before`` then count those alone.
    """
    if device not in DEVICES:
        raise InvalidParameter(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    on_ray = bool(ray) and ray.strip().lower() not in RAY_OFF
    started = time.time()
    backbone = resolve_backbone(network_id)
    key = backbone.cache_key()
    with Store(logdir) as store:
        rows = store.image_rows("id, sha256, path")
        root = store.images_root()
    if only is not None:
        by_id = {r[0]: r for r in rows}
        rows = [by_id[i] for i in only if i in by_id]
    cache = FeatureStore(logdir)
    try:
        cached = cache.hashes(key)
        todo, seen = [], set()
        for _image_id, sha, rel in rows:
            if sha not in cached and sha not in seen:
                seen.add(sha)
                todo.append((sha, rel))
        result = {"network": network_id, "cache_key": key, "images": len(rows),
                  "cached_before": len(rows) - len(todo), "extracted": 0, "failed": [], "engine": None,
                  "requested_device": device, "device": None, "providers": [], "device_note": "",
                  "device_fallback": False, "engine_note": "", "engine_measured": False,
                  "stopped": False, "where": "local", "ray": None}
        if todo and on_ray:
            from .ray_extract import extract_on_ray

            with _Extraction():
                extract_on_ray(backbone, key, root, todo, cache, batch_size, progress, should_stop, result, device,
                               ray.strip(), ray_workers)
        elif todo:
            with _Extraction():
                _extract(backbone, key, root, todo, cache, batch_size, progress, should_stop, decode_threads,
                         result, device)
        result["seconds"] = round(time.time() - started, 3)
        return result
    finally:
        cache.close()


RAY_OFF = ("", "off", "none", "no")


def decode_image(prep, root, rel, draft=None):
    """(uint8 pixels at the network's input size, None) or (None, the reason it cannot be read).
    The one decoding of an image for extraction, here and on Ray's workers alike."""
    try:
        return prep.resize(imaging.load_rgb(root / rel, draft_size=draft)), None
    except imaging.UnreadableImage as exc:
        return None, f"{rel}: {exc}"
    except Exception as exc:  # a job must survive any one bad file
        return None, f"{rel}: {type(exc).__name__}: {exc}"


def draft_size(prep):
    """JPEG may decode at a reduced DCT scale, never below the input size."""
    h, w = prep.size
    return (w, h)


# Engines stay loaded for the life of the process (the plugin's worker embeds many times).
_ENGINES = {}


def _engine(backbone, device="auto"):
    key = (backbone.cache_key(), device)
    if key not in _ENGINES:
        try:
            with use_device(device):
                _ENGINES[key] = backbone.engine()
        except NetworkUnavailable as exc:
            if isinstance(exc.__cause__, DeviceUnavailable):  # a backbone wrapped the device's error
                raise exc.__cause__ from None
            raise
    return _ENGINES[key]


def _extract(backbone, key, root, todo, cache, batch_size, progress, should_stop, decode_threads, result,
             device="auto"):
    engine = _engine(backbone, device)
    result["engine"] = getattr(engine, "kind", type(engine).__name__)
    result["device"] = getattr(engine, "device", None)
    result["providers"] = list(getattr(engine, "providers", ()))
    result["device_note"] = getattr(engine, "device_note", "")
    result["device_fallback"] = bool(getattr(engine, "device_fallback", False))
    # Why the framework runs instead of ONNX Runtime (a failed export), when it does.
    result["engine_note"] = getattr(engine, "engine_note", "")
    # ...or because it was measured faster on this machine (a choice, not a failure)
    result["engine_measured"] = bool(getattr(engine, "speeds", None))
    prep = backbone.preprocess
    draft = draft_size(prep)
    where = f"local, {result['device']}" if result["device"] else "local"

    def decode(item):
        sha, rel = item
        return (sha, *decode_image(prep, root, rel, draft))

    batches = queue.Queue(maxsize=3)
    stop = threading.Event()

    def produce():
        # Decoding, resizing and normalising all happen here, off the inference thread.
        with ThreadPoolExecutor(max_workers=decode_threads) as pool:
            for start in range(0, len(todo), batch_size):
                if stop.is_set():
                    break
                decoded = list(pool.map(decode, todo[start:start + batch_size]))
                good = [(sha, px) for sha, px, err in decoded if err is None]
                failed = [(sha, err) for sha, px, err in decoded if err is not None]
                tensor = prep.normalise(np.stack([px for _, px in good])) if good else None
                batches.put(([sha for sha, _ in good], tensor, failed))
        batches.put(None)

    producer = threading.Thread(target=produce, name="nipgboard-decode", daemon=True)
    producer.start()
    t0 = time.time()
    done = 0
    try:
        while True:
            batch = batches.get()
            if batch is None:
                break
            good, tensor, failed = batch
            feats = engine.run(tensor) if good else []
            cache.add_batch(key, good, feats, failed)
            done += len(good) + len(failed)
            result["extracted"] += len(good)
            result["failed"].extend(err for _, err in failed)
            if progress:
                progress(Progress(done, len(todo), time.time() - t0, where))
            if should_stop and should_stop():
                result["stopped"] = True
                break
    finally:
        stop.set()
        while producer.is_alive():  # unblock the producer if it waits on a full queue
            try:
                batches.get(timeout=0.1)
            except queue.Empty:
                pass
        producer.join()


def load_features(logdir, network_id):
    """(image_ids int64 (n,), X float32 (n, d)) for every image of the dataset, in id order.

    Raises FeaturesMissing when some image has no features for this network yet.
    """
    if not paths.is_dataset(logdir):
        raise MissingStep(f"No NIPGBoard dataset in {logdir}: run `nipgboard init {logdir} --images DIR` first.")
    backbone = backbones.get(network_id)
    key = backbone.cache_key()
    with FeatureStore(logdir) as cache:
        n_images, n_found, ids, X = cache.dataset_vectors(key)
    if ids is None:
        raise FeaturesMissing(
            f"{n_images - n_found} of {n_images} images have no {network_id} features yet: "
            f"run `nipgboard embed {logdir} --network {network_id}` first."
        )
    return ids, X
