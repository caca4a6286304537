"""The feature cache: ``features.sqlite`` (WAL), one vector per (cache key, image content).

A cache key (``Backbone.cache_key()``) names a network, its weights and its preprocessing; an image is
named by the SHA-256 of its file, so a renamed or duplicated file never needs a second extraction.
Vectors are stored as little-endian float32 blobs. Files a network could not read are recorded in
``failures``.
"""
import sqlite3

import numpy as np

from . import paths
from .store import SqliteFile, connect

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


def open_cache(run_dir) -> sqlite3.Connection:
    """A connection to the run's feature cache, created when missing."""
    path = paths.features_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    return connect(path, FEATURES_SCHEMA)


class FeatureStore(SqliteFile):
    """The feature cache of one run (created when missing). One writer at a time; readers never wait."""

    def __init__(self, run_dir):
        self.run_dir = run_dir
        self.conn = open_cache(run_dir)

    def hashes(self, key) -> set:
        """The content hashes of every image with a vector under ``key``."""
        return {s for (s,) in self.conn.execute("SELECT sha256 FROM features WHERE key=?", (key,))}

    def add_batch(self, key, hashes, vectors, failed):
        """Store one batch in one transaction: ``vectors[i]`` for ``hashes[i]``, and ``failed``
        ([(sha256, reason)]) as failures. Stopped midway, nothing of the batch lands."""
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany(
                "INSERT OR REPLACE INTO features(key, sha256, vec) VALUES(?,?,?)",
                [(key, sha, np.asarray(f, dtype="<f4").tobytes()) for sha, f in zip(hashes, vectors)],
            )
            self.conn.executemany("INSERT OR REPLACE INTO failures(key, sha256, reason) VALUES(?,?,?)",
                                  [(key, sha, err) for sha, err in failed])

    def vectors(self, key, hashes) -> dict:
        """{sha256: float32 vector} of those ``hashes`` with a vector under ``key``."""
        hashes, out = list(hashes), {}
        for start in range(0, len(hashes), 500):
            part = hashes[start:start + 500]
            marks = ",".join("?" * len(part))
            for sha, vec in self.conn.execute(
                    f"SELECT sha256, vec FROM features WHERE key=? AND sha256 IN ({marks})", (key, *part)):
                out[sha] = np.frombuffer(vec, dtype="<f4")
        return out

    def count(self, key) -> int:
        """How many vectors the cache holds under ``key``."""
        return self.conn.execute("SELECT COUNT(*) FROM features WHERE key=?", (key,)).fetchone()[0]

    def _attach_dataset(self):
        self.conn.execute("ATTACH DATABASE ? AS ds", (str(paths.db_path(self.run_dir)),))

    def per_key(self) -> dict:
        """{cache key: images of the run's dataset with a vector under that key}."""
        self._attach_dataset()
        return dict(self.conn.execute(
            "SELECT f.key, COUNT(*) FROM ds.images i JOIN features f ON f.sha256 = i.sha256 GROUP BY f.key"))

    def dataset_vectors(self, key):
        """(n_images, n_found, ids, X) for the run's dataset under ``key``: ``ids`` int64 (n,) and
        ``X`` float32 (n, d) of every image in id order, or both None when only ``n_found`` of the
        ``n_images`` images have a vector."""
        self._attach_dataset()
        conn = self.conn
        n_images = conn.execute("SELECT COUNT(*) FROM ds.images").fetchone()[0]
        rows = conn.execute(
            "SELECT i.id, f.vec FROM ds.images i JOIN features f ON f.sha256 = i.sha256 AND f.key = ? "
            "ORDER BY i.id", (key,))
        first = rows.fetchone()
        n_found = 0 if first is None else conn.execute(
            "SELECT COUNT(*) FROM ds.images i JOIN features f ON f.sha256 = i.sha256 AND f.key = ?",
            (key,)).fetchone()[0]
        if n_found < n_images:
            return n_images, n_found, None, None
        dim = len(first[1]) // 4
        ids = np.empty(n_images, dtype=np.int64)
        X = np.empty((n_images, dim), dtype=np.float32)
        ids[0], X[0] = first[0], np.frombuffer(first[1], dtype="<f4")
        for i, (image_id, vec) in enumerate(rows, start=1):
            ids[i] = image_id
            X[i] = np.frombuffer(vec, dtype="<f4")
        return n_images, n_found, ids, X


def cached_count(run_dir, cache_key) -> int:
    """How many feature vectors the cache holds under ``cache_key`` (0 without a cache)."""
    if not paths.features_path(run_dir).is_file():
        return 0
    with FeatureStore(run_dir) as cache:
        return cache.count(cache_key)


def cached_per_network(run_dir) -> dict:
    """{cache key: images of the dataset with features under that key}."""
    if not paths.features_path(run_dir).is_file():
        return {}
    with FeatureStore(run_dir) as cache:
        return cache.per_key()
