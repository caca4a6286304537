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
    r = projection.project_dataset(ds["logdir"], "efficientnet_lite0", fit_on="train", **FAST)
    assert r["fitted"] == 48 and r["transformed"] == 152 and r["mode"] == "supervised"
    assert r["notes"] == ["fitted on 48 train images (train, as asked); the other 152 placed by transform"]
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
        projection.project_dataset(logdir, "efficientnet_lite0", fit_on="train", n_neighbors=60)
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
    assert r["fit_on"] == "train+sample" and r["fitted"] == 200  # no labels: every image is unlabelled
    assert "no labelled train images" in r["notes"][0]


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


# -- the fit set: train plus a sample of the unlabelled pool ----------------------------------------------

def _pool_knn(Y, y, k=10):
    """Leave-one-out k-NN accuracy of the true class among the given points (what a lasso around a group gets)."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y, return_distance=False)[:, 1:]
    votes = np.stack([(y[idx] == c).sum(axis=1) for c in np.unique(y)], axis=1)
    return float((np.unique(y)[votes.argmax(axis=1)] == y).mean())


def test_a_pool_sample_in_the_fit_sets_unlabelled_groups_apart_with_few_labels(digits):
    """Three labels per class: fitted on them alone, the unlabelled digits are placed by transform between
    the labelled islands; with a sample of the pool in the fit their own groups stand apart."""
    ids, X = load_features(digits["logdir"], "mobilenet_v2")
    inp = results.load_inputs(digits["logdir"], features=False)
    truth = np.array([digits["truth"][p] for p in inp.paths])
    gains = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        roles = np.array(["pool"] * len(truth), dtype=object)
        for c in np.unique(truth):
            roles[rng.choice(np.flatnonzero(truth == c), 3, replace=False)] = "train"
        y = projection.encode_labels(np.where(roles == "train", truth, None), sorted(set(truth)))
        pool = roles == "pool"
        scores = {}
        for fit_on in ("train", "train+sample"):
            fit, _ = projection.fit_set_mask(roles, "supervised", fit_on, pool_sample=120, random_state=seed)
            p = projection.Projection(random_state=seed, n_epochs=60, n_neighbors=10).fit(X[fit], y[fit])
            Y = np.zeros((len(X), 3), np.float32)
            Y[fit] = p.embedding_
            Y[~fit] = p.transform(X[~fit])
            scores[fit_on] = _pool_knn(Y[pool], truth[pool])
        gains.append(scores["train+sample"] - scores["train"])
        print(seed, scores)
    assert min(gains) > 0.03, gains


def test_the_pool_sample_is_reproducible_and_never_takes_test_images():
    roles = np.array(["train"] * 20 + ["test"] * 10 + ["pool"] * 70, dtype=object)
    a, name = projection.fit_set_mask(roles, "supervised", "train+sample", pool_sample=30, random_state=4)
    b, _ = projection.fit_set_mask(roles, "supervised", "train+sample", pool_sample=30, random_state=4)
    c, _ = projection.fit_set_mask(roles, "supervised", "train+sample", pool_sample=30, random_state=5)
    np.testing.assert_array_equal(a, b)
    assert name == "train+sample" and a.sum() == 50 and (a != c).any()
    assert a[:20].all() and not a[20:30].any() and a[30:].sum() == 30
    everything, _ = projection.fit_set_mask(roles, "supervised", "train+sample", pool_sample=500)
    np.testing.assert_array_equal(everything, roles != "test")
    # The default: with few labels (or without labels) a sample of the pool; with many, the labelled images
    # alone; semi-supervised: all of the pool; train alone when there is no pool.
    few = np.array(["train"] * 5 + ["test"] * 2 + ["pool"] * 93, dtype=object)
    assert projection.fit_set_mask(few, "supervised")[1] == "train+sample"
    assert roles[roles == "train"].size / roles[roles != "test"].size >= projection.FEW_LABELS_SHARE
    assert projection.fit_set_mask(roles, "supervised")[1] == "train"
    assert projection.fit_set_mask(roles, "unsupervised")[1] == "train+sample"
    assert projection.fit_set_mask(roles, "semi-supervised")[1] == "train+pool"
    assert projection.fit_set_mask(roles[:30], "supervised")[1] == "train"
    with pytest.raises(ValueError, match="fit_on"):
        projection.fit_set_mask(roles, "supervised", "pool")
    with pytest.raises(ValueError, match="pool_sample"):
        projection.fit_set_mask(roles, "supervised", "train+sample", pool_sample=0)


def test_default_fit_places_every_image_and_says_which_fit(faces, tmp_path):
    from nipgboard_plugin import steps
    from nipgboard_plugin.errors import InvalidParameter

    from nipgboard_plugin.store import Store

    ds = copy_dataset(faces, tmp_path)
    inp = results.load_inputs(ds["logdir"], features=False)
    assert projection.default_fit_on(inp.roles, "supervised")[0] == "train"  # 48 of 188 labelled: many
    keep = {c: 0 for c in ("face", "nonface")}
    drop = []
    for iid, lab, role in zip(inp.image_ids, inp.labels, inp.roles):
        if role == "train":
            keep[lab] += 1
            if keep[lab] > 4:
                drop.append((int(iid), None))
    with Store(ds["logdir"]) as st:  # 8 labelled train images left: few
        st.set_labels(drop)
    step = steps.get("project")
    p = step.clean({"network": "efficientnet_lite0", "pool_sample": "50", "n_epochs": "60", "n_neighbors": "10",
                    "projector": False}, ds["logdir"], face="web")
    assert p["mode"] == "supervised" and p["fit_on"] is None and p["pool_sample"] == 50
    r = step.run(steps.Context(), ds["logdir"], p)
    assert r["fit_on"] == "train+sample" and r["fitted"] == 8 + 50 and r["transformed"] == 200 - 58
    assert r["notes"][0].startswith("fitted on 8 train images and a random 50 of 180 unlabelled (as unknown) "
                                    "(train+sample, the default: few labels (8 labelled train images, 180 "
                                    "unlabelled, under 10% labelled)")
    assert "placed by transform" in step.render(r) and "train+sample" in step.render(r)
    arrays, meta = results.load_result(ds["logdir"], "efficientnet_lite0", "projection")
    assert arrays["in_fit"].sum() == 58 and meta["pool_sample"] == 50
    coords = arrays["coords"]
    assert coords.shape == (200, 3) and np.isfinite(coords).all() and (np.abs(coords).sum(axis=1) > 0).all()
    for bad in ({"pool_sample": 0}, {"pool_sample": "many"}, {"fit_on": "pool"}):
        with pytest.raises(InvalidParameter):
            step.clean(dict({"network": "efficientnet_lite0"}, **bad), ds["logdir"], face="web")
