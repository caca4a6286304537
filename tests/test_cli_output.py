"""What `nipgboard` prints without --json: the lines a person reads, checked against the same command's
JSON document or the results the command stored, on the session's real `faces` dataset (200 lfw_subset
images, 60 labelled, embedded with both networks; see pipeline_fixtures.py).
"""
import csv
import json
import re
import shutil

import numpy as np
import pytest

from images import write_bad_files, write_shapes
from nipgboard_plugin import cli, estimate, graph, predict, results
from pipeline_fixtures import copy_dataset

NET, NET2 = "efficientnet_lite0", "mobilenet_v2"


def text(capsys, *argv):
    """The lines `nipgboard ARGV` prints (asserting it succeeded and wrote no error)."""
    rc = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "nipgboard:" not in out.err
    return out.out.rstrip("\n").split("\n")


def document(capsys, *argv):
    """The JSON document `nipgboard --json ARGV` prints."""
    rc = cli.main(["--json", *map(str, argv)])
    out = capsys.readouterr().out
    assert rc == 0, out
    return json.loads(out)


@pytest.fixture(scope="module")
def predicted(faces, tmp_path_factory):
    """A copy of `faces` with NET's PCA view and clusters, and both networks' predictions (kNN)."""
    ds = copy_dataset(faces, tmp_path_factory.mktemp("cli-output"))
    L = ds["logdir"]
    assert cli.main(["--json", "project", str(L), "--network", NET, "--method", "pca", "--no-projector"]) == 0
    assert cli.main(["--json", "cluster", str(L), "--network", NET, "--no-projector"]) == 0
    for net in (NET, NET2):
        assert cli.main(["--json", "predict", str(L), "--network", net, "--method", "knn", "--no-projector"]) == 0
    return ds


# -- the dataset ----------------------------------------------------------------------------------------
def test_summary_prints_the_counts_and_classes(faces, capsys):
    L = faces["logdir"]
    lines = text(capsys, "summary", L)
    s = document(capsys, "summary", L)
    assert lines == [
        f"Dataset {L} (images from {faces['images']})",
        "  images: 200   labelled: 60   train/test/pool: 48/12/140",
        "  classes: face (30), nonface (30)",
    ]
    assert (s["images"], s["labelled"], s["splits"], s["classes"]) == (
        200, 60, {"train": 48, "test": 12, "pool": 140}, {"face": 30, "nonface": 30})


def test_init_prints_what_it_added_skipped_and_found_twice(tmp_path, capsys):
    images = tmp_path / "images"
    write_shapes(images, per_class=2, size=32, classes=("circle", "square"))
    expected = write_bad_files(images)
    shutil.copy(images / "circle" / "circle_000.png", images / "zz_copy.png")
    L = tmp_path / "run"
    lines = text(capsys, "init", L, "--images", images, "--folder-labels")
    assert lines[0] == f"Dataset {L} (images from {images})"
    assert lines[1] == "  images: 4   labelled: 4   train/test/pool: 4/0/0"
    assert lines[2] == "  classes: circle (2), square (2)"
    assert re.fullmatch(rf"  this run: 4 added, 1 duplicates, {len(expected)} unreadable, 4 labels added in "
                        r"[0-9.]+ s", lines[3]), lines[3]
    assert lines[4] == f"  unreadable files ({len(expected)}), skipped:"
    unreadable = lines[5:5 + len(expected)]
    assert sorted(line.split(": ")[0].strip() for line in unreadable) == sorted(expected)
    for line in unreadable:
        path, reason = line.strip().split(": ", 1)
        assert expected[path] in reason, line
    assert lines[5 + len(expected):] == ["  exact duplicates (1), kept once:", "    zz_copy.png = circle/circle_000.png"]
    # summary shows the same, without this run's line
    again = text(capsys, "summary", L)
    assert again == lines[:3] + lines[4:]


# -- neighbours -----------------------------------------------------------------------------------------
def test_duplicates_lists_each_group(faces, capsys):
    L = faces["logdir"]
    lines = text(capsys, "duplicates", L, "--network", NET, "--threshold", "0.3")
    d = document(capsys, "duplicates", L, "--network", NET, "--threshold", "0.3")
    assert d["groups"] and d["images_in_groups"] == sum(len(g) for g in d["groups"])
    assert lines[0] == (f"{len(d['groups'])} groups ({d['images_in_groups']} images) within distance 0.3 "
                        f"({d['distance']}, {NET})")
    assert lines[1:] == [f"  group {i}: " + "  ".join(e["path"] for e in g) for i, g in enumerate(d["groups"], 1)]
    assert text(capsys, "duplicates", L, "--network", NET, "--threshold", "0") == [
        f"0 groups (0 images) within distance 0.0 ({d['distance']}, {NET})"]


def test_similar_lists_the_nearest_with_their_distances(faces, capsys):
    L = faces["logdir"]
    lines = text(capsys, "similar", L, "--network", NET, "--image", "img_0000.png", "-k", "4")
    d = document(capsys, "similar", L, "--network", NET, "--image", "img_0000.png", "-k", "4")
    assert lines[0] == f"Most similar to img_0000.png ({NET}):"
    assert len(lines) == 5 and lines[1:] == [f"  {e['distance']:.4f}  {e['path']}" for e in d["similar"]]
    shown = [float(line.split()[0]) for line in lines[1:]]
    assert shown == sorted(shown) and 0 < shown[0] <= 2
    assert "img_0000.png" not in [line.split()[1] for line in lines[1:]]
    # a path that is not in the dataset: one line on stderr, nothing on stdout, exit code 2
    assert cli.main(["similar", str(L), "--network", NET, "--image", "nope.png"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == "nipgboard: nope.png is not an image of this dataset\n"


def test_rare_lists_the_least_similar_first(faces, capsys):
    L = faces["logdir"]
    lines = text(capsys, "rare", L, "--network", NET, "-n", "3", "-k", "5")
    d = document(capsys, "rare", L, "--network", NET, "-n", "3", "-k", "5")
    assert lines[0] == f"Least similar images ({NET}; mean distance to their 5 nearest):"
    assert lines[1:] == [f"  {e['rarity']:.4f}  {e['path']}" for e in d["rare"]]
    scores = [float(line.split()[0]) for line in lines[1:]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


# -- clusters and predictions ---------------------------------------------------------------------------
def test_cluster_prints_the_table_it_stored(faces, tmp_path, capsys):
    L = copy_dataset(faces, tmp_path)["logdir"]
    document(capsys, "project", L, "--network", NET, "--method", "pca", "--no-projector")
    lines = text(capsys, "cluster", L, "--network", NET, "--no-projector")
    _, meta = graph.load_clusters(L, NET)
    table = meta["clusters"]
    head = re.fullmatch(r"efficientnet_lite0: (\d+) clusters \(mst graph, louvain, resolution 1\.0\), (\d+) need a "
                        r"label, (\d+) outliers, modularity ([0-9.]+); graph [0-9.]+s, communities [0-9.]+s", lines[0])
    assert head, lines[0]
    assert int(head[1]) == meta["n_clusters"] == len(table) >= 2
    assert int(head[2]) == sum(t["label"] is None for t in table)
    assert float(head[4]) == round(meta["modularity"], 4)
    assert lines[1].split() == ["cluster", "size", "labelled", "label", "purity"]
    rows = [line.split() for line in lines[2:]]
    assert rows == [[str(t["cluster"]), str(t["size"]), str(t["n_labelled"]), t["label"] or "(needs",
                     *(["label)"] if t["label"] is None else []), f"{t['purity']:.2f}"] for t in table]
    assert sum(int(r[1]) for r in rows) == 200 and sum(int(r[2]) for r in rows) == 48   # every image, every train label


def test_predict_prints_the_method_and_the_pool_counts_it_stored(faces, tmp_path, capsys):
    L = copy_dataset(faces, tmp_path)["logdir"]
    inp = results.load_inputs(L, features=False)
    pool = inp.roles == "pool"
    for net, argv, requested in ((NET2, ["--method", "knn"], "knn"), (NET, [], "auto")):
        lines = text(capsys, "predict", L, "--network", net, *argv, "--no-projector")
        arrays, meta = predict.load_predictions(L, net)
        rows = results.align(arrays["image_ids"], inp.image_ids)
        pred = np.array(meta["classes"], dtype=object)[arrays["pred"][rows]]
        # printed simplest method first, as auto considers them
        cv = ", ".join(f"{m} {meta['cv_accuracy'][m]:.3f}" for m in predict.AUTO_CANDIDATES if m in meta["cv_accuracy"])
        assert meta["requested"] == requested and meta["cv_accuracy"]
        assert lines[0] == f"{net}: method {meta['method']} (asked: {requested}; cross-validated accuracy: {cv})"
        counts = {c: int((pred[pool] == c).sum()) for c in ("face", "nonface")}
        assert sum(counts.values()) == 140 and min(counts.values()) > 40     # both classes, as in the pool
        assert lines[1] == f"pool predictions: face {counts['face']}, nonface {counts['nonface']}"
        low = int((arrays["confidence"][rows][pool] < 0.6).sum())
        assert re.fullmatch(rf"{low} pool images below 0\.6 confidence; [0-9.]+s", lines[2]), lines[2]
        e = estimate.history(L, net)[-1]   # the point the panel's when-to-stop plot shows
        assert lines[3] == (f"estimated accuracy on the unlabelled images {e['accuracy']:.3f} ({e['low']:.3f}-"
                            f"{e['high']:.3f}); all images with a right label: about {e['overall']:.1%} "
                            f"(60 expert labels)") and e["labels"] == 60
        assert len(lines) == 4
    assert meta["method"] in predict.AUTO_CANDIDATES and set(meta["cv_accuracy"]) == set(predict.AUTO_CANDIDATES)


def test_disagreements_prints_the_queue_in_doubt_order(predicted, capsys):
    L = predicted["logdir"]
    argv = ("disagreements", L, "--networks", NET, NET2, "--all", "--limit", "6")
    lines = text(capsys, *argv)
    q = document(capsys, *argv)
    assert q["unlabelled"] == 140 and q["queue_length"] == 140 and q["shown"] == 6
    assert lines[0] == (f"networks {NET}, {NET2}: 140 unlabelled images, {q['flagged']} flagged "
                        f"({q['disagreements']} network disagreements, {q['predictor_disagreements']} cluster-rule "
                        f"disagreements, {q['low_confidence']} low confidence); showing 6 of 140")
    assert lines[1:7] == [f"  {it['doubt']:.2f}  {it['path']}  -> {it['consensus']}  ({'; '.join(it['reasons'])})"
                          for it in q["items"]]
    doubts = [float(line.split()[0]) for line in lines[1:7]]
    assert doubts == sorted(doubts, reverse=True)
    assert lines[7:] == [f"note: {n}" for n in q["notes"]]


def test_label_says_how_many_labels_changed_and_what_the_networks_had_predicted(predicted, tmp_path, capsys):
    L = copy_dataset(predicted, tmp_path)["logdir"]
    inp = results.load_inputs(L, features=False)
    pool = [p for p, r in zip(inp.paths, inp.roles) if r == "pool"][:3]
    stored = {}
    for net in (NET, NET2):
        arrays, meta = predict.load_predictions(L, net)
        rows = results.align(arrays["image_ids"], inp.image_ids)
        stored[net] = dict(zip(inp.paths, np.array(meta["classes"], dtype=object)[arrays["pred"][rows]]))

    def confirmed(net, paths_labels):
        agreed = sum(stored[net][p] == lab for p, lab in paths_labels)
        return f"{agreed}/{len(paths_labels)} predictions confirmed"

    lines = text(capsys, "label", L, "--image", pool[0], "--label", "face")
    assert lines == ["1 of 1 labels changed"] + [
        f"  {net} {kind}: {confirmed(net, [(pool[0], 'face')])}" for net in (NET, NET2)
        for kind in ("this batch", "all reviewed")]
    # the same label again changes nothing
    assert text(capsys, "label", L, "--image", pool[0], "--label", "face")[0] == "0 of 1 labels changed"
    # a list: two new labels and the one already given
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,label\n{pool[1]},nonface\n{pool[2]},face\n{pool[0]},face\n")
    lines = text(capsys, "label", L, "--list", listing)
    batch = [(pool[1], "nonface"), (pool[2], "face"), (pool[0], "face")]
    reviewed = [(pool[0], "face"), (pool[1], "nonface"), (pool[2], "face")]
    assert lines[0] == "2 of 3 labels changed"
    assert lines[1:] == [line for net in (NET, NET2) for line in (
        f"  {net} this batch: {confirmed(net, batch)}", f"  {net} all reviewed: {confirmed(net, reviewed)}")]
    assert document(capsys, "summary", L)["labelled"] == 63


def test_export_reports_the_rows_it_wrote(predicted, tmp_path, capsys):
    L = copy_dataset(predicted, tmp_path)["logdir"]
    out = tmp_path / "labels.csv"
    lines = text(capsys, "export", L, "--out", out)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    expert = sum(1 for r in rows if r["expert_label"])
    flagged = sum(1 for r in rows if r["flagged"] == "1")
    assert len(rows) == 200 and expert == 60
    assert flagged == document(capsys, "disagreements", L)["flagged"]
    assert lines == [f"wrote 200 rows to {out} (60 expert labels, {flagged} flagged)"]
    # after a label the predictions are out of date, and the export says so
    document(capsys, "label", L, "--image", next(r["path"] for r in rows if not r["expert_label"]), "--label", "face")
    lines = text(capsys, "export", L, "--out", out)
    assert lines[0].startswith(f"wrote 200 rows to {out} (61 expert labels, ")
    assert lines[1:] == [f"note: {net}: labels changed since its predictions; run `nipgboard predict {L} "
                         f"--network {net}` again" for net in (NET, NET2)]
