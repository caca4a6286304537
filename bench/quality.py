"""The paper's protocol on real labelled images, beside kNN and logistic-regression baselines.

For each dataset (Fashion-MNIST from Debian's ``dataset-fashion-mnist``, skimage's ``lfw_subset``) the
images are written as PNG files, ingested and embedded once with each offline network. Then, for each
seed: 8% of the images are labelled (stratified), the labelled ones split 80/20 into train/test, the
rest is the unlabelled pool whose true labels are kept aside. Per network we report test metrics and
pool accuracy of

* ``paper``: supervised 3-D UMAP fitted on train, test and pool transformed, MST + Louvain over all
  images, majority label of the cluster (nearest labelled cluster for the rest),
* ``knn`` / ``logreg``: baselines on the raw features (k=5; standardised logistic regression),
* ``default``: what ``nipgboard predict`` uses (``--method auto``), with the method it chose,

and, over the networks together: how many pool images the networks disagree on, what share of all
errors of the final labels (the networks' consensus) those hold, and the share of all errors found in
the first 5% and 10% of the review queue (ordered by doubt; each network votes as in the panel's
queue, by logistic regression, see ``nipgboard_plugin/predict.py``). Then the review as the panel runs
it: the expert works through the queue and updates the predictions after every 1% of the pool (each
network votes again, the new labels in its training set); we report the share of the first
labels' errors the expert corrected by the time 10% of the pool is reviewed, and the pool's accuracy
after it.

    python bench/quality.py                      # the protocol: all 70,000 Fashion-MNIST images and lfw_subset
    python bench/quality.py --limit 10000        # a quicker look on a 10,000-image sample

Prints a table, then each goal with the figures it was judged on (and writes them as JSON under
``bench/out/``). Extracting 70,000 images with the three networks takes about 40 minutes on 2 cores
the first time; the features stay cached under ``bench/out/``. With them cached the whole run takes
about 30 minutes on 2 cores, most of it the paper rule's UMAP fits and the review rounds.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from demo import fashion_mnist  # noqa: E402
from nipgboard_plugin import graph, projection, review  # noqa: E402
from nipgboard_plugin.evaluate import classification_metrics  # noqa: E402
from nipgboard_plugin.predict import (  # noqa: E402
    VOTE_METHOD, LabelSpreading, committee_vote, cv_accuracies, predict_arrays)

OUT = ROOT / "bench" / "out"
FASHION_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
NETWORKS = ("efficientnet_lite0", "mobilenet_v2", "efficientnet_lite2")
ROUND_SHARE = 0.01  # share of the pool the expert reviews between two updates of the predictions


def load_fashion(limit, seed=0):
    X, y = fashion_mnist.load()
    if limit and limit < len(X):
        idx = np.sort(np.random.default_rng(seed).choice(len(X), limit, replace=False))
        X, y = X[idx], y[idx]
    return X, np.array([FASHION_CLASSES[v] for v in y])


def load_lfw(limit=None, seed=0):
    from skimage.data import lfw_subset

    X = (lfw_subset() * 255).round().astype(np.uint8)
    y = np.array(["face"] * 100 + ["nonface"] * 100)
    return X, y


def build_logdir(name, images, labels, networks):
    """Write images as PNG, ingest them (no labels: the bench keeps the truth) and embed; return features."""
    from PIL import Image

    from nipgboard_plugin.dataset import ingest
    from nipgboard_plugin.features import embed, load_features

    base = OUT / f"{name}-{len(images)}"
    img_dir, logdir = base / "images", base / "logdir"
    img_dir.mkdir(parents=True, exist_ok=True)
    rels = []
    for i, img in enumerate(images):
        rel = f"{i:06d}.png"
        if not (img_dir / rel).is_file():
            Image.fromarray(img).save(img_dir / rel)
        rels.append(rel)
    ingest(logdir, img_dir)
    feats = {}
    timings = {}
    for net in networks:
        t0 = time.perf_counter()
        embed(logdir, net)
        timings[net] = time.perf_counter() - t0
        ids, X = load_features(logdir, net)
        feats[net] = (ids, X)
    from nipgboard_plugin.store import Store

    with Store(logdir) as st:
        path_of = {i: p for i, p in st.image_rows("id, path")}
    order = {rel: k for k, rel in enumerate(rels)}
    out = {}
    for net, (ids, X) in feats.items():
        rows = np.array([order[path_of[int(i)]] for i in ids])
        aligned = np.empty_like(X)
        aligned[rows] = X
        out[net] = aligned
    return out, timings


def split(labels, seed, frac=0.08, test_fraction=0.2):
    """roles per image: 8% labelled (stratified), 80/20 train/test among them, the rest pool."""
    from sklearn.model_selection import train_test_split

    n = len(labels)
    idx = np.arange(n)
    lab, _ = train_test_split(idx, train_size=frac, stratify=labels, random_state=seed)
    tr, te = train_test_split(lab, test_size=test_fraction, stratify=labels[lab], random_state=seed)
    roles = np.array(["pool"] * n, dtype=object)
    roles[tr] = "train"
    roles[te] = "test"
    return roles


def baselines(X, y, roles):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr = roles == "train"
    out = {}
    for name, model in (("knn", KNeighborsClassifier(n_neighbors=5)),
                        ("logreg", make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)))):
        t0 = time.perf_counter()
        model.fit(X[tr], y[tr])
        out[name] = (model.predict(X), time.perf_counter() - t0)
    return out


def paper_rule(X, y_codes, roles, n_classes, seed, n_epochs=None):
    tr = roles == "train"
    t0 = time.perf_counter()
    proj = projection.Projection(n_components=3, random_state=seed, n_epochs=n_epochs,
                                 n_neighbors=int(min(15, tr.sum() - 1))).fit(X[tr], y_codes[tr])
    Y = np.zeros((len(X), 3), dtype=np.float32)
    Y[tr] = proj.embedding_
    Y[~tr] = proj.transform(X[~tr])
    t1 = time.perf_counter()
    est = graph.GraphClustering(random_state=seed).fit(Y)
    t2 = time.perf_counter()
    yc = np.where(tr, y_codes, -1)
    table = graph.label_clusters(est.labels_, yc, n_classes)
    pred, conf, _ = graph.assign_labels(Y, est.labels_, table, est.edge_length_)
    return pred, conf, {"projection_s": t1 - t0, "graph_louvain_s": t2 - t1, "louvain_s": est.seconds_["communities"],
                        "clusters": est.n_clusters_}


def run_dataset(name, images, labels, seeds, networks, paper_epochs=None):
    feats, embed_s = build_logdir(name, images, labels, networks)
    classes = sorted(set(labels))
    codes = np.array([classes.index(v) for v in labels])
    positive = None if len(classes) > 2 else classes[0]
    rows = []
    queue_rows = []
    for seed in seeds:
        roles = split(labels, seed)
        pool = roles == "pool"
        test = roles == "test"
        y_train = np.where(roles == "train", codes, -1)
        probas = []
        vote_by_net = {}
        for net in networks:
            X = feats[net]
            preds = {}
            extra = {}
            for m, (p, s) in baselines(X, labels, roles).items():
                preds[m] = np.array([classes.index(v) for v in p])
                extra[m] = {"seconds": s}
            t0 = time.perf_counter()
            proba, chosen, cv = predict_arrays(X, y_train, roles, len(classes), method="auto", random_state=seed,
                                               keep_oof=True)
            preds["default"] = proba.argmax(axis=1)
            extra["default"] = {"seconds": time.perf_counter() - t0, "chosen": chosen,
                                "cv": cv_accuracies(cv)}
            # what review.review_queue reads: the committee's votes, or a lone network's own prediction
            probas.append(committee_vote(X, y_train, roles, len(classes), proba, chosen, cv, random_state=seed)
                          if len(networks) > 1 else proba)
            vote_by_net[net] = chosen if len(networks) == 1 else VOTE_METHOD
            p, _, info = paper_rule(X, y_train, roles, len(classes), seed, paper_epochs)
            preds["paper"] = p
            extra["paper"] = info
            for m, p in preds.items():
                mt = classification_metrics(codes[test], p[test], list(range(len(classes))),
                                            positive=None if positive is None else classes.index(positive))
                rows.append(dict(dataset=name, seed=seed, network=net, method=m,
                                 test_accuracy=mt["accuracy"], test_precision=mt["precision"],
                                 test_specificity=mt["specificity"], test_recall=mt["recall"], test_f1=mt["f1"],
                                 pool_accuracy=float((p[pool] == codes[pool]).mean()), **extra[m]))
        q = review.doubt_from_probas(probas)
        final = q["consensus"][pool]
        wrong = final != codes[pool]
        doubt = q["doubt"][pool]
        disagree = q["disagree"][pool]
        order = np.argsort(-doubt, kind="stable")
        n_pool = int(pool.sum())
        rec = dict(dataset=name, seed=seed, pool=n_pool, errors=int(wrong.sum()),
                   final_accuracy=float(1 - wrong.mean()), flagged=int(disagree.sum()),
                   flagged_error_share=float(wrong[disagree].sum() / max(wrong.sum(), 1)))
        for frac in (0.05, 0.10):
            top = order[: int(round(frac * n_pool))]
            rec[f"caught_at_{int(frac * 100)}pct"] = float(wrong[top].sum() / max(wrong.sum(), 1))
        t0 = time.perf_counter()
        rec.update(review_in_rounds([feats[n] for n in networks], [vote_by_net[n] for n in networks],
                                    codes, roles, len(classes), seed, q))
        rec["rounds_seconds"] = time.perf_counter() - t0
        queue_rows.append(rec)
    return rows, queue_rows, embed_s


def review_in_rounds(feats, methods, codes, roles, n_classes, seed, first, round_share=ROUND_SHARE, budget=0.10):
    """The review as the panel runs it: the expert labels the queue's first ``round_share`` of the pool,
    presses "Update predictions" (every network predicts again with the new labels in its training set;
    ``methods``: how each one votes), and works on through the re-ordered queue until ``budget`` of the
    pool is reviewed.

    ``caught_in_rounds``: errors the expert corrected, as a share of the errors of the first labels
    (``first``: the consensus before any review); ``accuracy_after_rounds``: accuracy of the pool's labels
    afterwards, the expert's where reviewed and the updated consensus elsewhere.
    """
    pool = roles == "pool"
    n_pool = int(pool.sum())
    errors_before = int(((first["consensus"] != codes) & pool).sum())
    roles = roles.copy()
    reviewed = np.zeros(len(codes), dtype=bool)
    # The label-spreading graph depends on the features alone: build it once per network, not per round.
    graphs = [LabelSpreading(random_state=seed).build_graph(X) if m in ("spread", "all") else None
              for X, m in zip(feats, methods)]
    q, caught, done, target = first, 0, 0, int(round(budget * n_pool))
    while done < target:
        todo = np.flatnonzero(pool & ~reviewed)
        size = min(max(int(round(round_share * n_pool)), 1), target - done)
        batch = todo[np.argsort(-q["doubt"][todo], kind="stable")[:size]]
        caught += int((q["consensus"][batch] != codes[batch]).sum())
        reviewed[batch] = True
        roles[batch] = "train"  # a label the expert gives joins the training set
        done += len(batch)
        y = np.where(roles == "train", codes, -1)
        q = review.doubt_from_probas([predict_arrays(X, y, roles, n_classes, method=m, random_state=seed,
                                                     cross_validation=False, spread_model=g)[0]
                                      for X, m, g in zip(feats, methods, graphs)])
    left = int(((q["consensus"] != codes) & pool & ~reviewed).sum())
    return {"caught_in_rounds": caught / max(errors_before, 1), "accuracy_after_rounds": 1 - left / n_pool}


def summarise(rows, queue_rows):
    import collections

    lines = []
    groups = collections.OrderedDict()
    for r in rows:
        groups.setdefault((r["dataset"], r["network"], r["method"]), []).append(r)
    hdr = f"{'dataset':14} {'network':19} {'method':8} {'test acc':>14} {'prec':>6} {'spec':>6} {'recall':>6} " \
          f"{'F1':>6} {'pool acc':>14}  notes"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for (ds, net, m), rs in groups.items():
        def ms(key):
            v = np.array([r[key] for r in rs], dtype=float)
            return v.mean(), v.std()
        ta, tas = ms("test_accuracy")
        pa, pas = ms("pool_accuracy")
        note = ""
        if m == "default":
            note = "chose " + ",".join(sorted({r["chosen"] for r in rs}))
        if m == "paper":
            note = f"clusters {np.mean([r['clusters'] for r in rs]):.0f}, louvain {np.mean([r['louvain_s'] for r in rs]):.1f}s"
        lines.append(f"{ds:14} {net:19} {m:8} {ta:8.4f}±{tas:.3f} {ms('test_precision')[0]:6.3f} "
                     f"{ms('test_specificity')[0]:6.3f} {ms('test_recall')[0]:6.3f} {ms('test_f1')[0]:6.3f} "
                     f"{pa:8.4f}±{pas:.3f}  {note}")
    lines.append("")
    lines.append(f"{'dataset':14} {'seed':>4} {'pool':>6} {'final acc':>9} {'errors':>6} {'disagree':>8} "
                 f"{'err in disagree':>15} {'caught@5%':>9} {'caught@10%':>10} {'in rounds@10%':>13} {'acc after':>9}")
    for q in queue_rows:
        lines.append(f"{q['dataset']:14} {q['seed']:4d} {q['pool']:6d} {q['final_accuracy']:9.4f} {q['errors']:6d} "
                     f"{q['flagged']:8d} {q['flagged_error_share']:15.3f} {q['caught_at_5pct']:9.3f} "
                     f"{q['caught_at_10pct']:10.3f} {q['caught_in_rounds']:13.3f} {q['accuracy_after_rounds']:9.4f}")
    lines.append(f"caught@N%: one ordering, no update; in rounds@10%: predictions updated after every "
                 f"{ROUND_SHARE:.0%} of the pool reviewed, as the panel's Update predictions does")
    lines.append("")
    lines += goals(rows, queue_rows)
    return "\n".join(lines)


def goals(rows, queue_rows):
    """The quality goals, judged on the means over seeds."""
    import collections

    acc = collections.defaultdict(list)
    for r in rows:
        acc[(r["dataset"], r["network"], r["method"])].append(r["pool_accuracy"])
    out = []
    for ds, net in dict.fromkeys((r["dataset"], r["network"]) for r in rows):
        default = np.mean(acc[(ds, net, "default")])
        base = max(np.mean(acc[(ds, net, "knn")]), np.mean(acc[(ds, net, "logreg")]))
        out.append(f"goal default >= better baseline, {ds} / {net}: {default:.4f} vs {base:.4f} "
                   f"{'met' if default >= base else 'MISSED'}")
    for ds in dict.fromkeys(q["dataset"] for q in queue_rows):
        static, rounds = (np.mean([q[key] for q in queue_rows if q["dataset"] == ds])
                          for key in ("caught_at_10pct", "caught_in_rounds"))
        out.append(f"goal reviewing the queue's first 10% of the pool catches >= half the errors, {ds}: "
                   f"{rounds:.3f} updating predictions every {ROUND_SHARE:.0%} "
                   f"{'met' if rounds >= 0.5 else 'MISSED'} ({static:.3f} in one ordering, "
                   f"{'met' if static >= 0.5 else 'missed'})")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["fashion-mnist", "lfw"], choices=["fashion-mnist", "lfw"])
    ap.add_argument("--limit", type=int, default=0, help="Fashion-MNIST images used (default 0: all 70000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS))
    ap.add_argument("--paper-epochs", type=int, default=None, help="UMAP epochs of the paper rule (default: UMAP's)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(f"warming up UMAP: {projection.warm_up():.1f}s", file=sys.stderr)
    all_rows, all_q, embed = [], [], {}
    for ds in args.datasets:
        images, labels = load_fashion(args.limit) if ds == "fashion-mnist" else load_lfw()
        rows, q, e = run_dataset(ds, images, labels, args.seeds, args.networks, args.paper_epochs)
        all_rows += rows
        all_q += q
        embed[ds] = {k: round(v, 1) for k, v in e.items()}
        print(summarise(rows, q), file=sys.stderr)
    text = summarise(all_rows, all_q)
    print(text)
    print(f"\nfeature extraction seconds (0 when cached): {embed}; total {time.perf_counter() - t0:.0f}s")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "quality.json").write_text(json.dumps({"rows": all_rows, "queue": all_q, "embed_seconds": embed},
                                                 indent=1, default=str))


if __name__ == "__main__":
    main()
