"""The one-click pipeline is a job on the server: a chain of steps that needs no browser.

It runs embed -> project -> cluster -> predict in the worker, reports each step as a stage, takes each
step's options checked by that step's own declarations, and finishes after the server that ran it
was killed (the chain is queued again and resumes: features come from the cache).
"""
import time

from images import write_shapes
from plugin_server import TensorBoardServer

NET = "efficientnet_lite0"
RUN = "shapes"


def _ingest(tb, images):
    tb.run_job(RUN, "ingest", images=str(images), folder_labels=True)
    return tb.get_json("metadata", run=RUN)


def test_pipeline_runs_the_chain_and_survives_a_killed_server(tmp_path, nipgboard_home):
    images = tmp_path / "images"
    write_shapes(images, per_class=20, size=40, classes=("circle", "square", "triangle", "unlabelled"))
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    tb = TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log", roots=[images]).start()
    try:
        meta = _ingest(tb, images)
        assert meta["count"] == 80
        # One image per batch keeps the embed running long enough to kill the server in the middle of it.
        job = tb.start_job(RUN, "pipeline", network=NET, options={"embed": {"batch_size": 1},
                                                                 "cluster": {"resolution": 0.5}})
        assert job["params"]["steps"] == ["embed", "project", "cluster", "predict"]
        assert job["params"]["options"]["cluster"]["resolution"] == 0.5
        assert job["params"]["options"]["cluster"]["graph"] == "mst"   # the step's own default, filled in
        running = tb.wait_job(RUN, job["id"], timeout=300, until=lambda j: j["done"] >= 5
                              and (j["stage"] or "").startswith("1/4 embed"))
        assert running["state"] == "running" and running["total"] == 80, running
        tb.kill9()
    except BaseException:
        tb.stop()
        raise

    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb2.log", roots=[images]) as tb2:
        seen_stages = set()
        deadline = time.monotonic() + 600
        while True:
            state = tb2.get_json("job", run=RUN, id=job["id"])
            if state["stage"]:
                seen_stages.add(state["stage"].split(":")[0])
            if state["state"] in ("done", "failed", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert state["state"] == "done", state
        assert state["resumed"] == 1
        result = state["result"]
        assert list(result["steps"]) == ["embed", "project", "cluster", "predict"]
        assert result["steps"]["embed"]["cached_before"] >= 5                    # resumed, not redone
        assert result["steps"]["embed"]["cached_before"] + result["steps"]["embed"]["extracted"] == 80
        assert result["steps"]["cluster"]["resolution"] == 0.5                 # the option reached the step
        assert "points" in result["projector"]                                  # written once, at the end
        assert not any("projector" in r for r in result["steps"].values())
        assert result["thumbnails"]["images"] == 80 and result["thumbnails"]["tile"] == 64
        # The panel's atlas is drawn by the job: the view opens with its thumbnails, no second job.
        assert all(pg["ready"] for pg in tb2.get_json("sprite_index", run=RUN, tile=64)["pages"])
        assert {"1/4 embed", "4/4 predict"} <= seen_stages
        # What the panel reads after a reload: points, clusters and predictions for every image.
        status, headers, body = tb2.get("points", run=RUN, network=NET)
        assert status == 200 and int(headers["x-nipgboard-count"]) == 80 and len(body) == 80 * 3 * 4
        after = tb2.get_json("metadata", run=RUN, network=NET)
        assert all(p is not None for p in after["predicted"]) and all(c is not None for c in after["cluster"])
        pool = [p for p, s in zip(after["predicted"], after["split"]) if s == "pool"]
        assert set(pool) <= {"circle", "square", "triangle"} and len(pool) == 20


def test_pipeline_options_are_checked_when_submitted(tmp_path, nipgboard_home):
    images = tmp_path / "images"
    write_shapes(images, per_class=3, size=32)
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log", roots=[images]) as tb:
        _ingest(tb, images)
        for options, status, message in (
                ({"project": {"n_neighbors": 1}}, 400, "n_neighbors"),
                ({"project": {"colour": "red"}}, 400, "unknown parameter 'colour'"),
                ({"export": {}}, 400, "not one of the steps"),
                ({"project": {"network": "mobilenet_v2"}}, 400, "the pipeline's own")):
            answer = tb.post_json("start_job", {"run": RUN, "kind": "pipeline",
                                                "params": {"network": NET, "options": options}}, expect=status)
            assert message in answer["error"], answer
        answer = tb.post_json("start_job", {"run": RUN, "kind": "pipeline",
                                            "params": {"network": NET, "steps": ["cluster", "embed"]}}, expect=400)
        assert "in the order" in answer["error"]
        assert tb.get_json("jobs", run=RUN)["jobs"][0]["kind"] == "ingest"    # nothing was queued
