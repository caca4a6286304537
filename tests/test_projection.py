"""Projection: UMAP/PCA estimator on real features, the stored stage, reproducibility, bad input."""
import numpy as np
import pytest

from nipgboard_plugin import projection, results
from nipgboard_plugin.errors import UserError
from nipgboard_plugin.features import load_features
from pipeline_fixtures import copy_dataset

FAST = dict(n_epochs=60, n_neighbors=10)


def _nn_accuracy(Y, y):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    return cross_val_score(KNeighborsClassifier(5), Y, y, cv=3).mean()


def test_warm_up_is_paid_once_per_process():
    projection.warm_up()
    assert projection.is_warm()
    assert projection.warm_up() == 0.0


def test_supervised_fit_is_reproducible_and_transforms_new_images(digits):
    ids, X = load_features(digits["logdir"], "efficientnet_lite0")
    inp = results.load_inputs(digits["logdir"], features=False)
    y = projection.encode_labels(inp.labels, sorted(set(v for v in inp.labels if v)))
    lab = y >= 0
    a = projection.Projection(random_state=3, **FAST).fit(X[lab], y[lab])
    b = projection.Projection(random_state=3, **FAST).fit(X[lab], y[lab])
    np.testing.assert_array_equal(a.embedding_, b.embedding_)
    Za, Zb = a.transform(X[~lab]), b.transform(X[~lab])
    np.testing.assert_array_equal(Za, Zb)
    assert a.embedding_.shape == (lab.sum(), 3) and Za.shape == ((~lab).sum(), 3)
    assert a.supervised_ and a.pca_ is not None and a.pca_.n_components_ == 50
    # The fitted space separates the classes of the images it never saw.
    truth = np.array([digits["truth"][p] for p in inp.paths])
    assert _nn_accuracy(Za, truth[~lab]) > 0.85


def test_pca_method_and_2d(faces):
    _, X = load_features(faces["logdir"], "mobilenet_v2")
    p = projection.Projection(method="pca", n_components=2).fit(X[:100])
    assert p.umap_ is None and p.transform(X[100:]).shape == (100, 2)
    assert np.allclose(p.transform(X[:100]), p.embedding_, atol=1e-4)


def test_too_few_images_for_n_neighbors():
    X = np.random.default_rng(0).normal(size=(10, 20)).astype(np.float32)
    with pytest.raises(ValueError, match="n_neighbors=15"):
        projection.Projection().fit(X)


def test_project_dataset_stores_coordinates_and_model(faces, tmp_path):
    ds = copy_dataset(faces, tmp_path)
    r = projection.project_dataset(ds["logdir"], "efficientnet_lite0", **FAST)
    assert r["fitted"] == 48 and r["transformed"] == 152 and r["mode"] == "supervised"
    arrays, meta = results.load_result(ds["logdir"], "efficientnet_lite0", "projection")
    assert arrays["coords"].shape == (200, 3) and arrays["in_fit"].sum() == 48
    model = results.load_projection_model(ds["logdir"], "efficientnet_lite0")
    ids, X = load_features(ds["logdir"], "efficientnet_lite0")
    rows = results.align(ids, arrays["image_ids"])
    out = ~arrays["in_fit"]
    again = model.transform(X[rows][out])  # the stored model places the same images at the same points
    np.testing.assert_allclose(again, arrays["coords"][out], atol=1e-4)
    # Semi-supervised: the unlabelled pool joins the fit.
    r = projection.project_dataset(ds["logdir"], "efficientnet_lite0", mode="semi-supervised", n_components=2, **FAST)
    assert r["fitted"] == 48 + 140 and r["fit_on"] == "train+pool" and r["dims"] == 2


def test_bad_input_says_what_to_do_and_writes_nothing(faces, tmp_path):
    ds = copy_dataset(faces, tmp_path)
    logdir = ds["logdir"]
    path = results.result_path(logdir, "efficientnet_lite0", "projection")
    with pytest.raises(UserError, match="--n-neighbors"):
        projection.project_dataset(logdir, "efficientnet_lite0", n_neighbors=60)
    assert not path.exists()
    with pytest.raises(UserError, match="nipgboard embed"):
        projection.project_dataset(logdir, "efficientnet_lite1")
    from nipgboard_plugin.store import Store

    with Store(logdir) as st:  # only one class left among the labels
        st.set_labels([(i, None) for i, lab in st.labels().items() if lab == "nonface"])
    with pytest.raises(UserError, match="two classes"):
        projection.project_dataset(logdir, "efficientnet_lite0", **FAST)
    with Store(logdir) as st:
        st.set_labels([(i, None) for i in st.labels()])
    with pytest.raises(UserError, match="--unsupervised"):
        projection.project_dataset(logdir, "efficientnet_lite0", **FAST)
    assert not path.exists()
    r = projection.project_dataset(logdir, "efficientnet_lite0", mode="unsupervised", **FAST)
    assert r["fit_on"] == "train+pool" and r["fitted"] == 200  # no labels: every image is unlabelled


def test_grid_search_uses_train_images_only(digits):
    ids, X = load_features(digits["logdir"], "mobilenet_v2")
    inp = results.load_inputs(digits["logdir"], features=False)
    tr = inp.roles == "train"
    y = projection.encode_labels(inp.labels[tr], list(inp.classes()))
    table = projection.grid_search(X[tr], y, {"n_neighbors": [5, 10], "n_epochs": [40]},
                                   {"graph": ["mst", "knn"], "resolution": [1.0]}, n_folds=2)
    assert len(table) == 4 and all(0 <= r["accuracy"] <= 1 for r in table)
    assert table[0]["accuracy"] == max(r["accuracy"] for r in table) and table[0]["accuracy"] > 0.6


def test_importing_umap_does_not_import_tensorflow():
    """umap's ParametricUMAP would import TensorFlow (seconds per process) where it is installed."""
    import subprocess
    import sys

    code = ("import sys; from nipgboard_plugin.projection import _import_umap; u = _import_umap(); "
            "u.UMAP(n_components=3); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
