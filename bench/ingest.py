"""Ingest 75,000 image files, then embed and embed again (unchanged) — time and peak memory.

    python bench/ingest.py [--n 75000] [--work bench/out] [--embed efficientnet_lite0]

Fashion-MNIST (70,000) plus mirrored copies make up the files, written once as PNG under --work.
Goals: init under 60 s and peak RSS under 1 GB; a second embed on the unchanged set under 5 s.
"""
import argparse
import json
import shutil
import time

from common import REPO, nipgboard_cmd, run_measured

from demo import fashion_mnist


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=75000)
    ap.add_argument("--work", default=str(REPO / "bench" / "out"))
    ap.add_argument("--embed", default=None, help="also embed with this network (slow the first time)")
    args = ap.parse_args()

    data = f"{args.work}/fmnist-{args.n}"
    t = time.perf_counter()
    n_base = min(args.n, 70000)
    images_dir, labels_csv, _ = fashion_mnist.write(data, n=n_base, extra_flipped=args.n - n_base)
    print(f"files ready in {data} ({time.perf_counter() - t:.1f} s)")

    logdir = f"{args.work}/log-{args.n}"
    shutil.rmtree(logdir, ignore_errors=True)
    secs, single, tree, out = run_measured(nipgboard_cmd("init", logdir, "--images", images_dir,
                                                         "--labels", labels_csv, "--json"), cwd=REPO)
    s = json.loads(out.stdout)
    print(f"init {s['images']} images ({s['labelled']} labelled, {len(s['duplicates'])} duplicates): "
          f"{secs:.1f} s, {s['images'] / secs:.0f} files/s, peak RSS {single:.0f} MB largest process, "
          f"{tree:.0f} MB all processes")
    secs, single, tree, _ = run_measured(nipgboard_cmd("init", logdir, "--images", images_dir, "--json"), cwd=REPO)
    print(f"init again (nothing new): {secs:.1f} s, peak RSS {single:.0f} MB")

    if args.embed:
        secs, single, tree, out = run_measured(nipgboard_cmd("embed", logdir, "--network", args.embed, "--json"),
                                               cwd=REPO)
        r = json.loads(out.stdout)
        print(f"embed {args.embed}: {r['extracted']} extracted in {secs:.1f} s "
              f"({r['extracted'] / secs:.1f} img/s), peak RSS {single:.0f} MB")
        secs, single, tree, out = run_measured(nipgboard_cmd("embed", logdir, "--network", args.embed, "--json"),
                                               cwd=REPO)
        r = json.loads(out.stdout)
        print(f"embed again (unchanged): {secs:.2f} s wall including start-up "
              f"({r['seconds']:.2f} s inside), {r['extracted']} extracted, peak RSS {single:.0f} MB")


if __name__ == "__main__":
    main()
