"""Least hand work: how many labels a simulated expert gives for a given overall accuracy.

A simulated expert (the true labels) labels in rounds; a logistic regression (the product's, as a
network votes with it: ``FeaturePredictor(method="logreg")`` on ``efficientnet_lite0`` features) labels
the rest. *Overall* accuracy is the share of all images whose final label (the expert's where given,
else the prediction) is right. Strategies:

* ``random``: the expert labels images drawn at random (the paper's way), at the same counts;
* ``tool``: the tool chooses from zero labels (``nipgboard suggest``: a cold-start round of typical and
  diverse images, then rounds of the least sure, each of ``--round`` of the images).

Datasets: Fashion-MNIST (Debian's ``dataset-fashion-mnist``; all 70,000, or ``--limit N`` sampled),
skimage's ``lfw_subset``, and any folder of images with a truth CSV (``--folder DIR --truth CSV``,
``path,label`` rows). Images are written as PNG, ingested and embedded once (cached under ``bench/out``).

    python bench/handwork.py --limit 3000            # a quick look
    python bench/handwork.py                         # Fashion-MNIST 70,000 and lfw_subset
    python bench/handwork.py --typical centroid      # the other typicality measure, to compare

Prints, per dataset, one row per round: images labelled, overall accuracy of each strategy, the seconds
the tool's selection and the prediction took; then the labels each strategy needed for 0.90 and 0.95.
"""
import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from nipgboard_plugin import suggest as S  # noqa: E402
from nipgboard_plugin.predict import FeaturePredictor  # noqa: E402

OUT = ROOT / "bench" / "out"
TARGETS = (0.90, 0.95)


def predict_all(X, labelled_rows, y, n_classes, seed):
    """Class probabilities of every row from the labelled rows (uniform before two classes are known)."""
    codes = y[labelled_rows]
    if len(np.unique(codes)) < 2:
        P = np.zeros((len(X), n_classes))
        P[:, codes[0] if len(codes) else 0] = 1.0
        return P
    model = FeaturePredictor(method="logreg", C=10.0, random_state=seed).fit(X[labelled_rows], codes, n_classes)
    return model.predict_proba(X)


def overall(P, labelled_rows, y):
    final = P.argmax(axis=1)
    final[labelled_rows] = y[labelled_rows]
    return float((final == y).mean())


def simulate(X, y, classes, round_size, rounds, seed, typical, candidates):
    """Per round: (labelled, random accuracy, tool accuracy, mode, selection s, prediction s)."""
    n, k = len(X), len(classes)
    rng = np.random.default_rng(seed)
    random_order = rng.permutation(n)
    labels = [None] * n
    chosen = []
    rows = []
    P = None
    for r in range(rounds):
        want = min(round_size, n - len(chosen))
        if want <= 0:
            break
        probas = [P] if P is not None else None
        s = S.suggest(X, want, labels=labels, probas=probas, classes=classes, networks=["net"],
                      random_state=seed + r, typical=typical, candidates=candidates)
        assert not set(s.rows.tolist()) & set(chosen), "suggested an image already labelled"
        for i in s.rows:
            labels[int(i)] = classes[y[i]]
        chosen += s.rows.tolist()
        t0 = time.perf_counter()
        lab = np.array(chosen)
        P = predict_all(X, lab, y, k, seed)
        predict_s = time.perf_counter() - t0
        tool = overall(P, lab, y)
        rand_rows = random_order[: len(chosen)]
        rand = overall(predict_all(X, rand_rows, y, k, seed), rand_rows, y)
        rows.append((len(chosen), rand, tool, s.mode, s.seconds, predict_s))
        print(f"  {len(chosen):>7} {100 * len(chosen) / n:>6.2f}%  {rand:.4f}  {tool:.4f}  {s.mode:<12} "
              f"{s.seconds:>7.2f}s {predict_s:>7.2f}s", flush=True)
    return rows


def needed(rows, column, target):
    for r in rows:
        if r[column] >= target:
            return r[0]
    return None


def run(name, X, y_names, args):
    classes = sorted(set(y_names))
    y = np.array([classes.index(v) for v in y_names])
    n = len(X)
    round_size = max(1, int(round(n * args.round)))
    rounds = max(1, int(np.ceil(n * args.budget / round_size)))
    print(f"\n{name}: {n} images, {len(classes)} classes; rounds of {round_size} ({args.round:.1%}) up to "
          f"{args.budget:.0%}; typical={args.typical}, candidates={args.candidates}")
    print(f"  {'labels':>7} {'share':>7}  {'random':<6}  {'tool':<6}  {'mode':<12} {'select':>8} {'predict':>8}")
    all_rows = []
    for seed in range(args.seeds):
        rows = simulate(X, y, classes, round_size, rounds, seed, args.typical, args.candidates)
        all_rows.append(rows)
    summary = {"dataset": name, "n": n, "round": round_size, "typical": args.typical,
               "candidates": args.candidates, "seeds": args.seeds, "rows": all_rows}
    mean = [(r[0][0], float(np.mean([x[1] for x in r])), float(np.mean([x[2] for x in r])))
            for r in zip(*all_rows)]
    if args.seeds > 1:
        print("  mean over seeds: " + ", ".join(f"{m[0]}: {m[1]:.3f}/{m[2]:.3f}" for m in mean))
    for target in TARGETS:
        print(f"  labels for overall >= {target:.2f}: random {needed(mean, 1, target) or 'more than ' + str(mean[-1][0])}"
              f", tool {needed(mean, 2, target) or 'more than ' + str(mean[-1][0])}")
    worse = [(m[0], round(m[1] - m[2], 4)) for m in mean if m[2] < m[1]]
    print("  tool at least as good as random at every budget: " + ("yes" if not worse else f"no, at {worse}"))
    slowest = max(x[4] for rows in all_rows for x in rows)
    print(f"  slowest selection: {slowest:.2f}s")
    summary["mean"] = mean
    return summary


def load_folder(folder, truth_csv):
    from PIL import Image

    with open(truth_csv, newline="", encoding="utf-8-sig") as fh:
        pairs = [(r[0], r[1]) for r in csv.reader(fh) if len(r) >= 2 and r[1] and r[:2] != ["path", "label"]]
    images = [np.asarray(Image.open(Path(folder) / p).convert("RGB")) for p, _ in pairs]
    return images, np.array([lab for _, lab in pairs])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="sample this many Fashion-MNIST images (default all)")
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--round", type=float, default=0.01, help="share of the images labelled per round")
    ap.add_argument("--budget", type=float, default=0.08, help="stop after labelling this share")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--typical", choices=S.TYPICAL, default="knn")
    ap.add_argument("--candidates", type=int, default=S.CANDIDATES)
    ap.add_argument("--datasets", nargs="+", default=["fashion", "lfw"], choices=["fashion", "lfw", "folder"])
    ap.add_argument("--folder", help="a folder of images (with --truth)")
    ap.add_argument("--truth", help="path,label CSV of every image in --folder")
    args = ap.parse_args(argv)
    from quality import build_logdir, load_fashion, load_lfw

    out = []
    for name in args.datasets:
        if name == "fashion":
            images, labels = load_fashion(args.limit)
        elif name == "lfw":
            images, labels = load_lfw()
        else:
            if not (args.folder and args.truth):
                raise SystemExit("--datasets folder needs --folder DIR and --truth CSV")
            images, labels = load_folder(args.folder, args.truth)
        t0 = time.perf_counter()
        feats, _ = build_logdir(name, images, labels, (args.network,))
        print(f"{name}: features of {len(images)} images ready in {time.perf_counter() - t0:.0f}s", flush=True)
        out.append(run(name, feats[args.network], labels, args))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"handwork-{args.limit or 'all'}-{args.typical}-{args.candidates}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
