"""The job queue and its worker: persistence, cancel, crashes, and `kill -9` of TensorBoard mid-job."""
import os
import sqlite3
import time

import pytest

from images import write_shapes
from nipgboard_plugin import paths
from nipgboard_plugin.errors import UserError
from nipgboard_plugin.jobs import JobCancelled, JobContext, JobStore, pid_alive
from nipgboard_plugin.runs import RunIndex, discover
from plugin_server import TensorBoardServer

NET = "efficientnet_lite0"
NET2 = "mobilenet_v2"


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
@pytest.fixture()
def shapes_logdir(tmp_path):
    images = tmp_path / "images"
    write_shapes(images, per_class=20, size=40, classes=("circle", "square", "triangle", "unlabelled"))
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    return images, logdir


def test_kill_9_during_embed_then_restart_resumes(shapes_logdir, nipgboard_home, tmp_path):
    images, logdir = shapes_logdir
    tb = TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log", roots=[images]).start()
    try:
        tb.run_job("shapes", "ingest", images=str(images), folder_labels=True)
        meta = tb.get_json("metadata", run="shapes")
        pool = [i for i, s in zip(meta["ids"], meta["split"]) if s == "pool"]
        assert len(meta["ids"]) == 80 and len(pool) == 20
        tb.post_json("set_labels", {"run": "shapes", "ids": pool[:10], "label": "circle"})
        job = tb.start_job("shapes", "embed", network=NET, batch_size=1)
        running = tb.wait_job("shapes", job["id"], timeout=240, until=lambda j: j["done"] >= 5)
        assert running["state"] == "running" and running["worker_pid"], running
        assert 0 < running["done"] < 80 and running["total"] == 80 and running["rate"] > 0
        tb.post_json("set_labels", {"run": "shapes", "id": pool[10], "label": "square"})  # just before the kill
        worker = running["worker_pid"]
        tb.kill9()
    except BaseException:
        tb.stop()
        raise
    deadline = time.monotonic() + 10
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pid_alive(worker), "the worker outlived the killed server"
    data = paths.data_dir(logdir / "shapes")
    for db in ("dataset.sqlite", "features.sqlite", "jobs.sqlite"):
        assert integrity(data / db) == "ok"
    conn = sqlite3.connect(data / "jobs.sqlite")
    assert conn.execute("SELECT state FROM jobs WHERE id=?", (job["id"],)).fetchone()[0] == "running"
    conn.close()

    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb2.log", roots=[images]) as tb2:
        resumed = tb2.wait_job("shapes", job["id"], timeout=240)
        assert resumed["state"] == "done" and resumed["resumed"] == 1, resumed
        assert resumed["result"]["cached_before"] >= 5
        assert resumed["result"]["cached_before"] + resumed["result"]["extracted"] == 80
        nets = {n["id"]: n for n in tb2.get_json("networks", run="shapes")["networks"]}
        assert nets[NET]["cached"] == 80
        labels = dict(zip(*[tb2.get_json("metadata", run="shapes")[k] for k in ("ids", "label")]))
        assert all(labels[i] == "circle" for i in pool[:10]) and labels[pool[10]] == "square"
        assert tb2.get_json("summary", run="shapes")["labelled"] == 60 + 11
        again = tb2.run_job("shapes", "embed", network=NET)
        assert again["result"]["extracted"] == 0  # and it can simply be started again
        sim = tb2.get_json("similar", run="shapes", network=NET, id=meta["ids"][0], k=3)
        assert len(sim["similar"]) == 3
    for db in ("dataset.sqlite", "features.sqlite", "jobs.sqlite"):
        assert integrity(data / db) == "ok"


def test_cancel_crash_and_a_stubborn_job(shapes_logdir, nipgboard_home, tmp_path):
    images, logdir = shapes_logdir
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log", roots=[images]) as tb:
        tb.run_job("shapes", "ingest", images=str(images), folder_labels=True)
        # Cooperative cancel: the embed stops after its batch and keeps what it extracted.
        job = tb.start_job("shapes", "embed", network=NET, batch_size=1)
        tb.wait_job("shapes", job["id"], timeout=240, until=lambda j: j["done"] >= 3)
        t0 = time.monotonic()
        tb.post_json("cancel_job", {"run": "shapes", "id": job["id"]})
        end = tb.wait_job("shapes", job["id"], timeout=30)
        assert end["state"] == "cancelled" and time.monotonic() - t0 < 5
        kept = end["result"]["extracted"]
        assert 3 <= kept < 80
        # A worker that dies mid-job fails that job only; the next job gets a fresh worker.
        job = tb.start_job("shapes", "embed", network=NET2, batch_size=1)
        running = tb.wait_job("shapes", job["id"], timeout=240, until=lambda j: j["done"] >= 2)
        assert running["state"] == "running", running
        os.kill(running["worker_pid"], 9)
        failed = tb.wait_job("shapes", job["id"], timeout=30)
        assert failed["state"] == "failed" and "worker process stopped" in failed["error"]
        done = tb.run_job("shapes", "embed", network=NET2)
        assert done["result"]["cached_before"] >= 1 and done["result"]["extracted"] < 80
        # A stage without progress reports (UMAP's first fit compiles for many seconds) is stopped by
        # restarting the worker once the grace period has passed.
        assert tb.run_job("shapes", "embed", network=NET)["result"]["cached_before"] == kept
        job = tb.start_job("shapes", "project", network=NET, method="umap", n_components=2)
        tb.wait_job("shapes", job["id"], timeout=60, states=("running", "done", "failed"))
        tb.post_json("cancel_job", {"run": "shapes", "id": job["id"]})
        end = tb.wait_job("shapes", job["id"], timeout=60)
        if end["state"] != "done":  # on a very fast machine the fit may finish first
            assert end["state"] == "cancelled" and "restarted" in end["message"], end
        after = tb.run_job("shapes", "rare", network=NET, n=2)
        assert after["state"] == "done"
