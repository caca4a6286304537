"""The worker's background compile of UMAP stays out of a feature extraction's way (jobs/warmup.py), seen
through the real TensorBoard: the state the server reports for the worker while an embed job runs.

1. A job queued before the server starts (a restart resuming it): the compile waits until the job is done.
2. An embed started while the compile runs: the compile pauses while the features are extracted, then
   goes on, in the same worker, and finishes.
3. In one process: while a job or an extraction runs, the compile pauses between two of numba's compiles,
   so the job's own compile (a fit during the extraction) never waits for it.
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


@pytest.mark.parametrize("during", ["a job", "an extraction"])
def test_compile_steps_aside_between_two_of_numbas_compiles(during):
    """In one process, with numba's real compiler: while a job or an extraction runs the warm-up pauses,
    never holding numba's compiler lock, so a fit in the job (during its extraction, for a pipeline that
    opens the view early) compiles at once; the warm-up goes on when the job ends."""
    import contextlib
    import threading

    from numba import njit
    from numba.core.compiler_lock import global_compiler_lock

    from nipgboard_plugin.jobs.warmup import Activity, WarmUp

    activity, states, compiled, extracting = Activity(), [], [], [False]

    @contextlib.contextmanager
    def running():
        if during == "a job":
            with activity.job():
                yield
        else:
            extracting[0] = True
            try:
                yield
            finally:
                extracting[0] = False

    def compile_fn():
        t0 = time.monotonic()
        for k in range(40):     # forty small compiles, each under numba's compiler lock
            compiled.append(njit(lambda x, k=k: x * 2 + k)(1))
        return time.monotonic() - t0

    def send(**msg):
        states.append(msg.get("state") or ("warm", msg.get("seconds"), msg.get("error")))

    warm = WarmUp(compile_fn, send, activity, idle_seconds=0, extracting=lambda: extracting[0]).start()
    deadline = time.monotonic() + 120
    while not compiled:
        assert time.monotonic() < deadline, states
        time.sleep(0.05)
    with running():
        while warm.state != "paused":
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        done_at_pause = len(compiled)
        # The lock is free: the job's own compile does not wait for the warm-up.
        got = threading.Event()
        threading.Thread(target=lambda: (global_compiler_lock.acquire(), got.set(),
                                         global_compiler_lock.release()), daemon=True).start()
        assert got.wait(5), "the paused warm-up holds numba's compiler lock"
        assert njit(lambda x: x - 1)(5) == 4
        time.sleep(1.0)
        assert warm.state == "paused" and len(compiled) == done_at_pause   # no compile meanwhile
    while warm.state != "done":
        assert time.monotonic() < deadline, states
        time.sleep(0.05)
    assert len(compiled) == 40 and states[-1][0] == "warm" and states[-1][2] is None
    assert "paused" in states and states.index("paused") > states.index("compiling")
