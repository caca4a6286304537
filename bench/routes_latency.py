"""Route latency of the plugin while a feature-extraction job runs.

    python bench/routes_latency.py [--images 1800] [--requests 500] [--clients 8] [--network efficientnet_lite0]

Starts the real `tensorboard` with the plugin on a loopback port, ingests a folder of drawn shapes
(small PNGs) and photo-like JPEGs (640 px) into two runs: ``small`` (features extracted beforehand,
for the similar-images route) and ``big``, whose extraction job runs while 8 clients send a mix of
requests (reads of every kind, thumbnails of random images, full images, label writes). Prints
p50/p99/max latency per route, and whether the extraction job ran during the whole measurement.
Goal: metadata and thumbnail routes p99 under 200 ms.
"""
import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from common import REPO

sys.path.insert(0, str(REPO / "tests"))
from images import write_shapes  # noqa: E402
from PIL import Image  # noqa: E402
from plugin_server import TensorBoardServer  # noqa: E402


def write_photos(folder, n, size=640, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        a, b, c = rng.random(3) * 6
        img = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx - c * yy), np.sin(c * xx * yy + a)], -1)
        img = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"photo_{i:05d}.jpg", quality=90)


def percentile(values, q):
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1800, help="images of the run whose extraction runs meanwhile")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="nipgboard-latency-"))
    home = work / "home"
    try:
        t0 = time.perf_counter()
        n_photos = max(1, args.images // 6)
        per_class = max(1, (args.images - n_photos) // 3)
        write_shapes(work / "big", per_class=per_class, size=96)
        write_photos(work / "big" / "photos", n_photos)
        write_shapes(work / "small", per_class=50, size=64, start_seed=5000)
        (work / "logdir").mkdir()
        print(f"wrote {3 * per_class + n_photos + 150} images in {time.perf_counter() - t0:.1f} s", flush=True)

        with TensorBoardServer(work / "logdir", home, log_path=work / "tensorboard.log", roots=[work]) as tb:
            tb.run_job("small", "ingest", images=str(work / "small"), folder_labels=True)
            tb.run_job("small", "embed", network=args.network, timeout=600)
            tb.run_job("big", "ingest", images=str(work / "big"), folder_labels=True, timeout=600)
            small_ids = tb.get_json("metadata", run="small")["ids"]
            big_ids = tb.get_json("metadata", run="big")["ids"]
            job = tb.start_job("big", "embed", network=args.network, batch_size=32)
            tb.wait_job("big", job["id"], timeout=600, until=lambda j: j["done"] > 0)
            print(f"extraction job running on {len(big_ids)} images; sending {args.requests} requests "
                  f"from {args.clients} clients", flush=True)

            rnd = random.Random(0)
            mix = [  # (weight, route name, request factory)
                (5, "runs", lambda: ("GET", tb.url("runs"), None)),
                (5, "summary", lambda: ("GET", tb.url("summary", run="big"), None)),
                (10, "job", lambda: ("GET", tb.url("job", run="big", id=job["id"]), None)),
                (5, "jobs", lambda: ("GET", tb.url("jobs"), None)),
                (10, "metadata", lambda: ("GET", tb.url("metadata", run="big"), None)),
                (25, "thumbnail", lambda: ("GET", tb.url("thumbnail", run="big", id=rnd.choice(big_ids),
                                                         size=rnd.choice((64, 128))), None)),
                (8, "image", lambda: ("GET", tb.url("image", run="big", id=rnd.choice(big_ids)), None)),
                (5, "label_history", lambda: ("GET", tb.url("label_history", run="big", limit=100), None)),
                (5, "sprite_index", lambda: ("GET", tb.url("sprite_index", run="big"), None)),
                (10, "similar", lambda: ("GET", tb.url("similar", run="small", network=args.network,
                                                       id=rnd.choice(small_ids), k=20), None)),
                (12, "set_labels", lambda: ("POST", "/data/plugin/nipgboard/set_labels", json.dumps(
                    {"run": "big", "id": rnd.choice(big_ids), "label": rnd.choice(("a", "b", "c"))}))),
            ]
            weights = [w for w, _, _ in mix]
            plan = [rnd.choices(mix, weights)[0] for _ in range(args.requests)]
            plan = [(name, make()) for _, name, make in plan]
            lat = defaultdict(list)
            errors = defaultdict(int)
            lock = threading.Lock()
            cursor = iter(range(len(plan)))

            def client():
                while True:
                    with lock:
                        i = next(cursor, None)
                    if i is None:
                        return
                    name, (method, path, body) = plan[i]
                    headers = {"X-NIPGBoard": "1", "Content-Type": "application/json"} if body else {}
                    t = time.perf_counter()
                    status, _h, _b = tb.request(method, path, body=body, headers=headers)
                    ms = (time.perf_counter() - t) * 1000
                    with lock:
                        lat[name].append(ms)
                        if status >= 400:
                            errors[name] += 1

            started = time.time()
            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            ended = time.time()
            state = tb.get_json("job", run="big", id=job["id"])
            overlap = state["state"] == "running" or (state["finished_at"] or 0) >= ended
            total_s = ended - started

            print(f"\n{args.requests} requests in {total_s:.1f} s ({args.requests / total_s:.0f} req/s) "
                  f"from {args.clients} clients; extraction job {'ran during all of it' if overlap else 'ENDED EARLY'} "
                  f"({state['done']}/{state['total']} images, {state['rate'] or 0:.0f} img/s)")
            print(f"{'route':<15}{'n':>5}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>8}")
            for name in sorted(lat, key=lambda n: -percentile(lat[n], 99)):
                v = lat[name]
                print(f"{name:<15}{len(v):>5}{percentile(v, 50):>9.1f}{percentile(v, 99):>9.1f}"
                      f"{max(v):>9.1f}{errors[name]:>8}")
            goal = all(percentile(lat[n], 99) < 200 for n in ("metadata", "thumbnail") if lat[n])
            print(f"goal (metadata and thumbnail p99 < 200 ms): {'met' if goal else 'NOT met'}")
            tb.post_json("cancel_job", {"run": "big", "id": job["id"]})
            tb.wait_job("big", job["id"], timeout=60)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
