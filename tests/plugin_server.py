"""Run the real ``tensorboard`` with the NIPGBoard plugin on a free loopback port, for tests and benchmarks.

>>> with TensorBoardServer(logdir, home) as tb:
...     status, headers, body = tb.get("runs")
...     job = tb.post_json("start_job", {"run": "shapes", "kind": "ingest", "params": {...}})
"""
import contextlib
import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

PREFIX = "/data/plugin/nipgboard/"
HEADER = {"X-NIPGBoard": "1", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_command(python=None):
    """How to start ``tensorboard`` with ``python`` (default: this interpreter) and its environment's packages."""
    python = str(python or sys.executable)
    exe = Path(python).with_name("tensorboard")
    return [str(exe)] if exe.exists() else [python, "-m", "tensorboard.main"]


class TensorBoardServer:
    """A ``tensorboard --logdir LOGDIR`` subprocess; ``stop()`` (or the context manager) ends it.

    ``python``: the interpreter (of another virtual environment, say) whose TensorBoard and plugin to run;
    ``cwd``: the server's working folder (default: this process's)."""

    def __init__(self, logdir, home, log_path=None, env=None, roots=(), python=None, cwd=None):
        self.logdir = Path(logdir)
        self.roots = [str(r) for r in roots]   # folders the browser may add images from (--nipgboard_roots)
        self.home = Path(home)
        self.log_path = Path(log_path) if log_path else self.logdir.parent / "tensorboard.log"
        self.extra_env = dict(env or {})
        self.python = python
        self.cwd = cwd
        self.proc = None
        self.port = None

    # -- life cycle ---------------------------------------------------------------------------------------
    def start(self, timeout=90):
        self.port = free_port()
        env = dict(os.environ, NIPGBOARD_HOME=str(self.home), NIPGBOARD_WARMUP="0", PYTHONUNBUFFERED="1",
                   OMP_NUM_THREADS="2")
        env.update(self.extra_env)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            tensorboard_command(self.python)
            + ["--logdir", str(self.logdir), "--port", str(self.port), "--host", "127.0.0.1", "--load_fast=false"]
            + (["--nipgboard_roots", os.pathsep.join(self.roots)] if self.roots else []),
            stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.cwd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}; see {self.log_path}")
            try:
                status, _h, body = self.request("GET", "/data/plugins_listing", timeout=2)
                if status == 200 and "nipgboard" in json.loads(body):
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"tensorboard did not answer within {timeout} s; see {self.log_path}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()
            self._log = None

    def kill9(self):
        """``kill -9`` the server, as a crash or an impatient user would."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        if self._log:
            self._log.close()
            self._log = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- requests --------------------------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers dict with lower-case names, body bytes) of one request with a raw path."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            res = conn.getresponse()
            data = res.read()
            return res.status, {k.lower(): v for k, v in res.getheaders()}, data
        finally:
            conn.close()

    def url(self, route, **params):
        return PREFIX + route + ("?" + urlencode(params) if params else "")

    def get(self, route, **params):
        return self.request("GET", self.url(route, **params))

    def get_json(self, route, expect=200, **params):
        status, _h, body = self.get(route, **params)
        data = json.loads(body)
        if expect is not None:
            assert status == expect, (route, params, status, data)
        return data

    def post(self, route, data, headers=HEADER):
        body = data if isinstance(data, (bytes, str)) else json.dumps(data)
        return self.request("POST", PREFIX + route, body=body, headers=headers)

    def post_json(self, route, data, expect=(200, 202)):
        status, _h, body = self.post(route, data)
        answer = json.loads(body)
        if expect is not None:
            expected = expect if isinstance(expect, tuple) else (expect,)
            assert status in expected, (route, data, status, answer)
        return answer

    # -- jobs -----------------------------------------------------------------------------------------------
    def start_job(self, run, kind, **params):
        return self.post_json("start_job", {"run": run, "kind": kind, "params": params}, expect=202)

    def wait_job(self, run, job_id, timeout=180, states=("done", "failed", "cancelled"), until=None):
        """Poll a job until it reaches one of ``states`` (or ``until(job)`` is true); return it."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_json("job", run=run, id=job_id)
            if job["state"] in states or (until is not None and until(job)):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} of {run} still {job['state']} after {timeout} s: {job}")
            time.sleep(0.05 if until else 0.2)

    def run_job(self, run, kind, timeout=180, **params):
        job = self.start_job(run, kind, **params)
        done = self.wait_job(run, job["id"], timeout=timeout)
        assert done["state"] == "done", done
        return done


@contextlib.contextmanager
def writer_lock(db):
    """Hold SQLite's write lock on ``db`` (a WAL file like the product's; created if missing): every other
    writer, e.g. an embed job storing its next batch, waits until the block ends (up to its 30 s)."""
    conn = sqlite3.connect(db, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    finally:
        conn.execute("ROLLBACK")
        conn.close()
