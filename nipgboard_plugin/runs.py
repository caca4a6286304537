"""Finding the datasets (runs) under a TensorBoard logdir.

Each directory of the logdir that holds ``nipgboard/dataset.sqlite`` is a run, named by its path
relative to the logdir ('.' for the logdir itself), as TensorBoard names its runs. A directory whose
``nipgboard/`` holds only a job database (an ingest that was queued or is running) is a run too,
without a dataset yet.

Requests name a run; the name is looked up among the discovered runs and never turned into a path
directly, so a request cannot reach a directory the discovery did not find. Discovery never follows
symbolic links out of the logdir, so nothing the plugin writes can land outside it.
"""
import os
import re
import threading
import time
from pathlib import Path

from . import paths
from .errors import Conflict, InvalidParameter, NotFound

MAX_DEPTH = 4               # run directories are found this deep below the logdir at most
MAX_DIRS_VISITED = 5000     # a logdir with a huge tree is searched this far, no further
CACHE_SECONDS = 2.0
_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def discover(logdir) -> dict:
    """{run name: absolute run directory} for every run under ``logdir``, sorted by name."""
    if not logdir:
        return {}
    root = Path(logdir).absolute()
    if not root.is_dir():
        return {}
    found = {}
    if paths.is_run(root):
        found["."] = root
    visited = 0
    for dirpath, dirnames, _files in os.walk(root, followlinks=False):
        rel = Path(dirpath).relative_to(root)
        depth = 0 if str(rel) == "." else len(rel.parts)
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d == paths.DATA_DIRNAME:
                continue
            full = Path(dirpath) / d
            if full.is_symlink():
                continue
            visited += 1
            if paths.is_run(full):
                found[(rel / d).as_posix()] = full
                continue  # a run's own tree (possibly its images) is not searched for more runs
            if depth + 1 < MAX_DEPTH:
                keep.append(d)
        dirnames[:] = keep if visited < MAX_DIRS_VISITED else []
    return dict(sorted(found.items()))


class RunIndex:
    """Run discovery with a short cache, shared by the routes and the job dispatcher."""

    def __init__(self, logdir):
        self.logdir = Path(logdir).absolute() if logdir else None
        self._lock = threading.Lock()
        self._runs = {}
        self._at = 0.0

    def runs(self, fresh=False) -> dict:
        with self._lock:
            if fresh or time.monotonic() - self._at > CACHE_SECONDS:
                self._runs = discover(self.logdir)
                self._at = time.monotonic()
            return dict(self._runs)

    def invalidate(self):
        with self._lock:
            self._at = 0.0

    def resolve(self, name) -> Path:
        """The directory of an existing run; UserError (answered 404) for any other name."""
        if not isinstance(name, str) or not name:
            raise InvalidParameter("parameter 'run' is required")
        runs = self.runs()
        if name not in runs:
            runs = self.runs(fresh=True)
        if name not in runs:
            raise UnknownRun(f"unknown run {name!r}")
        return runs[name]

    def dataset_dir(self, name) -> Path:
        """The directory of a run that holds a dataset (not only a queued ingest)."""
        run_dir = self.resolve(name)
        if not paths.is_dataset(run_dir):
            raise UnknownRun(f"run {name!r} has no dataset yet: its ingest job has not finished")
        return run_dir

    def new_run_dir(self, name) -> Path:
        """The directory for a new run ``name`` (a relative path of simple names), created inside the logdir."""
        if self.logdir is None:
            raise Conflict("TensorBoard was started without --logdir")
        if not isinstance(name, str) or not name:
            raise InvalidParameter("parameter 'run' is required")
        if name == ".":
            target = self.logdir
        else:
            parts = name.split("/")
            if len(parts) > MAX_DEPTH or not all(_NAME_PART.match(p) for p in parts) \
                    or paths.DATA_DIRNAME in parts:
                raise InvalidParameter(
                    f"invalid run name {name!r}: use up to {MAX_DEPTH} '/'-separated names of letters, digits, "
                    "'.', '_' or '-' (not starting with '.' and not 'nipgboard')")
            target = self.logdir.joinpath(*parts)
        real_root = os.path.realpath(self.logdir)
        # Every existing ancestor must resolve inside the logdir: no symbolic link may lead out of it.
        probe = target
        while not probe.exists():
            probe = probe.parent
        real = os.path.realpath(probe)
        if os.path.commonpath([real, real_root]) != real_root:
            raise InvalidParameter(f"run {name!r} would lie outside the logdir")
        rel = target.relative_to(self.logdir)
        for i in range(1, len(rel.parts)):
            ancestor = self.logdir.joinpath(*rel.parts[:i])
            if paths.is_run(ancestor):
                raise InvalidParameter(f"run {name!r} would lie inside the run {'/'.join(rel.parts[:i])!r}")
        if name != ".":
            for other in self.runs(fresh=True):
                if other != "." and other.startswith(name + "/"):
                    raise InvalidParameter(f"run {name!r} would contain the run {other!r}")
        return target


class UnknownRun(NotFound):
    """A run name that is not one of the discovered runs."""
