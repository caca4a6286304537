"""Metrics: binary and multi-class against hand counts and scikit-learn; the report over networks."""
import numpy as np
import pytest

from nipgboard_plugin import evaluate, graph, predict, projection
from nipgboard_plugin.errors import UserError
from nipgboard_plugin.store import Store
from pipeline_fixtures import copy_dataset


def test_binary_metrics_by_hand():
    true = ["ok"] * 6 + ["bad"] * 4
    pred = ["ok"] * 5 + ["bad"] + ["bad"] * 3 + ["ok"]
    m = evaluate.classification_metrics(true, pred, ["bad", "ok"], positive="bad")
    # bad is positive: TP=3, FN=1, FP=1, TN=5
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(5 / 6) and m["f1"] == pytest.approx(0.75)
    assert m["confusion"] == [[3, 1], [1, 5]]
    m2 = evaluate.classification_metrics(true, pred, ["bad", "ok"], positive="ok")
    assert m2["recall"] == pytest.approx(5 / 6) and m2["specificity"] == pytest.approx(3 / 4)


def test_multiclass_macro_matches_sklearn():
    from sklearn.metrics import precision_recall_fscore_support

    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.7, true, rng.integers(0, 4, 300))
    m = evaluate.classification_metrics(true, pred, [0, 1, 2, 3])
    p, r, f, _ = precision_recall_fscore_support(true, pred, average="macro")
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((p, r, f))
    cm = np.array(m["confusion"])
    spec0 = (cm.sum() - cm[0].sum() - cm[:, 0].sum() + cm[0, 0]) / (cm.sum() - cm[0].sum())
    assert m["per_class"]["0"]["specificity"] == pytest.approx(spec0)


def test_report_over_networks_and_silhouette_without_labels(faces, tmp_path):
    ds = copy_dataset(faces, tmp_path)
    logdir = ds["logdir"]
    with pytest.raises(UserError, match="nipgboard project"):
        evaluate.metrics_report(logdir)
    for net in ds["networks"]:
        predict.predict_dataset(logdir, net)
    projection.project_dataset(logdir, "mobilenet_v2", n_epochs=60, n_neighbors=10)
    graph.cluster_dataset(logdir, "mobilenet_v2", resolution=0.3)
    rep = evaluate.metrics_report(logdir)
    keys = {(r["network"], r["method"], r["split"]) for r in rep["rows"]}
    assert {("mobilenet_v2", "cluster", "test"), ("mobilenet_v2", "cluster", "train")} <= keys
    assert {(n, s) for n, _, s in keys} == {(n, s) for n in ds["networks"] for s in ("train", "test")}
    assert rep["positive"] == "nonface" and rep["average"] == "binary"
    assert all(r["n"] == (48 if r["split"] == "train" else 12) for r in rep["rows"])
    assert all(r["accuracy"] > 0.8 for r in rep["rows"])
    assert "accuracy" in evaluate.render_table(rep)
    # Without any label: silhouette of the clusters only.
    with Store(logdir) as st:
        st.set_labels([(i, None) for i in st.labels()])
    projection.project_dataset(logdir, "mobilenet_v2", mode="unsupervised", n_epochs=60, n_neighbors=10)
    graph.cluster_dataset(logdir, "mobilenet_v2", resolution=0.3)
    rep = evaluate.metrics_report(logdir, ["mobilenet_v2"])
    assert not rep["has_labels"] and rep["silhouette"]["mobilenet_v2"] > 0
    assert rep["rows"] == []
