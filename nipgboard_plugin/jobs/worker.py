"""The worker process: ``python -m nipgboard_plugin.jobs.worker --worker``, started by the dispatcher.

It reads commands as JSON lines on stdin, runs one job at a time in this process and writes its
progress and outcome into the job's row. It imports only what its jobs need.
"""
import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from ..errors import UserError
from .kinds import run_kind, warm_up
from .progress import JobCancelled, JobContext
from .store import JobStore
from .warmup import Activity, WarmUp

logger = logging.getLogger("nipgboard")

HEARTBEAT_SECONDS = 5.0


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
        ctx = JobContext(store, job_id)
        stop_beat = threading.Event()

        def beat():
            while not stop_beat.wait(HEARTBEAT_SECONDS):
                with contextlib.suppress(Exception):
                    store.heartbeat(job_id)

        beater = threading.Thread(target=beat, name="nipgboard-heartbeat", daemon=True)
        beater.start()
        try:
            result = run_kind(ctx, Path(run_dir), job["kind"], job["params"])
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
    activity = Activity(pending=lambda: not commands.empty())
    if os.environ.get("NIPGBOARD_WARMUP", "1") != "0":
        # UMAP's compile waits until no job runs, and yields to an extraction (see warmup.py).
        WarmUp(warm_up, send, activity).start()
    while True:
        cmd = commands.get()
        if cmd.get("op") == "exit":
            break
        if cmd.get("op") == "run":
            with activity.job():
                state = run_job(cmd["run_dir"], cmd["job_id"])
            send(op="finished", run_dir=cmd["run_dir"], job_id=cmd["job_id"], state=state)



def main(argv=None):
    parser = argparse.ArgumentParser(description="NIPGBoard job worker (started by the TensorBoard plugin)")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="nipgboard worker: %(message)s")
    worker_main()


if __name__ == "__main__":
    main()
