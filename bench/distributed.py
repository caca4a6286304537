"""Extraction here against extraction on Ray (1 and 2 workers) on this machine, in one run.

    python bench/distributed.py [--network efficientnet_lite0] [--n 2000] [--batch-size 32]
                                [--address local] [--workers 1 2] [--rounds 1]

Each path embeds the same Fashion-MNIST images (written as PNG files) into a fresh dataset:

- local: `embed` as usual (decoding threads and ONNX Runtime in this process), measured before the Ray
  runs and after each round of them, so that a change in the machine's load shows;
- Ray: `embed --ray ADDRESS --ray-workers N` (default: a Ray started here, as `--ray` alone does):
  decoding in Ray Data tasks, N ONNX Runtime actors, features streamed back and written here.

Rates are steady images/s (from the first batch stored to the last, as bench/extraction.py counts);
Ray's start-up (starting or joining the cluster) and each run's start (actors loading the network)
are printed separately. Goal: Ray on one machine at 80% or more of the local path's images/s.
"""
import argparse
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from common import REPO  # noqa: F401  (puts the repository on sys.path)

from demo import fashion_mnist
from nipgboard_plugin import backbones
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.features import embed

GOAL = 0.80


def timed_embed(images_dir, network, batch_size, **ray):
    """(steady images/s, seconds in all, result) of `embed` on a fresh dataset of ``images_dir``."""
    logdir = Path(tempfile.mkdtemp(prefix="nipgboard-bench-ray-"))
    try:
        ingest(logdir, images_dir)
        marks = []
        t = time.perf_counter()
        result = embed(logdir, network, batch_size=batch_size,
                       progress=lambda p: p.done and marks.append((time.perf_counter(), p.done)), **ray)
        total = time.perf_counter() - t
        first = min(2, len(marks) - 2)  # skip the first batches: warm-up, actors still starting
        (t1, d1), (t2, d2) = marks[first], marks[-1]
        return (d2 - d1) / (t2 - t1), total, result
    finally:
        shutil.rmtree(logdir, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--address", default="local", help="Ray address ('local': a Ray started for this run)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=1, help="repeat the Ray runs and a local run this often")
    ap.add_argument("--work", default=str(REPO / "bench" / "out"))
    args = ap.parse_args()
    if args.address == "local" and "RAY_AUTH_MODE" not in os.environ:
        # A Ray started here uses a token; keep it in this process rather than in ~/.ray.
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))

    images_dir, _, _ = fashion_mnist.write(Path(args.work) / f"fmnist-{args.n}", n=args.n)
    backbones.get(args.network).engine()  # export the network once, outside every measurement
    print(f"{args.network}, batch {args.batch_size}, {args.n} Fashion-MNIST PNG images, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")

    rows = [("local", *timed_embed(images_dir, args.network, args.batch_size))]

    from nipgboard_plugin.ray_extract import connect

    t = time.perf_counter()
    ray = connect(args.address)
    startup = time.perf_counter() - t
    print(f"  Ray start-up ({args.address}): {startup:.1f} s; {ray.cluster_resources().get('CPU', 0):g} CPUs")
    for _ in range(args.rounds):
        for n in args.workers:
            rows.append((f"Ray, {n} worker{'s' if n > 1 else ''}",
                         *timed_embed(images_dir, args.network, args.batch_size, ray=args.address, ray_workers=n)))
        rows.append(("local", *timed_embed(images_dir, args.network, args.batch_size)))
    ray.shutdown()

    locals_ = [rate for name, rate, _, _ in rows if name == "local"]
    base = sum(locals_) / len(locals_)
    print(f"  {'path':16} {'img/s':>7} {'vs local':>9} {'ms/img over local':>18} {'whole run':>10} "
          f"{'run s':>7} {'start s':>8}")
    for name, rate, total, r in rows:
        start = total - r["extracted"] / rate if rate else float("nan")  # seconds not at the steady rate
        print(f"  {name:16} {rate:7.1f} {rate / base:8.0%} {1000 / rate - 1000 / base:18.2f} "
              f"{r['extracted'] / total:10.1f} {total:7.1f} {start:8.1f}"
              + (f"   [{r['where']}, {r['ray']['workers_seen']} worker processes]" if r.get("ray") else ""))
    for n in args.workers:
        rates = [rate for name, rate, _, _ in rows if name.startswith(f"Ray, {n} ")]
        mean = sum(rates) / len(rates)
        print(f"  goal: Ray with {n} worker{'s' if n > 1 else ''} at {GOAL:.0%} or more of local ({base:.1f} img/s, "
              f"the mean of {len(locals_)} local runs): {mean / base:.0%} -> {'met' if mean >= GOAL * base else 'missed'}")


if __name__ == "__main__":
    main()
