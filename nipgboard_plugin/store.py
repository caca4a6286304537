"""The dataset database: one SQLite file (WAL mode) per dataset.

Holds the images that were found, the files that were skipped and why, exact
duplicates, labels with their full history, and the train/test/pool split.
Every label change goes through :meth:`Store.set_labels`, which appends to
``label_history`` in the same transaction, so no edit is ever lost.
"""
import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

from . import paths
from .errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,       -- hash of the file's bytes: the cache key of its features
    path TEXT NOT NULL UNIQUE,         -- relative to the images root, '/'-separated
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    mode TEXT NOT NULL,                -- Pillow mode of the file before conversion to RGB
    format TEXT NOT NULL,
    n_bytes INTEGER NOT NULL,
    split TEXT NOT NULL DEFAULT 'pool' CHECK (split IN ('train', 'test', 'pool')),
    added_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS duplicates (
    path TEXT PRIMARY KEY,             -- the copy that was not kept
    image_id INTEGER NOT NULL REFERENCES images(id)
);
CREATE TABLE IF NOT EXISTS unreadable (
    path TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS label_issues (
    source TEXT NOT NULL,              -- e.g. the CSV file and row
    detail TEXT NOT NULL,
    seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labels (
    image_id INTEGER PRIMARY KEY REFERENCES images(id),
    label TEXT NOT NULL,
    source TEXT NOT NULL,              -- folder, csv, user, ...
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS label_history (
    id INTEGER PRIMARY KEY,
    image_id INTEGER NOT NULL REFERENCES images(id),
    old_label TEXT,                    -- NULL: the image had no label
    new_label TEXT,                    -- NULL: the label was removed
    source TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS label_history_image ON label_history(image_id);
"""


class DatasetMissing(UserError, FileNotFoundError):
    """The directory holds no NIPGBoard dataset yet."""


def connect(path, schema) -> sqlite3.Connection:
    """A connection to one of our SQLite files (dataset, features, jobs): WAL, so that readers never
    wait for a writer, autocommit (transactions are explicit) and usable from any thread."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    return conn


class SqliteFile:
    """What every SQLite store shares (the dataset, the feature cache, the jobs): a connection ``conn``
    opened by :func:`connect`, closed by ``close`` or a ``with`` block, and atomic writes."""

    conn: sqlite3.Connection

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def transaction(self):
        """One atomic write: all of it lands, or (on any error, crash or kill) none of it."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


class Store(SqliteFile):
    """Access to one dataset's database. Cheap to open; safe to use from several processes."""

    def __init__(self, logdir, create=False):
        self.logdir = Path(logdir)
        self.path = paths.db_path(logdir)
        if not self.path.is_file():
            if not create:
                raise DatasetMissing(
                    f"No NIPGBoard dataset in {self.logdir}: run `nipgboard init {self.logdir} --images DIR` first."
                )
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path, SCHEMA)
        self.conn.execute("PRAGMA foreign_keys=ON")

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key, value, conn=None):
        (conn or self.conn).execute(
            "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value)),
        )

    # -- images -----------------------------------------------------------------------------
    def images_root(self) -> Path:
        root = self.get_meta("images_root")
        if root is None:
            raise RuntimeError(f"Dataset {self.logdir} has no images folder recorded.")
        return Path(root)

    def image_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def image_rows(self, columns="id, sha256, path"):
        """All images in id order, as tuples of the given columns."""
        return self.conn.execute(f"SELECT {columns} FROM images ORDER BY id").fetchall()

    def image_by_id(self, image_id):
        row = self.conn.execute(
            "SELECT id, sha256, path, width, height, mode, format, n_bytes, split FROM images WHERE id=?",
            (int(image_id),),
        ).fetchone()
        return None if row is None else dict(
            zip(("id", "sha256", "path", "width", "height", "mode", "format", "n_bytes", "split"), row)
        )

    def image_id_for_path(self, path):
        """The image id for a path relative to the images root (or absolute inside it), or None.

        A path listed as an exact duplicate resolves to the kept copy.
        """
        rel = self.relative_path(path)
        if rel is None:
            return None
        row = self.conn.execute("SELECT id FROM images WHERE path=?", (rel,)).fetchone()
        if row is None:
            row = self.conn.execute("SELECT image_id FROM duplicates WHERE path=?", (rel,)).fetchone()
        return None if row is None else row[0]

    def relative_path(self, path):
        p = Path(path)
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(self.images_root().resolve())
            except ValueError:
                return None
        return p.as_posix()

    def absolute_path(self, rel_path) -> Path:
        return self.images_root() / rel_path

    # -- what an ingest writes ----------------------------------------------------------------
    def known_paths(self) -> set:
        """Every path already seen as an image or as a duplicate of one."""
        return {p for (p,) in self.conn.execute("SELECT path FROM images UNION SELECT path FROM duplicates")}

    def stored_paths(self) -> list:
        """The path of every stored image."""
        return [p for (p,) in self.conn.execute("SELECT path FROM images")]

    def ids_by_hash(self) -> dict:
        """{sha256: image id} of every stored image."""
        return {s: i for i, s in self.conn.execute("SELECT id, sha256 FROM images")}

    def add_images(self, rows, now, ids_by_hash):
        """Add inspected files (dicts with rel, sha256, width, height, mode, format, n_bytes) in one
        transaction; returns (added, duplicates).

        A file whose content is already stored (its hash in ``ids_by_hash``, which this call extends
        with the images it adds) is recorded as a duplicate of that image. Each file leaves the
        unreadable list.
        """
        added = duplicates = 0
        with self.transaction() as conn:
            for r in rows:
                conn.execute("DELETE FROM unreadable WHERE path=?", (r["rel"],))
                twin = ids_by_hash.get(r["sha256"])
                if twin is not None:
                    conn.execute("INSERT OR REPLACE INTO duplicates(path, image_id) VALUES(?, ?)", (r["rel"], twin))
                    duplicates += 1
                    continue
                cur = conn.execute(
                    "INSERT INTO images(sha256, path, width, height, mode, format, n_bytes, added_at) "
                    "VALUES(?,?,?,?,?,?,?,?)",
                    (r["sha256"], r["rel"], r["width"], r["height"], r["mode"], r["format"], r["n_bytes"], now),
                )
                ids_by_hash[r["sha256"]] = cur.lastrowid
                added += 1
        return added, duplicates

    def record_unreadable(self, entries, now):
        """Record [(path, reason)] as unreadable (replacing an earlier reason), in one transaction."""
        with self.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO unreadable(path, reason, seen_at) VALUES(?,?,?)",
                             [(p, reason, now) for p, reason in entries])

    def unreadable_paths(self) -> set:
        return {p for (p,) in self.conn.execute("SELECT path FROM unreadable")}

    def replace_label_issues(self, issues):
        """Make [(source, detail)] the label issues, replacing the previous ones in one transaction."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM label_issues")
            conn.executemany("INSERT INTO label_issues(source, detail, seen_at) VALUES(?,?,?)",
                             [(s, d, time.time()) for s, d in issues])

    def labelled_pool_images(self) -> list:
        """[(image_id, label, sha256)] of the labelled images still in the pool."""
        return self.conn.execute(
            "SELECT i.id, l.label, i.sha256 FROM images i JOIN labels l ON l.image_id = i.id WHERE i.split = 'pool'"
        ).fetchall()

    def set_splits(self, assignment):
        """Move images to their split, ``{image_id: 'train' | 'test' | 'pool'}``, in one transaction."""
        with self.transaction() as conn:
            conn.executemany("UPDATE images SET split=? WHERE id=?", [(s, i) for i, s in assignment.items()])

    # -- labels -----------------------------------------------------------------------------
    def labels(self) -> dict:
        """{image_id: label} for every labelled image."""
        return dict(self.conn.execute("SELECT image_id, label FROM labels"))

    def set_labels(self, assignments, source="user"):
        """Set (or with label None, remove) labels; each change is appended to the history.

        ``assignments`` is an iterable of (image_id, label). Returns the number of labels changed.
        Unchanged labels write nothing. Unknown image ids raise ``KeyError`` before anything is written.
        """
        return self.set_labels_with_previous(assignments, source)[0]

    def set_labels_with_previous(self, assignments, source="user"):
        """:meth:`set_labels`, also returning ``{image_id: label before this call}`` (None: none).

        The previous labels are read inside the same write transaction as the change, so with several
        writers at once each answer says exactly what its own change replaced (what the history records).
        """
        assignments = [(int(i), None if lab is None else str(lab)) for i, lab in assignments]
        now = time.time()
        changed = 0
        previous = {}
        with self.transaction() as conn:
            for image_id, label in assignments:
                if conn.execute("SELECT 1 FROM images WHERE id=?", (image_id,)).fetchone() is None:
                    raise KeyError(f"unknown image id {image_id}")
            for image_id, label in assignments:
                row = conn.execute("SELECT label FROM labels WHERE image_id=?", (image_id,)).fetchone()
                old = row[0] if row else None
                previous.setdefault(image_id, old)
                if old == label:
                    continue
                if label is None:
                    conn.execute("DELETE FROM labels WHERE image_id=?", (image_id,))
                else:
                    conn.execute(
                        "INSERT INTO labels(image_id, label, source, updated_at) VALUES(?,?,?,?) "
                        "ON CONFLICT(image_id) DO UPDATE SET label=excluded.label, source=excluded.source, "
                        "updated_at=excluded.updated_at",
                        (image_id, label, source, now),
                    )
                conn.execute(
                    "INSERT INTO label_history(image_id, old_label, new_label, source, at) VALUES(?,?,?,?,?)",
                    (image_id, old, label, source, now),
                )
                changed += 1
        return changed, previous

    def label_history(self, image_id=None, limit=None):
        sql = "SELECT id, image_id, old_label, new_label, source, at FROM label_history"
        args = []
        if image_id is not None:
            sql += " WHERE image_id=?"
            args.append(int(image_id))
        sql += " ORDER BY id"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        keys = ("id", "image_id", "old_label", "new_label", "source", "at")
        return [dict(zip(keys, r)) for r in self.conn.execute(sql, args)]

    # -- splits -----------------------------------------------------------------------------
    def splits(self) -> dict:
        """{image_id: 'train' | 'test' | 'pool'}."""
        return dict(self.conn.execute("SELECT id, split FROM images"))

    # -- reports ----------------------------------------------------------------------------
    def unreadable(self):
        return [dict(path=p, reason=r) for p, r in self.conn.execute("SELECT path, reason FROM unreadable ORDER BY path")]

    def duplicates(self):
        rows = self.conn.execute(
            "SELECT d.path, i.path, i.id FROM duplicates d JOIN images i ON i.id = d.image_id ORDER BY d.path"
        )
        return [dict(path=p, kept=k, image_id=i) for p, k, i in rows]

    def label_issues(self):
        return [dict(source=s, detail=d) for s, d in self.conn.execute("SELECT source, detail FROM label_issues")]

    def summary(self) -> dict:
        q = lambda sql: self.conn.execute(sql).fetchone()[0]  # noqa: E731
        by_split = dict(self.conn.execute("SELECT split, COUNT(*) FROM images GROUP BY split"))
        by_label = dict(self.conn.execute("SELECT label, COUNT(*) FROM labels GROUP BY label ORDER BY label"))
        return {
            "logdir": str(self.logdir),
            "images_root": self.get_meta("images_root"),
            "images": q("SELECT COUNT(*) FROM images"),
            "labelled": q("SELECT COUNT(*) FROM labels"),
            "classes": by_label,
            "splits": {s: by_split.get(s, 0) for s in ("train", "test", "pool")},
            "unreadable": self.unreadable(),
            "duplicates": self.duplicates(),
            "label_issues": self.label_issues(),
            "test_fraction": self.get_meta("test_fraction"),
            "seed": self.get_meta("seed"),
        }

    # -- what the run facade reads -------------------------------------------------------------
    def label_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM labels").fetchone()[0]

    def labels_of(self, image_ids) -> dict:
        """{image_id: label} of these images (those without a label are absent)."""
        out = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 900):  # SQLite's limit on bound parameters
            chunk = ids[start:start + 900]
            out.update(self.conn.execute(
                f"SELECT image_id, label FROM labels WHERE image_id IN ({','.join('?' * len(chunk))})", chunk))
        return out

    def user_labels(self) -> dict:
        """{image_id: label} of the labels an expert gave (not read from a CSV or folders)."""
        return dict(self.conn.execute("SELECT image_id, label FROM labels WHERE source='user'"))

    def image_info(self, image_ids) -> dict:
        """{image_id: (path, split)} of these images."""
        out = {}
        ids = [int(i) for i in image_ids]
        for start in range(0, len(ids), 900):
            chunk = ids[start:start + 900]
            for image_id, path, split in self.conn.execute(
                    f"SELECT id, path, split FROM images WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[image_id] = (path, split)
        return out

    def images_stamp(self) -> tuple:
        """Changes whenever images are added or removed: (count, largest id)."""
        return tuple(self.conn.execute("SELECT COUNT(*), MAX(id) FROM images").fetchone())
