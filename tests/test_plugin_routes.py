"""The plugin's routes, driven through a real `tensorboard` process on loopback.

One server serves the module (with NIPGBOARD_WARMUP=0: UMAP is compiled only by the one test about the
warm-up, on its own server). Every test builds what it needs from module fixtures that are complete in
themselves: `dataset` (ingested and embedded through the routes), `projected` (PCA and clusters of NET),
`predicted` (both networks' predictions). A test that changes labels works on its own copy of the run
(`copy_run`), so the tests run alone and in any order.
"""
import contextlib
import csv
import io
import itertools
import json
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from images import shape_image, write_bad_files, write_shapes
from nipgboard_plugin import paths
from nipgboard_plugin.steps import all_steps
from plugin_server import PREFIX, TensorBoardServer, writer_lock

NET = "efficientnet_lite0"
NET2 = "mobilenet_v2"
RUN = "shapes"
CLASSES = ("circle", "square", "triangle")
ACTIVE = ("running", "done", "failed", "cancelled")
WARM_UP_LIMIT = 480   # seconds the worker may take to compile UMAP (about 3 minutes on 2 busy cores)


# -- the dataset and the server ----------------------------------------------------------------------
def write_world(base):
    images = base / "images"
    write_shapes(images, per_class=8, size=48)                                    # labelled by folder
    write_shapes(images / "unlabelled", per_class=8, size=48, start_seed=100)    # the pool
    write_bad_files(images)
    (images / "dup").mkdir()
    shutil.copy(images / "circle" / "circle_000.png", images / "dup" / "copy.png")
    outside = base / "outside"
    outside.mkdir()
    shape_image("circle", 7, size=48).save(outside / "secret.png")
    (outside / "secret.txt").write_text("not for the browser\n")
    os.symlink(outside / "secret.png", images / "link_out.png")
    return images, outside


@pytest.fixture(scope="module")
def world(tmp_path_factory, nipgboard_home):
    base = tmp_path_factory.mktemp("plugin-routes")
    images, outside = write_world(base)
    logdir = base / "logdir"
    logdir.mkdir()
    server = TensorBoardServer(logdir, nipgboard_home, log_path=base / "tensorboard.log", roots=[images]).start()
    yield {"base": base, "images": images, "outside": outside, "logdir": logdir, "tb": server}
    server.stop()


@pytest.fixture(scope="module")
def tb(world):
    return world["tb"]


@pytest.fixture(scope="module")
def dataset(world, tb):
    """Ingest the folder and extract NET's features, through the routes."""
    before = sorted(p.relative_to(world["images"]).as_posix() for p in world["images"].rglob("*"))
    ingest = tb.run_job(RUN, "ingest", images=str(world["images"]), folder_labels=True)
    after = sorted(p.relative_to(world["images"]).as_posix() for p in world["images"].rglob("*"))
    assert before == after, "ingest wrote into the images folder"
    embed = tb.run_job(RUN, "embed", network=NET, batch_size=16, timeout=300)
    meta = tb.get_json("metadata", run=RUN)
    by_path = dict(zip(meta["paths"], meta["ids"]))
    return {"ingest": ingest, "embed": embed, "meta": meta, "by_path": by_path}


@pytest.fixture(scope="module")
def projected(tb, dataset):
    """NET's 3-D PCA view and its MST/Louvain clusters."""
    project = tb.run_job(RUN, "project", network=NET, method="pca", n_components=3)
    cluster = tb.run_job(RUN, "cluster", network=NET, graph="mst", method="louvain")
    return {"project": project, "cluster": cluster}


@pytest.fixture(scope="module")
def predicted(tb, projected):
    """Both networks' kNN predictions (NET2 embedded, never projected)."""
    embed2 = tb.run_job(RUN, "embed", network=NET2, batch_size=16, timeout=300)
    jobs = {net: tb.run_job(RUN, "predict", network=net, method="knn", projector=False) for net in (NET, NET2)}
    return {"embed2": embed2, "predict": jobs}


_copies = itertools.count()


def copy_run(world, logdir=None, results=True, features=True):
    """A new run holding a copy of RUN as it is now (its dataset with the same ids and labels, and unless
    told otherwise its feature cache and results; never its jobs), in RUN's logdir or ``logdir``."""
    name = f"{RUN}-copy{next(_copies)}"
    src, dst = world["logdir"] / RUN, Path(logdir or world["logdir"]) / name

    def ignore(_folder, names):
        return {n for n in names if ".sqlite" in n or (not results and n == paths.RESULTS_DIRNAME)}

    shutil.copytree(src, dst, ignore=ignore)
    for filename in (paths.DB_FILENAME,) + ((paths.FEATURES_FILENAME,) if features else ()):
        with contextlib.closing(sqlite3.connect(paths.data_dir(src) / filename)) as a, \
                contextlib.closing(sqlite3.connect(paths.data_dir(dst) / filename)) as b:
            a.backup(b)   # a consistent copy, whatever the write-ahead log holds
    return name, dst


def labels_of(tb, run):
    meta = tb.get_json("metadata", run=run)
    return dict(zip(meta["ids"], meta["label"]))


def history_of(tb, run, image_id):
    return [(h["old_label"], h["new_label"], h["source"])
            for h in tb.get_json("label_history", run=run, id=image_id)["history"]]


# -- before any dataset ------------------------------------------------------------------------------------
def test_onboarding_without_a_dataset(nipgboard_home, tmp_path):
    logdir = tmp_path / "empty-logdir"
    logdir.mkdir()
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log") as tb:
        listing = json.loads(tb.request("GET", "/data/plugins_listing")[2])
        assert listing["nipgboard"]["tab_name"] == "NIPGBoard"
        assert listing["nipgboard"]["loading_mechanism"] == {"type": "IFRAME",
                                                             "module_path": "/data/plugin/nipgboard/index.js"}
        assert listing["nipgboard"]["enabled"] is False
        runs = tb.get_json("runs")
        assert runs["runs"] == [] and "ingest" in runs["onboarding"]
        assert runs["jobs"]["worker"] is None    # no dataset, no warm-up: no worker process yet
        status, headers, body = tb.get("index.js")
        assert status == 200 and headers["content-type"].startswith("text/javascript")
        # the built panel (minified: "export{x as render}") or the minimal page ("export async function render")
        assert re.search(rb"export\s*\{[^}]*\bas render\b|export (async )?function render\b", body)
        status, headers, body = tb.get("index.html")
        assert status == 200 and b'src="static/minimal/boot.js"' in body
        assert "default-src 'self'" in headers["content-security-policy"]
        assert tb.get("static/minimal/boot.js")[0] == 200
        entry = tb.request("GET", "/data/plugin_entry.html?name=nipgboard")
        assert entry[0] == 200 and b'<base href="plugin/nipgboard/"' in entry[2]
        kinds = {k["kind"]: k for k in tb.get_json("kinds")["kinds"]}
        assert set(kinds) == {name for name, step in all_steps().items() if step.job}   # every job step
        assert {"ingest", "embed", "project", "cluster", "predict", "evaluate", "search", "disagreements",
                "projector", "export", "duplicates", "rare", "sprites", "pipeline"} <= set(kinds)
        assert "similar" not in kinds            # answered by its route, never a job
        assert all(k["available"] for k in kinds.values())
        embed_params = {p["name"]: p for p in kinds["embed"]["params"]}
        assert embed_params["network"]["type"] == "network" and embed_params["network"]["required"] is True
        assert embed_params["batch_size"] == {"name": "batch_size", "type": "int", "default": 32, "required": False,
                                              "min": 1, "max": 512, "choices": None, "help": "images per batch"}
        assert kinds["ingest"]["needs_dataset"] is False
        assert "images" in [p["name"] for p in kinds["ingest"]["params"]]
        assert "workers" not in [p["name"] for p in kinds["ingest"]["params"]]  # the shell's alone
        assert tb.get_json("jobs")["jobs"] == []


# -- the flow, step by step ------------------------------------------------------------------------------
def test_ingest_and_embed(tb, dataset, world):
    listing = json.loads(tb.request("GET", "/data/plugins_listing")[2])
    assert listing["nipgboard"]["enabled"] is True
    runs = {r["name"]: r for r in tb.get_json("runs")["runs"]}
    assert (runs[RUN]["dataset"], runs[RUN]["images"], runs[RUN]["labelled"]) == (True, 48, 24)
    summary = tb.get_json("summary", run=RUN)
    assert summary["images"] == 48 and summary["classes"] == {"circle": 8, "square": 8, "triangle": 8}
    reasons = {u["path"]: u["reason"] for u in summary["unreadable"]}
    assert "truncated" in reasons["bad/truncated.jpg"] and "empty" in reasons["bad/empty.jpg"]
    assert "outside" in reasons["link_out.png"]
    assert summary["duplicates"] == [{"path": "dup/copy.png", "kept": "circle/circle_000.png",
                                      "image_id": dataset["by_path"]["circle/circle_000.png"]}]
    job = dataset["embed"]
    assert job["result"]["extracted"] == 48 and job["done"] == job["total"] == 48
    assert job["rate"] > 0 and job["fraction"] == 1.0 and job["started_at"] <= job["finished_at"]
    nets = {n["id"]: n for n in tb.get_json("networks", run=RUN)["networks"]}
    assert nets[NET]["available"] and nets[NET]["cached"] == 48 and nets[NET]["feature_dim"] == 1280
    # A second click costs nothing: everything comes from the cache.
    again = tb.run_job(RUN, "embed", network=NET)
    assert again["result"]["extracted"] == 0 and again["result"]["cached_before"] == 48
    listed = {j["id"]: j for j in tb.get_json("jobs", run=RUN)["jobs"]}
    for job in (dataset["ingest"], dataset["embed"], again):
        assert listed[job["id"]]["kind"] == job["kind"] and listed[job["id"]]["state"] == "done"


def test_project_cluster_and_points(tb, projected, world):
    proj, clus = projected["project"], projected["cluster"]
    assert proj["result"]["images"] == 48
    assert proj["result"]["projector"]["points"] == 48      # the Projector tab's files follow
    assert (world["logdir"] / RUN / "projector_config.pbtxt").is_file()
    status, headers, body = tb.get("points", run=RUN, network=NET)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert headers["x-nipgboard-count"] == "48" and headers["x-nipgboard-dims"] == "3"
    pts = np.frombuffer(body, dtype="<f4").reshape(48, 3)
    assert np.isfinite(pts).all() and pts.std() > 0
    assert clus["result"]["clusters"] >= 2
    table = tb.get_json("clusters", run=RUN, network=NET)
    assert table["n_clusters"] == clus["result"]["clusters"] and sum(table["sizes"]) == 48
    meta = tb.get_json("metadata", run=RUN, network=NET)
    assert len(meta["cluster"]) == 48 and all(c is not None for c in meta["cluster"])
    assert set(meta["cluster_label"]) <= {*CLASSES, None}


def test_review_says_what_to_run_first(tb, dataset, world):
    name, _ = copy_run(world, results=False)    # the dataset and its features, no predictions
    status, _h, body = tb.get("review", run=name)
    assert status == 409 and "predict" in json.loads(body)["error"]


def test_predict_evaluate_disagreements(tb, predicted):
    """predict -> evaluate -> disagreements (the review queue), for two networks."""
    for net, done in predicted["predict"].items():
        assert done["result"]["images"] == 48 and done["result"]["method"] == "knn", net
        assert "projector" not in done["result"]
    meta = tb.get_json("metadata", run=RUN, network=NET2)
    assert len(meta["predicted"]) == 48 and set(meta["predicted"]) <= set(CLASSES)
    assert all(0.0 <= c <= 1.0 for c in meta["confidence"])
    # the shapes are easy: both networks get the labelled test images right
    for net in (NET, NET2):
        meta = tb.get_json("metadata", run=RUN, network=net)
        test = [(p, lab) for p, lab, s in zip(meta["predicted"], meta["label"], meta["split"]) if s == "test"]
        assert test and all(p == lab for p, lab in test), (net, test)
    job = tb.run_job(RUN, "evaluate", networks=[NET, NET2])
    metrics = tb.get_json("metrics", run=RUN, networks=f"{NET},{NET2}")
    assert metrics["rows"] == job["result"]["rows"]
    rows = {(r["network"], r["method"], r["split"]): r for r in metrics["rows"]}
    assert {(NET, "knn", "train"), (NET, "knn", "test"), (NET2, "knn", "test"), (NET, "cluster", "test")} <= set(rows)
    assert rows[(NET, "knn", "test")]["accuracy"] == rows[(NET2, "knn", "test")]["accuracy"] == 1.0
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in metrics["rows"])
    queue = tb.run_job(RUN, "disagreements", networks=[NET, NET2], all=True)["result"]
    review = tb.get_json("review", run=RUN, networks=f"{NET},{NET2}", all="true")
    assert review["networks"] == [NET, NET2] and review["unlabelled"] == 24
    assert review["queue_length"] == queue["queue_length"] == 24
    doubts = [item["doubt"] for item in review["items"]]
    assert doubts == sorted(doubts, reverse=True)
    assert set(review["items"][0]["votes"]) == {NET, NET2}
    flagged = tb.get_json("review", run=RUN)
    assert flagged["queue_length"] == flagged["flagged"] <= 24
    written = tb.run_job(RUN, "export")["result"]
    assert written["rows"] == 48 and written["out"].startswith(str(tb.logdir))


def test_accuracy_after_each_prediction_says_when_to_stop(tb, predicted):
    """/accuracy: one point per prediction (what the panel plots), the same as the predict job's estimate."""
    for net, done in predicted["predict"].items():
        answer = tb.get_json("accuracy", run=RUN, network=net)
        assert answer["points"], answer
        last = answer["points"][-1]
        assert last["labels"] == 24 and last["method"] == "knn"
        assert {k: last[k] for k in done["result"]["estimate"]} == done["result"]["estimate"]
        assert 0.0 <= last["low"] <= last["accuracy"] <= last["high"] <= 1.0
        assert 0.5 <= last["overall_low"] <= last["overall"] <= last["overall_high"] <= 1.0
    tb.get_json("accuracy", expect=404, run=RUN, network="no_such_network")


def test_worker_warms_up_umap_then_a_grid_search_applies_a_projection(dataset, world, nipgboard_home, tmp_path):
    """As in real use (NIPGBOARD_WARMUP unset), the worker compiles UMAP in the background from its start;
    then the paper's path, a supervised UMAP chosen by a (tiny) grid search, and its clusters."""
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    name, _ = copy_run(world, logdir=logdir, results=False)
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tb.log", env={"NIPGBOARD_WARMUP": "1"},
                           roots=[world["images"]]) as warm:
        deadline = time.monotonic() + WARM_UP_LIMIT
        worker = warm.get_json("runs")["jobs"]["worker"]
        while (worker is None or worker["warm"] is None) and time.monotonic() < deadline:
            time.sleep(1.0)
            worker = warm.get_json("runs")["jobs"]["worker"]
        assert worker is not None and worker["alive"], f"no worker started for the run: {worker}"
        assert worker["warm"] is not None, f"the worker did not finish compiling UMAP within {WARM_UP_LIMIT} s"
        assert worker["warm"] is True, f"the warm-up failed (see {tmp_path / 'tb.log'})"
        job = warm.run_job(name, "search", network=NET, n_neighbors=[5], min_dist=[0.1], graph=["mst"],
                           resolution=[1.0], folds=2, n_components=2, apply=True, timeout=400)
        result = job["result"]
        assert len(result["configs"]) == 1 and 0.0 <= result["best"]["accuracy"] <= 1.0
        assert result["applied"]["project"]["method"] == "umap" and result["applied"]["project"]["dims"] == 2
        status, headers, body = warm.get("points", run=name, network=NET)
        assert headers["x-nipgboard-dims"] == "2" and np.isfinite(np.frombuffer(body, "<f4")).all()
        assert warm.get_json("clusters", run=name, network=NET)["n_clusters"] >= 1
        assert warm.get_json("runs")["jobs"]["worker"]["pid"] == worker["pid"]   # the warm worker ran it


# -- labels -------------------------------------------------------------------------------------------------
def test_labels_single_list_cluster_history_and_export(tb, predicted, world, dataset):
    run, _ = copy_run(world)
    ids = dataset["meta"]["ids"]
    pool = [i for i, s in zip(ids, dataset["meta"]["split"]) if s == "pool"]
    one = tb.post_json("set_labels", {"run": run, "id": pool[0], "label": "circle"})
    assert one["changed"] == 1 and one["labels"] == {str(pool[0]): "circle"} and one["previous"] == {str(pool[0]): None}
    many = tb.post_json("set_labels", {"run": run, "ids": pool[1:4], "label": "  square ", "report": True})
    assert many["changed"] == 3 and set(many["labels"].values()) == {"square"}
    assert set(many["after_review"]) == {NET, NET2}  # how often each network agreed with the expert
    pairs = tb.post_json("set_labels", {"run": run, "assignments": [[pool[4], "triangle"], [pool[5], "circle"]]})
    assert pairs["changed"] == 2
    removed = tb.post_json("set_labels", {"run": run, "id": pool[5], "label": None})
    assert removed["labels"] == {str(pool[5]): None}
    assert history_of(tb, run, pool[5]) == [(None, "circle", "user"), ("circle", None, "user")]
    # A whole cluster: its unlabelled members, or all of them with overwrite.
    meta = tb.get_json("metadata", run=run, network=NET)
    labelled = {i for i, lab in zip(meta["ids"], meta["label"]) if lab is not None}
    members = {}
    for i, c in zip(meta["ids"], meta["cluster"]):
        members.setdefault(c, []).append(i)
    cluster = next(c for c, m in members.items() if set(m) - labelled)
    unlabelled = sorted(set(members[cluster]) - labelled)
    whole = tb.post_json("set_labels", {"run": run, "cluster": {"network": NET, "cluster": cluster}, "label": "blob"})
    assert whole["requested"] == len(unlabelled) and sorted(map(int, whole["labels"])) == unlabelled
    again = tb.post("set_labels", {"run": run, "cluster": {"network": NET, "cluster": cluster}, "label": "blob"})
    assert again[0] == 409
    everything = tb.post_json("set_labels", {"run": run, "cluster": {"network": NET, "cluster": cluster,
                                                                     "overwrite": True}, "label": "blob"})
    assert everything["requested"] == len(members[cluster])
    now = labels_of(tb, run)
    assert {now[i] for i in members[cluster]} == {"blob"}
    # Export: the expert's labels with the networks' predictions.
    status, headers, body = tb.get("export", run=run)
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"]
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(body.decode()))}
    path_of = {i: p for p, i in dataset["by_path"].items()}
    assert len(rows) == 48
    assert {"path", "role", "expert_label", "predicted", "final_label", "votes", "flagged"} <= set(
        next(iter(rows.values())))
    assert all(rows[path_of[i]]["expert_label"] == (now[i] or "") for i in ids)
    assert rows[path_of[members[cluster][0]]]["expert_label"] == "blob"
    assert all(r["final_label"] for r in rows.values())
    assert not list((tb.logdir / run / "nipgboard" / "exports").glob(".labels-*"))  # nothing left behind


def test_undo_a_relabel(tb, dataset, world):
    run, _ = copy_run(world)
    image = dataset["by_path"]["circle/circle_002.png"]
    before = history_of(tb, run, image)
    change = tb.post_json("set_labels", {"run": run, "id": image, "label": "square"})
    assert (change["changed"], change["labels"], change["previous"]) == (1, {str(image): "square"},
                                                                         {str(image): "circle"})
    undo = tb.post_json("set_labels", {"run": run, "id": image, "label": change["previous"][str(image)]})
    assert (undo["changed"], undo["labels"], undo["previous"]) == (1, {str(image): "circle"}, {str(image): "square"})
    assert labels_of(tb, run)[image] == "circle"
    assert history_of(tb, run, image) == before + [("circle", "square", "user"), ("square", "circle", "user")]
    assert tb.get_json("summary", run=run)["classes"] == {"circle": 8, "square": 8, "triangle": 8}


def test_undo_a_label_given_to_a_list(tb, dataset, world):
    run, _ = copy_run(world)
    by_path = dataset["by_path"]
    ids = [by_path["unlabelled/circle/circle_100.png"], by_path["unlabelled/square/square_101.png"],
           by_path["circle/circle_003.png"], by_path["square/square_004.png"]]
    old = {str(i): lab for i, lab in zip(ids, (None, None, "circle", "square"))}
    before = labels_of(tb, run)
    assert {str(i): before[i] for i in ids} == old
    histories = {i: history_of(tb, run, i) for i in ids}
    change = tb.post_json("set_labels", {"run": run, "ids": ids, "label": "triangle"})
    assert change["changed"] == 4 and change["previous"] == old
    assert change["labels"] == {str(i): "triangle" for i in ids}
    undo = tb.post_json("set_labels", {"run": run, "assignments": [[int(i), lab] for i, lab in change["previous"].items()]})
    assert undo["changed"] == 4 and undo["labels"] == old and undo["previous"] == {str(i): "triangle" for i in ids}
    assert labels_of(tb, run) == before
    for i in ids:
        was = old[str(i)]
        assert history_of(tb, run, i) == histories[i] + [(was, "triangle", "user"), ("triangle", was, "user")]
    assert tb.get_json("summary", run=run)["labelled"] == 24


def test_undo_a_label_given_to_a_cluster(tb, projected, world):
    run, _ = copy_run(world)
    meta = tb.get_json("metadata", run=run, network=NET)
    label = dict(zip(meta["ids"], meta["label"]))
    members = {}
    for i, c in zip(meta["ids"], meta["cluster"]):
        members.setdefault(c, []).append(i)
    # a cluster with labelled and unlabelled members
    cluster = next(c for c, m in sorted(members.items())
                   if any(label[i] is None for i in m) and any(label[i] is not None for i in m))
    ids = members[cluster]
    histories = {i: history_of(tb, run, i) for i in ids}
    spec = {"network": NET, "cluster": cluster, "overwrite": True}
    change = tb.post_json("set_labels", {"run": run, "cluster": spec, "label": "blob"})
    assert change["requested"] == change["changed"] == len(ids)
    assert change["previous"] == {str(i): label[i] for i in ids}          # every member, with its old label
    undo = tb.post_json("set_labels", {"run": run, "assignments": [[int(i), lab] for i, lab in change["previous"].items()]})
    assert undo["changed"] == len(ids) and undo["labels"] == change["previous"]
    assert labels_of(tb, run) == label
    for i in ids:
        assert history_of(tb, run, i) == histories[i] + [(label[i], "blob", "user"), ("blob", label[i], "user")]
    # without overwrite only the unlabelled members change, and only they are in `previous`
    unlabelled = sorted(i for i in ids if label[i] is None)
    part = tb.post_json("set_labels", {"run": run, "cluster": {"network": NET, "cluster": cluster}, "label": "blob"})
    assert part["previous"] == {str(i): None for i in unlabelled}
    undo = tb.post_json("set_labels", {"run": run, "assignments": [[int(i), None] for i in part["previous"]]})
    assert undo["changed"] == len(unlabelled) and labels_of(tb, run) == label


def test_two_tabs_editing_one_label_lose_nothing(tb, dataset, world):
    run, _ = copy_run(world)
    image_id = dataset["meta"]["ids"][-1]
    barrier = threading.Barrier(2)
    answers = []

    def tab(label):
        barrier.wait()
        answers.append(tb.post_json("set_labels", {"run": run, "id": image_id, "label": label}))

    threads = [threading.Thread(target=tab, args=(lab,)) for lab in ("tab-one", "tab-two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(a["changed"] == 1 for a in answers)
    history = tb.get_json("label_history", run=run, id=image_id)["history"]
    assert [h["new_label"] for h in history[-2:]] in (["tab-one", "tab-two"], ["tab-two", "tab-one"])
    # each change names the label the other one left: the second saw the first
    first, second = history[-2:]
    assert second["old_label"] == first["new_label"]
    assert {a["previous"][str(image_id)] for a in answers} == {first["old_label"], first["new_label"]}
    assert labels_of(tb, run)[image_id] == second["new_label"]


# -- pictures, neighbours, jobs, files ----------------------------------------------------------------------
def test_pictures_by_id(tb, dataset, world):
    image_id = dataset["by_path"]["square/square_003.png"]
    status, headers, body = tb.get("image", run=RUN, id=image_id)
    assert status == 200 and headers["content-type"] == "image/png"
    assert body == (world["images"] / "square" / "square_003.png").read_bytes()
    status, headers, body = tb.get("thumbnail", run=RUN, id=image_id, size=32)
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(body)).size) == 32
    assert tb.get("thumbnail", run=RUN, id=image_id, size=32)[2] == body  # from the cache
    cached = list((world["logdir"] / RUN / "nipgboard" / "thumbs" / "32").rglob("*.jpg"))
    assert len(cached) == 1
    index = tb.get_json("sprite_index", run=RUN, tile=32)
    page = index["pages"][0]
    assert index["images"] == 48 and page["count"] == 48 and page["columns"] * page["rows"] >= 48
    status, headers, body = tb.get("sprite", run=RUN, tile=32, page=0)
    atlas = Image.open(io.BytesIO(body))
    assert status == 200 and atlas.size == (page["width"], page["height"])
    assert tb.get_json("sprite_index", run=RUN, tile=32)["pages"][0]["ready"] is True
    job = tb.run_job(RUN, "sprites", tile=48)
    assert job["result"]["drawn"] == 1 and tb.get_json("sprite_index", run=RUN, tile=48)["pages"][0]["ready"]


def test_similar_duplicates_rare(tb, dataset):
    query = dataset["by_path"]["triangle/triangle_000.png"]
    sim = tb.get_json("similar", run=RUN, network=NET, id=query, k=5)
    assert len(sim["similar"]) == 5 and query not in [s["id"] for s in sim["similar"]]
    assert [s["distance"] for s in sim["similar"]] == sorted(s["distance"] for s in sim["similar"])
    dups = tb.get_json("duplicates", run=RUN, network=NET, threshold=2.0)
    assert [[e["id"] for e in g] for g in dups["groups"]] == [sorted(dataset["meta"]["ids"])]
    paths_by_id = dict(zip(dataset["meta"]["ids"], dataset["meta"]["paths"]))
    assert all(e["path"] == paths_by_id[e["id"]] for e in dups["groups"][0])  # the same entries as the CLI's
    assert tb.get_json("duplicates", run=RUN, network=NET, threshold=0.0)["groups"] == []
    job = tb.run_job(RUN, "duplicates", network=NET, threshold=2.0)
    assert job["result"]["groups"] == dups["groups"]
    rare = tb.run_job(RUN, "rare", network=NET, n=3, k=5)["result"]["rare"]
    assert len(rare) == 3 and rare[0]["rarity"] >= rare[-1]["rarity"]


def test_cancel_queued_and_running_jobs(tb, dataset, world):
    run, run_dir = copy_run(world, features=False, results=False)
    # The embed waits at its first write while the test holds the feature cache: it cannot finish first.
    with writer_lock(paths.features_path(run_dir)):
        running = tb.start_job(run, "embed", network=NET, batch_size=4)
        assert tb.wait_job(run, running["id"], states=ACTIVE)["state"] == "running"
        queued = tb.start_job(run, "sprites", tile=96)
        answer = tb.post_json("cancel_job", {"run": run, "id": queued["id"]})
        assert answer["state"] == "cancelled" and answer["started_at"] is None      # at once, never started
        stopping = tb.post_json("cancel_job", {"run": run, "id": running["id"]})
        assert stopping["state"] == "running" and stopping["cancel_requested"] is True
    # Released, it stores the batch it was writing, sees the cancel and stops: nothing more.
    end = tb.wait_job(run, running["id"], timeout=60)
    assert end["state"] == "cancelled" and end["result"]["extracted"] == 4, end
    assert tb.get_json("job", run=run, id=queued["id"])["state"] == "cancelled"
    assert tb.get_json("sprite_index", run=run, tile=96)["pages"][0]["ready"] is False   # it never ran
    after = tb.run_job(run, "embed", network=NET)  # the worker still serves jobs
    assert (after["result"]["cached_before"], after["result"]["extracted"]) == (4, 44)


def test_symlink_swapped_in_after_ingest_is_refused(tb, dataset, world):
    image_id = dataset["by_path"]["circle/circle_005.png"]
    target = world["images"] / "circle" / "circle_005.png"
    saved = target.read_bytes()
    target.unlink()
    os.symlink(world["outside"] / "secret.png", target)
    try:
        for route in ("image", "thumbnail"):
            status, _h, body = tb.get(route, run=RUN, id=image_id)
            assert status == 403, (route, body)
            assert "outside the images folder" in json.loads(body)["error"]
        assert tb.get("sprite", run=RUN, tile=64, page=0)[0] == 200  # drawn with a placeholder tile
    finally:
        target.unlink()
        target.write_bytes(saved)
    assert tb.get("image", run=RUN, id=image_id)[0] == 200


def test_nothing_is_written_outside_the_logdir(tb, dataset, world):
    snapshot = {p: p.stat().st_mtime_ns for p in world["base"].rglob("*")
                if world["logdir"] not in p.parents and p != world["logdir"] and p.suffix != ".log"}
    for name in ("../escape", "/tmp/escape", "a/../../escape", "..", "nipgboard", ".hidden", "a\\b"):
        status, _h, body = tb.post("start_job", {"run": name, "kind": "ingest",
                                                 "params": {"images": str(world["images"])}})
        assert status == 400, (name, body)
    # The images folder may not contain the run (its caches would be read as images).
    status, _h, body = tb.post("start_job", {"run": "inside", "kind": "ingest",
                                             "params": {"images": str(world["logdir"])}})
    assert status == 400 and b"contains the run" in body
    # A run may not sit inside another run.
    status, _h, body = tb.post("start_job", {"run": f"{RUN}/inner", "kind": "ingest",
                                             "params": {"images": str(world["images"])}})
    assert status == 400 and b"inside the run" in body
    after = {p: p.stat().st_mtime_ns for p in world["base"].rglob("*")
             if world["logdir"] not in p.parents and p != world["logdir"] and p.suffix != ".log"}
    assert after == snapshot
    assert not (world["base"] / "escape").exists() and not Path("/tmp/escape").exists()


# -- bad requests ----------------------------------------------------------------------------------------
P = PREFIX
JSONH = {"X-NIPGBoard": "1", "Content-Type": "application/json"}
BAD = [
    # unknown run, and paths where a run name belongs
    ("GET", P + "summary?run=nope", None, {}, 404),
    ("GET", P + "summary?run=../logdir", None, {}, 404),
    ("GET", P + "summary?run=%2e%2e%2f", None, {}, 404),
    ("GET", P + "summary?run=%2Fetc%2Fpasswd", None, {}, 404),
    ("GET", P + "summary?run=/etc", None, {}, 404),
    ("GET", P + "summary?run=shapes/../shapes", None, {}, 404),
    ("GET", P + "summary", None, {}, 400),
    ("GET", P + "summary?run=shapes&run=shapes", None, {}, 400),
    ("GET", P + "summary?run=shapes&path=/etc/passwd", None, {}, 400),
    # unknown or malformed image ids, paths where an id belongs
    ("GET", P + "image?run=shapes&id=999999", None, {}, 404),
    ("GET", P + "image?run=shapes&id=0", None, {}, 400),
    ("GET", P + "image?run=shapes&id=-3", None, {}, 400),
    ("GET", P + "image?run=shapes&id=1.5", None, {}, 400),
    ("GET", P + "image?run=shapes&id=../../etc/passwd", None, {}, 400),
    ("GET", P + "image?run=shapes&id=%2Fetc%2Fpasswd", None, {}, 400),
    ("GET", P + "image?run=shapes&id=..%252F..%252Fetc", None, {}, 400),
    ("GET", P + "image?run=shapes&path=circle/circle_000.png", None, {}, 400),
    ("GET", P + "thumbnail?run=shapes&id=999999", None, {}, 404),
    ("GET", P + "thumbnail?run=shapes&id=1&size=33", None, {}, 400),
    ("GET", P + "thumbnail?run=shapes&id=1&size=100000", None, {}, 400),
    ("GET", P + "label_history?run=shapes&id=999999", None, {}, 404),
    ("GET", P + "similar?run=shapes&network=efficientnet_lite0&id=999999", None, {}, 404),
    ("GET", P + "similar?run=shapes&network=../../x&id=1", None, {}, 400),
    ("GET", P + "similar?run=shapes&network=nosuchnet&id=1", None, {}, 404),
    ("GET", P + "sprite?run=shapes&tile=64&page=99", None, {}, 404),
    ("GET", P + "sprite?run=shapes&tile=65&page=0", None, {}, 400),
    ("GET", P + "job?run=shapes&id=999999", None, {}, 404),
    ("GET", P + "points?run=shapes&network=mobilenet_v2", None, {}, 409),
    # path traversal on the static files
    ("GET", P + "static/../plugin.py", None, {}, 404),
    ("GET", P + "static/minimal/../../plugin.py", None, {}, 404),
    ("GET", P + "static/%2e%2e/plugin.py", None, {}, 404),
    ("GET", P + "static/%2e%2e%2fplugin.py", None, {}, 404),
    ("GET", P + "static/..%2f..%2fstore.py", None, {}, 404),
    ("GET", P + "static//etc/passwd", None, {}, 404),
    ("GET", P + "static/%2Fetc%2Fpasswd", None, {}, 404),
    ("GET", P + "static/.hidden", None, {}, 404),
    # state changes: header, method, body
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "x"}),
     {"Content-Type": "application/json"}, 403),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "x"}),
     {"Content-Type": "application/json", "X-NIPGBoard": "0"}, 403),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "x"}),
     dict(JSONH, Origin="http://evil.example"), 403),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "x"}),
     dict(JSONH, Host="rebound.evil.example:6006", Origin="http://rebound.evil.example:6006"), 403),
    ("POST", P + "set_labels", "run=shapes&id=1&label=x",
     {"Content-Type": "application/x-www-form-urlencoded", "X-NIPGBoard": "1"}, 415),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "x"}),
     {"Content-Type": "text/plain", "X-NIPGBoard": "1"}, 415),
    ("GET", P + "set_labels?run=shapes&id=1&label=x", None, {}, 405),
    ("PUT", P + "set_labels", "{}", JSONH, 405),
    ("DELETE", P + "start_job", None, JSONH, 405),
    ("POST", P + "summary", json.dumps({"run": "shapes"}), JSONH, 405),
    ("POST", P + "set_labels", '{"run": "shapes", "id": 1, "label": ', JSONH, 400),
    ("POST", P + "set_labels", "\xff\xfe", JSONH, 400),
    ("POST", P + "set_labels", '["shapes", 1, "x"]', JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 999999, "label": "x"}), JSONH, 404),
    ("POST", P + "set_labels", json.dumps({"run": "nope", "id": 1, "label": "x"}), JSONH, 404),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": "1; DROP TABLE labels", "label": "x"}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": True, "label": "x"}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "ids": [2], "label": "x"}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": ""}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "a\nb"}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": "x" * 101}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "id": 1, "label": 5}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "ids": [], "label": "x"}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "ids": "1,2", "label": "x"}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "assignments": [[1]]}), JSONH, 400),
    ("POST", P + "set_labels", json.dumps({"run": "shapes", "cluster": {"network": NET, "cluster": 10 ** 6},
                                           "label": "x"}), JSONH, 404),
    ("POST", P + "start_job", json.dumps({"run": "shapes", "kind": "shell", "params": {}}), JSONH, 400),
    # An unknown network is not found wherever it is named; a known one that cannot run here is a conflict.
    ("POST", P + "start_job", json.dumps({"run": "shapes", "kind": "embed", "params": {"network": "x"}}), JSONH, 404),
    ("POST", P + "start_job", json.dumps({"run": "shapes", "kind": "embed", "params": {"network": "vgg16"}}),
     JSONH, 409),
    ("POST", P + "start_job", json.dumps({"run": "shapes", "kind": "embed",
                                          "params": {"network": NET, "batch_size": 0}}), JSONH, 400),
    ("POST", P + "start_job", json.dumps({"run": "shapes", "kind": "embed",
                                          "params": {"network": NET, "command": "rm -rf /"}}), JSONH, 400),
    ("POST", P + "start_job", json.dumps({"run": "shapes", "kind": "embed", "params": [NET]}), JSONH, 400),
    ("POST", P + "start_job", json.dumps({"run": "new", "kind": "ingest", "params": {"images": "relative/dir"}}),
     JSONH, 400),
    # Outside the allowed folders: refused without saying whether it exists.
    ("POST", P + "start_job", json.dumps({"run": "new", "kind": "ingest", "params": {"images": "/no/such/dir"}}),
     JSONH, 403),
    ("POST", P + "start_job", json.dumps({"run": "new", "kind": "embed", "params": {"network": NET}}), JSONH, 404),
    ("POST", P + "cancel_job", json.dumps({"run": "shapes", "id": 999999}), JSONH, 404),
    ("POST", P + "cancel_job", json.dumps({"run": "shapes", "id": "../1"}), JSONH, 400),
]


@pytest.mark.parametrize("method,path,body,headers,expected", BAD,
                         ids=[f"{m} {p[len(P):][:60]} {e}" for m, p, b, h, e in BAD])
def test_bad_request(tb, projected, method, path, body, headers, expected):
    status, resp_headers, data = tb.request(method, path, body=body, headers=headers)
    assert status == expected, data[:300]
    assert resp_headers["content-type"] == "application/json"
    answer = json.loads(data)
    assert answer["status"] == status and answer["error"]
    if status == 405:
        assert "allow" in resp_headers
    assert resp_headers.get("x-content-type-options") == "nosniff"


def test_huge_bodies_are_refused(tb, dataset):
    ids = dataset["meta"]["ids"]
    huge_labels = json.dumps({"run": RUN, "assignments": [[ids[0], "x" * 90]] * 100_000})  # ~10 MB
    assert len(huge_labels) > 8 << 20
    status, _h, body = tb.request("POST", P + "set_labels", body=huge_labels, headers=JSONH)
    assert status == 413 and "too large" in json.loads(body)["error"]
    big_job = json.dumps({"run": RUN, "kind": "embed", "params": {"network": NET, "pad": "x" * (2 << 20)}})
    status, _h, body = tb.request("POST", P + "start_job", body=big_job, headers=JSONH)
    assert status == 413
    # The server is still fine, and no label changed.
    assert tb.get_json("summary", run=RUN)["images"] == 48
    assert all(h["new_label"] != "x" * 90 for h in tb.get_json("label_history", run=RUN)["history"])
