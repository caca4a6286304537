"""Which images the expert should label next: typical and diverse at first, then the least sure.

Two modes, chosen by what is known:

* **cold start** (no labels, fewer than :data:`MIN_PER_CLASS` labels of some class, or no current
  predictions): the data is cut into groups by k-means and the expert labels the most *typical*
  unlabelled image of each group (TypiClust, Hacohen et al. 2022: typicality is the inverse of the mean
  distance to the image's :data:`TYPICALITY_K` nearest neighbours in its group). With labels already
  given, k-means makes ``n + labelled`` groups and the groups that hold no labelled image come first,
  largest first, so a round covers what the labels do not (then groups by size per label they hold).
  Typical beats "nearest the centroid" where it matters, the first round (``bench/handwork.py
  --typical``, Fashion-MNIST 3,000, 3 seeds: 0.749 against 0.734 overall after 30 labels; alike later).
* **uncertainty** (predictions of one or more networks, two labels or more per class): an image's
  *margin* is the gap between the two most probable classes of the networks' mean probabilities; where
  the networks vote differently the margin is further multiplied by the share of networks that vote with
  the majority (two networks split: half), so disagreement counts as doubt. The
  ``CANDIDATES * n`` least sure images are cut by k-means into ``n`` groups and the least sure of each
  group is taken: a round does not spend labels on near-twins that the first of them would settle.
  Five measured best among 1, 2, 5 and 10 (the same bench: 0.775 overall after 60 labels, against
  0.765, 0.762 and 0.771; the four meet again by 300 labels).

Distances are Euclidean between L2-normalised features, reduced by PCA to :data:`PCA_DIMS` dimensions
(fitted on at most :data:`PCA_FIT_ROWS` rows), so a selection at 70,000 x 1280 takes seconds.
Every image chosen comes with a one-line reason and a score (typicality, or margin).
"""
import time
from dataclasses import dataclass, field

import numpy as np

COLD, UNCERTAINTY = "cold start", "uncertainty"
MIN_PER_CLASS = 2          # fewer labels than this in some class: still a cold start
PCA_DIMS = 50
PCA_FIT_ROWS = 10000
TYPICALITY_K = 20
TYPICALITY_REFERENCE = 1000  # a group's typicality is measured against at most this many of its members
CANDIDATES = 5             # uncertainty: the CANDIDATES * n least sure images are spread over n groups
FULL_KMEANS_CELLS = 4e6    # points x groups up to which k-means runs in full (Lloyd), else mini-batch
TOP_GROUPS = 100           # more groups than this are found in two levels
TYPICAL = ("knn", "centroid")
CHECK_CONFIDENCE = 0.5     # a suggested image predicted at least this sure is a 'check' (accept or fix)
RECHECK_CONFIDENCE = 0.9   # an expert label the networks contradict at least this sure is worth a second look
RECHECK_SHARE = 0.1        # at most this share of a round goes to second looks
WHAT = {"label": "label it", "check": "check the prediction", "recheck": "check your label"}


@dataclass
class Suggestion:
    """The chosen rows (indices into X) in the order to label them, with a reason and a score each."""

    rows: np.ndarray
    reasons: list
    scores: np.ndarray
    mode: str
    score_name: str
    seconds: float = 0.0
    notes: list = field(default_factory=list)
    kinds: list = field(default_factory=list)        # per row: 'label', 'check' or 'recheck'
    predictions: list = field(default_factory=list)  # per row: the networks' label (None in a cold start)
    confidences: list = field(default_factory=list)  # per row: its mean probability (None in a cold start)


def reduce(X, dims=PCA_DIMS, random_state=0):
    """L2-normalised rows, projected on their first ``dims`` principal axes (float32)."""
    from sklearn.decomposition import PCA

    X = np.asarray(X, dtype=np.float32)
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    dims = int(min(dims, Xn.shape[1], max(len(Xn) - 1, 1)))
    if dims >= Xn.shape[1] or len(Xn) < 3:
        return Xn
    rng = np.random.default_rng(random_state)
    fit = Xn if len(Xn) <= PCA_FIT_ROWS else Xn[np.sort(rng.choice(len(Xn), PCA_FIT_ROWS, replace=False))]
    pca = PCA(n_components=dims, svd_solver="randomized", random_state=random_state).fit(fit)
    return pca.transform(Xn).astype(np.float32)


REDUCED_FILE = "suggest_reduced.npz"


def reduce_for_dataset(run_dir, network_id, image_ids, X, random_state=0):
    """:func:`reduce` of a dataset's features, kept beside the network's predictions while the features
    stay the same (70,000 images: 5-8 s to compute on 2 busy cores, a fraction of a second to read)."""
    from . import paths, results
    from .spreading import features_fingerprint

    path = paths.network_dir(run_dir, network_id) / REDUCED_FILE
    key = {"fingerprint": features_fingerprint(image_ids, X), "dims": PCA_DIMS, "fit_rows": PCA_FIT_ROWS,
           "random_state": int(random_state)}
    return results.kept_npz(path, key, lambda: {"Z": reduce(X, random_state=random_state)})["Z"]


def kmeans(Z, k, random_state=0):
    """(labels, centres) of k groups: full k-means where cheap, mini-batch k-means otherwise, and for
    many groups two levels (:data:`TOP_GROUPS` groups, each cut in proportion to its size)."""
    k = int(min(k, len(Z)))
    if k <= 1:
        return np.zeros(len(Z), dtype=np.int64), Z.mean(axis=0, keepdims=True)
    if k <= TOP_GROUPS or len(Z) * k <= FULL_KMEANS_CELLS:
        return _kmeans(Z, k, random_state)
    top, _ = _kmeans(Z, TOP_GROUPS, random_state)
    sizes = np.bincount(top, minlength=TOP_GROUPS)
    share = _apportion(sizes, k)
    labels = np.empty(len(Z), dtype=np.int64)
    centres, start = [], 0
    for g in range(TOP_GROUPS):
        rows = np.flatnonzero(top == g)
        if not len(rows):
            continue
        sub, c = _kmeans(Z[rows], max(1, share[g]), random_state)
        labels[rows] = sub + start
        centres.append(c)
        start += len(c)
    return labels, np.concatenate(centres)


def _kmeans(Z, k, random_state):
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = int(min(k, len(Z)))
    if k <= 1:
        return np.zeros(len(Z), dtype=np.int64), Z.mean(axis=0, keepdims=True)
    if len(Z) * k <= FULL_KMEANS_CELLS:
        km = KMeans(n_clusters=k, n_init=1, max_iter=100, random_state=random_state)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=max(4096, 3 * k), max_iter=100,
                             max_no_improvement=10, random_state=random_state)
    labels = km.fit_predict(Z)
    return labels.astype(np.int64), km.cluster_centers_.astype(np.float32)


def _apportion(sizes, k):
    """k split over groups in proportion to their sizes (largest remainders), at most a group's size."""
    sizes = np.asarray(sizes, dtype=np.float64)
    quota = sizes * k / sizes.sum()
    share = np.minimum(np.floor(quota).astype(np.int64), sizes.astype(np.int64))
    for g in np.argsort(-(quota - share), kind="stable"):
        if share.sum() >= k:
            break
        if share[g] < sizes[g]:
            share[g] += 1
    return share


def typicality(Z, members, candidates, k=TYPICALITY_K, reference=TYPICALITY_REFERENCE, rng=None):
    """1 / mean distance of each candidate row to its k nearest other members of its group."""
    members = np.asarray(members)
    if len(members) > reference:
        rng = rng or np.random.default_rng(0)
        ref = np.sort(rng.choice(members, reference, replace=False))
    else:
        ref = members
    R = Z[ref]
    C = Z[candidates]
    d2 = (np.einsum("ij,ij->i", C, C)[:, None] + np.einsum("ij,ij->i", R, R)[None, :] - 2.0 * C @ R.T)
    np.maximum(d2, 0.0, out=d2)
    pos = np.searchsorted(ref, candidates)
    pos = np.clip(pos, 0, len(ref) - 1)
    own = ref[pos] == candidates
    d2[np.flatnonzero(own), pos[own]] = np.inf       # a member is not its own neighbour
    kk = int(min(k, len(ref) - 1))
    if kk < 1:
        return np.ones(len(candidates))
    near = np.partition(d2, kk - 1, axis=1)[:, :kk]
    return 1.0 / (np.sqrt(near).mean(axis=1) + 1e-6)


def cold_start(Z, n, labelled, random_state=0, typical="knn"):
    """n rows: the most typical unlabelled row of each of the groups that the labels cover least."""
    if typical not in TYPICAL:
        raise ValueError(f"typical must be one of {TYPICAL}")
    labelled = np.asarray(labelled, dtype=bool)
    n_lab = int(labelled.sum())
    k = int(min(n + n_lab, 3 * n, len(Z)))
    groups, centres = kmeans(Z, k, random_state)
    k = len(centres)
    size = np.bincount(groups, minlength=k)
    lab_in = np.bincount(groups[labelled], minlength=k)
    free = np.bincount(groups[~labelled], minlength=k)
    # groups without a label first, largest first; then the most members per label they hold
    order = np.lexsort((-size / (1.0 + lab_in), lab_in > 0))
    order = [g for g in order if free[g] > 0]
    rng = np.random.default_rng(random_state)
    ranked = []   # per group: its unlabelled rows, most typical first, with their typicality
    by_group = np.argsort(groups, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=k))])
    for g in order[:n]:
        members = by_group[starts[g]:starts[g + 1]]
        cand = members[~labelled[members]]
        if typical == "knn":
            t = typicality(Z, members, cand, rng=rng)
        else:
            t = 1.0 / (np.linalg.norm(Z[cand] - centres[g], axis=1) + 1e-6)
        by = np.argsort(-t, kind="stable")
        what = "an unlabelled group" if lab_in[g] == 0 else f"a group ({lab_in[g]} labelled)"
        ranked.append((cand[by], t[by], f"typical of {what} of {size[g]}"))
    rows, reasons, scores = [], [], []
    depth = 0
    while len(rows) < n and ranked:   # one per group; a second round only when groups ran short
        for cand, t, reason in ranked:
            if depth < len(cand) and len(rows) < n:
                rows.append(int(cand[depth]))
                scores.append(float(t[depth]))
                reasons.append(reason if depth == 0 else reason + f" (its no. {depth + 1})")
        depth += 1
        ranked = [r for r in ranked if depth < len(r[0])]
    return np.array(rows, dtype=np.int64), reasons, np.array(scores)


def committee_margin(probas):
    """(margin, top, second, votes, agree share) of the networks' class probabilities, per row."""
    P = np.stack([np.asarray(p, dtype=np.float64) for p in probas])    # (networks, n, classes)
    mean = P.mean(axis=0)
    if mean.shape[1] == 1:
        z = np.zeros(len(mean), dtype=np.int64)
        return np.ones(len(mean)), z, z, P.argmax(axis=2).T, np.ones(len(mean))
    two = np.argsort(-mean, axis=1)[:, :2]
    rows = np.arange(len(mean))
    margin = mean[rows, two[:, 0]] - mean[rows, two[:, 1]]
    votes = P.argmax(axis=2).T                                          # (n, networks)
    counts = np.stack([(votes == c).sum(axis=1) for c in range(mean.shape[1])], axis=1)
    agree = counts.max(axis=1) / votes.shape[1]
    return margin * agree, two[:, 0], two[:, 1], votes, agree


def uncertainty(Z, n, labelled, probas, classes, networks=None, random_state=0, candidates=CANDIDATES):
    """n rows: the least sure of each of n groups of the CANDIDATES * n least sure unlabelled rows."""
    labelled = np.asarray(labelled, dtype=bool)
    margin, top, second, votes, agree = committee_margin(probas)
    mean = np.mean([np.asarray(p, dtype=np.float64) for p in probas], axis=0)
    free = np.flatnonzero(~labelled)
    pool = free[np.lexsort((free, margin[free]))][: int(candidates * n)]
    if len(pool) > n:
        groups, _ = kmeans(Z[pool], n, random_state)
        chosen = []
        for g in np.unique(groups):
            members = pool[groups == g]
            chosen.append(int(members[np.argmin(margin[members])]))
        if len(chosen) < n:   # k-means left a group empty: the next least sure fill the round
            rest = pool[~np.isin(pool, chosen)]
            chosen += rest[: n - len(chosen)].tolist()
        chosen = np.array(chosen, dtype=np.int64)
        chosen = chosen[np.lexsort((chosen, margin[chosen]))]
    else:
        chosen = pool
    networks = list(networks or [f"network {j + 1}" for j in range(votes.shape[1])])
    reasons = []
    for r in chosen:
        if agree[r] < 1.0:
            said = {}
            for j, net in enumerate(networks):
                said.setdefault(classes[votes[r, j]], []).append(net)
            reasons.append("networks disagree: " + ", ".join(
                f"{' and '.join(nets)} {'say' if len(nets) > 1 else 'says'} {c}" for c, nets in said.items()))
        else:
            reasons.append(f"least sure: {classes[top[r]]} {mean[r, top[r]]:.2f} vs "
                           f"{classes[second[r]]} {mean[r, second[r]]:.2f}")
    return chosen, reasons, margin[chosen]


def choose_mode(labels, probas):
    """COLD or UNCERTAINTY, and why (see the module docstring)."""
    given = [v for v in labels if v is not None]
    if not given:
        return COLD, "no labels yet"
    counts = {}
    for v in given:
        counts[v] = counts.get(v, 0) + 1
    if len(counts) < 2:
        return COLD, "labels of one class only"
    few = sorted(c for c, m in counts.items() if m < MIN_PER_CLASS)
    if few:
        return COLD, f"fewer than {MIN_PER_CLASS} labels of {', '.join(map(str, few[:3]))}" + \
            (" ..." if len(few) > 3 else "")
    if not probas:
        return COLD, "no current predictions"
    return UNCERTAINTY, f"{len(given)} labels of {len(counts)} classes and predictions"


def suggest(X, n, labels=None, probas=None, classes=None, networks=None, random_state=0, typical="knn",
            candidates=CANDIDATES, Z=None):
    """Choose ``n`` unlabelled rows of ``X`` for the expert to label next.

    ``labels``: per row, the expert's label or None (None: nothing labelled). ``probas``: a list of
    (rows, classes) arrays, one per network, aligned to X and to ``classes``; ``networks`` names them.
    ``Z``: a reduced copy of X from :func:`reduce`, to reuse between calls. k-means and the distances run
    on one thread (:func:`.predict.one_thread`: at 70,000 images, 700 groups took 2.4 s on one thread
    and 39 s on two busy cores).
    """
    from .predict import one_thread

    with one_thread():
        return _suggest(X, n, labels, probas, classes, networks, random_state, typical, candidates, Z)


def _suggest(X, n, labels, probas, classes, networks, random_state, typical, candidates, Z):
    started = time.perf_counter()
    n_rows = len(X) if Z is None else len(Z)
    labels = [None] * n_rows if labels is None else list(labels)
    labelled = np.array([v is not None for v in labels], dtype=bool)
    mode, why = choose_mode(labels, probas)
    notes = [f"{mode}: {why}"]
    n = int(min(n, int((~labelled).sum())))
    if n <= 0:
        return Suggestion(np.zeros(0, np.int64), [], np.zeros(0), mode,
                          "typicality" if mode == COLD else "margin", time.perf_counter() - started,
                          notes + ["every image has a label"])
    if Z is None:
        Z = reduce(X, random_state=random_state)
    if mode == COLD:
        rows, reasons, scores = cold_start(Z, n, labelled, random_state, typical)
        return Suggestion(rows, reasons, np.asarray(scores, dtype=np.float64), mode, "typicality",
                          time.perf_counter() - started, notes, ["label"] * len(rows), [None] * len(rows),
                          [None] * len(rows))
    classes = list(classes)
    mean = np.mean([np.asarray(p, dtype=np.float64) for p in probas], axis=0)
    recheck, recheck_reasons = second_looks(labels, mean, classes, int(RECHECK_SHARE * n))
    rows, reasons, scores = uncertainty(Z, n - len(recheck), labelled, probas, classes, networks, random_state,
                                        candidates)
    top = mean.argmax(axis=1)
    kinds = ["check" if mean[r, top[r]] >= CHECK_CONFIDENCE else "label" for r in rows] + ["recheck"] * len(recheck)
    rows = np.concatenate([rows, recheck]).astype(np.int64)
    scores = np.concatenate([scores, 1.0 - mean[recheck, top[recheck]]])
    return Suggestion(rows, reasons + recheck_reasons, scores, mode, "margin", time.perf_counter() - started,
                      notes, kinds, [classes[top[r]] for r in rows], [float(mean[r, top[r]]) for r in rows])


def second_looks(labels, mean, classes, limit):
    """Labelled rows whose label the networks contradict at least RECHECK_CONFIDENCE sure, surest first.

    The probabilities of labelled (train) images are out-of-fold (:mod:`.predict`), so a network that
    contradicts a label has not learnt that label from itself.
    """
    if limit <= 0:
        return np.zeros(0, np.int64), []
    col = {c: i for i, c in enumerate(classes)}
    top = mean.argmax(axis=1)
    rows = [r for r, v in enumerate(labels) if v is not None and v in col and top[r] != col[v]
            and mean[r, top[r]] >= RECHECK_CONFIDENCE]
    rows = sorted(rows, key=lambda r: (-mean[r, top[r]], r))[:limit]
    return np.array(rows, dtype=np.int64), [
        f"second look: labelled {labels[r]}, the networks say {classes[top[r]]} {mean[r, top[r]]:.2f}" for r in rows]


# -- on a dataset ----------------------------------------------------------------------------------------
def networks_with_features(run_dir) -> list:
    """Ids of the networks whose features cover every image of the dataset, in the registry's order."""
    from . import backbones, features
    from .store import Store

    counts = features.cached_per_network(run_dir)
    with Store(run_dir) as store:
        n_images = store.image_count()
    out = []
    for b in backbones.all_backbones():
        try:
            key = b.cache_key()
        except Exception:  # noqa: BLE001 - a broken user network must not hide the others
            continue
        if n_images and counts.get(key, 0) >= n_images:
            out.append(b.id)
    return out


def current_predictions(run_dir, networks, image_ids, notes):
    """(classes, probas, names) of the networks whose predictions are current and cover every image;
    the others are named in ``notes``. With several networks each votes by its logistic regression, as
    in the review queue (:mod:`.review`)."""
    from . import predict, results

    loaded = []
    for net in networks:
        if not results.has_result(run_dir, net, "predictions"):
            continue
        arrays, meta = predict.load_predictions(run_dir, net)
        rows = results.align(arrays["image_ids"], image_ids)
        if meta.get("stale") or (rows < 0).any():
            notes.append(f"{net}: its predictions predate the latest labels or images, so they are not used: "
                         f"run `nipgboard predict {run_dir} --network {net}` again")
            continue
        loaded.append((net, arrays, meta, rows))
    classes = sorted({c for _, _, meta, _ in loaded for c in meta["classes"]})
    col = {c: i for i, c in enumerate(classes)}
    probas = []
    for net, arrays, meta, rows in loaded:
        source = "vote_proba" if len(loaded) > 1 and "vote_proba" in arrays else "proba"
        P = np.zeros((len(image_ids), len(classes)))
        P[:, [col[c] for c in meta["classes"]]] = arrays[source][rows]
        probas.append(P)
    return classes, probas, [net for net, *_ in loaded]


def suggest_for_dataset(run_dir, networks=None, n=50, random_state=0, typical="knn", ctx=None):
    """The next ``n`` images of a dataset to label, as a JSON-able dict (see the module docstring).

    Features come from the first of ``networks`` (default: every network with features); predictions
    from each of them that has current ones.
    """
    from . import features
    from .errors import MissingStep
    from .run import Run
    from .store import Store

    stage = ctx.stage if ctx is not None else (lambda *a, **k: None)
    if networks is None:
        networks = networks_with_features(run_dir)
        if not networks:
            raise MissingStep(f"No network has features for every image of {run_dir}: run "
                              f"`nipgboard embed {run_dir} --network ID` first.")
    networks = list(networks)
    stage(f"loading the {networks[0]} features")
    ids, X = features.load_features(run_dir, networks[0])
    with Store(run_dir) as store:
        given = store.labels()
    labels = [given.get(int(i)) for i in ids]
    notes = []
    classes, probas, predicted = current_predictions(run_dir, networks, ids, notes)
    if len(probas) > 1:
        from .review import network_weights

        col = {c: i for i, c in enumerate(classes)}
        weights = network_weights(probas, np.array([col.get(v, -1) if v is not None else -1 for v in labels]))
        if weights.min() == 0:
            keep = int(weights.argmax())
            notes.append(f"{predicted[keep]} alone judges: on the expert's labels it was right more often than "
                         "the networks together")
            probas, predicted = [probas[keep]], [predicted[keep]]
    stage("choosing the images")
    from .predict import one_thread

    with one_thread():
        Z = reduce_for_dataset(run_dir, networks[0], ids, X, random_state)
    s = suggest(X, n, labels=labels, probas=probas, classes=classes, networks=predicted,
                random_state=random_state, typical=typical, Z=Z)
    chosen = [int(ids[r]) for r in s.rows]
    run = Run(run_dir)
    with Store(run_dir) as store:
        items = run.entries(store, chosen, reason=s.reasons, score=[round(float(v), 5) for v in s.scores],
                            kind=s.kinds, prediction=s.predictions,
                            confidence=[None if c is None else round(c, 4) for c in s.confidences],
                            label=[labels[r] for r in s.rows])
    n_labelled = sum(v is not None for v in labels)
    return {"network": networks[0], "networks": networks, "predictions": predicted, "mode": s.mode,
            "why": s.notes[0].split(": ", 1)[1], "score": s.score_name, "asked": int(n), "shown": len(items),
            "labelled": n_labelled, "unlabelled": len(labels) - n_labelled, "seconds": round(s.seconds, 3),
            "items": items, "notes": notes + s.notes[1:]}


def write_csv(out, items):
    """``path,label,...`` rows, the label empty, for the expert to fill in (every field quoted)."""
    import csv
    import io
    from pathlib import Path

    from . import atomic
    from .errors import UserError
    from .export import neutralise

    out = Path(out)
    if out.is_dir():
        raise UserError(f"{out} is a folder: give a file name for the CSV, e.g. {out / 'next.csv'}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    # label first after the path, as `label --csv` reads it; the other columns only help to fill it in
    w.writerow(["path", "label", "what", "prediction", "confidence", "reason"])
    for it in items:
        conf = it.get("confidence")
        w.writerow([neutralise(str(it["path"])), "", WHAT.get(it.get("kind"), ""),
                    neutralise(str(it.get("prediction") or "")), "" if conf is None else f"{conf:.2f}",
                    neutralise(str(it["reason"]))])
    atomic.write_text(out, buf.getvalue())
    return str(out)
