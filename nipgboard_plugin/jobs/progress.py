"""What a job sees while it runs: progress reports (with rate and ETA) and cancel checks."""
import time

from ..errors import Cancelled
from ..steps import Context
from .store import JobStore

PROGRESS_INTERVAL = 0.25       # seconds between progress writes of a running job


# Raised inside a job (by its progress callback, or by a step) when a cancel was requested.
JobCancelled = Cancelled


class JobContext(Context):
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
        self._stage = self.current_stage = name
        self._stage_t0 = time.monotonic()
        self._stage_done0 = 0
        self.store.progress(self.job_id, name, 0, total, None, None, message or name)
        self._last_write = time.monotonic()

    def preview(self, info):
        """Shown as the running job's result (``{"preview": info}``) until its real result replaces it."""
        self.store.running_result(self.job_id, {"preview": info})

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


def _finite(x):
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if x == x and x not in (float("inf"), float("-inf")) else None

