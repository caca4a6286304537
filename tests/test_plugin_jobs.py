"""The job queue and its worker: persistence, cancel, crashes, and `kill -9` of TensorBoard mid-job.

The tests through the real server never race a job's speed. A job that must still be running when the
test acts is held by SQLite's write lock on the run's feature cache, which the test takes before the
job could write its next batch (`writer_lock`): the embed waits there, as long as the test wants and
on any machine, exactly as it would behind any other writer.
"""
import itertools
import os
import signal
import sqlite3
import time

import pytest

from images import write_shapes
from nipgboard_plugin import paths
from nipgboard_plugin.errors import UserError
from nipgboard_plugin.jobs import JobCancelled, JobContext, JobStore, pid_alive
from nipgboard_plugin.jobs.dispatcher import CANCEL_GRACE_SECONDS
from nipgboard_plugin.runs import RunIndex, discover
from plugin_server import TensorBoardServer, writer_lock

NET = "efficientnet_lite0"


def integrity(db):
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


# -- the job database -----------------------------------------------------------------------------------
def test_job_store_life_cycle(tmp_path):
    store = JobStore(tmp_path, create=True)
    a = store.submit("embed", {"network": NET})
    b = store.submit("embed", {"network": "mobilenet_v2"})
    assert a["state"] == b["state"] == "queued" and store.next_queued()[0] == a["id"]
    assert store.claim(a["id"], os.getpid()) is True
    assert store.claim(a["id"], os.getpid()) is False  # a second server cannot take it too
    store.progress(a["id"], "extracting", 5, 10, 2.5, 2.0)
    job = store.get(a["id"])
    assert (job["state"], job["done"], job["total"], job["rate"], job["eta"], job["fraction"]) == \
        ("running", 5, 10, 2.5, 2.0, 0.5)
    assert store.request_cancel(b["id"])["state"] == "cancelled"          # queued: at once
    assert store.request_cancel(a["id"])["cancel_requested"] is True      # running: asked to stop
    assert store.finish(a["id"], "cancelled", result={"partial": 5})
    assert store.get(a["id"])["result"] == {"partial": 5}
    assert store.next_queued() is None
    assert [j["id"] for j in store.list()] == [b["id"], a["id"]]
    store.close()


def test_interrupted_jobs_are_queued_again(tmp_path):
    store = JobStore(tmp_path, create=True)
    dead, live, stale = (store.submit("embed", {"network": NET}) for _ in range(3))
    store.claim(dead["id"], 2 ** 22 + 12345)   # no such process
    store.claim(live["id"], 4242)
    store.claim(stale["id"], 4243)
    store.conn.execute("UPDATE jobs SET updated_at=? WHERE id=?", (time.time() - 3600, stale["id"]))
    requeued = store.requeue_interrupted(lambda pid: pid in (4242, 4243))
    assert sorted(requeued) == sorted([dead["id"], stale["id"]])
    assert store.get(dead["id"])["state"] == "queued" and store.get(dead["id"])["resumed"] == 1
    assert store.get(live["id"])["state"] == "running"
    store.close()


def test_progress_reports_rate_eta_and_cancels(tmp_path):
    store = JobStore(tmp_path, create=True)
    job = store.submit("embed", {})
    store.claim(job["id"], os.getpid())
    ctx = JobContext(store, job["id"])
    ctx.stage("counting", total=100)
    time.sleep(0.05)
    ctx.progress(50, 100, force=True)
    row = store.get(job["id"])
    assert row["stage"] == "counting" and row["done"] == 50 and row["rate"] > 0 and row["eta"] > 0
    store.request_cancel(job["id"])
    time.sleep(0.25)
    with pytest.raises(JobCancelled):
        ctx.progress(60, 100)
    store.close()


def test_pid_alive_only_for_workers():
    assert pid_alive(os.getpid()) is False  # alive, but not a NIPGBoard worker
    assert pid_alive(2 ** 22 + 12345) is False


# -- runs ---------------------------------------------------------------------------------------------------
def test_run_discovery_and_new_run_names(tmp_path):
    logdir = tmp_path / "logdir"
    for run in ("a", "b/c"):
        (logdir / run / "nipgboard").mkdir(parents=True)
        (logdir / run / "nipgboard" / paths.DB_FILENAME).touch()
    (logdir / "plain").mkdir()
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "nipgboard").mkdir(parents=True)
    (elsewhere / "nipgboard" / paths.DB_FILENAME).touch()
    os.symlink(elsewhere, logdir / "linked")
    assert list(discover(logdir)) == ["a", "b/c"]   # the symlinked run outside the logdir is not a run
    index = RunIndex(logdir)
    assert index.resolve("b/c") == logdir / "b" / "c"
    for bad in ("../x", "/abs", "x/../../y", "", ".hidden", "a/inner", "b", "linked/new", "x" * 65, "n\x00"):
        with pytest.raises(UserError):
            index.resolve(bad) if bad in ("",) else index.new_run_dir(bad)
    assert index.new_run_dir("new/run") == logdir / "new" / "run"
    assert not (logdir / "new").exists()  # naming a run creates nothing


# -- through the real server ------------------------------------------------------------------------------
EMBED_NET = "mobilenet_v2"
ACTIVE = ("running", "done", "failed", "cancelled")


def vectors(db):
    """How many feature vectors the run's cache holds (0 before its first batch)."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    except sqlite3.OperationalError:  # no table yet: nothing was ever stored
        return 0
    finally:
        conn.close()


def worker_pid(tb):
    """The pid of the server's worker process now (a finished job no longer names one)."""
    worker = tb.get_json("runs")["jobs"]["worker"]
    assert worker and worker["alive"], worker
    return worker["pid"]


def write_images(folder, per_class=20, seed=0):
    """20 (per_class) images each of three labelled classes and of unlabelled ones."""
    write_shapes(folder, per_class=per_class, size=40, classes=("circle", "square", "triangle", "unlabelled"),
                 start_seed=seed)


class Runs:
    """A server and fresh runs on it: each test ingests its own, so none sees another's features."""

    def __init__(self, tb, base):
        self.tb, self.base = tb, base
        self.n = itertools.count()

    def new(self, per_class=20):
        i = next(self.n)
        images = self.base / f"images-{i}"
        write_images(images, per_class, seed=100 * i)
        name = f"run{i}"
        self.tb.run_job(name, "ingest", images=str(images), folder_labels=True)
        return name, self.tb.logdir / name

    def load_engine(self):
        """Embed a new tiny run, so the worker has the network loaded; returns that worker's pid."""
        name, _ = self.new(per_class=1)
        self.tb.run_job(name, "embed", network=EMBED_NET)
        return worker_pid(self.tb)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, nipgboard_home):
    base = tmp_path_factory.mktemp("jobs-server")
    logdir = base / "logdir"
    logdir.mkdir()
    tb = TensorBoardServer(logdir, nipgboard_home, log_path=base / "tb.log", roots=[base]).start()
    yield Runs(tb, base)
    tb.stop()


def cancel_after_first_batch(tb, run, run_dir, batch_size=4):
    """Start an embed held before its first write, cancel it, let it go: it stops after that one batch."""
    db = paths.features_path(run_dir)
    with writer_lock(db):
        job = tb.start_job(run, "embed", network=EMBED_NET, batch_size=batch_size)
        running = tb.wait_job(run, job["id"], states=ACTIVE)
        assert running["state"] == "running", running
        answer = tb.post_json("cancel_job", {"run": run, "id": job["id"]})
        assert answer["state"] == "running" and answer["cancel_requested"] is True, answer
    return running, tb.wait_job(run, job["id"], timeout=60)


def test_cancel_stops_an_embed_after_its_batch_and_keeps_it(runs):
    tb = runs.tb
    worker = runs.load_engine()
    run, run_dir = runs.new()
    running, end = cancel_after_first_batch(tb, run, run_dir, batch_size=4)
    assert running["worker_pid"] == worker  # the network is loaded: the job stops at its own pace
    # Cooperative: the batch it was writing is stored, nothing after it, and the worker lives on.
    assert end["state"] == "cancelled" and "restarted" not in end["message"], end
    assert end["result"]["extracted"] == 4 and end["result"]["stopped"] is True
    assert vectors(paths.features_path(run_dir)) == 4
    assert worker_pid(tb) == worker
    # Starting it again extracts only the rest.
    again = tb.run_job(run, "embed", network=EMBED_NET)
    assert (again["result"]["cached_before"], again["result"]["extracted"]) == (4, 76)
    assert worker_pid(tb) == worker


def test_a_worker_that_dies_fails_its_job_only(runs):
    tb = runs.tb
    runs.load_engine()
    run, run_dir = runs.new()
    db = paths.features_path(run_dir)
    with writer_lock(db):
        job = tb.start_job(run, "embed", network=EMBED_NET, batch_size=4)
        running = tb.wait_job(run, job["id"], states=ACTIVE)
        assert running["state"] == "running", running
        queued = tb.start_job(run, "embed", network=EMBED_NET)
        os.kill(running["worker_pid"], signal.SIGKILL)
        failed = tb.wait_job(run, job["id"], timeout=30)
    assert failed["state"] == "failed" and "worker process stopped unexpectedly" in failed["error"], failed
    assert not pid_alive(running["worker_pid"])
    # The job behind it runs on a new worker and does all the work: nothing of the killed batch landed.
    after = tb.wait_job(run, queued["id"], timeout=240)
    assert after["state"] == "done" and worker_pid(tb) != running["worker_pid"], after
    assert (after["result"]["cached_before"], after["result"]["extracted"]) == (0, 80)
    assert vectors(db) == 80


def test_a_job_deaf_to_cancel_is_stopped_by_restarting_the_worker(runs):
    """A stage that reports no progress (a long UMAP fit, a write waiting on a lock) cannot see the cancel;
    the dispatcher waits CANCEL_GRACE_SECONDS, then kills the worker."""
    tb = runs.tb
    run, run_dir = runs.new()
    db = paths.features_path(run_dir)
    with writer_lock(db):
        job = tb.start_job(run, "embed", network=EMBED_NET, batch_size=4)
        running = tb.wait_job(run, job["id"], states=ACTIVE)
        assert running["state"] == "running", running
        t0 = time.monotonic()
        tb.post_json("cancel_job", {"run": run, "id": job["id"]})
        end = tb.wait_job(run, job["id"], timeout=60)
        waited = time.monotonic() - t0
    assert end["state"] == "cancelled" and "restarted" in end["message"], end
    assert waited >= CANCEL_GRACE_SECONDS
    assert not pid_alive(running["worker_pid"])
    assert vectors(db) == 0
    after = tb.run_job(run, "embed", network=EMBED_NET, timeout=240)
    assert after["result"]["extracted"] == 80 and worker_pid(tb) != running["worker_pid"]


def test_kill_9_during_embed_then_restart_resumes(nipgboard_home, tmp_path):
    images = tmp_path / "images"
    write_images(images)
    write_shapes(tmp_path / "tiny", per_class=1, size=40, start_seed=500)
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    tb = TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log", roots=[tmp_path]).start()
    try:
        tb.run_job("tiny", "ingest", images=str(tmp_path / "tiny"), folder_labels=True)
        tb.run_job("tiny", "embed", network=EMBED_NET)          # the worker has the network loaded
        tb.run_job("shapes", "ingest", images=str(images), folder_labels=True)
        run_dir = logdir / "shapes"
        meta = tb.get_json("metadata", run="shapes")
        pool = [i for i, s in zip(meta["ids"], meta["split"]) if s == "pool"]
        assert len(meta["ids"]) == 80 and len(pool) == 20
        tb.post_json("set_labels", {"run": "shapes", "ids": pool[:10], "label": "circle"})
        # A first embed stopped after one batch of 4: the cache holds 4 of the 80 images.
        _, first = cancel_after_first_batch(tb, "shapes", run_dir, batch_size=4)
        assert first["state"] == "cancelled" and vectors(paths.features_path(run_dir)) == 4, first
        # The second embed is killed with TensorBoard while its batch waits to be written.
        with writer_lock(paths.features_path(run_dir)):
            job = tb.start_job("shapes", "embed", network=EMBED_NET, batch_size=4)
            running = tb.wait_job("shapes", job["id"], states=ACTIVE)
            assert running["state"] == "running" and running["worker_pid"], running
            tb.post_json("set_labels", {"run": "shapes", "id": pool[10], "label": "square"})  # just before the kill
            worker = running["worker_pid"]
            tb.kill9()
            deadline = time.monotonic() + 10
            while pid_alive(worker) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pid_alive(worker), "the worker outlived the killed server"
    except BaseException:
        tb.stop()
        raise
    data = paths.data_dir(run_dir)
    for db in ("dataset.sqlite", "features.sqlite", "jobs.sqlite"):
        assert integrity(data / db) == "ok"
    assert vectors(data / "features.sqlite") == 4          # the killed batch never landed
    conn = sqlite3.connect(data / "jobs.sqlite")
    assert conn.execute("SELECT state FROM jobs WHERE id=?", (job["id"],)).fetchone()[0] == "running"
    conn.close()

    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb2.log", roots=[tmp_path]) as tb2:
        resumed = tb2.wait_job("shapes", job["id"], timeout=240)
        # The same job, queued again by the new server, extracts exactly the 76 images without features.
        assert resumed["state"] == "done" and resumed["resumed"] == 1, resumed
        assert (resumed["result"]["cached_before"], resumed["result"]["extracted"]) == (4, 76)
        assert {"run": "shapes", "id": job["id"]} in tb2.get_json("runs")["jobs"]["recovered"]
        nets = {n["id"]: n for n in tb2.get_json("networks", run="shapes")["networks"]}
        assert nets[EMBED_NET]["cached"] == 80
        labels = dict(zip(*[tb2.get_json("metadata", run="shapes")[k] for k in ("ids", "label")]))
        assert all(labels[i] == "circle" for i in pool[:10]) and labels[pool[10]] == "square"
        assert tb2.get_json("summary", run="shapes")["labelled"] == 60 + 11
        again = tb2.run_job("shapes", "embed", network=EMBED_NET)
        assert again["result"]["extracted"] == 0  # and it can simply be started again
        sim = tb2.get_json("similar", run="shapes", network=EMBED_NET, id=meta["ids"][0], k=3)
        assert len(sim["similar"]) == 3
    for db in ("dataset.sqlite", "features.sqlite", "jobs.sqlite"):
        assert integrity(data / db) == "ok"
