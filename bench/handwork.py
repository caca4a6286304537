"""Least hand work: how many images a simulated expert labels or checks for a given overall accuracy.

A simulated expert (the true labels) works in rounds; the product's prediction labels the rest
(``nipgboard predict``'s default: ``predict_arrays(method="auto")`` on ``efficientnet_lite0`` features, with
the label-spreading graph built once per dataset as ``predict`` keeps it; with few labels that is the
blend of a logistic regression and label spreading, see :mod:`nipgboard_plugin.predict`), for every
strategy alike. *Overall*
accuracy is the share of all images whose final label (the expert's where given, else the prediction) is
right; the x axis is the number of images the expert looked at (labelled, checked or looked at again).
Strategies:

* ``random``: the expert labels images drawn at random, in the same rounds;
* ``paper``: the paper's flow: a random 8% labelled, then rounds of checking the review queue (the
  unlabelled images whose prediction is least sure, most doubtful first), each checked image fixed;
* ``tool``: the tool chooses from zero labels (``nipgboard suggest``: a cold-start round of typical and
  diverse images, then rounds of the least sure, spread out, and a few second looks at contradicted
  labels). Every round also prints the tool's *estimated* overall accuracy (:mod:`nipgboard_plugin.estimate`,
  what the panel plots) beside the true one.

Rounds: ``--early-round`` (0.25% of the images) until ``--early-until`` (3%) have been looked at, then
``--round`` (1%). The panel's rounds are smaller still (20 images); the bench's are larger to keep its
run short, and smaller rounds choose better (each round learns from the last).

Datasets: Fashion-MNIST (Debian's ``dataset-fashion-mnist``; all 70,000, or ``--limit N`` sampled),
skimage's ``lfw_subset``, and any folder of images with a truth CSV (``--folder DIR --truth CSV``,
``path,label`` rows). Images are written as PNG, ingested and embedded once (cached under ``bench/out``).

    python bench/handwork.py --limit 3000            # a quick look
    python bench/handwork.py                         # Fashion-MNIST 70,000 and lfw_subset
    python bench/handwork.py --plot docs/handwork.png

Prints, per dataset, one row per round: images looked at, overall accuracy of each strategy, the tool's
estimate, the seconds the tool's selection and prediction took; then the images each strategy needed for
0.90 and 0.95, and whether the goals are met. Writes the curves as a PNG (``--plot``).
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

from nipgboard_plugin import estimate as E  # noqa: E402
from nipgboard_plugin import suggest as S  # noqa: E402
from nipgboard_plugin.predict import LabelSpreading, predict_arrays  # noqa: E402

OUT = ROOT / "bench" / "out"
TARGETS = (0.90, 0.95)
PAPER_START = 0.08
STRATEGIES = ("random", "paper", "tool")
SMALL = 10000          # fewer images than this: at least three seeds


class Expert:
    """One strategy's state: the rows the expert labelled (true labels) and how many images were looked at."""

    def __init__(self, y, n_classes, seed):
        self.y, self.k, self.seed = y, n_classes, seed
        self.labelled = np.zeros(len(y), dtype=bool)
        self.looked = 0
        self.P = self.oof = None

    def label(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        self.labelled[rows] = True
        self.looked += len(rows)

    def predict(self, X, graph, keep_oof=False):
        """Every row's class probabilities from the labelled rows (uniform before two classes are known), as
        ``nipgboard predict`` gives them; ``keep_oof``: with the cross-validation it runs for the estimate."""
        codes = self.y[self.labelled]
        self.method = None
        if len(np.unique(codes)) < 2:
            self.P = np.full((len(X), self.k), 1.0 / self.k)
            self.oof = None
            return
        roles = np.where(self.labelled, "train", "pool").astype(object)
        self.P, self.method, scores = predict_arrays(X, np.where(self.labelled, self.y, -1), roles, self.k,
                                                     method="auto", random_state=0, cross_validation=keep_oof,
                                                     spread_model=graph, keep_oof=True)
        self.oof = scores.get(self.method, (None, None))[1]

    def overall(self):
        final = self.P.argmax(axis=1)
        final[self.labelled] = self.y[self.labelled]
        return float((final == self.y).mean())

    def estimate(self):
        if self.oof is None:
            return None
        lab = self.labelled
        e = E.estimate(self.oof, self.oof.argmax(axis=1) == self.y[lab], self.P[~lab], len(lab), int(lab.sum()))
        return e and e["overall"]


def schedule(n, args):
    """The round sizes: ``early_round`` of the images until ``early_until`` are looked at, then ``round``
    (never under 2 images)."""
    early = max(2, int(round(n * args.early_round)))
    size = max(early, int(round(n * args.round)))
    budget, until = int(round(n * args.budget)), int(round(n * args.early_until))
    sizes, total = [], 0
    while total < budget:
        step = early if total < until else size
        step = min(step, budget - total)
        sizes.append(step)
        total += step
    return sizes


def simulate(X, y, classes, sizes, seed, typical, candidates, graph):
    """Per round: (looked at, random, paper, tool, tool estimate, mode, selection s, prediction s, method)."""
    n, k = len(X), len(classes)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    experts = {s: Expert(y, k, seed) for s in STRATEGIES}
    Z = S.reduce(X, random_state=seed)
    rows = []
    for r, round_size in enumerate(sizes):
        # random: the next images of one random order
        ex = experts["random"]
        ex.label(order[ex.looked: ex.looked + round_size])
        # paper: the random 8% first, then the least sure unlabelled images (the review queue's order)
        ex = experts["paper"]
        start = int(PAPER_START * n)
        if ex.looked < start:
            ex.label(order[ex.looked: min(ex.looked + round_size, start)])
        else:
            conf = ex.P.max(axis=1)
            free = np.flatnonzero(~ex.labelled)
            ex.label(free[np.lexsort((free, conf[free]))][:round_size])
        # tool: what `nipgboard suggest` chooses
        ex = experts["tool"]
        labels = [classes[y[i]] if ex.labelled[i] else None for i in range(n)]
        probas = [ex.P] if ex.oof is not None else None
        s = S.suggest(X, round_size, labels=labels, probas=probas, classes=classes, networks=["net"],
                      random_state=seed + r, typical=typical, candidates=candidates, Z=Z)
        new = [int(i) for i, kind in zip(s.rows, s.kinds) if kind != "recheck"]
        assert not ex.labelled[new].any(), "suggested an image already labelled"
        ex.label(new)
        ex.looked += len(s.rows) - len(new)     # second looks cost a look and change nothing: labels are true
        for name in STRATEGIES:
            t0 = time.perf_counter()
            experts[name].predict(X, graph, keep_oof=name == "tool")
            if name == "tool":
                predict_s = time.perf_counter() - t0
        tool = experts["tool"]
        row = (tool.looked, experts["random"].overall(), experts["paper"].overall(), tool.overall(),
               tool.estimate(), s.mode, s.seconds, predict_s, tool.method)
        rows.append(row)
        est = f"{row[4]:.4f}" if row[4] is not None else "  -   "
        print(f"  {row[0]:>7} {100 * row[0] / n:>6.2f}%  {row[1]:.4f}  {row[2]:.4f}  {row[3]:.4f}  {est}  "
              f"{s.mode:<12} {s.seconds:>7.2f}s {predict_s:>7.2f}s  {tool.method or '-'}", flush=True)
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
    sizes = schedule(n, args)
    t0 = time.perf_counter()
    graph = LabelSpreading(random_state=0).build_graph(X)   # as `predict` builds it once and keeps it
    print(f"\n{name}: {n} images, {len(classes)} classes; rounds of {sizes[0]} ({args.early_round:.2%}) up to "
          f"{args.early_until:.0%}, then of {sizes[-1]} ({args.round:.1%}) up to "
          f"{sum(sizes)} ({args.budget:.0%}); typical={args.typical}, candidates={args.candidates}; "
          f"label-spreading graph built once in {time.perf_counter() - t0:.1f}s")
    print(f"  {'looked':>7} {'share':>7}  {'random':<6}  {'paper':<6}  {'tool':<6}  {'tool~':<6}  {'mode':<12} "
          f"{'select':>8} {'predict':>8}  method")
    seeds = args.seeds if n >= SMALL else max(args.seeds, 3)   # a small set's curve is noisy: average seeds
    all_rows = [simulate(X, y, classes, sizes, seed, args.typical, args.candidates, graph)
                for seed in range(seeds)]
    mean = [(r[0][0],) + tuple(float(np.mean([x[c] for x in r])) for c in (1, 2, 3))
            + (float(np.mean([x[4] for x in r])) if all(x[4] is not None for x in r) else None,)
            for r in zip(*all_rows)]
    if seeds > 1:
        print(f"  mean over {seeds} seeds (random/paper/tool): " + ", ".join(f"{m[0]}: {m[1]:.3f}/{m[2]:.3f}/{m[3]:.3f}"
                                                                   for m in mean))
    found = {}
    for target in TARGETS:
        found[target] = {s: needed(mean, c, target) for c, s in enumerate(STRATEGIES, 1)}
        print(f"  looked at for overall >= {target:.2f}: " + ", ".join(
            f"{s} {v if v is not None else 'more than ' + str(mean[-1][0])}" for s, v in found[target].items()))
    worse = [(m[0], round(m[1] - m[3], 4)) for m in mean if m[3] < m[1]]
    print("  tool at least as good as random at every budget: " + ("yes" if not worse else f"no, at {worse}"))
    errors = [abs(m[4] - m[3]) for m in mean if m[4] is not None]
    if errors:
        print(f"  the tool's estimate of overall accuracy: mean error {np.mean(errors):.3f}, largest {max(errors):.3f}")
    slowest = max(x[6] + x[7] for rows in all_rows for x in rows)
    print(f"  slowest round (selection + prediction): {slowest:.1f}s")
    if n >= 50000:
        goals = [("overall >= 0.90 with at most 2,000 labels", (found[0.90]["tool"] or 1e9) <= 2000),
                 ("overall >= 0.95 with at most 8,000 looked at", (found[0.95]["tool"] or 1e9) <= 8000),
                 ("tool never worse than random", not worse),
                 ("a round under 60 s", slowest < 60)]
        for text, ok in goals:
            print(f"  goal {text}: {'met' if ok else 'MISSED'}")
    return {"dataset": name, "n": n, "rounds": sizes, "typical": args.typical, "candidates": args.candidates,
            "seeds": seeds, "rows": all_rows, "mean": mean}


def plot(summaries, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(5.5 * len(summaries), 4), squeeze=False)
    for ax, sm in zip(axes[0], summaries):
        mean = sm["mean"]
        x = [m[0] for m in mean]
        for c, (label, style) in enumerate((("random labels", "--"), ("random 8%, then the review queue", ":"),
                                            ("the tool's choice, from zero labels", "-")), 1):
            ax.plot(x, [m[c] for m in mean], style, label=label, linewidth=2)
        est = [(m[0], m[4]) for m in mean if m[4] is not None]
        if est:
            ax.plot(*zip(*est), "o", markersize=3, label="the tool's estimate (what the panel shows)")
        for t in TARGETS:
            ax.axhline(t, color="grey", linewidth=0.5)
        ax.set_title(f"{sm['dataset']} ({sm['n']:,} images)")
        ax.set_xlabel("images the expert labelled or checked")
        ax.set_ylabel("share of all images labelled right")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


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
    ap.add_argument("--early-round", type=float, default=0.0025, help="... per round at first")
    ap.add_argument("--early-until", type=float, default=0.03, help="... until this share was looked at")
    ap.add_argument("--budget", type=float, default=0.12, help="stop after looking at this share")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--typical", choices=S.TYPICAL, default="knn")
    ap.add_argument("--candidates", type=int, default=S.CANDIDATES)
    ap.add_argument("--datasets", nargs="+", default=["fashion", "lfw"], choices=["fashion", "lfw", "folder"])
    ap.add_argument("--folder", help="a folder of images (with --truth)")
    ap.add_argument("--truth", help="path,label CSV of every image in --folder")
    ap.add_argument("--plot", help="write the curves as a PNG here")
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
    if args.plot:
        plot(out, args.plot)


if __name__ == "__main__":
    main()
