"""The worker's background compile of UMAP stays out of a feature extraction's way (jobs/warmup.py), seen
through the real TensorBoard: the state the server reports for the worker while an embed job runs.

1. A job queued before the server starts (a restart resuming it): the compile waits until the job is done.
2. An embed started while the compile runs: the compile pauses while the features are extracted, then
   goes on, in the same worker, and finishes.
3. In one process: a fit between two batches of an extraction (the early view) does not wait for the
   compile paused by that extraction.
"""
import time

import pytest

from demo import fashion_mnist
from nipgboard_plugin import steps
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.jobs.store import JobStore
from plugin_server import TensorBoardServer

NET = "efficientnet_lite0"
RUN = "fashion"
LIMIT = 480          # seconds a compile or an extraction may take on 2 busy cores


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    images_dir, labels_csv, _ = fashion_mnist.write(tmp_path_factory.mktemp("fashion") / "images", n=600)
    return images_dir, labels_csv


def fresh_run(tmp_path, images):
    logdir = tmp_path / "logdir"
    ingest(logdir / RUN, images[0], labels_csv=images[1])
    return logdir


def watch(tb, job_id, until, timeout=LIMIT):
    """[(job state, job stage, worker's warm_up, worker's warm)] polled until ``until(job, worker)``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = tb.get_json("jobs", run=RUN)
        job = next(j for j in answer["jobs"] if j["id"] == job_id)
        worker = answer["worker"]["worker"] or {}
        seen.append((job["state"], job.get("stage") or "", worker.get("warm_up"), worker.get("warm")))
        if until(job, worker):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"timed out; last seen {seen[-5:]}")


def test_compile_waits_for_a_job_queued_at_start(tmp_path, images, nipgboard_home):
    logdir = fresh_run(tmp_path, images)
    run_dir = logdir / RUN
    params = steps.get("embed").clean({"network": NET}, run_dir, face="web")
    with JobStore(run_dir, create=True) as store:
        job = store.submit("embed", params)
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log",
                           env={"NIPGBOARD_WARMUP": "1"}) as tb:
        seen = watch(tb, job["id"], lambda j, w: j["state"] not in ("queued", "running"))
        assert seen[-1][0] == "done", seen[-1]
        during = [s for s in seen if s[0] == "running"]
        assert during and all(s[2] in ("waiting", None) for s in during), during
        after = watch(tb, job["id"], lambda j, w: w.get("warm_up") not in ("waiting", None), timeout=60)
        assert after[-1][2] in ("compiling", "done"), after[-1]


def test_compile_pauses_while_features_are_extracted(tmp_path, images, nipgboard_home):
    logdir = fresh_run(tmp_path, images)
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log",
                           env={"NIPGBOARD_WARMUP": "1"}) as tb:
        deadline = time.monotonic() + 120
        while (tb.get_json("runs")["jobs"]["worker"] or {}).get("warm_up") != "compiling":
            assert time.monotonic() < deadline, tb.get_json("runs")["jobs"]
            time.sleep(0.2)
        pid = tb.get_json("runs")["jobs"]["worker"]["pid"]
        job = tb.start_job(RUN, "embed", network=NET)
        seen = watch(tb, job["id"], lambda j, w: j["state"] not in ("queued", "running"))
        assert seen[-1][0] == "done", seen[-1]
        extracting = [s for s in seen if s[0] == "running" and s[1].startswith("extracting")]
        assert extracting, seen
        # A compile that finished before the extraction began pauses nothing. Otherwise it pauses at its
        # next Python call (a call into LLVM may end first) and stays paused until the extraction ends.
        states = [s[2] for s in extracting]
        if states[0] != "done":
            assert "paused" in states, extracting
            assert set(states[states.index("paused"):]) == {"paused"}, extracting
        if any(s[2] == "paused" for s in extracting):
            final = watch(tb, job["id"], lambda j, w: w.get("warm") is not None)
            assert final[-1][3] is True, final[-1]
        worker = tb.get_json("runs")["jobs"]["worker"]
        assert worker["pid"] == pid and worker["alive"], worker


def test_a_fit_between_two_batches_does_not_wait_for_the_paused_compile():
    """In one process, with numba's real compiler: a compile paused by an extraction may hold numba's
    compiler lock. The early view's fit between two batches runs in ``features.paused_extraction()``, so
    the compile goes on, and the fit's own compile gets the lock (before, it waited for it forever)."""
    import threading

    from numba import njit

    from nipgboard_plugin import features
    from nipgboard_plugin.jobs.warmup import Activity, WarmUp

    activity, states, compiled = Activity(), [], []

    def compile_fn():
        t0 = time.monotonic()
        for k in range(200):     # small compiles, each under numba's compiler lock
            compiled.append(njit(lambda x, k=k: x * 2 + k)(1))
        return time.monotonic() - t0

    def send(**msg):
        states.append(msg.get("state") or ("warm", msg.get("seconds"), msg.get("error")))

    warm = WarmUp(compile_fn, send, activity, idle_seconds=0, extracting=features.extracting).start()
    deadline = time.monotonic() + 120
    while not compiled:
        assert time.monotonic() < deadline, states
        time.sleep(0.05)
    with activity.job(), features._Extraction():      # a job extracting features, as embed does
        while warm.state != "paused":
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        paused_at = len(compiled)
        time.sleep(0.5)
        assert len(compiled) == paused_at          # paused: no compile beside the extraction
        with features.paused_extraction():          # a fit between two batches
            fitted = []
            fit = threading.Thread(target=lambda: fitted.append(njit(lambda x: x - 1)(5)), daemon=True)
            fit.start()
            fit.join(60)
            assert fitted == [4], "the fit waited for the paused compile's lock"
    while warm.state != "done":
        assert time.monotonic() < deadline + 120, states
        time.sleep(0.05)
    assert len(compiled) == 200 and states[-1][0] == "warm" and states[-1][2] is None
