"""Label every image from the expert's labels: predictors on the full features, chosen by cross-validation.

The paper's rule (label of the nearest cluster in the 2-D/3-D projection, see :mod:`.graph`) throws
away most of what the features know; on real photo sets it labels the unlabelled pool 5-15 points
below a plain kNN or logistic regression on the full features. So the labels handed out come from
the full features, and the clusters stay what they are best at: groups to inspect and label in bulk.

Methods (all fitted on the *train* images only: labelled and not in the test split):

* ``knn``: k nearest neighbours by cosine similarity (features L2-normalised), distance-weighted votes;
  k is at most half the number of train images of the smallest class.
* ``logreg``: multinomial logistic regression on the features scaled by one factor (their mean length
  over the train images). Not per-dimension standardisation: with a dozen train images the variance
  of each of 1,000+ dimensions is noise, and the features' length carries class information
  (faces vs non-faces: 0.93 pool accuracy standardised, 0.995 scaled as a whole).
* ``standardised``: logistic regression (C = :data:`STANDARDISED_C`) on features standardised per
  dimension (zero mean, unit variance over the train images): better on some photo sets, worse on others
  (above), so ``auto`` weighs it by cross-validation like the rest.
* ``ensemble``: the mean of the kNN and logistic-regression class probabilities.
* ``all``: the mean of the kNN, logistic-regression and label-spreading class probabilities.
* ``spread``: label spreading (Zhou et al. 2004) over the kNN graph of *all* images (train, test and
  pool, features L2-normalised and reduced by PCA), which lets unlabelled images carry labels along
  the data's structure. The graph depends on the features alone: a dataset's is built once and kept
  beside its predictions (:mod:`.spreading`; 70,000 images: about a minute on 2 cores, then a
  spreading takes a second or two).
* ``blend``: the mean of the logistic-regression and label-spreading class probabilities: the
  regression where the graph is thin, the graph where the labels are few.
* ``cluster``: the paper's rule, read from the stored clusters (``nipgboard cluster`` first).
* ``auto`` (default): with few labels (train images at most :data:`FEW_LABELS` of all images) and label
  spreading allowed, ``blend``. Cross-validation scores it and ``logreg`` (for the estimate of
  :mod:`.estimate` and the committee vote) but does not choose between them: on labels that
  :mod:`.suggest` chose (the images the predictions were least sure of) it measures the hard images,
  where the regression does better, while the unlabelled images are mostly easy ones, where the graph
  does (Fashion-MNIST 70,000, 1,050 chosen labels: cross-validated 0.613 logreg against 0.600 blend,
  on the unlabelled images 0.874 against 0.881). ``blend`` labels Fashion-MNIST's unlabelled images 0.7
  points better than ``logreg`` at 2,000 random labels (0.876 against 0.869), 0.3 at 8,000, and with
  the rounds of :mod:`.suggest` reaches 0.90 of all images right with fewer labels
  (``bench/handwork.py``); on lfw_subset with 4-50 random labels it is 0.1-0.9 points below ``logreg``
  (12 labels, ``mobilenet_v2``: 0.988 against 0.993; ``efficientnet_lite0``: 0.990 against 0.992). With more labels ``auto`` scores ``logreg``,
  ``standardised``, ``knn``, ``ensemble``, ``spread``, ``blend`` and ``all`` by stratified
  k-fold cross-validation on the train images. The best score wins unless a simpler method (earlier
  in that list) is within one standard error of it, measured on the paired per-image differences
  (Breiman's one-standard-error rule): with a dozen train images every method scores alike and the
  choice between them is noise, so the simplest one is used (logistic regression, the most accurate
  alone on the bench datasets); with hundreds of labels a committee that is clearly better is chosen.

*Committee vote.* When several networks judge an image together (the review queue, the consensus
in the export and the Projector), each one votes with its logistic regression (``vote_proba``),
whichever method labels it alone. The committees and label spreading that ``auto`` picks for a point
of accuracy make the networks confidently wrong on the same images, so their disagreements hide
errors; votes by logistic regression make a consensus as accurate and disagree where the errors are
(``bench/quality.py``, Fashion-MNIST 70k, three networks, share of the errors found by reviewing 10%
of the pool in 1% rounds, seeds 0/1/2: 0.491/0.503/0.528 with the ``auto`` choices as votes,
0.518/0.513/0.528 with logistic regression, at the same consensus accuracy). The cluster rule votes
as itself.

Every image gets a label, a confidence (the predicted class's probability) and its class
probabilities. Train images get *out-of-fold* predictions (from the cross-validation model that did not
see them), so their confidence and errors are honest and point at possibly wrong expert labels;
test and pool images get the predictions of the model fitted on all train images.
"""
import time

import numpy as np

from . import estimate
from .errors import MissingStep, UserError
from .spreading import GRAPH_FILE, LabelSpreading, _l2, spread_graph  # noqa: F401 (GRAPH_FILE: the graph's file)

METHODS = ("auto", "cluster", "knn", "logreg", "standardised", "ensemble", "spread", "blend", "all")
VOTE_METHOD = "logreg"  # how a network votes in a committee of networks (see the module docstring)
AUTO_CANDIDATES = ("logreg", "standardised", "knn", "ensemble", "spread", "blend", "all")  # simplest first: near-ties go to the earlier
FEW_LABELS = 0.2      # auto: train images at most this share of all images -> logreg or blend (module docstring)
FEW_CANDIDATES = ("blend", "logreg")
SPREADING = ("spread", "blend", "all")  # the methods that need the graph of all images
STANDARDISED_C = 1.0  # scikit-learn's default: per-dimension scaling already spreads the weights


class FeaturePredictor:
    """A classifier on feature vectors with ``fit(X, y)``, ``predict_proba(X)`` (columns = ``classes_``).

    ``method`` is ``knn``, ``logreg``, ``standardised`` or ``ensemble``; ``k`` the kNN neighbours, ``C`` the inverse
    regularisation of the logistic regression. ``y`` holds class codes 0..n_classes-1.
    Fitted attributes: ``classes_``, ``knn_``, ``logreg_``, ``standardised_`` (None when unused).
    """

    def __init__(self, method="ensemble", k=10, C=10.0, random_state=0):
        self.method = method
        self.k = k
        self.C = C
        self.random_state = random_state

    def fit(self, X, y, n_classes=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.neighbors import KNeighborsClassifier

        if self.method not in ("knn", "logreg", "standardised", "ensemble"):
            raise ValueError(f"unknown method {self.method!r}")
        X = np.asarray(X, dtype=np.float32)
        self.scale_ = float(max(np.linalg.norm(X, axis=1).mean(), 1e-12))
        y = np.asarray(y, dtype=np.int64)
        self.n_classes_ = int(n_classes if n_classes is not None else y.max() + 1)
        self.classes_ = np.arange(self.n_classes_)
        self.knn_ = self.logreg_ = self.standardised_ = None
        if self.method in ("knn", "ensemble"):
            # never more neighbours than half the smallest class: with few labels a large k votes for the
            # bigger classes
            smallest = int(np.bincount(y)[np.bincount(y) > 0].min())
            k = max(1, min(int(self.k), smallest // 2, len(y)))
            self.knn_ = KNeighborsClassifier(n_neighbors=k, weights="distance", algorithm="brute").fit(_l2(X), y)
        if self.method in ("logreg", "ensemble"):
            if len(np.unique(y)) > 1:
                self.logreg_ = LogisticRegression(C=float(self.C), max_iter=300, tol=1e-3,
                                                  random_state=self.random_state).fit(X / self.scale_, y)
            elif self.method == "logreg":
                self.knn_ = KNeighborsClassifier(n_neighbors=1).fit(_l2(X), y)
        if self.method == "standardised":
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler

            if len(np.unique(y)) > 1:
                self.standardised_ = make_pipeline(StandardScaler(), LogisticRegression(
                    C=STANDARDISED_C, max_iter=300, tol=1e-3, random_state=self.random_state)).fit(X, y)
            else:
                self.knn_ = KNeighborsClassifier(n_neighbors=1).fit(_l2(X), y)
        return self

    def _full(self, model, X):
        p = model.predict_proba(X)
        out = np.zeros((len(X), self.n_classes_), dtype=np.float64)
        out[:, model.classes_] = p
        return out

    def predict_proba(self, X, batch_size=8192):
        X = np.asarray(X, dtype=np.float32)
        parts = []
        for s in range(0, len(X), batch_size):
            xb = X[s:s + batch_size]
            probs = []
            if self.knn_ is not None:
                probs.append(self._full(self.knn_, _l2(xb)))
            if self.logreg_ is not None:
                probs.append(self._full(self.logreg_, xb / self.scale_))
            if self.standardised_ is not None:
                probs.append(self._full(self.standardised_, xb))
            parts.append(np.mean(probs, axis=0))
        return np.vstack(parts) if parts else np.zeros((0, self.n_classes_))

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)


def _folds(y, random_state=0):
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y)
    counts = counts[counts > 0]
    n_splits = int(min(5 if len(y) <= 2000 else 3, counts.min()))
    if n_splits < 2:
        return None
    return list(StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state).split(np.zeros(len(y)), y))


def cross_validate(X, y, n_classes, candidates=AUTO_CANDIDATES, k=10, C=10.0, random_state=0, spread_model=None,
                   train_rows=None):
    """Out-of-fold probabilities and accuracy of each candidate on the train images.

    ``X``/``y`` are the train images; for ``spread`` the ``spread_model`` holds the graph of all
    images and ``train_rows`` the rows of the train images in it. Returns {method: (accuracy, oof proba)},
    or {} when a class has fewer than two images (no cross-validation possible).
    """
    folds = _folds(y, random_state)
    if folds is None:
        return {}
    out = {}
    oof = {m: np.zeros((len(y), n_classes)) for m in candidates}
    for tr, va in folds:
        base, sp = {}, None
        for m in ("knn", "logreg", "standardised"):
            if m in candidates or (m != "standardised" and ("ensemble" in candidates or "all" in candidates)) \
                    or (m == "logreg" and "blend" in candidates):
                base[m] = FeaturePredictor(m, k=k, C=C, random_state=random_state).fit(
                    X[tr], y[tr], n_classes).predict_proba(X[va])
        for m in candidates:
            if m in ("knn", "logreg", "standardised"):
                oof[m][va] = base[m]
            elif m == "ensemble":
                oof[m][va] = (base["knn"] + base["logreg"]) / 2
            elif m in SPREADING and spread_model is not None:
                if sp is None:
                    y_all = np.full(spread_model.graph_.shape[0], -1, dtype=np.int64)
                    y_all[train_rows[tr]] = y[tr]
                    sp = spread_model.spread(y_all, n_classes)[train_rows[va]]
                oof[m][va] = sp if m == "spread" else (base["logreg"] + sp) / 2 if m == "blend" else \
                    (base["knn"] + base["logreg"] + sp) / 3
    for m in candidates:
        if m in SPREADING and spread_model is None:
            continue
        out[m] = (float((oof[m].argmax(axis=1) == y).mean()), oof[m])
    return out


def choose_method(scores, y, candidates):
    """The simplest candidate within one standard error of the best cross-validated one.

    ``scores`` as from :func:`cross_validate`; the error is that of the paired per-image difference
    in correctness between the best and the candidate, so two methods that are right on the same
    images are tied however few the images.
    """
    correct = {m: (oof.argmax(axis=1) == y).astype(np.float64) for m, (_, oof) in scores.items()}
    best = max(scores, key=lambda m: (scores[m][0], -candidates.index(m)))
    for m in sorted(scores, key=candidates.index):
        diff = correct[best] - correct[m]
        se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else 0.0
        if diff.mean() <= se:
            return m
    return best


def predict_arrays(X, y, roles, n_classes, method="auto", k=10, C=10.0, random_state=0, spread=True,
                   cross_validation=True, spread_model=None, keep_oof=False):
    """See :func:`_predict_arrays`; every fit runs on one BLAS/OpenMP thread (:func:`one_thread`)."""
    with one_thread():
        return _predict_arrays(X, y, roles, n_classes, method, k, C, random_state, spread, cross_validation,
                               spread_model, keep_oof)


def one_thread():
    """A context in which numpy's BLAS and scikit-learn's OpenMP use one thread.

    The fits here are many small matrix products (a few thousand labelled rows): threads gain little
    on them, and on a machine whose cores are busy with other work, BLAS threads that wait for each
    other cost far more: a logistic regression on 2,100 x 1,280 features took 20 s with two threads on
    two busy cores and 0.7-1.0 s with one.
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _predict_arrays(X, y, roles, n_classes, method="auto", k=10, C=10.0, random_state=0, spread=True,
                    cross_validation=True, spread_model=None, keep_oof=False):
    """Predict every row of ``X``; ``y`` is the class code of train rows (-1 elsewhere), ``roles`` per row.

    Returns (proba (n, n_classes), chosen method, {candidate: cv accuracy}). A named ``method`` with
    ``cross_validation=False`` skips scoring it (the scores then stay empty), and so does ``auto`` with
    few labels (:func:`few_labels`), which chooses without them. ``spread_model``: a
    :class:`LabelSpreading` whose graph is already built on ``X`` (it depends on the features alone,
    so predicting again after label changes can reuse it). ``keep_oof``: the scores are
    {candidate: (cv accuracy, out-of-fold probabilities of the train rows)} instead.
    """
    roles = np.asarray(roles, dtype=object)
    y = np.asarray(y, dtype=np.int64)
    train = np.flatnonzero(roles == "train")
    Xtr, ytr = X[train], y[train]
    few = method == "auto" and spread and few_labels(len(train), len(X))
    candidates = FEW_CANDIDATES if few else AUTO_CANDIDATES if method == "auto" else (method,)
    if not spread:
        candidates = tuple(c for c in candidates if c not in SPREADING)
    if spread_model is None and any(c in SPREADING for c in candidates):
        spread_model = LabelSpreading(k=k, random_state=random_state).build_graph(X)
    scores = {}
    if cross_validation or (method == "auto" and not few):   # with few labels auto needs no scores to choose
        scores = cross_validate(Xtr, ytr, n_classes, candidates, k=k, C=C, random_state=random_state,
                                spread_model=spread_model, train_rows=train)
    if method == "auto" and few:
        best = candidates[0]   # blend; the cross-validation scores it for the estimate (module docstring)
    elif method == "auto":
        best = choose_method(scores, ytr, candidates) if scores else "ensemble"
    else:
        best = method
    if best in SPREADING and spread_model is None:
        spread_model = LabelSpreading(k=k, random_state=random_state).build_graph(X)
    if best == "spread":
        y_all = np.full(len(X), -1, dtype=np.int64)
        y_all[train] = ytr
        proba = spread_model.spread(y_all, n_classes)
    else:
        base = {"all": "ensemble", "blend": "logreg"}.get(best, best)
        model = FeaturePredictor(base, k=k, C=C, random_state=random_state).fit(Xtr, ytr, n_classes)
        proba = np.zeros((len(X), n_classes))
        rest = np.flatnonzero(roles != "train")
        if len(rest):
            proba[rest] = model.predict_proba(X[rest])
        if best not in scores:
            proba[train] = model.predict_proba(Xtr)
        if best in ("all", "blend"):
            y_all = np.full(len(X), -1, dtype=np.int64)
            y_all[train] = ytr
            share = 2 if best == "all" else 1   # all: knn and logreg (the ensemble) beside the spreading
            proba = (share * proba + spread_model.spread(y_all, n_classes)) / (share + 1)
    if best in scores:
        proba[train] = scores[best][1]
    return proba, best, scores if keep_oof else cv_accuracies(scores)


def few_labels(n_train, n_rows):
    """Whether ``auto`` chooses between logreg and blend alone: few train images among many."""
    return n_rows > n_train and n_train <= FEW_LABELS * n_rows


def cv_accuracies(scores):
    """{candidate: cross-validated accuracy, rounded} of scores kept with their out-of-fold predictions."""
    return {m: round(v[0], 4) for m, v in scores.items()}


def committee_vote(X, y, roles, n_classes, proba, chosen, scores, C=10.0, random_state=0):
    """A network's class probabilities as a vote among networks (see the module docstring).

    ``proba``, ``chosen`` and ``scores`` are what :func:`predict_arrays` returned (with ``keep_oof``).
    Returns ``proba`` itself when it already is the vote; otherwise the logistic regression's
    probabilities, out-of-fold on the train rows (from ``scores`` when cross-validation scored it).
    """
    if chosen == VOTE_METHOD:
        return proba
    scored = VOTE_METHOD in scores  # auto cross-validated it already: reuse those out-of-fold predictions
    vote, _, _ = predict_arrays(X, y, roles, n_classes, method=VOTE_METHOD, C=C, random_state=random_state,
                                cross_validation=not scored)
    if scored:
        vote[np.asarray(roles, dtype=object) == "train"] = scores[VOTE_METHOD][1]
    return vote


def _cluster_proba(pred, conf, n_classes):
    proba = np.zeros((len(pred), n_classes))
    other = (1.0 - conf) / max(n_classes - 1, 1)
    proba[:] = other[:, None]
    ok = pred >= 0
    proba[np.flatnonzero(ok), pred[ok]] = conf[ok]
    proba[~ok] = 1.0 / n_classes
    return proba


def predict_dataset(logdir, network_id, method="auto", k=10, C=10.0, random_state=0, inputs=None, spread=True):
    """Predict a label for every image of the dataset from one network's features; store and summarise."""
    from . import graph, results

    if method == "zeroshot":  # class names alone, no labelled image needed: see zeroshot.py
        from .zeroshot import predict_zeroshot

        return predict_zeroshot(logdir, network_id)
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, zeroshot")
    inp = inputs if inputs is not None else results.load_inputs(logdir, network_id, features=method != "cluster")
    classes = [str(c) for c in inp.classes()]
    if len(classes) == 0:
        raise MissingStep(f"No labelled train images in {logdir}: label some images first "
                        "(`nipgboard label`, or init with a labels CSV or class folders).")
    if len(classes) == 1:
        raise UserError(f"All labelled train images are {classes[0]!r}: a prediction needs at least two classes. "
                        "Label images of another class first.")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[lab] if role == "train" else -1 for lab, role in zip(inp.labels, inp.roles)], dtype=np.int64)
    t0 = time.perf_counter()
    scores = {}
    if method == "cluster":
        arrays, cmeta = graph.load_clusters(logdir, network_id)
        rows = results.align(arrays["image_ids"], inp.image_ids)
        if (rows < 0).any():
            raise UserError(f"The clusters of {network_id!r} miss {int((rows < 0).sum())} images: run "
                            f"`nipgboard project` and `nipgboard cluster` for {network_id!r} again.")
        ccls = cmeta["classes"]
        pred = np.array([index.get(ccls[p], -1) if p >= 0 else -1 for p in arrays["pred"][rows]], dtype=np.int64)
        proba = _cluster_proba(pred, arrays["confidence"][rows].astype(np.float64), len(classes))
        chosen, vote, accuracy = "cluster", proba, None
    else:
        graph = spread_graph(logdir, network_id, inp.image_ids, inp.X, k, random_state) \
            if spread and method in ("auto",) + SPREADING else None
        proba, chosen, scores = predict_arrays(inp.X, y, inp.roles, len(classes), method=method, k=k, C=C,
                                               random_state=random_state, spread=spread, keep_oof=True,
                                               spread_model=graph)
        vote = committee_vote(inp.X, y, inp.roles, len(classes), proba, chosen, scores, C, random_state)
        accuracy = _estimate(inp, y, proba, scores.get(chosen))
        scores = cv_accuracies(scores)
    seconds = time.perf_counter() - t0
    pred = proba.argmax(axis=1)
    conf = proba.max(axis=1)
    arrays = {"image_ids": inp.image_ids, "pred": pred.astype(np.int64), "confidence": conf.astype(np.float32),
              "proba": proba.astype(np.float32)}
    if vote is not proba:
        arrays["vote_proba"] = vote.astype(np.float32)
    meta = {
        "method": chosen, "requested": method, "classes": classes, "cv_accuracy": scores,
        "vote_method": VOTE_METHOD if "vote_proba" in arrays else chosen,
        "params": {"k": k, "C": C, "random_state": random_state},
        "labels_fingerprint": results.labels_fingerprint(inp.image_ids, inp.labels, inp.roles),
        "seconds": round(seconds, 3), "created_at": time.time(),
    }
    results.save_result(logdir, network_id, "predictions", arrays, meta)
    if accuracy is not None:
        estimate.record(logdir, network_id, accuracy, chosen)
    pool = inp.roles == "pool"
    counts = {c: int(((pred == i) & pool).sum()) for i, c in enumerate(classes)}
    return {
        "network": network_id, "method": chosen, "requested": method, "cv_accuracy": scores,
        "vote_method": meta["vote_method"], "classes": classes, "images": int(len(pred)),
        "roles": {r: int((inp.roles == r).sum()) for r in ("train", "test", "pool")},
        "pool_predicted": counts,
        "low_confidence": int(((conf < 0.6) & pool).sum()),
        "estimate": accuracy, "seconds": round(seconds, 3),
    }


def _estimate(inp, y, proba, scored):
    """The estimated accuracy (see :mod:`.estimate`) from the chosen method's out-of-fold predictions."""
    if scored is None:
        return None
    train = np.flatnonzero(inp.roles == "train")
    oof = scored[1]
    return estimate.estimate(oof, oof.argmax(axis=1) == y[train], proba[inp.roles == "pool"],
                             len(inp.roles), int((inp.roles != "pool").sum()))


def load_predictions(logdir, network_id):
    """(arrays, meta) with ``meta['stale']`` True when the train labels changed since the prediction."""
    from . import results

    arrays, meta = results.load_result(logdir, network_id, "predictions")
    try:
        inp = results.load_inputs(logdir, network_id, features=False)
        rows = results.align(inp.image_ids, arrays["image_ids"])
        ok = rows >= 0
        fp = results.labels_fingerprint(inp.image_ids[rows[ok]], inp.labels[rows[ok]], inp.roles[rows[ok]])
        meta["stale"] = fp != meta.get("labels_fingerprint")
    except UserError:
        meta["stale"] = False
    return arrays, meta
