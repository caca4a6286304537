"""Near-duplicate search: time and peak memory on real cached features.

    python bench/duplicates.py [--logdir bench/out/fashion-mnist-70000/logdir] [--network efficientnet_lite0]
                               [--thresholds 0.3 0.6 1.0] [--limit N] [--threads N] [--reference]

Loads a run's cached features (``nipgboard embed`` must have run) and times
``neighbours.near_duplicate_groups`` at each threshold. With ``--reference`` it also times the way
it was done before: a brute-force radius-neighbours graph over all rows (scikit-learn), then its
connected components; that graph holds every linked pair, so at large thresholds it needs memory
in proportion to n^2. Each (method, threshold) runs in a fresh process, so the peak RSS
(``getrusage``) it prints is that run's own: the features loaded plus the search. ``--limit`` keeps
the first N rows; ``--threads`` caps the BLAS threads (on a machine whose cores are busy with
other work, threads waiting on each other can cost more than they bring). Prints seconds, peak RSS,
RSS once the features are loaded, the number of groups and of images in them, and with
``--reference`` whether both give the same groups.
"""
import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_LOGDIR = REPO / "bench" / "out" / "fashion-mnist-70000" / "logdir"


def reference_groups(X, threshold):
    """The previous implementation: every linked pair in one sparse graph, then its components."""
    import numpy as np
    import sklearn
    from scipy.sparse.csgraph import connected_components
    from sklearn.neighbors import NearestNeighbors

    from nipgboard_plugin.neighbours import WORKING_MEMORY_MB, normalise

    Xn = normalise(X)
    with sklearn.config_context(working_memory=WORKING_MEMORY_MB):
        index = NearestNeighbors(algorithm="brute", metric="euclidean").fit(Xn)
        graph = index.radius_neighbors_graph(Xn, radius=float(threshold), mode="connectivity")
    n_comp, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=n_comp)
    groups = [np.flatnonzero(comp == c).tolist() for c in np.flatnonzero(sizes >= 2)]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_one(logdir, network, method, threshold, limit, threads):
    """Load the features, search once; one JSON line on stdout."""
    from threadpoolctl import threadpool_limits

    from nipgboard_plugin.features import load_features
    from nipgboard_plugin.neighbours import near_duplicate_groups

    _, X = load_features(logdir, network)
    if limit:
        X = X[:limit]
    loaded_mb = peak_rss_mb()
    search = reference_groups if method == "reference" else near_duplicate_groups
    with threadpool_limits(limits=threads or None, user_api="blas"):
        t0 = time.perf_counter()
        groups = search(X, threshold)
        seconds = time.perf_counter() - t0
    print(json.dumps({
        "method": method, "threshold": threshold, "n": len(X), "threads": threads or "default",
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_rss_mb()), "loaded_rss_mb": round(loaded_mb),
        "groups": len(groups), "images_in_groups": sum(map(len, groups)),
        "digest": hashlib.sha1(json.dumps(groups).encode()).hexdigest()[:12]}))


def in_fresh_process(args, method, threshold):
    cmd = [sys.executable, __file__, "--logdir", str(args.logdir), "--network", args.network,
           "--limit", str(args.limit or 0), "--threads", str(args.threads or 0), "--one", method, str(threshold)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--logdir", type=Path, default=DEFAULT_LOGDIR)
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.6, 1.0])
    ap.add_argument("--limit", type=int, default=0, help="only the first N rows (0: all)")
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: the library's default)")
    ap.add_argument("--reference", action="store_true", help="also time the previous brute-force graph")
    ap.add_argument("--one", nargs=2, metavar=("METHOD", "THRESHOLD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.logdir, args.network, args.one[0], float(args.one[1]), args.limit, args.threads)
        return
    methods = ["new", "reference"] if args.reference else ["new"]
    print(f"BLAS threads: {args.threads or 'default'}")
    print(f"{'method':<10} {'threshold':>9} {'n':>7} {'seconds':>8} {'peak RSS MB':>12} {'loaded MB':>10} "
          f"{'groups':>7} {'in groups':>10}  same groups")
    for threshold in args.thresholds:
        rows = [in_fresh_process(args, m, threshold) for m in methods]
        for r in rows:
            same = "" if len(rows) == 1 else ("yes" if r["digest"] == rows[0]["digest"] else "NO")
            print(f"{r['method']:<10} {r['threshold']:>9} {r['n']:>7} {r['seconds']:>8} {r['peak_rss_mb']:>12} "
                  f"{r['loaded_rss_mb']:>10} {r['groups']:>7} {r['images_in_groups']:>10}  {same}", flush=True)


if __name__ == "__main__":
    main()
