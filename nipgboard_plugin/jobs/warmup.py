"""The worker's background compile of UMAP, kept out of the jobs' way.

Compiling UMAP's numba code costs about a minute of one core and holds the GIL for most of it; beside a
feature extraction it halves the images per second (the decode threads wait for the GIL, the engine for
a core). So the compile

* starts only once the worker has been idle (no job running, none sent) for ``IDLE_SECONDS``: a worker
  started for a queued job, or resumed after a restart, runs that job first;
* pauses while an extraction runs: the compiling thread carries a trace hook (``sys.settrace``, that
  thread only: one check per Python call) that sleeps, without the GIL, while an extraction runs in the
  worker, so the compiler takes neither the GIL nor a core from it. A pause ends when the extraction does,
  or after ``MAX_PAUSE_SECONDS`` in all; it never starts inside an import (which holds a module's lock).
  A pause may hold numba's compiler lock, so work that compiles (a pipeline that opens the view early
  fits UMAP between two batches) runs outside ``features.extracting()`` (``features.paused_extraction``).

Its state is sent to the server as ``{"op": "warm_state", "state": ...}``: 'waiting' (for the worker to be
idle), 'compiling', 'paused' (while an extraction runs), 'done' or 'failed', with the final
``{"op": "warm", "seconds": ...}`` (or ``"error"``).
"""
import contextlib
import sys
import threading
import time
import traceback

IDLE_SECONDS = 2.0         # the worker idle this long before the compile starts
POLL_SECONDS = 0.2         # how often a paused compile looks whether the extraction ended
MAX_PAUSE_SECONDS = 3600.0


class Activity:
    """Whether the worker runs (or was sent) a job, and since when it has been idle."""

    def __init__(self, pending=lambda: False):
        self._cond = threading.Condition()
        self._running = 0
        self._idle_since = time.monotonic()
        self._pending = pending      # () -> True while a command waits to be read by the main loop

    @contextlib.contextmanager
    def job(self):
        with self._cond:
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._idle_since = time.monotonic()
                self._cond.notify_all()

    def busy(self) -> bool:
        with self._cond:
            return self._running > 0 or self._pending()

    def wait_idle(self, seconds=IDLE_SECONDS):
        """Block until no job has run nor been sent for ``seconds``."""
        with self._cond:
            while True:
                if self._running or self._pending():
                    self._idle_since = time.monotonic()
                    self._cond.wait(timeout=0.5)
                    continue
                left = seconds - (time.monotonic() - self._idle_since)
                if left <= 0:
                    return
                self._cond.wait(timeout=min(left, 0.5))


def _start_numba_threads():
    """Start numba's thread pool before the compile (outside the trace hook): UMAP's jobs run on it later."""
    with contextlib.suppress(Exception):
        from numba.np.ufunc import parallel

        parallel._launch_threads()


def _importing(frame) -> bool:
    """Whether ``frame`` runs inside an import (which holds a module's lock: never pause there)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def extracting() -> bool:
    """Whether the worker extracts features now (features.py not loaded yet: it does not)."""
    features = sys.modules.get(__package__.rsplit(".", 1)[0] + ".features")
    return bool(features is not None and features.extracting())


class WarmUp:
    """Runs ``compile_fn()`` (returns seconds) in a daemon thread once the worker is idle; ``send(**msg)``
    reports its state."""

    def __init__(self, compile_fn, send, activity, idle_seconds=IDLE_SECONDS, extracting=extracting):
        self.compile_fn, self.send, self.activity = compile_fn, send, activity
        self.idle_seconds = idle_seconds
        self.extracting = extracting
        self.state = None
        self.paused_seconds = 0.0
        self._checked = 0.0

    def start(self):
        threading.Thread(target=self._run, name="nipgboard-warmup", daemon=True).start()
        return self

    def _state(self, state):
        if state != self.state and self.state not in ("done", "failed"):
            self.state = state
            with contextlib.suppress(Exception):
                self.send(op="warm_state", state=state)

    def _run(self):
        self._state("waiting")
        self.activity.wait_idle(self.idle_seconds)
        _start_numba_threads()
        self._state("compiling")
        sys.settrace(self._hook)
        try:
            seconds = self.compile_fn()
            sys.settrace(None)
            self._state("done")
            self.send(op="warm", seconds=seconds)
        except Exception as exc:  # noqa: BLE001 - the jobs compile what they need themselves
            sys.settrace(None)
            traceback.print_exc()     # into the server's log: why the background compile failed
            self._state("failed")
            self.send(op="warm", error=f"{type(exc).__name__}: {exc}")

    def _hook(self, frame, event, arg):
        """The compiling thread's trace function: called at each Python call, it pauses the compile while
        an extraction runs. Returns None: no line tracing."""
        now = time.monotonic()
        if now - self._checked < POLL_SECONDS:
            return None
        self._checked = now
        if self.paused_seconds < MAX_PAUSE_SECONDS and self.extracting() and not _importing(frame):
            self._state("paused")
            t0 = time.monotonic()
            while self.extracting() and self.paused_seconds + time.monotonic() - t0 < MAX_PAUSE_SECONDS:
                time.sleep(POLL_SECONDS)
            self.paused_seconds += time.monotonic() - t0
            self._state("compiling")
        return None
