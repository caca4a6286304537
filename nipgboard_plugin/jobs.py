"""Long work off the request thread: a persistent job queue and one long-lived worker process.

The model
---------
* A job is a row of ``<run>/nipgboard/jobs.sqlite`` (one database per run, WAL mode): its kind
  (``ingest``, ``embed``, ``project``, ...), validated parameters, state, progress (``done`` of
  ``total`` in the current ``stage``, ``rate`` per second, ``eta`` in seconds), its result (JSON) or
  error, and whether a cancel was requested.
* States: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. A queued job can be
  cancelled at once; a running one is asked to stop (it stops after its current batch, keeping what
  it finished) and, if it does not within :data:`CANCEL_GRACE_SECONDS`, the worker is killed and
  started afresh.
* The TensorBoard process runs a :class:`JobManager`: one dispatcher thread takes the oldest queued
  job of any run, claims it atomically (so two servers on one logdir never run a job twice) and hands
  it to the worker, a single child process (``python -m nipgboard_plugin.jobs``) that stays alive
  between jobs, so UMAP's compiled code (warmed up when the worker starts, unless
  ``NIPGBOARD_WARMUP=0``) and the imported libraries are paid for once.
  The worker writes progress and the final state into the job's row itself; requests only read
  the database, so every route answers while a job runs.
* Restarts: the worker dies with the server, with any process pool it started (it watches its
  command pipe and its parent, and asks the kernel for SIGTERM when its parent dies, even by kill -9). A job found ``running`` at start-up whose worker is gone, whether the
  server was stopped, crashed or killed with ``kill -9``, is queued again (``resumed`` counts how
  often) and resumes: feature extraction continues from its cache, ingestion adds only what is
  missing, later stages recompute and replace their result atomically.

Each kind validates its parameters when the job is submitted (a bad one is a 400 before anything is
queued); ``/kinds`` lists them. Adding a library stage is one :func:`pipeline_kind` line in
:func:`_register_pipeline_kinds` below.
"""
import argparse
import contextlib
import importlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import paths
from .errors import UserError
from .runs import jobs_db_path
from .store import connect

logger = logging.getLogger("nipgboard")

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
CANCEL_GRACE_SECONDS = 5.0
PROGRESS_INTERVAL = 0.25       # seconds between progress writes of a running job
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 600.0          # a running job whose live worker has not written for this long is stale
RECOVER_EVERY_SECONDS = 10.0   # how often the dispatcher looks for jobs left running by a dead worker
WORKER_MODULE = "nipgboard_plugin.jobs"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,                 -- JSON, validated when the job was submitted
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    stage TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    rate REAL,
    eta REAL,
    message TEXT,
    result TEXT,                          -- JSON
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,   -- times the job was queued again after an interruption
    worker_pid INTEGER,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, created_at);
"""

COLUMNS = ("id", "kind", "params", "state", "stage", "done", "total", "rate", "eta", "message", "result",
           "error", "cancel_requested", "resumed", "worker_pid", "created_at", "started_at", "finished_at",
           "updated_at")


class JobCancelled(Exception):
    """Raised inside a job (by its progress callback) when a cancel was requested."""


# -- the job database of one run --------------------------------------------------------------------
class JobStore:
    """The jobs of one run. Cheap to open; safe to use from several processes and threads."""

    def __init__(self, run_dir, create=False):
        self.run_dir = Path(run_dir)
        self.path = jobs_db_path(run_dir)
        if not self.path.is_file():
            if not create:
                raise FileNotFoundError(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = connect(self.path, SCHEMA)

    @classmethod
    def open_if_exists(cls, run_dir):
        try:
            return cls(run_dir)
        except FileNotFoundError:
            return None

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _row(row):
        if row is None:
            return None
        job = dict(zip(COLUMNS, row))
        job["params"] = json.loads(job["params"])
        job["result"] = json.loads(job["result"]) if job["result"] else None
        job["cancel_requested"] = bool(job["cancel_requested"])
        total = job["total"]
        job["fraction"] = (min(1.0, job["done"] / total) if total else None) if job["state"] != "done" else 1.0
        return job

    def submit(self, kind, params):
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO jobs(kind, params, state, created_at, updated_at, message) VALUES(?,?,?,?,?,?)",
            (kind, json.dumps(params), "queued", now, now, "waiting for the worker"))
        return self.get(cur.lastrowid)

    def get(self, job_id):
        return self._row(self.conn.execute(f"SELECT {', '.join(COLUMNS)} FROM jobs WHERE id=?",
                                           (int(job_id),)).fetchone())

    def list(self, limit=100, states=None):
        sql = f"SELECT {', '.join(COLUMNS)} FROM jobs"
        args = []
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
            args += list(states)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(int(limit))
        return [self._row(r) for r in self.conn.execute(sql, args)]

    def next_queued(self):
        row = self.conn.execute("SELECT id, created_at FROM jobs WHERE state='queued' ORDER BY created_at, id "
                                "LIMIT 1").fetchone()
        return row

    def claim(self, job_id, worker_pid):
        """Mark a queued job running for ``worker_pid``; False if someone else took it first."""
        now = time.time()
        cur = self.conn.execute(
            "UPDATE jobs SET state='running', worker_pid=?, started_at=COALESCE(started_at, ?), updated_at=?, "
            "message='starting' WHERE id=? AND state='queued'", (worker_pid, now, now, int(job_id)))
        return cur.rowcount == 1

    def progress(self, job_id, stage, done, total, rate, eta, message=None):
        self.conn.execute(
            "UPDATE jobs SET stage=?, done=?, total=?, rate=?, eta=?, message=COALESCE(?, message), updated_at=? "
            "WHERE id=? AND state='running'",
            (stage, int(done), None if total is None else int(total), rate, eta, message, time.time(), int(job_id)))

    def heartbeat(self, job_id):
        self.conn.execute("UPDATE jobs SET updated_at=? WHERE id=? AND state='running'", (time.time(), int(job_id)))

    def finish(self, job_id, state, result=None, error=None, message=None, only_if_running=True):
        assert state in ("done", "failed", "cancelled")
        now = time.time()
        sql = ("UPDATE jobs SET state=?, result=?, error=?, message=?, finished_at=?, updated_at=?, eta=NULL, "
               "worker_pid=NULL WHERE id=?")
        if only_if_running:
            sql += " AND state='running'"
        cur = self.conn.execute(sql, (state, None if result is None else json.dumps(result, default=str),
                                      error, message, now, now, int(job_id)))
        return cur.rowcount == 1

    def request_cancel(self, job_id):
        """Cancel a queued job now; ask a running one to stop. Returns the job after the change."""
        now = time.time()
        with self.transaction():
            self.conn.execute("UPDATE jobs SET state='cancelled', finished_at=?, updated_at=?, "
                              "message='cancelled before it started' WHERE id=? AND state='queued'",
                              (now, now, int(job_id)))
            self.conn.execute("UPDATE jobs SET cancel_requested=1, updated_at=?, message='stopping' "
                              "WHERE id=? AND state='running'", (now, int(job_id)))
        return self.get(job_id)

    def cancel_requested(self, job_id):
        row = self.conn.execute("SELECT cancel_requested FROM jobs WHERE id=?", (int(job_id),)).fetchone()
        return bool(row and row[0])

    def requeue_interrupted(self, is_alive):
        """Queue again every running job whose worker is gone (or silent for STALE_SECONDS)."""
        now = time.time()
        requeued = []
        for job_id, pid, updated in self.conn.execute(
                "SELECT id, worker_pid, updated_at FROM jobs WHERE state='running'").fetchall():
            if pid and is_alive(pid) and now - updated < STALE_SECONDS:
                continue
            cur = self.conn.execute(
                "UPDATE jobs SET state='queued', worker_pid=NULL, resumed=resumed+1, updated_at=?, "
                "message='interrupted (the server stopped); queued again to resume' "
                "WHERE id=? AND state='running'", (now, job_id))
            if cur.rowcount:
                requeued.append(job_id)
        return requeued

    @contextlib.contextmanager
    def transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")


# -- what a job sees while it runs --------------------------------------------------------------------
class JobContext:
    """Passed to a job's function: progress reports (with rate and ETA) and cancel checks."""

    def __init__(self, store: JobStore, job_id: int):
        self.store = store
        self.job_id = job_id
        self._stage = None
        self._stage_t0 = time.monotonic()
        self._stage_done0 = 0
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._cancelled = False

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= 0.2:
            self._last_cancel_check = now
            self._cancelled = self.store.cancel_requested(self.job_id)
        return self._cancelled

    def stage(self, name, total=None, message=None):
        """Start a named stage (resets the rate and ETA clock)."""
        self._stage = name
        self._stage_t0 = time.monotonic()
        self._stage_done0 = 0
        self.store.progress(self.job_id, name, 0, total, None, None, message or name)
        self._last_write = time.monotonic()

    def progress(self, done, total=None, rate=None, eta=None, message=None, force=False, check_cancel=True):
        """Report ``done`` of ``total``; rate and ETA are derived unless given. Raises JobCancelled
        when a cancel was requested (so any stage that reports progress can be cancelled), unless
        ``check_cancel`` is False (for stages that poll ``should_stop`` themselves)."""
        now = time.monotonic()
        if rate is None:
            elapsed = now - self._stage_t0
            rate = (done - self._stage_done0) / elapsed if elapsed > 0 and done > self._stage_done0 else None
        if eta is None and rate and total is not None:
            eta = max(0.0, (total - done) / rate)
        finished = total is not None and done >= total
        if force or finished or now - self._last_write >= PROGRESS_INTERVAL:
            self._last_write = now
            self.store.progress(self.job_id, self._stage, done, total, _finite(rate), _finite(eta), message)
        if check_cancel and self.should_stop():
            raise JobCancelled()

    def embed_progress(self, p):
        """Adapter for ``features.embed``'s ``Progress`` objects."""
        if self._stage != "extracting features":
            self.stage("extracting features", p.total)
        self.progress(p.done, p.total, rate=p.rate, eta=p.eta, check_cancel=False)

    def counts_progress(self, done, total):
        """Adapter for ``progress(done, total)`` callbacks."""
        self.progress(done, total)


def _finite(x):
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if x == x and x not in (float("inf"), float("-inf")) else None


# -- job kinds ----------------------------------------------------------------------------------------
@dataclass
class JobKind:
    name: str
    description: str
    validate: Callable          # (params: dict, run_dir: Path | None) -> clean params (raises UserError/BadRequest)
    run: Callable               # (ctx: JobContext, run_dir: Path, params: dict) -> JSON-able result
    needs_dataset: bool = True
    module: str = None          # a pipeline module the kind needs; missing -> kind unavailable
    params: dict = None         # {name: "type, default"}: what /kinds shows the frontend

    def available(self) -> bool:
        if not self.module:
            return True
        try:
            importlib.import_module(self.module)
            return True
        except ImportError:
            return False


def _v():
    from . import web  # imported lazily: the worker process needs only what its jobs use
    return web


REQUIRED_NETWORKS = object()


def _network(params, name="network", required=True):
    """A network id of the registry that can run here."""
    web = _v()
    value = web.p_str(params, name, web.REQUIRED if required else None, max_len=100)
    if value is None:
        return None
    from . import backbones
    try:
        backbone = backbones.get(value)
    except KeyError:
        known = ", ".join(b.describe()["id"] for b in backbones.all_backbones())
        raise web.BadRequest(f"unknown network {value!r}; known networks: {known}") from None
    avail = backbone.availability()
    if not avail.available:
        raise web.BadRequest(f"network {value} is not available here: {avail.message}")
    return value


def _networks(params, name="networks", default=REQUIRED_NETWORKS, min_n=2):
    """A list of ``min_n`` to 10 distinct runnable network ids (None when optional and absent)."""
    web = _v()
    value = params.get(name, default)
    if value is REQUIRED_NETWORKS:
        raise web.BadRequest(f"parameter {name!r} is required")
    if value is None:
        return None
    if not isinstance(value, list) or not min_n <= len(value) <= 10:
        raise web.BadRequest(f"parameter {name!r} must be a list of {min_n} to 10 network ids")
    out = [_network({name: v}, name) for v in value]
    if len(set(out)) != len(out):
        raise web.BadRequest(f"parameter {name!r} lists a network twice")
    return out


def _validate_ingest(params, run_dir):
    web = _v()
    web.check_keys(params, {"images", "labels_csv", "folder_labels", "test_fraction", "seed"})
    has_dataset = run_dir is not None and paths.is_dataset(run_dir)
    images = web.p_str(params, "images", None if has_dataset else web.REQUIRED, max_len=4096)
    if images is not None:
        if not os.path.isabs(images):
            raise web.BadRequest("parameter 'images' must be an absolute path to a folder on the server's machine")
        if not os.path.isdir(images):
            raise web.BadRequest(f"images folder not found: {images}")
        images = os.path.realpath(images)
        if run_dir is not None:
            real_run = os.path.realpath(run_dir)
            if os.path.commonpath([real_run, images]) == images:
                raise web.BadRequest("the images folder contains the run's own folder (its thumbnails and "
                                     "caches would be read as images): choose a run outside the images folder")
    labels_csv = web.p_str(params, "labels_csv", None, max_len=4096)
    if labels_csv is not None:
        if not os.path.isabs(labels_csv) or not os.path.isfile(labels_csv):
            raise web.BadRequest(f"parameter 'labels_csv' must be the absolute path of a CSV file: {labels_csv}")
    return {"images": images, "labels_csv": labels_csv,
            "folder_labels": web.p_bool(params, "folder_labels", False),
            "test_fraction": web.p_float(params, "test_fraction", 0.2, lo=0.0, hi=0.9),
            "seed": web.p_int(params, "seed", 0, lo=0, hi=2 ** 31 - 1)}


def _run_ingest(ctx, run_dir, p):
    from .dataset import ingest
    from .store import Store

    images = p["images"]
    if images is None:
        with Store(run_dir) as store:
            images = str(store.images_root())
    ctx.stage("inspecting files")
    return ingest(run_dir, images, labels_csv=p["labels_csv"], folder_labels_from_subdirs=p["folder_labels"],
                  test_fraction=p["test_fraction"], seed=p["seed"], progress=ctx.counts_progress)


def _validate_embed(params, run_dir):
    web = _v()
    web.check_keys(params, {"network", "batch_size"})
    return {"network": _network(params), "batch_size": web.p_int(params, "batch_size", 32, lo=1, hi=512)}


def _run_embed(ctx, run_dir, p):
    from .features import embed

    ctx.stage("loading the network")
    result = embed(run_dir, p["network"], batch_size=p["batch_size"], progress=ctx.embed_progress,
                   should_stop=ctx.should_stop)
    if result.get("stopped"):
        raise JobCancelled(result)
    return result


def _validate_duplicates(params, run_dir):
    web = _v()
    web.check_keys(params, {"network", "threshold"})
    return {"network": _network(params), "threshold": web.p_float(params, "threshold", 0.3, lo=0.0, hi=2.0)}


def _run_duplicates(ctx, run_dir, p):
    from .neighbours import near_duplicate_groups
    from .features import load_features

    ctx.stage("loading features")
    ids, X = load_features(run_dir, p["network"])
    ctx.stage("finding near duplicates", total=len(ids))
    groups = near_duplicate_groups(X, p["threshold"], progress=ctx.counts_progress, should_stop=ctx.should_stop)
    if groups is None:
        raise JobCancelled()
    return {"network": p["network"], "threshold": p["threshold"],
            "groups": [[int(ids[r]) for r in g] for g in groups]}


def _validate_rare(params, run_dir):
    web = _v()
    web.check_keys(params, {"network", "n", "k"})
    return {"network": _network(params), "n": web.p_int(params, "n", 20, lo=1, hi=10000),
            "k": web.p_int(params, "k", 10, lo=1, hi=200)}


def _run_rare(ctx, run_dir, p):
    from .neighbours import rarest
    from .features import load_features

    ctx.stage("scoring rarity")
    ids, X = load_features(run_dir, p["network"])
    rows, scores = rarest(X, n=p["n"], k=p["k"])
    return {"network": p["network"], "k": p["k"],
            "rare": [{"id": int(ids[r]), "rarity": float(s)} for r, s in zip(rows, scores)]}


def _validate_sprites(params, run_dir):
    web = _v()
    from . import thumbnails
    web.check_keys(params, {"tile"})
    return {"tile": web.p_int(params, "tile", thumbnails.DEFAULT_TILE, lo=min(thumbnails.TILE_SIZES),
                              hi=max(thumbnails.TILE_SIZES))}


def _run_sprites(ctx, run_dir, p):
    from . import thumbnails

    ctx.stage("drawing sprite atlases")
    return thumbnails.build_sprites(run_dir, p["tile"], progress=ctx.counts_progress)


def _run_warmup(ctx, run_dir, p):
    ctx.stage("compiling UMAP")
    return {"seconds": warm_up()}


def warm_up():
    """Compile UMAP's code in this process once (no-op when the projection stage is absent)."""
    try:
        from . import projection
    except ImportError:
        return 0.0
    fn = getattr(projection, "warm_up", None)
    return float(fn() or 0.0) if fn else 0.0


# -- pipeline stages: one line each ---------------------------------------------------------------------
# A spec maps each parameter to (type, default, *limits). Types: network (a runnable network id),
# networks (a list of them, at least ``limits[0]``), int, float, bool, choice (limits[0]: the choices),
# str, and int_list / float_list / choice_list (a list of 1 to 10 such values, for grids).
MAX_GRID_VALUES = 10


def _list_param(params, name, default, item_check):
    web = _v()
    value = params.get(name, default)
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_GRID_VALUES:
        raise web.BadRequest(f"parameter {name!r} must be a list of 1 to {MAX_GRID_VALUES} values")
    return [item_check({name: v}, name) for v in value]


def _spec_validator(spec):
    def validate(params, run_dir):
        web = _v()
        web.check_keys(params, set(spec))
        out = {}
        for name, (kind, default, *extra) in spec.items():
            if kind == "network":
                out[name] = _network(params, name, required=default is web.REQUIRED)
            elif kind == "networks":
                out[name] = _networks(params, name, default, *extra)
            elif kind == "int":
                out[name] = web.p_int(params, name, default, *extra)
            elif kind == "float":
                out[name] = web.p_float(params, name, default, *extra)
            elif kind == "bool":
                out[name] = web.p_bool(params, name, default)
            elif kind == "choice":
                out[name] = web.p_str(params, name, default, choices=extra[0])
            elif kind == "str":
                out[name] = web.p_str(params, name, default, max_len=200)
            elif kind == "int_list":
                out[name] = _list_param(params, name, default, lambda p, n: web.p_int(p, n, web.REQUIRED, *extra))
            elif kind == "float_list":
                out[name] = _list_param(params, name, default, lambda p, n: web.p_float(p, n, web.REQUIRED, *extra))
            elif kind == "choice_list":
                out[name] = _list_param(params, name, default,
                                        lambda p, n: web.p_str(p, n, web.REQUIRED, choices=extra[0]))
            else:  # pragma: no cover - a programming error in a spec
                raise ValueError(kind)
        return out
    return validate


def _with_projector(run_dir, params, result):
    """After a stage that changes what the Projector tab shows, rewrite its files (as the CLI does)."""
    if params.get("projector") is False or not isinstance(result, dict):
        return result
    from . import projector

    try:
        result["projector"] = projector.write_projector(run_dir)
    except UserError as exc:
        result["projector"] = {"error": str(exc)}
    return result


def pipeline_kind(name, target, spec, description, positional=("network",), stage=None, projector=False):
    """A job kind that calls the library function ``target`` ('module:function') as
    ``function(run_dir, *positional params, **other params)``; parameters valued None are left to the
    function's defaults, and ``progress``/``should_stop`` are passed when the function takes them.
    With ``projector``, the Projector tab's files are rewritten afterwards (parameter ``projector``:
    false skips it), as the CLI does."""
    module, func = target.split(":")
    if projector:
        spec = dict(spec, projector=("bool", True))

    def run(ctx, run_dir, params):
        fn = getattr(importlib.import_module(module), func)
        ctx.stage(stage or name)
        args = [params[p] for p in positional if p in params]
        kwargs = {k: v for k, v in params.items() if v is not None and k not in positional and k != "projector"}
        kwargs.update(_progress_kwargs(fn, ctx))
        result = fn(run_dir, *args, **kwargs)
        if projector:
            ctx.stage("writing the Projector files")
            result = _with_projector(run_dir, params, result)
        return result

    return JobKind(name, description, _spec_validator(spec), run, module=module, params=describe_spec(spec))


def describe_spec(spec):
    """{name: 'type, default'} of a spec, for the /kinds route."""
    out = {}
    for name, (kind, default, *extra) in spec.items():
        text = kind
        if kind.startswith("choice"):
            text += " of " + "|".join(map(str, extra[0]))
        elif extra:
            text += f" in [{extra[0]}, {extra[1]}]" if len(extra) > 1 else f" (at least {extra[0]})"
        if default is REQUIRED_NETWORKS or default is _v().REQUIRED:
            text += ", required"
        elif default is not None:
            text += f", default {default}"
        out[name] = text
    return out


def _progress_kwargs(fn, ctx):
    """Pass ``progress``/``should_stop`` to library functions that accept them."""
    import inspect

    try:
        sig = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    out = {}
    if "progress" in sig:
        out["progress"] = ctx.counts_progress
    if "should_stop" in sig:
        out["should_stop"] = ctx.should_stop
    return out


def _run_search(ctx, run_dir, p):
    """The grid search, with the grids completed by the defaults as ``nipgboard search`` does."""
    from . import projection

    umap_grid = {k: p[k] for k in ("n_neighbors", "min_dist", "learning_rate", "local_connectivity",
                                   "negative_sample_rate", "n_epochs", "metric") if p.get(k)}
    graph_grid = {k: p[k] for k in ("graph", "resolution") if p.get(k)}
    umap_grid = dict(projection.DEFAULT_UMAP_GRID, **umap_grid) if umap_grid else None
    graph_grid = dict(projection.DEFAULT_GRAPH_GRID, **graph_grid) if graph_grid else None
    ctx.stage("cross-validating configurations")
    result = projection.search_dataset(run_dir, p["network"], umap_grid, graph_grid, n_folds=p["folds"],
                                       n_components=p["n_components"], random_state=p["random_state"],
                                       apply=p["apply"], progress=ctx.counts_progress)
    if p["apply"]:
        result = _with_projector(run_dir, p, result)
    return result


def _run_export(ctx, run_dir, p):
    from . import export

    ctx.stage("writing the CSV")
    return export.export_csv(run_dir, export_path(run_dir), networks=p["networks"],
                             low_confidence=p["low_confidence"])


def export_path(run_dir) -> Path:
    """Where the ``export`` job writes the run's labels CSV (inside the run's data folder)."""
    return paths.data_dir(run_dir) / "exports" / "labels.csv"


def _req():
    return _v().REQUIRED


KINDS = {k.name: k for k in [
    JobKind("ingest", "add a folder of images (and labels) to a run, creating it if needed",
            _validate_ingest, _run_ingest, needs_dataset=False,
            params={"images": "absolute folder path, required for a new run",
                    "labels_csv": "absolute path of a path,label CSV", "folder_labels": "bool, default False",
                    "test_fraction": "float in [0, 0.9], default 0.2", "seed": "int, default 0"}),
    JobKind("embed", "extract and cache the features of every image with a network", _validate_embed, _run_embed,
            params={"network": "network, required", "batch_size": "int in [1, 512], default 32"}),
    JobKind("duplicates", "near-duplicate groups within a feature distance", _validate_duplicates, _run_duplicates,
            params={"network": "network, required", "threshold": "float in [0, 2], default 0.3"}),
    JobKind("rare", "the least similar images", _validate_rare, _run_rare,
            params={"network": "network, required", "n": "int in [1, 10000], default 20",
                    "k": "int in [1, 200], default 10"}),
    JobKind("sprites", "draw the sprite atlases of thumbnails for the 3-D view", _validate_sprites, _run_sprites,
            params={"tile": "int of 32|48|64|96|128, default 64"}),
    JobKind("warmup", "compile UMAP's code in the worker", lambda p, d: {}, _run_warmup, needs_dataset=False),
]}


def _register_pipeline_kinds():
    REQ = _req()
    seed = ("int", 0, 0, 2 ** 31 - 1)
    metrics = ("euclidean", "cosine", "manhattan", "correlation")
    umap_opts = {
        "n_neighbors": ("int", None, 2, 200), "min_dist": ("float", None, 0.0, 1.0),
        "learning_rate": ("float", None, 1e-4, 100.0), "local_connectivity": ("float", None, 0.1, 50.0),
        "negative_sample_rate": ("int", None, 1, 50), "n_epochs": ("int", None, 1, 5000),
        "metric": ("choice", None, metrics),
        "target_weight": ("float", None, 0.0, 1.0), "pca_dims": ("int", None, 0, 1000),
    }
    umap_grid = {k: (kind + "_list", None, *rest) for k, (kind, _d, *rest) in umap_opts.items()
                 if k not in ("target_weight", "pca_dims")}
    search_spec = dict(
        network=("network", REQ), **umap_grid, graph=("choice_list", None, ("mst", "knn")),
        resolution=("float_list", None, 0.01, 100.0), folds=("int", 3, 2, 10), n_components=("int", 3, 2, 3),
        random_state=seed, apply=("bool", False), projector=("bool", True))
    export_spec = dict(networks=("networks", None, 1), low_confidence=("float", 0.6, 0.0, 1.0))
    kinds = [
        pipeline_kind("project", "nipgboard_plugin.projection:project_dataset", dict(
            network=("network", REQ),
            mode=("choice", "supervised", ("supervised", "semi-supervised", "unsupervised")),
            fit_on=("choice", None, ("train", "train+pool")), method=("choice", "umap", ("umap", "pca")),
            n_components=("int", 3, 2, 3), random_state=seed, **umap_opts),
            "UMAP (or PCA) of a network's features to 2-D or 3-D", projector=True),
        pipeline_kind("cluster", "nipgboard_plugin.graph:cluster_dataset", dict(
            network=("network", REQ), graph=("choice", "mst", ("mst", "knn")), k=("int", None, 2, 200),
            threshold=("float", None, 0.0, 1e6), method=("choice", "louvain", ("louvain", "girvan-newman")),
            resolution=("float", None, 0.01, 100.0), random_state=seed,
            on=("choice", None, ("all", "train")), max_clusters=("int", None, 2, 1000)),
            "graph clustering (MST or kNN graph, Louvain or Girvan-Newman) of the stored projection",
            projector=True),
        pipeline_kind("predict", "nipgboard_plugin.predict:predict_dataset", dict(
            network=("network", REQ),
            method=("choice", "auto", ("auto", "cluster", "knn", "logreg", "ensemble", "spread", "all")),
            k=("int", None, 1, 200), C=("float", None, 1e-4, 1e4), random_state=seed, spread=("bool", None)),
            "a label, confidence and class probabilities for every image from the expert's labels",
            projector=True),
        pipeline_kind("evaluate", "nipgboard_plugin.evaluate:metrics_report", dict(
            networks=("networks", None, 1), positive=("str", None)),
            "accuracy, precision, specificity, recall and F1 per network on train and test", positional=()),
        pipeline_kind("disagreements", "nipgboard_plugin.review:review_queue", dict(
            networks=("networks", None, 1), include_labelled=("bool", None),
            low_confidence=("float", None, 0.0, 1.0), limit=("int", 500, 1, 100000), flagged_only=("bool", None)),
            "the review queue: images the networks disagree on or are unsure about", positional=()),
        pipeline_kind("projector", "nipgboard_plugin.projector:write_projector", dict(
            networks=("networks", None, 1), sprite=("bool", None)),
            "write the built-in Projector tab's files", positional=()),
        JobKind("search", "grid search of UMAP and graph options by cross-validated accuracy on the train images",
                _spec_validator(search_spec), _run_search, module="nipgboard_plugin.projection",
                params=describe_spec(search_spec)),
        JobKind("export", "write the labels CSV (expert labels, predictions, clusters, votes, flags)",
                _spec_validator(export_spec), _run_export, module="nipgboard_plugin.export",
                params=describe_spec(export_spec)),
    ]
    for k in kinds:
        KINDS[k.name] = k


_register_pipeline_kinds()


def kinds_info():
    return [{"kind": k.name, "description": k.description, "available": k.available(),
             "needs_dataset": k.needs_dataset, "params": k.params or {}}
            for k in KINDS.values() if k.name != "warmup"]


# -- the worker process --------------------------------------------------------------------------------
def _set_parent_death_signal(sig=signal.SIGTERM):
    """Ask Linux to send ``sig`` to this process when its parent dies (even by kill -9)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig))
    except Exception:  # noqa: BLE001 - the stdin watchdog still covers this
        pass


def _exit_now():
    """Stop this worker and any process pool it started (its own process group) at once."""
    with contextlib.suppress(Exception):
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
    os._exit(0)


def run_job(run_dir, job_id):
    """Run one claimed job in this process: call its kind, record the outcome in its row."""
    store = JobStore(run_dir)
    try:
        job = store.get(job_id)
        kind = KINDS.get(job["kind"])
        ctx = JobContext(store, job_id)
        stop_beat = threading.Event()

        def beat():
            while not stop_beat.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(Exception):
                    store.heartbeat(job_id)

        beater = threading.Thread(target=beat, name="nipgboard-heartbeat", daemon=True)
        beater.start()
        try:
            if kind is None:
                raise UserError(f"unknown job kind {job['kind']!r}")
            result = kind.run(ctx, Path(run_dir), job["params"])
            store.finish(job_id, "done", result=result, message="finished")
            return "done"
        except JobCancelled as exc:
            partial = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else None
            store.finish(job_id, "cancelled", result=partial, message="cancelled; finished work is kept")
            return "cancelled"
        except UserError as exc:
            store.finish(job_id, "failed", error=str(exc), message="failed")
            return "failed"
        except Exception as exc:  # noqa: BLE001 - any failure is recorded in the job, the worker lives on
            logger.error("nipgboard job %s (%s) failed:\n%s", job_id, job["kind"], traceback.format_exc())
            store.finish(job_id, "failed", error=f"{type(exc).__name__}: {exc}", message="failed")
            return "failed"
        finally:
            stop_beat.set()
    finally:
        store.close()


def worker_main():
    """Entry point of the worker: read commands as JSON lines on stdin, answer on the original stdout."""
    # The parent's death (even kill -9) sends SIGTERM; the handler stops the whole process group.
    signal.signal(signal.SIGTERM, lambda *_: _exit_now())
    _set_parent_death_signal(signal.SIGTERM)
    parent = os.getppid()
    # Commands arrive on the original stdin and answers leave on the original stdout, both moved to
    # private descriptors: fd 0 becomes /dev/null and fd 1 goes to stderr, so that nothing a library
    # prints can enter the protocol, and process pools forked by a job (which close sys.stdin) never
    # wait on a lock held by the command reader.
    cmd_fd = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdin = open(os.devnull)
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    lock = threading.Lock()

    def send(**msg):
        with lock:
            proto.write(json.dumps(msg) + "\n")
            proto.flush()

    commands = queue.Queue()

    def read_commands():
        buf = b""
        while True:
            try:
                chunk = os.read(cmd_fd, 65536)
            except InterruptedError:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                with contextlib.suppress(ValueError):
                    commands.put(json.loads(line))
        _exit_now()  # the server is gone (stdin closed): stop at once, the job will be resumed

    threading.Thread(target=read_commands, name="nipgboard-stdin", daemon=True).start()

    def orphan_watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                _exit_now()

    threading.Thread(target=orphan_watch, name="nipgboard-orphan", daemon=True).start()
    send(op="ready", pid=os.getpid())
    if os.environ.get("NIPGBOARD_WARMUP", "1") != "0":
        def warm():
            try:
                send(op="warm", seconds=warm_up())
            except Exception as exc:  # noqa: BLE001
                send(op="warm", error=str(exc))
        threading.Thread(target=warm, name="nipgboard-warmup", daemon=True).start()
    while True:
        cmd = commands.get()
        if cmd.get("op") == "exit":
            break
        if cmd.get("op") == "run":
            state = run_job(cmd["run_dir"], cmd["job_id"])
            send(op="finished", run_dir=cmd["run_dir"], job_id=cmd["job_id"], state=state)


# -- the server side -----------------------------------------------------------------------------------
def pid_alive(pid) -> bool:
    """Whether ``pid`` is a live NIPGBoard worker (not a reused pid of something else)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as fh:
            cmdline = fh.read()
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            zombie = fh.read().rsplit(b")", 1)[-1].split()[0] == b"Z"
        return WORKER_MODULE.encode() in cmdline and not zombie
    except OSError:
        return True  # no /proc: trust kill(0)


class Worker:
    """The child process and the thread that reads its messages."""

    def __init__(self):
        env = dict(os.environ)
        pkg_parent = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, env=env, start_new_session=True, text=True, bufsize=1)
        self.messages = queue.Queue()
        self.warm = None
        self.started_at = time.time()
        threading.Thread(target=self._read, name="nipgboard-worker-reader", daemon=True).start()

    @property
    def pid(self):
        return self.proc.pid

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("op") == "warm":
                self.warm = msg
            self.messages.put(msg)
        self.messages.put({"op": "exited"})

    def alive(self):
        return self.proc.poll() is None

    def send(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def kill(self):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and any process pool it started
        with contextlib.suppress(Exception):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=10)

    def stop(self):
        if self.alive():
            with contextlib.suppress(Exception):
                self.send(op="exit")
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Running:
    run_name: str
    run_dir: Path
    job_id: int
    started: float = field(default_factory=time.monotonic)
    cancel_seen: float = None


class JobManager:
    """Queue, dispatcher thread and worker of one TensorBoard process."""

    def __init__(self, run_index, start_worker_early=None):
        self.runs = run_index
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.worker = None
        self.running = None
        self.recovered = []
        if start_worker_early is None:
            start_worker_early = os.environ.get("NIPGBOARD_WARMUP", "1") != "0"
        self._early = start_worker_early
        self._thread = None

    # -- called by routes ---------------------------------------------------------------------------
    def start(self):
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="nipgboard-dispatcher", daemon=True)
                self._thread.start()

    def submit(self, run_dir, kind, params):
        with JobStore(run_dir, create=True) as store:
            job = store.submit(kind, params)
        self.runs.invalidate()
        self.start()
        self._wake.set()
        return job

    def cancel(self, run_dir, job_id):
        with JobStore(run_dir) as store:
            job = store.request_cancel(job_id)
        self._wake.set()
        return job

    def status(self):
        w = self.worker
        r = self.running
        return {
            "worker": None if w is None else {"pid": w.pid, "alive": w.alive(),
                                              "warm": None if w.warm is None else w.warm.get("seconds") is not None},
            "running": None if r is None else {"run": r.run_name, "id": r.job_id},
            "recovered": self.recovered,
        }

    def shutdown(self):
        self._stopping.set()
        self._wake.set()
        if self.worker is not None:
            self.worker.stop()

    # -- the dispatcher -----------------------------------------------------------------------------
    def _loop(self):
        last_recover = None
        started_early = False
        while not self._stopping.is_set():
            try:
                if last_recover is None or time.monotonic() - last_recover > RECOVER_EVERY_SECONDS:
                    # At start: jobs a stopped or killed server left running. Later: e.g. a worker of
                    # an earlier server that finished dying only now.
                    self._recover()
                    last_recover = time.monotonic()
                if self._early and not started_early and self.runs.runs():
                    started_early = True
                    self._ensure_worker()  # loaded and warming up before the user's first click
                nxt = self._next_job()
                if nxt is None:
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
                    continue
                self._dispatch(*nxt)
            except Exception:  # noqa: BLE001 - the dispatcher must outlive any one failure
                logger.exception("nipgboard: job dispatcher error")
                self._stopping.wait(1.0)

    def _recover(self):
        def alive(pid):
            own = self.worker
            return (own is not None and pid == own.pid and own.alive()) or pid_alive(pid)

        for name, run_dir in self.runs.runs(fresh=True).items():
            store = JobStore.open_if_exists(run_dir)
            if store is None:
                continue
            with store:
                for job_id in store.requeue_interrupted(alive):
                    self.recovered.append({"run": name, "id": job_id})
                    logger.warning("nipgboard: job %s of run %s was interrupted; queued again", job_id, name)

    def _next_job(self):
        best = None
        for name, run_dir in self.runs.runs().items():
            store = JobStore.open_if_exists(run_dir)
            if store is None:
                continue
            with store:
                row = store.next_queued()
            if row is not None and (best is None or row[1] < best[3]):
                best = (name, run_dir, row[0], row[1])
        return None if best is None else best[:3]

    def _ensure_worker(self):
        if self.worker is None or not self.worker.alive():
            if self.worker is not None:
                self.worker.kill()
            self.worker = Worker()
        return self.worker

    def _dispatch(self, run_name, run_dir, job_id):
        worker = self._ensure_worker()
        with JobStore(run_dir) as store:
            if not store.claim(job_id, worker.pid):
                return
            self.running = Running(run_name, run_dir, job_id)
            try:
                try:
                    worker.send(op="run", run_dir=str(run_dir), job_id=job_id)
                except OSError:  # the worker died just now: put the job back, start a new worker
                    worker.kill()
                    store.conn.execute("UPDATE jobs SET state='queued', worker_pid=NULL WHERE id=? AND "
                                       "state='running'", (job_id,))
                    return
                self._wait(worker, store, self.running)
            finally:
                self.running = None
                self.runs.invalidate()

    def _wait(self, worker, store, running):
        while True:
            try:
                msg = worker.messages.get(timeout=0.3)
            except queue.Empty:
                msg = None
            if msg is not None:
                if msg.get("op") == "finished" and msg.get("job_id") == running.job_id \
                        and msg.get("run_dir") == str(running.run_dir):
                    return
                if msg.get("op") != "exited":
                    continue
            if msg is not None or not worker.alive():
                code = worker.proc.wait()
                if self._stopping.is_set():
                    return
                store.finish(running.job_id, "failed",
                             error=f"the worker process stopped unexpectedly (exit code {code})",
                             message="failed")
                return
            if store.cancel_requested(running.job_id):
                if running.cancel_seen is None:
                    running.cancel_seen = time.monotonic()
                elif time.monotonic() - running.cancel_seen > CANCEL_GRACE_SECONDS:
                    worker.kill()
                    store.finish(running.job_id, "cancelled",
                                 message="cancelled; the worker was restarted to stop it, finished work is kept")
                    return
            if self._stopping.is_set():
                return


def main(argv=None):
    parser = argparse.ArgumentParser(description="NIPGBoard job worker (started by the TensorBoard plugin)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="nipgboard worker: %(message)s")
    worker_main()


if __name__ == "__main__":
    main()
