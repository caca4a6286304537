"""Long work off the request thread: a persistent job queue and one long-lived worker process.

* :mod:`.store`: a job is a row of ``<run>/nipgboard/jobs.sqlite`` (one database per run, WAL mode):
  its kind, validated parameters, state, progress (``done`` of ``total`` in the current ``stage``,
  ``rate``, ``eta``), its result (JSON) or error, and whether a cancel was requested. States:
  ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``.
* :mod:`.progress`: the :class:`JobContext` a running job reports progress through; it raises
  :class:`JobCancelled` when a cancel was requested (a running job stops after its current batch,
  keeping what it finished).
* :mod:`.kinds`: a job's kind is a step of the registry (:mod:`..steps`: ``ingest``, ``embed``,
  ``project``, ``pipeline``, ...), whose declarations checked its parameters at submission; the worker
  runs the step.
* :mod:`.worker`: the worker, a single child process (``python -m nipgboard_plugin.jobs.worker``)
  that stays alive between jobs, so UMAP's compiled code (warmed up at start unless
  ``NIPGBOARD_WARMUP=0``) and the imported libraries are paid for once. It writes progress and the
  final state into the job's row itself, so requests only read the database. It dies with the
  server, with any process pool it started.
* :mod:`.dispatcher`: the :class:`JobManager` of the TensorBoard process: one thread takes the oldest
  queued job of any run, claims it atomically (two servers on one logdir never run a job twice) and
  hands it to the worker; a job that ignores a cancel for ``CANCEL_GRACE_SECONDS`` gets its worker
  killed and restarted. A job found ``running`` whose worker is gone (server stopped, crashed or
  killed with ``kill -9``) is queued again (``resumed`` counts how often) and resumes: feature
  extraction continues from its cache, ingestion adds only what is missing, later stages recompute.

The dispatcher and worker names are imported on first use, so the worker process, which imports
this package, loads neither the dispatcher nor itself twice.
"""
import importlib

from .kinds import WARMUP, run_kind, warm_up
from .progress import JobCancelled, JobContext
from .store import ACTIVE_STATES, COLUMNS, SCHEMA, STATES, JobStore, active_count, get_job, list_jobs

_LAZY = {
    "pid_alive": "dispatcher", "Worker": "dispatcher", "Running": "dispatcher", "JobManager": "dispatcher",
    "WORKER_MODULE": "dispatcher", "CANCEL_GRACE_SECONDS": "dispatcher",
    "run_job": "worker", "worker_main": "worker", "main": "worker",
}

__all__ = ["ACTIVE_STATES", "COLUMNS", "SCHEMA", "STATES", "WARMUP", "JobCancelled", "JobContext", "JobStore",
           "active_count", "get_job", "list_jobs", "run_kind", "warm_up", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
