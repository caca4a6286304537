"""The job database of one run: ``<run>/nipgboard/jobs.sqlite`` and every SQL statement about jobs."""
import json
import time
from pathlib import Path

from ..paths import jobs_db_path
from ..store import SqliteFile, connect

STATES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATES = ("queued", "running")
STALE_SECONDS = 600.0          # a running job whose live worker has not written for this long is stale

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


class JobStore(SqliteFile):
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
            "message='starting', result=NULL WHERE id=? AND state='queued'", (worker_pid, now, now, int(job_id)))
        return cur.rowcount == 1

    def progress(self, job_id, stage, done, total, rate, eta, message=None):
        self.conn.execute(
            "UPDATE jobs SET stage=?, done=?, total=?, rate=?, eta=?, message=COALESCE(?, message), updated_at=? "
            "WHERE id=? AND state='running'",
            (stage, int(done), None if total is None else int(total), rate, eta, message, time.time(), int(job_id)))

    def running_result(self, job_id, result):
        self.conn.execute("UPDATE jobs SET result=?, updated_at=? WHERE id=? AND state='running'",
                          (json.dumps(result), time.time(), int(job_id)))

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

    def requeue(self, job_id):
        """Put a job claimed by this server back in the queue (its worker died before taking it)."""
        cur = self.conn.execute("UPDATE jobs SET state='queued', worker_pid=NULL WHERE id=? AND "
                                "state='running'", (int(job_id),))
        return cur.rowcount == 1


# -- what the routes read -------------------------------------------------------------------------------
def list_jobs(run_dir, limit=100, states=None) -> list:
    """The jobs of a run, newest first ([] when it never had one)."""
    store = JobStore.open_if_exists(run_dir)
    if store is None:
        return []
    with store:
        return store.list(limit=limit, states=states)


def get_job(run_dir, job_id):
    store = JobStore.open_if_exists(run_dir)
    if store is None:
        return None
    with store:
        return store.get(job_id)


def active_count(run_dir) -> int:
    return len(list_jobs(run_dir, limit=1000, states=ACTIVE_STATES))
