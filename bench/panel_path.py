"""The panel's click to clusters and thumbnails, through the real TensorBoard and headless Chromium, with
the worker's extraction beside the CLI's and the bare engine's on the same images in the same run.

    python bench/panel_path.py [--n 10000] [--network efficientnet_lite0] [--no-browser] [--warmup 1|0]
                               [--click-only]

A folder of N Fashion-MNIST PNGs with 8% of them labelled (stratified; 80/20 train/test) is ingested three
times (fresh caches). Interleaved, so that other load on the machine falls on every path alike:

1. the bare engine (ONNX Runtime on pre-decoded tensors, as in bench/extraction.py);
2. ``nipgboard embed --json`` in a fresh process (the CLI);
3. the bare engine again;
4. TensorBoard with the plugin (its worker started and warming up UMAP as a user's server does), Chromium
   opens the tab and clicks the network's card (``--no-browser``: the same ``pipeline`` job started through
   the route); the job's row is polled for each stage's seconds; Chromium waits for the points and then
   the thumbnails;
5. the bare engine once more.

Prints seconds per stage and images/s of each extraction with its ratio to the CLI and to the bare engine
(steady: after the first batches), and from the click: the first picture in Chromium (the view opens on the
labelled images while the others are embedded) and the pipeline's end (clusters and predictions for every
image). ``--click-only`` leaves out the CLI's embed (at 70,000 images it takes as long as the click). Goals: the worker's extraction >= 95% of the CLI's, the whole embed path
>= 85% of the bare engine. These machines differ 2x in speed: compare the ratios, within one run.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import REPO, nipgboard_cmd, run_measured
from extraction import bare_engine_rate
from quality import load_fashion, split

sys.path.insert(0, str(REPO / "tests"))
from plugin_server import TensorBoardServer  # noqa: E402

from nipgboard_plugin import backbones, paths  # noqa: E402
from nipgboard_plugin.dataset import ingest  # noqa: E402


def write_images(base, n, frac):
    """N Fashion-MNIST PNGs under base/images (kept between runs) and base/labels.csv (8%, stratified)."""
    from PIL import Image

    images, labels = load_fashion(n)
    img_dir = base / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rels = [f"{i:06d}.png" for i in range(len(images))]
    for rel, img in zip(rels, images):
        if not (img_dir / rel).is_file():
            Image.fromarray(img).save(img_dir / rel)
    roles = split(labels, seed=0, frac=frac)
    with open(base / "labels.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows((rel, lab) for rel, lab, role in zip(rels, labels, roles) if role != "pool")
    return img_dir, base / "labels.csv"


def fresh_run(run_dir, img_dir, labels):
    shutil.rmtree(run_dir, ignore_errors=True)
    ingest(run_dir, img_dir, labels_csv=labels)
    return run_dir


def steady(samples):
    """images/s between the third sample and the last of (seconds, done) pairs; None if too few."""
    if len(samples) < 4:
        return None
    (t1, d1), (t2, d2) = samples[2], samples[-1]
    return (d2 - d1) / (t2 - t1) if t2 > t1 else None


def cli_embed(run_dir, network, batch_size):
    secs, _single, _tree, out = run_measured(
        nipgboard_cmd("embed", run_dir, "--network", network, "--batch-size", batch_size, "--json"), cwd=REPO)
    r = json.loads(out.stdout)
    return {"images_s": r["extracted"] / r["seconds"], "seconds": r["seconds"], "wall": secs}


class JobWatcher(threading.Thread):
    """Polls the run's jobs through the server: when each stage of the pipeline began, the embed's progress."""

    def __init__(self, tb, run):
        super().__init__(daemon=True)
        self.tb, self.run_name = tb, run
        self.stages = {}          # stage name -> first seen (monotonic)
        self.embed = []           # (monotonic, done) while extracting
        self.jobs = {}            # id -> last row
        self.warm = []            # (monotonic, worker status)
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                answer = self.tb.get_json("jobs", run=self.run_name, limit=10)
            except Exception:  # noqa: BLE001 - the server is starting or stopping
                time.sleep(0.5)
                continue
            now = time.monotonic()
            self.warm.append((now, answer.get("worker")))
            for j in answer["jobs"]:
                self.jobs[j["id"]] = dict(j, seen=now)
                if j["state"] == "running" and j.get("stage"):
                    key = f"{j['kind']}: {j['stage'].split(':')[0]}" if j["kind"] == "pipeline" else j["kind"]
                    self.stages.setdefault(key, now)
                    if j["kind"] == "pipeline" and "extracting" in j["stage"] and j.get("done"):
                        self.embed.append((now, j["done"]))
            time.sleep(0.5)


def panel(tb_logdir, run, network, browser, warmup, timeout):
    home = paths.home()
    env = {"NIPGBOARD_WARMUP": warmup}
    with TensorBoardServer(tb_logdir, home, env=env) as tb:
        watch = JobWatcher(tb, run)
        watch.start()
        t0 = time.monotonic()
        out = {}
        if browser:
            proc = subprocess.run(["node", str(REPO / "bench" / "panel_path.mjs")], capture_output=True, text=True,
                                  env=dict(os.environ, TB_URL=f"http://127.0.0.1:{tb.port}", NETWORK=network,
                                           TIMEOUT_S=str(timeout)), timeout=timeout + 120)
            if proc.returncode:
                raise SystemExit(f"the browser run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
            out["browser"] = json.loads(proc.stdout.strip().splitlines()[-1])
            job = max((j for j in watch.jobs.values() if j["kind"] == "pipeline"), key=lambda j: j["id"])
            job = tb.get_json("job", run=run, id=job["id"])
        else:
            job = tb.start_job(run, "pipeline", network=network)
            job = tb.wait_job(run, job["id"], timeout=timeout)
        out["end"] = time.monotonic()
        watch.stop.set()
        watch.join()
        out.update(watch=watch, job=job, t0=t0)
        return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--labelled", type=float, default=0.08)
    ap.add_argument("--no-browser", dest="browser", action="store_false")
    ap.add_argument("--warmup", default="1", help="NIPGBOARD_WARMUP of the server (1: as users run it)")
    ap.add_argument("--engine-images", type=int, default=640, help="images per bare-engine measurement")
    ap.add_argument("--timeout", type=int, default=3600)
    ap.add_argument("--work", default=str(REPO / "bench" / "out"))
    ap.add_argument("--click-only", action="store_true", help="no CLI embed to compare with")
    args = ap.parse_args()

    base = Path(args.work) / f"panel-{args.n}"
    img_dir, labels = write_images(base, args.n, args.labelled)
    backbone = backbones.get(args.network)
    print(f"{args.network}, batch {args.batch_size}, {args.n} Fashion-MNIST PNGs, {args.labelled:.0%} labelled, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    engine = [bare_engine_rate(backbone, args.batch_size, args.engine_images)[0]]
    cli = None
    if not args.click_only:
        cli = cli_embed(fresh_run(base / "cli-run", img_dir, labels), args.network, args.batch_size)
        engine.append(bare_engine_rate(backbone, args.batch_size, args.engine_images)[0])
    tb_logdir = base / "tb"
    shutil.rmtree(tb_logdir, ignore_errors=True)
    fresh_run(tb_logdir / "fashion", img_dir, labels)
    p = panel(tb_logdir, "fashion", args.network, args.browser, args.warmup, args.timeout)
    engine.append(bare_engine_rate(backbone, args.batch_size, args.engine_images)[0])

    bare = float(np.mean(engine))
    job, watch = p["job"], p["watch"]
    if job["state"] != "done":
        raise SystemExit(f"the pipeline ended {job['state']}: {job.get('error')}")
    emb = job["result"]["steps"]["embed"]
    # a pipeline that opens the view early fits and places it during its extraction: not extraction time
    worker_rate = emb["extracted"] / (emb["seconds"] - emb.get("seconds_placing", 0))
    worker_steady = steady(watch.embed)
    print(f"  bare engine:       {bare:7.1f} img/s (runs: {', '.join(f'{e:.1f}' for e in engine)})")
    if cli:
        print(f"  CLI embed:         {cli['images_s']:7.1f} img/s ({cli['images_s'] / bare:.0%} of the engine; "
              f"{cli['seconds']:.1f} s)")
    st = f", steady {worker_steady:.1f} img/s" if worker_steady else ""
    of_cli = f"{worker_rate / cli['images_s']:.0%} of the CLI, " if cli else ""
    print(f"  worker's embed:    {worker_rate:7.1f} img/s ({of_cli}{worker_rate / bare:.0%} of the engine; "
          f"{emb['seconds']:.1f} s{st})")
    marks = sorted(watch.stages.items(), key=lambda kv: kv[1])
    ends = [t for _, t in marks[1:]] + [p["end"]]
    print("  stages (from the job's row, polled every 0.5 s):")
    for (name, t), end in zip(marks, ends):
        print(f"    {name:40s} {end - t:7.1f} s")
    if "browser" in p:
        b = p["browser"]
        if b.get("first_picture_ms") is not None:
            print(f"  first picture in Chromium {b['first_picture_ms'] / 1000:.1f} s after the click "
                  f"({b['first_picture_points']} of {b['points']} images placed)")
        print(f"  in Chromium, from the click: pipeline done {b['card_done_ms'] / 1000:.1f} s, points "
              f"{b['points_ms'] / 1000:.1f} s, thumbnails {b['thumbnails_ms'] / 1000:.1f} s "
              f"({b['thumbnails_ms'] / 1000 - b['points_ms'] / 1000:.1f} s after the points)")
    embed_t = [t for t, _ in watch.embed]
    if embed_t:  # UMAP's background compile while the worker extracted: waiting or paused, never compiling
        during = [(w.get("worker") or {}).get("warm_up") for t, w in watch.warm
                  if w and embed_t[0] <= t <= embed_t[-1]]
        print("  worker's UMAP compile during the extraction: "
              + ", ".join(f"{s} {during.count(s)}x" for s in sorted(set(map(str, during)))))
    warm = [w for _, w in watch.warm if w]
    if warm:
        print(f"  worker at the end: {warm[-1].get('worker')}")
    if "browser" in p and p["browser"].get("first_picture_ms") is not None:
        first, done = p["browser"]["first_picture_ms"] / 1000, p["browser"]["card_done_ms"] / 1000
        print(f"goal first picture < 2 min after the click: {first:.0f} s -> {'met' if first < 120 else 'MISSED'}")
        print(f"goal clusters and predictions < 12 min after the click: {done / 60:.1f} min -> "
              f"{'met' if done < 720 else 'MISSED'}")
    if cli:
        print(f"goal worker >= 95% of the CLI: {worker_rate / cli['images_s']:.0%} -> "
              f"{'met' if worker_rate >= 0.95 * cli['images_s'] else 'MISSED'}")
    rates = [worker_rate] + ([cli["images_s"]] if cli else [])
    print(f"goal embed >= 85% of the engine: worker {worker_rate / bare:.0%}"
          + (f", CLI {cli['images_s'] / bare:.0%}" if cli else "")
          + f" -> {'met' if min(rates) >= 0.85 * bare else 'MISSED'}")


if __name__ == "__main__":
    main()
