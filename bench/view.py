"""How well the 3-D view sets the *unlabelled* images' groups apart, per way of fitting the projection.

Fashion-MNIST (a random sample of ``--limit`` images, efficientnet_lite0 features, embedded once and
cached under ``bench/out``). For each labelled share (labels drawn at random, 80/20 train/test among
them, the rest the unlabelled pool) and seed, each way of fitting a 3-D UMAP places every image, and
we score the pool images only (their true classes are kept aside):

* ``knn10``: 10-NN accuracy of the true class among the pool images in the 3-D coordinates (what a
  lasso around a group gets); ``features`` is the same on the full features, for reference;
* ``purity``: the panel's clusters (MST + Louvain on the 3-D points): share of pool images in their
  cluster's majority class, and ``clusters``, how many there are;
* ``seconds``: fit and transform.

Ways of fitting (``mode/fit set``): ``supervised/train`` (fit on the labelled train images, place the
rest by ``transform``), ``semi/train+pool`` (the pool joins the fit as label -1), ``semi/train+sampleN``
(train + a random N of the pool in the fit, the rest transformed), the same with another
``target_weight``, and ``unsupervised`` on train+pool or train+sample.

    python bench/view.py                            # 3,000 images, 0.5% to 30% labelled, seeds 0 and 1
    python bench/view.py --limit 10000 --seeds 0 --only supervised/train,semi/train+sample5000

Compare rows within one run: these machines differ 2x in speed. What it showed (10,000 images) set the
project step's default: a pool sample in the fit while under 10% of train + pool images are labelled
(``projection.FEW_LABELS_SHARE``), the labelled images alone above.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nipgboard_plugin import graph, projection  # noqa: E402
from quality import OUT, build_logdir, load_fashion  # noqa: E402


def roles_at_random(n, share, seed, test_fraction=0.2):
    """``share`` of the images labelled at random (not stratified: few labels miss classes), 80/20 train/test."""
    rng = np.random.default_rng(seed)
    labelled = rng.permutation(n)[: max(2, int(round(share * n)))]
    n_test = int(round(test_fraction * len(labelled)))
    roles = np.array(["pool"] * n, dtype=object)
    roles[labelled[n_test:]] = "train"
    roles[labelled[:n_test]] = "test"
    return roles


def knn_accuracy(Y, y, k=10):
    """Leave-one-out k-NN accuracy of ``y`` among the points ``Y``."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1).fit(Y)
    idx = nn.kneighbors(Y, return_distance=False)[:, 1:]
    votes = y[idx]
    n_classes = int(y.max()) + 1
    counts = np.stack([(votes == c).sum(axis=1) for c in range(n_classes)], axis=1)
    return float((counts.argmax(axis=1) == y).mean())


def purity(Y, y, pool, seed):
    est = graph.GraphClustering(random_state=seed).fit(Y)
    lab = est.labels_[pool]
    yy = y[pool]
    right = 0
    for c in np.unique(lab):
        right += np.bincount(yy[lab == c]).max()
    return right / len(yy), est.n_clusters_


def methods(samples):
    out = [("supervised/train", dict(mode="supervised", fit_on="train"), {})]
    out.append(("semi/train+pool", dict(mode="semi-supervised", fit_on="train+pool"), {}))
    for s in samples:
        out.append((f"semi/train+sample{s}", dict(mode="semi-supervised", fit_on="train+sample", sample=s), {}))
    s = samples[-1]
    for tw in (0.2, 0.8):
        out.append((f"semi/train+sample{s} tw={tw}", dict(mode="semi-supervised", fit_on="train+sample", sample=s),
                    {"target_weight": tw}))
    out.append(("unsupervised/train+pool", dict(mode="unsupervised", fit_on="train+pool"), {}))
    out.append((f"unsupervised/train+sample{s}", dict(mode="unsupervised", fit_on="train+sample", sample=s), {}))
    return out


def fit_set(roles, fit_on, sample, seed):
    train, pool = roles == "train", roles == "pool"
    if fit_on == "train":
        return train
    if fit_on == "train+pool":
        return train | pool
    mask = train.copy()
    idx = np.flatnonzero(pool)
    mask[np.random.default_rng(seed).permutation(idx)[:sample]] = True
    return mask


def place(X, codes, roles, mode, fit_on, seed, sample=None, **params):
    fit = fit_set(roles, fit_on, sample, seed)
    y = None
    if mode != "unsupervised":
        y = np.where(roles[fit] == "train", codes[fit], -1)
    n_neighbors = int(min(15, fit.sum() - 1))
    t0 = time.perf_counter()
    proj = projection.Projection(n_components=3, random_state=seed, n_neighbors=n_neighbors, **params).fit(X[fit], y)
    t1 = time.perf_counter()
    Y = np.zeros((len(X), 3), dtype=np.float32)
    Y[fit] = proj.embedding_
    if (~fit).any():
        Y[~fit] = proj.transform(X[~fit])
    t2 = time.perf_counter()
    return Y, {"fit_s": t1 - t0, "transform_s": t2 - t1, "n_fit": int(fit.sum()), "n_neighbors": n_neighbors}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=3000)
    ap.add_argument("--shares", default="0.005,0.02,0.08,0.15,0.3")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--samples", default=None, help="pool sample sizes (default: a third of the images, and 5000 "
                                                      "where that is smaller than the pool)")
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--only", default=None, help="comma-separated method names to run")
    a = ap.parse_args(argv)
    images, labels = load_fashion(a.limit)
    feats, _ = build_logdir("fashion", images, labels, (a.network,))
    X = feats[a.network]
    classes = sorted(set(labels))
    codes = np.array([classes.index(v) for v in labels])
    if a.samples:
        samples = [int(s) for s in a.samples.split(",")]
    else:
        samples = sorted({a.limit // 3} | ({5000} if a.limit > 7500 else set()))
    print(f"warm-up (numba compile): {projection.warm_up():.1f}s", flush=True)
    rows = []
    hdr = f"{'share':>6} {'seed':>4} {'method':34} {'fit':>6} {'knn10':>6} {'purity':>6} {'clus':>4} " \
          f"{'fit s':>6} {'trans s':>7} {'total s':>7}"
    print(hdr, flush=True)
    for share in [float(s) for s in a.shares.split(",")]:
        for seed in [int(s) for s in a.seeds.split(",")]:
            roles = roles_at_random(len(X), share, seed)
            pool = roles == "pool"
            base = projection._l2_normalize(X[pool])
            ref = knn_accuracy(base, codes[pool])
            print(f"{share:6.3f} {seed:4d} {'features (full, reference)':34} {'':>6} {ref:6.3f}", flush=True)
            rows.append(dict(share=share, seed=seed, method="features", knn10=ref))
            for name, how, params in methods(samples):
                if a.only and name not in a.only.split(","):
                    continue
                if how["mode"] != "unsupervised" and len(set(codes[roles == "train"])) < 2:
                    continue
                Y, info = place(X, codes, roles, seed=seed, **how, **params)
                acc = knn_accuracy(Y[pool], codes[pool])
                pur, n_clusters = purity(Y, codes, pool, seed)
                total = info["fit_s"] + info["transform_s"]
                print(f"{share:6.3f} {seed:4d} {name:34} {info['n_fit']:6d} {acc:6.3f} {pur:6.3f} {n_clusters:4d} "
                      f"{info['fit_s']:6.1f} {info['transform_s']:7.1f} {total:7.1f}", flush=True)
                rows.append(dict(share=share, seed=seed, method=name, knn10=acc, purity=pur, clusters=n_clusters,
                                 **info))
    print("\nmean over seeds (knn10 / purity / total s):")
    for share in sorted({r["share"] for r in rows}):
        for name in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["share"] == share and r["method"] == name]
            if not sel:
                continue
            acc = np.mean([r["knn10"] for r in sel])
            if name == "features":
                print(f"{share:6.3f} {name:34} {acc:6.3f}")
                continue
            pur = np.mean([r["purity"] for r in sel])
            secs = np.mean([r["fit_s"] + r["transform_s"] for r in sel])
            print(f"{share:6.3f} {name:34} {acc:6.3f} {pur:6.3f} {secs:7.1f}")
    out = OUT / f"view-{a.limit}.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
