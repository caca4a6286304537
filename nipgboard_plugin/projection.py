"""Project image features to 2-D or 3-D: UMAP (supervised, semi-supervised or unsupervised) or PCA.

:class:`Projection` is a small scikit-learn style estimator: ``__init__`` only stores parameters,
``fit(X, y)`` learns and returns ``self`` (learned state ends in ``_``), ``transform(X)`` places
new images in the fitted space. ``y`` holds integer class codes, ``-1`` for an image without a label
(UMAP's convention for semi-supervised fits); ``y=None`` fits without labels.

Before UMAP the features are L2-normalised per image (``normalize``; pretrained-network features
compare best by direction) and reduced by PCA to ``pca_dims`` dimensions (UMAP on 50 PCA dimensions
is about twice as fast as on 1280 raw ones and finds the same neighbours). The PCA is fitted on the
fit set only. ``random_state`` makes every result reproducible (UMAP then runs single-threaded).

UMAP's numba code is compiled the first time it runs in a process (tens of seconds).
:func:`warm_up` pays that once; a long-lived process calls it at start and every later fit and
transform in the same process runs at full speed.

:func:`project_dataset` is the stage: it fits on the train images of a dataset (with few labels also a
seeded sample of the unlabelled pool, :func:`default_fit_on`), transforms the rest and stores the result.
"""
import sys
import threading
import time
import warnings

import numpy as np

from . import atomic, paths
from .errors import InvalidParameter, UserError

METHODS = ("umap", "pca")
MODES = ("supervised", "semi-supervised", "unsupervised")
# UMAP places new images with n_epochs // 3 epochs and fails with none: fewer epochs than this are raised to it.
MIN_UMAP_EPOCHS = 3

_warm_lock = threading.Lock()
_warm_seconds = None


def _import_umap():
    # umap's package import also loads ParametricUMAP, which imports TensorFlow when it is installed
    # (about 7 s per process, and we never use it): mark that submodule absent unless already loaded.
    if "umap" not in sys.modules:
        sys.modules.setdefault("umap.parametric_umap", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import umap  # noqa: WPS433 (slow import: only when needed)
    return umap


def warm_up():
    """Compile UMAP's numba code in this process (once); return the seconds it took, 0.0 if already done.

    Runs a tiny supervised fit through the exact and the approximate nearest-neighbour paths and a
    transform, which covers the code that :class:`Projection` uses.
    """
    global _warm_seconds
    with _warm_lock:
        if _warm_seconds is not None:
            return 0.0
        t0 = time.perf_counter()
        umap = _import_umap()
        rng = np.random.default_rng(0)
        X = rng.normal(size=(300, 8)).astype(np.float32)
        y = np.arange(300) % 3
        y[::7] = -1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for approx in (False, True):
                m = umap.UMAP(n_components=3, n_neighbors=10, n_epochs=20, random_state=0,
                              force_approximation_algorithm=approx)
                m.fit(X, y=y)
                m.transform(X[:40])
        _warm_seconds = time.perf_counter() - t0
        return _warm_seconds


def is_warm() -> bool:
    return _warm_seconds is not None


def _l2_normalize(X):
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


class Projection:
    """UMAP or PCA projection of feature vectors to ``n_components`` (2 or 3) dimensions.

    ``umap_options`` go to umap-learn's ``UMAP`` as they are (the `project` step declares them:
    n_neighbors, min_dist, ...; an ``n_epochs`` below :data:`MIN_UMAP_EPOCHS` is raised to it, None
    lets UMAP choose). ``target_weight`` is how much the labels shape a supervised fit (0..1);
    ``pca_dims`` (None or 0: off) reduces the features before UMAP; with ``method='pca'`` the
    projection is PCA to ``n_components`` itself.

    Fitted attributes: ``embedding_`` (coordinates of the fit set), ``pca_``, ``umap_`` (None for
    PCA), ``n_features_in_``, ``supervised_`` (whether labels shaped the fit).
    """

    def __init__(self, method="umap", n_components=3, target_weight=0.5, pca_dims=50, normalize=True,
                 random_state=0, **umap_options):
        self.method = method
        self.n_components = n_components
        self.target_weight = target_weight
        self.pca_dims = pca_dims
        self.normalize = normalize
        self.random_state = random_state
        self.umap_options = umap_options

    def get_params(self):
        return dict({k: getattr(self, k) for k in (
            "method", "n_components", "target_weight", "pca_dims", "normalize", "random_state")},
            **self.umap_options)

    def _check_params(self, n_samples):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, not {self.method!r}")
        if self.n_components not in (2, 3):
            raise ValueError("n_components must be 2 or 3")
        if self.method == "umap":
            neighbours = self._umap_kwargs()["n_neighbors"]
            if n_samples <= neighbours:
                raise ValueError(
                    f"too few images to fit UMAP: {n_samples} in the fit set, n_neighbors={neighbours} "
                    f"needs more than {neighbours}; label more images or lower --n-neighbors")
        elif n_samples < self.n_components + 1:
            raise ValueError(f"too few images for PCA to {self.n_components} dimensions: {n_samples}")

    def _umap_kwargs(self):
        """The options for ``umap.UMAP``, as umap-learn's own defaults complete them."""
        import inspect

        umap = _import_umap()
        defaults = {k: v.default for k, v in inspect.signature(umap.UMAP).parameters.items()}
        unknown = set(self.umap_options) - set(defaults)
        if unknown:
            raise ValueError(f"unknown UMAP option {sorted(unknown)[0]!r}")
        options = {k: v for k, v in self.umap_options.items() if v is not None}
        epochs = options.get("n_epochs")
        if epochs:
            options["n_epochs"] = max(MIN_UMAP_EPOCHS, int(epochs))
        return dict({k: defaults[k] for k in ("n_neighbors",)}, **options)

    def _prepare(self, X):
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError("X must be a 2-D array (n_images, n_features)")
        return _l2_normalize(X) if self.normalize else X

    def fit(self, X, y=None):
        from sklearn.decomposition import PCA

        X = self._prepare(X)
        n, d = X.shape
        self._check_params(n)
        if y is not None:
            y = np.asarray(y, dtype=np.int64)
            if y.shape != (n,):
                raise ValueError("y must have one entry per row of X")
        self.n_features_in_ = d
        self.supervised_ = bool(self.method == "umap" and y is not None and (y >= 0).any())
        if self.method == "pca":
            self.pca_ = PCA(n_components=self.n_components, random_state=self.random_state).fit(X)
            self.umap_ = None
            self.embedding_ = self.pca_.transform(X).astype(np.float32)
            return self
        if self.pca_dims and d > int(self.pca_dims) and n > int(self.pca_dims):
            self.pca_ = PCA(n_components=int(self.pca_dims), random_state=self.random_state).fit(X)
            Z = self.pca_.transform(X).astype(np.float32)
        else:
            self.pca_ = None
            Z = X
        umap = _import_umap()
        self.umap_ = umap.UMAP(
            n_components=self.n_components, target_weight=float(self.target_weight),
            random_state=self.random_state, transform_seed=0 if self.random_state is None else int(self.random_state),
            n_jobs=1, low_memory=True, **self._umap_kwargs())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.umap_.fit(Z, y=y if self.supervised_ else None)
        self.embedding_ = np.asarray(self.umap_.embedding_, dtype=np.float32)
        return self

    def _check_fitted(self):
        if not hasattr(self, "embedding_"):
            raise RuntimeError("Projection is not fitted: call fit first")

    def transform(self, X, batch_size=20000):
        """Coordinates of new images in the fitted space (in batches, to bound memory)."""
        self._check_fitted()
        X = self._prepare(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the projection was fitted on {self.n_features_in_}")
        if len(X) == 0:
            return np.zeros((0, self.n_components), dtype=np.float32)
        Z = self.pca_.transform(X).astype(np.float32) if self.pca_ is not None else X
        if self.umap_ is None:
            return Z.astype(np.float32)
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for start in range(0, len(Z), batch_size):
                out.append(np.asarray(self.umap_.transform(Z[start:start + batch_size]), dtype=np.float32))
        return np.vstack(out)

    def fit_transform(self, X, y=None):
        return self.fit(X, y).embedding_


def encode_labels(labels, classes):
    """Integer codes of ``labels`` in ``classes``; -1 for None or a label outside ``classes``."""
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(lab, -1) if lab is not None else -1 for lab in labels], dtype=np.int64)


FIT_ON = ("train", "train+sample", "train+pool")
DEFAULT_POOL_SAMPLE = 5000  # bench/view.py: nearly as good as the whole pool in the fit, at a fraction of the cost
# Below this share of labelled train images among train + pool, a supervised fit also takes a pool sample
# (bench/view.py, 10,000 Fashion-MNIST images, 80% of the labelled ones train: the pool's 10-NN accuracy in
# the view is higher with the sample at 0.5%, 2% and 8% labelled (a train share of 6.5%), as high or higher
# without it at 15% (12.4%) and 30%).
FEW_LABELS_SHARE = 0.1


def default_fit_on(roles, mode):
    """The fit set when none is asked for, and why.

    With few labels (or none, or without labels) train plus a sample of the pool: the pool's own
    neighbourhoods then shape the space (as unlabelled, -1, in a supervised fit), so its groups stand apart;
    a fit on the labelled images alone places the pool only by ``transform``. With many labels the labelled
    images alone (the labels then shape the view best); semi-supervised: train and the whole pool.
    """
    roles = np.asarray(roles, dtype=object)
    n_train, n_pool = int((roles == "train").sum()), int((roles == "pool").sum())
    if n_pool == 0:
        return "train", "no unlabelled images"
    if mode == "semi-supervised":
        return "train+pool", "semi-supervised: every unlabelled image joins the fit"
    if n_train == 0:
        return "train+sample", "no labelled train images"
    if mode == "unsupervised":
        return "train+sample", "without labels, unlabelled images shape the view as much as labelled ones"
    share = n_train / (n_train + n_pool)
    counts = f"{n_train} labelled train images, {n_pool} unlabelled"
    if share < FEW_LABELS_SHARE:
        return "train+sample", (f"few labels ({counts}, under {FEW_LABELS_SHARE:.0%} labelled): unlabelled images "
                                "in the fit set their groups apart")
    return "train", f"many labels ({counts}, {FEW_LABELS_SHARE:.0%} or more labelled): they shape the view best"


def fit_set_mask(roles, mode, fit_on=None, pool_sample=DEFAULT_POOL_SAMPLE, random_state=0):
    """Which images the projection is fitted on, and the fit set's name.

    ``train``: the train images (labelled, not test); ``train+pool``: train and every unlabelled pool
    image (the pool as label -1 for a supervised or semi-supervised fit); ``train+sample``: train and a
    random ``pool_sample`` of the pool (all of it when it is smaller), drawn with ``random_state``.
    ``fit_on=None`` chooses by :func:`default_fit_on`. Test images are never in the fit set, so test
    metrics stay honest.
    """
    roles = np.asarray(roles, dtype=object)
    if fit_on is None:
        fit_on = default_fit_on(roles, mode)[0]
    if fit_on not in FIT_ON:
        raise ValueError(f"fit_on must be one of {', '.join(FIT_ON)}")
    train, pool = roles == "train", roles == "pool"
    if fit_on == "train":
        return train, fit_on
    if fit_on == "train+pool":
        return train | pool, fit_on
    if pool_sample is None or int(pool_sample) < 1:
        raise ValueError("pool_sample must be a positive number of images")
    idx = np.flatnonzero(pool)
    rng = np.random.default_rng(0 if random_state is None else int(random_state))
    mask = train.copy()
    mask[np.sort(rng.permutation(idx)[: int(pool_sample)])] = True
    return mask, fit_on


def project_dataset(logdir, network_id, mode="supervised", fit_on=None, pool_sample=DEFAULT_POOL_SAMPLE, inputs=None,
                    **params):
    """Fit a :class:`Projection` on a dataset's features, place every image, store the result.

    ``fit_on`` and ``pool_sample``: see :func:`fit_set_mask`. Returns a summary dict (counts, timings,
    parameters, ``notes``: which images the fit saw and why). Raises :class:`UserError` for what the user
    must fix first (no features, no labels for a supervised fit, one class, too few images).
    """
    from . import results

    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}")
    inp = inputs if inputs is not None else results.load_inputs(logdir, network_id)
    classes = inp.classes()
    method = params.get("method", "umap")
    if mode in ("supervised", "semi-supervised") and method == "umap":
        if len(classes) == 0:
            raise UserError(
                f"A {mode} projection needs labelled train images and {logdir} has none: label some images "
                "(`nipgboard label`, or init with --labels CSV) or run `nipgboard project` with --unsupervised.")
        if len(classes) == 1:
            raise UserError(
                f"A {mode} projection needs at least two classes; the train images are all labelled "
                f"{classes[0]!r}. Label images of another class, or use --unsupervised.")
    fit_mode = mode if method == "umap" else "unsupervised"
    asked = fit_on
    try:
        fit_mask, fit_on = fit_set_mask(inp.roles, fit_mode, fit_on, pool_sample, params.get("random_state", 0))
    except ValueError as exc:
        raise UserError(str(exc)) from None
    notes = [_fit_note(inp.roles, fit_mask, fit_on, asked, fit_mode)]
    if not fit_mask.any():
        raise UserError(f"No images to fit the projection on in {logdir} (fit set: {fit_on}).")
    y = None
    if mode != "unsupervised" and method == "umap":
        y = encode_labels(inp.labels[fit_mask], list(classes))
        if mode == "semi-supervised":
            y[inp.roles[fit_mask] == "pool"] = -1
    proj = Projection(**params)
    t0 = time.perf_counter()
    try:
        proj.fit(inp.X[fit_mask], y)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    t_fit = time.perf_counter() - t0
    coords = np.zeros((len(inp.image_ids), proj.n_components), dtype=np.float32)
    coords[fit_mask] = proj.embedding_
    t0 = time.perf_counter()
    if (~fit_mask).any():
        coords[~fit_mask] = proj.transform(inp.X[~fit_mask])
    t_transform = time.perf_counter() - t0
    meta = {
        "mode": mode if method == "umap" else "unsupervised",
        "fit_on": fit_on,
        "params": proj.get_params(),
        "pool_sample": int(pool_sample) if fit_on == "train+sample" else None,
        "notes": notes,
        "classes": [str(c) for c in classes],
        "n_fit": int(fit_mask.sum()),
        "n_transformed": int((~fit_mask).sum()),
        "seconds_fit": round(t_fit, 3),
        "seconds_transform": round(t_transform, 3),
        "created_at": time.time(),
    }
    arrays = {"image_ids": inp.image_ids, "coords": coords, "in_fit": fit_mask}
    meta = results.save_projection(logdir, network_id, arrays, meta, proj)
    counts = {r: int((inp.roles == r).sum()) for r in ("train", "test", "pool")}
    return {
        "network": network_id, "method": method, "mode": meta["mode"], "dims": proj.n_components,
        "fit_on": fit_on, "images": int(len(inp.image_ids)), "roles": counts,
        "fitted": meta["n_fit"], "transformed": meta["n_transformed"],
        "seconds_fit": meta["seconds_fit"], "seconds_transform": meta["seconds_transform"],
        "params": meta["params"], "token": meta["token"], "notes": notes,
    }


def _fit_note(roles, fit_mask, fit_on, asked, mode):
    """One line: which images the fit saw, and why (the default's reason, or 'as asked')."""
    train, pool = roles == "train", roles == "pool"
    n_pool_fit = int((fit_mask & pool).sum())
    seen = f"{int((fit_mask & train).sum())} train images"
    if fit_on != "train":
        unlabelled = "unlabelled" if mode == "unsupervised" else "unlabelled (as unknown)"
        share = "all" if n_pool_fit == int(pool.sum()) else "a random"
        seen += f" and {share} {n_pool_fit} of {int(pool.sum())} {unlabelled}"
    why = "as asked" if asked else f"the default: {default_fit_on(roles, mode)[1]}"
    left = int((~fit_mask).sum())
    placed = f"; the other {left} placed by transform" if left else ""
    return f"fitted on {seen} ({fit_on}, {why}){placed}"


# -- grid search -----------------------------------------------------------------------------------

DEFAULT_UMAP_GRID = {"n_neighbors": [10, 30], "min_dist": [0.0, 0.1]}
DEFAULT_GRAPH_GRID = {"graph": ["mst"], "resolution": [0.1, 1.0]}
MAX_GRID_CONFIGS = 200  # UMAP x graph configurations one search may score (each UMAP one fitted per fold)


def _expand(grid):
    import itertools

    keys = list(grid)
    for combo in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, combo))


def _grid_size(grid, name):
    """How many configurations ``grid`` expands to (the product of its lists' lengths), without expanding it."""
    if not isinstance(grid, dict):
        raise InvalidParameter(f"{name} must map each option to a list of values")
    size = 1
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise InvalidParameter(f"{name}[{key!r}] must be a non-empty list of values")
        size *= len(values)
    return size


def check_grid(umap_grid=None, graph_grid=None):
    """The number of configurations of a search; InvalidParameter when it exceeds :data:`MAX_GRID_CONFIGS`."""
    n_umap = _grid_size(umap_grid or DEFAULT_UMAP_GRID, "umap_grid")
    n_graph = _grid_size(graph_grid or DEFAULT_GRAPH_GRID, "graph_grid")
    total = n_umap * n_graph
    if total > MAX_GRID_CONFIGS:
        raise InvalidParameter(
            f"The search grid has {total} configurations ({n_umap} UMAP x {n_graph} graph), more than the limit "
            f"of {MAX_GRID_CONFIGS}: give fewer values per option.")
    return total


def grid_search(X, y, umap_grid=None, graph_grid=None, n_folds=3, random_state=0, base_params=None,
                progress=None):
    """Cross-validated accuracy of the paper's rule for every UMAP x graph configuration.

    ``X``, ``y`` are the train images only (class codes); the test split is never seen. In each fold
    UMAP is fitted supervised on the other folds, the held-out fold is transformed, the graph and
    communities are built over both and the held-out images take their cluster's label (rules of
    :mod:`.graph`). Returns the configurations, best first, each with ``accuracy`` (mean over folds)
    and ``std``.
    """
    from sklearn.model_selection import StratifiedKFold

    from . import graph

    umap_grid = umap_grid or DEFAULT_UMAP_GRID
    graph_grid = graph_grid or DEFAULT_GRAPH_GRID
    check_grid(umap_grid, graph_grid)
    y = np.asarray(y, dtype=np.int64)
    counts = np.bincount(y)
    n_folds = int(min(n_folds, counts[counts > 0].min()))
    if n_folds < 2:
        raise UserError("Every class needs at least 2 labelled train images for a cross-validated search.")
    folds = list(StratifiedKFold(n_folds, shuffle=True, random_state=random_state).split(X, y))
    n_classes = int(y.max() + 1)
    umap_cfgs, graph_cfgs = {}, {}
    scores = {}
    total = _grid_size(umap_grid, "umap_grid") * len(folds)
    done = 0
    for ui, ucfg in enumerate(_expand(umap_grid)):
        umap_cfgs[ui] = ucfg
        params = dict(base_params or {}, **ucfg)
        params.setdefault("random_state", random_state)
        for tr, va in folds:
            try:
                proj = Projection(**params).fit(X[tr], y[tr])
            except ValueError as exc:
                raise UserError(f"{exc} (a cross-validation fold holds {len(tr)} train images): label more "
                                "images or search smaller values.") from None
            Y = np.vstack([proj.embedding_, proj.transform(X[va])])
            yy = np.concatenate([y[tr], np.full(len(va), -1)])
            for gi, gcfg in enumerate(_expand(graph_grid)):
                graph_cfgs[gi] = gcfg
                est = graph.GraphClustering(random_state=random_state, **gcfg).fit(Y)
                table = graph.label_clusters(est.labels_, yy, n_classes)
                pred, _, _ = graph.assign_labels(Y, est.labels_, table, est.edge_length_)
                acc = float((pred[len(tr):] == y[va]).mean())
                scores.setdefault((ui, gi), []).append(acc)
            done += 1
            if progress:
                progress(done, total)
    out = []
    for (ui, gi), accs in scores.items():
        out.append({"umap": umap_cfgs[ui], "graph": graph_cfgs[gi], "accuracy": round(float(np.mean(accs)), 4),
                    "std": round(float(np.std(accs)), 4), "folds": len(accs)})
    out.sort(key=lambda r: (-r["accuracy"], r["std"]))
    return out


def search_dataset(logdir, network_id, umap_grid=None, graph_grid=None, n_folds=3, n_components=3, random_state=0,
                   apply=False, progress=None):
    """Grid search on a dataset's train images; with ``apply`` project and cluster with the best configuration."""
    import json

    from . import graph, results

    check_grid(umap_grid, graph_grid)  # before anything is loaded or fitted
    inp = results.load_inputs(logdir, network_id)
    classes = list(inp.classes())
    if len(classes) < 2:
        raise UserError("The search scores configurations by accuracy on the labelled train images: label images "
                        "of at least two classes first.")
    tr = inp.roles == "train"
    y = encode_labels(inp.labels[tr], classes)
    t0 = time.perf_counter()
    table = grid_search(inp.X[tr], y, umap_grid, graph_grid, n_folds=n_folds, random_state=random_state,
                        base_params={"n_components": n_components}, progress=progress)
    report = {"network": network_id, "train_images": int(tr.sum()), "folds": n_folds,
              "umap_grid": umap_grid or DEFAULT_UMAP_GRID, "graph_grid": graph_grid or DEFAULT_GRAPH_GRID,
              "configs": table, "best": table[0], "seconds": round(time.perf_counter() - t0, 2)}
    atomic.write_text(paths.search_report_path(logdir, network_id), json.dumps(report, indent=1))
    if apply:
        best = table[0]
        report["applied"] = {
            "project": project_dataset(logdir, network_id, mode="supervised", inputs=inp, n_components=n_components,
                                       random_state=random_state, **best["umap"]),
            "cluster": graph.cluster_dataset(logdir, network_id, random_state=random_state, **best["graph"]),
        }
        report["applied"]["cluster"].pop("table", None)
    return report
