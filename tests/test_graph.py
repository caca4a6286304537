"""Graphs, communities and the cluster-labelling rule."""
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from nipgboard_plugin import graph, projection, results
from nipgboard_plugin.errors import UserError
from pipeline_fixtures import copy_dataset


@pytest.mark.parametrize("dims", [2, 3, 5])
def test_mst_is_the_exact_euclidean_tree_and_connected(dims):
    rng = np.random.default_rng(dims)
    Y = np.vstack([rng.normal(size=(150, dims)), rng.normal(size=(150, dims)) + 40])  # two far islands
    Y[7] = Y[8] = Y[9]  # coincident points
    T = graph.mst_graph(Y)
    D = squareform(pdist(Y))
    D[D == 0] = 1e-12
    np.fill_diagonal(D, 0)
    assert T.nnz // 2 == len(Y) - 1
    assert connected_components(T, directed=False)[0] == 1
    assert T.sum() / 2 == pytest.approx(minimum_spanning_tree(sp.csr_matrix(D)).sum(), rel=1e-9)


def _blobs(n=60, seed=0):
    from sklearn.datasets import make_blobs

    return make_blobs(n_samples=n, centers=[[0, 0], [20, 0], [0, 20]], cluster_std=1.0, random_state=seed)


def test_knn_threshold_makes_outliers():
    Y, _ = _blobs(90)
    Y = np.vstack([Y, [[200.0, 200.0]]])
    est = graph.GraphClustering(graph="knn", k=5, threshold=5.0).fit(Y)
    assert est.labels_[-1] == -1 and (est.labels_[:-1] >= 0).all()
    est = graph.GraphClustering(graph="knn", k=5).fit(Y)  # default threshold: 99th percentile
    assert est.labels_[-1] == -1 and est.threshold_ > 0


def test_louvain_communities_are_pure_and_resolution_controls_their_number():
    Y, truth = _blobs(300)
    fine = graph.GraphClustering(resolution=1.0).fit(Y)
    coarse = graph.GraphClustering(resolution=0.05).fit(Y)
    assert coarse.n_clusters_ < fine.n_clusters_
    for est in (fine, coarse):
        for c in range(est.n_clusters_):
            assert len(set(truth[est.labels_ == c])) == 1
    again = graph.GraphClustering(resolution=1.0).fit(Y)
    np.testing.assert_array_equal(again.labels_, fine.labels_)
    sizes = np.bincount(fine.labels_)
    assert (np.diff(sizes) <= 0).all()  # numbered by decreasing size


def test_girvan_newman_small_sets_only():
    Y, truth = _blobs(45)
    est = graph.GraphClustering(method="girvan-newman").fit(Y)
    assert est.n_clusters_ >= 3
    for c in range(est.n_clusters_):
        assert len(set(truth[est.labels_ == c])) == 1
    big = np.random.default_rng(0).normal(size=(graph.GIRVAN_NEWMAN_MAX_NODES + 1, 2))
    with pytest.raises(UserError, match="Girvan-Newman is too slow.*--method louvain"):
        graph.GraphClustering(method="girvan-newman").fit(big)


def test_labelling_rule():
    clusters = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, -1])
    y = np.array([0, 0, 1, -1, 1, 0, -1, -1, -1, -1])  # cluster 1 ties 1:1
    table = graph.label_clusters(clusters, y, 2)
    assert table[0]["label"] == 0 and table[0]["purity"] == pytest.approx(2 / 3)
    assert table[0]["confidence"] == pytest.approx(3 / 5)
    assert table[1]["label"] == 0  # tie: class 0 and 1 are equally frequent overall -> alphabetically first
    assert table[2]["needs_label"] and table[2]["label"] == -1
    Y = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [10, 0], [10, 1], [11, 0], [0, 30], [0, 31], [12, 0.5]], float)
    pred, conf, rule = graph.assign_labels(Y, clusters, table, edge_length=1.0)
    assert list(rule[:7]) == [2] * 7 and list(rule[7:]) == [3] * 3
    assert pred[9] == table[1]["label"]  # outlier next to cluster 1
    assert pred[7] == pred[8] == 0  # unlabelled cluster 2 nearest to cluster 0's image (0, 1)
    assert conf[7] < table[0]["confidence"]


def test_cluster_stage_and_stale_clusters(faces, tmp_path):
    ds = copy_dataset(faces, tmp_path)
    logdir = ds["logdir"]
    with pytest.raises(UserError, match="nipgboard project"):
        graph.cluster_dataset(logdir, "efficientnet_lite0")
    projection.project_dataset(logdir, "efficientnet_lite0", n_epochs=60, n_neighbors=10)
    r = graph.cluster_dataset(logdir, "efficientnet_lite0", resolution=0.3)
    assert r["clusters"] >= 2 and r["outliers"] == 0
    arrays, meta = graph.load_clusters(logdir, "efficientnet_lite0")
    assert len(arrays["cluster"]) == 200 and (arrays["pred"] >= 0).all()
    inp = results.load_inputs(logdir, features=False)
    rows = results.align(arrays["image_ids"], inp.image_ids)
    truth = np.array([ds["truth"][p] for p in inp.paths])
    pred = np.array(meta["classes"])[arrays["pred"][rows]]
    assert (pred[inp.roles == "pool"] == truth[inp.roles == "pool"]).mean() > 0.85
    labelled = [t for t in meta["clusters"] if not t["needs_label"]]
    assert all(t["label"] in ("face", "nonface") for t in labelled)
    r = graph.cluster_dataset(logdir, "efficientnet_lite0", on="train", graph="knn")
    assert r["on"] == "train"
    projection.project_dataset(logdir, "efficientnet_lite0", n_epochs=60, n_neighbors=12)
    with pytest.raises(UserError, match="older projection"):
        graph.load_clusters(logdir, "efficientnet_lite0")
