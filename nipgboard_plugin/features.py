"""Batched feature extraction with a cache keyed by (image content, network, preprocessing).

Decoding and resizing run in a thread pool (Pillow releases the GIL) and stay a
couple of batches ahead of inference, so the engine never waits for pixels.
Every batch is committed to ``features.sqlite`` in one transaction: a run stopped
by Ctrl-C or ``kill -9`` loses at most the batch in flight, never leaves a
corrupt entry, and the next run extracts only what is missing.
"""
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import backbones, imaging, paths
from .errors import MissingStep
from .store import Store, connect

FEATURES_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    key TEXT NOT NULL,          -- Backbone.cache_key(): network, weights and preprocessing
    sha256 TEXT NOT NULL,       -- the image file's content hash
    vec BLOB NOT NULL,          -- float32, little endian
    PRIMARY KEY (key, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (
    key TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (key, sha256)
) WITHOUT ROWID;
"""


class FeaturesMissing(MissingStep):
    """Some image has no features for the network yet: run ``embed`` first."""


def open_cache(logdir) -> sqlite3.Connection:
    path = paths.features_path(logdir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return connect(path, FEATURES_SCHEMA)


def resolve_backbone(network_id):
    """The backbone of a network that can run here (NotFound / Unavailable say why not)."""
    from .params import check_network

    return backbones.get(check_network(network_id))


def cached_count(run_dir, cache_key) -> int:
    """How many feature vectors the cache holds under ``cache_key`` (0 without a cache)."""
    if not paths.features_path(run_dir).is_file():
        return 0
    cache = open_cache(run_dir)
    try:
        return cache.execute("SELECT COUNT(*) FROM features WHERE key=?", (cache_key,)).fetchone()[0]
    finally:
        cache.close()


def cached_per_network(run_dir) -> dict:
    """{cache key: images of the dataset with features under that key}."""
    if not paths.features_path(run_dir).is_file():
        return {}
    cache = open_cache(run_dir)
    try:
        cache.execute("ATTACH DATABASE ? AS ds", (str(paths.db_path(run_dir)),))
        return dict(cache.execute(
            "SELECT f.key, COUNT(*) FROM ds.images i JOIN features f ON f.sha256 = i.sha256 GROUP BY f.key"))
    finally:
        cache.close()


@dataclass
class Progress:
    done: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta(self) -> float:
        return (self.total - self.done) / self.rate if self.rate > 0 else float("nan")


def embed(logdir, network_id, batch_size=32, progress=None, should_stop=None, decode_threads=2):
    """Extract and cache features of every image of the dataset that has none for this network yet.

    ``progress(Progress)`` is called after every batch; ``should_stop()`` returning True stops after
    the current batch (what was done stays cached). Returns a summary dict.
    """
    started = time.time()
    backbone = resolve_backbone(network_id)
    key = backbone.cache_key()
    with Store(logdir) as store:
        rows = store.image_rows("id, sha256, path")
        root = store.images_root()
    cache = open_cache(logdir)
    try:
        cached = {s for (s,) in cache.execute("SELECT sha256 FROM features WHERE key=?", (key,))}
        todo, seen = [], set()
        for _image_id, sha, rel in rows:
            if sha not in cached and sha not in seen:
                seen.add(sha)
                todo.append((sha, rel))
        result = {"network": network_id, "cache_key": key, "images": len(rows),
                  "cached_before": len(rows) - len(todo), "extracted": 0, "failed": [], "engine": None,
                  "stopped": False}
        if todo:
            _extract(backbone, key, root, todo, cache, batch_size, progress, should_stop, decode_threads, result)
        result["seconds"] = round(time.time() - started, 3)
        return result
    finally:
        cache.close()


# Engines stay loaded for the life of the process (the plugin's worker embeds many times).
_ENGINES = {}


def _engine(backbone):
    key = backbone.cache_key()
    if key not in _ENGINES:
        _ENGINES[key] = backbone.engine()
    return _ENGINES[key]


def _extract(backbone, key, root, todo, cache, batch_size, progress, should_stop, decode_threads, result):
    engine = _engine(backbone)
    result["engine"] = getattr(engine, "kind", type(engine).__name__)
    prep = backbone.preprocess
    h, w = prep.size
    draft = (w, h)  # JPEG may decode at a reduced DCT scale, never below the input size

    def decode(item):
        sha, rel = item
        try:
            return sha, prep.resize(imaging.load_rgb(root / rel, draft_size=draft)), None
        except imaging.UnreadableImage as exc:
            return sha, None, f"{rel}: {exc}"
        except Exception as exc:  # a job must survive any one bad file
            return sha, None, f"{rel}: {type(exc).__name__}: {exc}"

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
            with cache:
                cache.execute("BEGIN")
                cache.executemany(
                    "INSERT OR REPLACE INTO features(key, sha256, vec) VALUES(?,?,?)",
                    [(key, sha, np.asarray(f, dtype="<f4").tobytes()) for sha, f in zip(good, feats)],
                )
                cache.executemany("INSERT OR REPLACE INTO failures(key, sha256, reason) VALUES(?,?,?)",
                                  [(key, sha, err) for sha, err in failed])
            done += len(good) + len(failed)
            result["extracted"] += len(good)
            result["failed"].extend(err for _, err in failed)
            if progress:
                progress(Progress(done, len(todo), time.time() - t0))
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
    cache = open_cache(logdir)
    try:
        cache.execute("ATTACH DATABASE ? AS ds", (str(paths.db_path(logdir)),))
        n_images = cache.execute("SELECT COUNT(*) FROM ds.images").fetchone()[0]
        rows = cache.execute(
            "SELECT i.id, f.vec FROM ds.images i JOIN features f ON f.sha256 = i.sha256 AND f.key = ? "
            "ORDER BY i.id", (key,))
        first = rows.fetchone()
        n_found = 0 if first is None else cache.execute(
            "SELECT COUNT(*) FROM ds.images i JOIN features f ON f.sha256 = i.sha256 AND f.key = ?",
            (key,)).fetchone()[0]
        if n_found < n_images:
            raise FeaturesMissing(
                f"{n_images - n_found} of {n_images} images have no {network_id} features yet: "
                f"run `nipgboard embed {logdir} --network {network_id}` first."
            )
        dim = len(first[1]) // 4
        ids = np.empty(n_images, dtype=np.int64)
        X = np.empty((n_images, dim), dtype=np.float32)
        ids[0], X[0] = first[0], np.frombuffer(first[1], dtype="<f4")
        for i, (image_id, vec) in enumerate(rows, start=1):
            ids[i] = image_id
            X[i] = np.frombuffer(vec, dtype="<f4")
        return ids, X
    finally:
        cache.close()
