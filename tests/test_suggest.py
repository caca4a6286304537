"""`nipgboard suggest`: which images the expert labels next, on real images and real features.

The digits set (handwritten 0, 1, 4, 7 as PNG files, embedded with two offline networks; see
pipeline_fixtures.py) is visually distinct per class: from zero labels the typical-and-diverse round
must already show the expert every class. With labels and predictions, the suggested images are the
ones the networks are least sure of; the CSV goes out and comes back with its labels filled in.
"""
import csv
import json

import numpy as np
import pytest

from nipgboard_plugin import cli, results
from nipgboard_plugin import suggest as S
from nipgboard_plugin.store import Store
from pipeline_fixtures import copy_dataset

NETS = ("efficientnet_lite0", "mobilenet_v2")


def run(capsys, *argv):
    rc = cli.main(["--json", *map(str, argv)])
    return rc, json.loads(capsys.readouterr().out)


def _unlabel_all(logdir):
    with Store(logdir) as st:
        st.set_labels([(i, None) for i in st.labels()])


def _class_of(ds, items):
    return [ds["truth"][it["path"]] for it in items]


def test_cold_start_shows_every_class_and_never_the_same_image_twice(digits, tmp_path, capsys):
    ds = copy_dataset(digits, tmp_path)
    L = ds["logdir"]
    _unlabel_all(L)
    n_classes = len(set(ds["truth"].values()))
    for net in NETS:
        for n in (n_classes, 6):
            rc, r = run(capsys, "suggest", L, "--networks", net, "-n", n)
            assert rc == 0, r
            assert r["mode"] == "cold start" and r["labelled"] == 0 and r["network"] == net
            ids = [it["id"] for it in r["items"]]
            assert len(ids) == n == len(set(ids))
            assert len(set(_class_of(ds, r["items"]))) == n_classes, (net, n, _class_of(ds, r["items"]))
            assert all(it["reason"].startswith("typical of an unlabelled group of ") for it in r["items"])
    # The default: every network with features, the first giving them.
    rc, r = run(capsys, "suggest", L)
    assert rc == 0 and r["networks"] == list(NETS) and r["shown"] == 50 and r["predictions"] == []


def test_with_labels_and_predictions_the_least_sure_come_first_and_labelled_never(digits, tmp_path, capsys):
    ds = copy_dataset(digits, tmp_path)
    L = ds["logdir"]
    with Store(L) as st:
        labelled = set(st.labels())
    # Labels but no predictions yet: still typical and diverse, around what is labelled.
    rc, r = run(capsys, "suggest", L, "-n", 20)
    assert rc == 0 and r["mode"] == "cold start" and "no current predictions" in r["why"]
    assert not {it["id"] for it in r["items"]} & labelled
    for net in NETS:
        assert run(capsys, "predict", L, "--network", net, "--method", "logreg", "--no-projector")[0] == 0
    rc, r = run(capsys, "suggest", L, "--networks", *NETS, "-n", 10)
    assert rc == 0 and r["mode"] == "uncertainty" and r["predictions"] == list(NETS)
    chosen = [it["id"] for it in r["items"]]
    assert len(chosen) == 10 == len(set(chosen)) and not set(chosen) & labelled
    assert all(it["reason"].startswith(("least sure: ", "networks disagree: ")) for it in r["items"])
    # one queue: each item says what the expert does with it (choose a class, or accept/fix a prediction)
    for it in r["items"]:
        assert it["kind"] == ("check" if it["confidence"] >= S.CHECK_CONFIDENCE else "label"), it
        assert it["prediction"] in ("digit0", "digit1", "digit4", "digit7") and it["label"] is None
    # Their margins (between the networks' two likeliest classes) lie below the unlabelled median.
    probas, ids = [], None
    for net in NETS:
        arrays, meta = results.load_result(L, net, "predictions")
        ids = arrays["image_ids"]
        probas.append(arrays.get("vote_proba", arrays["proba"]))  # what each network votes with
    mean = np.mean(probas, axis=0)
    top2 = np.sort(mean, axis=1)[:, -2:]
    margin = dict(zip(ids.tolist(), top2[:, 1] - top2[:, 0]))
    pool = [margin[i] for i in ids.tolist() if i not in labelled]
    ours = [margin[i] for i in chosen]
    assert max(ours) < np.median(pool) and np.median(ours) < 0.5 * np.median(pool), (ours, np.median(pool))
    scores = [it["score"] for it in r["items"]]
    assert scores == sorted(scores)


def test_the_csv_goes_out_and_comes_back_with_its_labels(digits, tmp_path, capsys):
    ds = copy_dataset(digits, tmp_path)
    L = ds["logdir"]
    _unlabel_all(L)
    out = tmp_path / "next.csv"
    rc, r = run(capsys, "suggest", L, "-n", 8, "--out", out)
    assert rc == 0 and r["out"] == str(out)
    raw = out.read_text()
    assert raw.splitlines()[0] == '"path","label","what","prediction","confidence","reason"' and raw.count("\n") == 9
    rows = list(csv.reader(open(out)))[1:]
    assert [row[2:] for row in rows] == [["label it", "", "", it["reason"]] for it in r["items"]]
    rows = [row[:2] for row in rows]
    assert [p for p, _ in rows] == [it["path"] for it in r["items"]] and all(lab == "" for _, lab in rows)
    # The expert fills in all labels but one.
    done = tmp_path / "next_done.csv"
    with open(done, "w", newline="") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_ALL)
        w.writerow(["path", "label"])
        w.writerows([p, ds["truth"][p] if k else ""] for k, (p, _) in enumerate(rows))
    rc, lab = run(capsys, "label", L, "--csv", done)
    assert rc == 0 and lab["changed"] == 7 and lab["skipped_without_label"] == 1
    with Store(L) as st:
        stored = st.labels()
        path_of = dict(st.image_rows("id, path"))
    assert {path_of[i]: v for i, v in stored.items()} == {p: ds["truth"][p] for p, _ in rows[1:]}
    # The next round leaves them out.
    rc, r2 = run(capsys, "suggest", L, "-n", 8)
    assert rc == 0 and not {it["path"] for it in r2["items"]} & {p for p, _ in rows[1:]}
    # A file with no labels filled in says so and labels nothing.
    rc, err = run(capsys, "label", L, "--csv", out)
    assert rc == 2 and "no labels" in err["error"]


def test_bad_values_are_refused_with_a_message(digits, capsys):
    L = digits["logdir"]
    for argv, message in ((("-n", 0), "between 1 and 5000"), (("-n", 5001), "between 1 and 5000"),
                          (("-n", "ten"), "integer"), (("--networks", "no_such_net"), "unknown network"),
                          (("--seed", -1), "random_state")):
        rc, out = run(capsys, "suggest", L, *argv)
        assert rc == 2 and message in out["error"], (argv, out)


def _made_up(n, every, seed):
    """Random 16-d features; every ``every``-th row labelled, alternately 'b' and 'a'."""
    X = np.random.default_rng(seed).normal(size=(n, 16)).astype(np.float32)
    labels = [None] * n
    for i in range(0, n, every):
        labels[i] = "a" if i % (2 * every) else "b"
    return X, labels


def test_the_engine_explains_disagreements_and_short_rounds():
    """Unit checks on made-up probabilities: who says what, and a round larger than the pool."""
    X, labels = _made_up(300, every=10, seed=0)
    a = np.tile([0.9, 0.1], (300, 1))
    b = a.copy()
    b[5] = [0.2, 0.8]          # the networks split on row 5
    a[7] = [0.51, 0.49]        # both barely sure of row 7
    b[7] = [0.52, 0.48]
    s = S.suggest(X, 2, labels=labels, probas=[a, b], classes=["a", "b"], networks=["n1", "n2"])
    assert s.mode == "uncertainty" and set(s.rows.tolist()) == {5, 7}
    reason = dict(zip(s.rows.tolist(), s.reasons))
    assert reason[5] == "networks disagree: n1 says a, n2 says b"
    assert reason[7] == "least sure: a 0.52 vs b 0.48"
    s = S.suggest(X, 500, labels=labels)
    assert s.mode == "cold start" and sorted(s.rows.tolist()) == [i for i in range(300) if labels[i] is None]
    assert len(S.suggest(X, 5, labels=["x"] * 300).rows) == 0


def test_a_round_spends_a_few_looks_on_expert_labels_the_networks_contradict():
    """Second looks: labelled rows whose out-of-fold prediction says another class, at most a tenth of a round."""
    X, labels = _made_up(400, every=4, seed=1)
    P = np.tile([0.3, 0.7], (400, 1))
    P[np.array([v == "a" for v in labels])] = [0.8, 0.2]
    P[8], P[16], P[24] = [0.04, 0.96], [0.08, 0.92], [0.3, 0.7]   # labelled b, and the network agrees
    P[4], P[12] = [0.05, 0.95], [0.08, 0.92]                      # labelled a, the network says b: contradicted
    s = S.suggest(X, 20, labels=labels, probas=[P], classes=["a", "b"], networks=["n1"])
    kinds = dict(zip(s.rows.tolist(), s.kinds))
    assert [r for r, k in kinds.items() if k == "recheck"] == [4, 12] and len(s.rows) == 20
    reason = dict(zip(s.rows.tolist(), s.reasons))
    assert reason[4] == "second look: labelled a, the networks say b 0.95"
    assert all(labels[r] is None for r, k in kinds.items() if k != "recheck")
    assert all(p == "b" and c == pytest.approx(0.7) for r, p, c in zip(s.rows, s.predictions, s.confidences)
               if kinds[int(r)] != "recheck")
    # a round of 5 has no room for second looks
    assert "recheck" not in S.suggest(X, 5, labels=labels, probas=[P], classes=["a", "b"]).kinds


def test_the_reduced_features_are_computed_once_and_the_round_is_the_same(digits, tmp_path, capsys):
    """The PCA reduction of a network's features is kept beside its predictions: the second round reads it
    and chooses exactly what a reduction computed afresh chooses."""
    from nipgboard_plugin import paths
    from nipgboard_plugin.features import load_features

    ds = copy_dataset(digits, tmp_path)
    L = ds["logdir"]
    _unlabel_all(L)
    path = paths.network_dir(L, NETS[0]) / S.REDUCED_FILE
    assert not path.exists()
    rc, first = run(capsys, "suggest", L, "--networks", NETS[0], "-n", "8")
    assert rc == 0 and path.is_file()
    stamp = path.stat().st_mtime_ns
    rc, again = run(capsys, "suggest", L, "--networks", NETS[0], "-n", "8")
    assert rc == 0 and path.stat().st_mtime_ns == stamp
    assert [it["id"] for it in again["items"]] == [it["id"] for it in first["items"]]
    ids, X = load_features(L, NETS[0])
    fresh = S.suggest(X, 8)
    assert [int(ids[r]) for r in fresh.rows] == [it["id"] for it in first["items"]]
    assert np.allclose(S.reduce_for_dataset(L, NETS[0], ids, X), S.reduce(X), atol=1e-5)
    assert S.reduce_for_dataset(L, NETS[0], ids[:-1], X[:-1]).shape[0] == len(ids) - 1  # other features: anew
