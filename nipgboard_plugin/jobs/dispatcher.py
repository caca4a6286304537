"""The server side: the dispatcher thread of a TensorBoard process and its worker child process."""
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .store import JobStore

logger = logging.getLogger("nipgboard")

CANCEL_GRACE_SECONDS = 5.0
RECOVER_EVERY_SECONDS = 10.0   # how often the dispatcher looks for jobs left running by a dead worker
WORKER_MODULE = "nipgboard_plugin.jobs.worker"  # pid_alive looks for it in /proc/<pid>/cmdline


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
        pkg_parent = str(Path(__file__).resolve().parents[2])  # the folder holding nipgboard_plugin
        env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None, env=env, start_new_session=True, text=True, bufsize=1)
        self.messages = queue.Queue()
        self.warm = None
        self.warm_state = None
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
            if msg.get("op") == "warm_state":   # UMAP's background compile: waiting, compiling, yielding, done
                self.warm_state = msg.get("state")
                continue
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
                                              "warm": None if w.warm is None else w.warm.get("seconds") is not None,
                                              "warm_up": w.warm_state},
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
                    store.requeue(job_id)
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
