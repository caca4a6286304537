"""Feature extraction speed: the whole path against the bare engine, and Keras `predict` for contrast.

    python bench/extraction.py [--network efficientnet_lite0] [--n 2000] [--batch-size 32]
                               [--kind fashion|photo] [--keras mobilenetv2]

- engine: ONNX Runtime on pre-decoded, pre-normalised tensors (no I/O), same batch size;
- whole path: `embed` on a fresh dataset: read, decode, resize, normalise, inference, cache write;
- Keras: `model.predict` of a Keras application (random weights: the speed is the same) when Keras
  is installed.
Goal: whole path at 85% or more of the engine's throughput.
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import REPO  # noqa: F401  (puts the repository on sys.path)
from PIL import Image

from demo import fashion_mnist
from nipgboard_plugin import backbones
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.features import embed


def write_photos(folder, n, size=640, seed=0):
    """n JPEG 'photographs' (smooth colour fields with shapes): decode costs like real camera images."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        path = folder / f"photo_{i:05d}.jpg"
        if path.exists():
            continue
        a, b, c = rng.random(3) * 6
        img = np.stack([np.sin(a * xx + b * yy), np.cos(b * xx - c * yy), np.sin(c * xx * yy + a)], -1)
        img = ((img + 1) * 127.5 + rng.normal(0, 8, img.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(path, quality=90)
    return folder


def bare_engine_rate(backbone, batch_size, n):
    engine = backbone.engine()
    h, w = backbone.preprocess.size
    batch = backbone.preprocess.normalise(
        np.random.default_rng(0).integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8))
    engine.run(batch)  # warm-up
    n_batches = max(1, n // batch_size)
    t = time.perf_counter()
    for _ in range(n_batches):
        engine.run(batch)
    return n_batches * batch_size / (time.perf_counter() - t), getattr(engine, "kind", "?")


def keras_predict_rate(app_name, batch_size, n):
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:  # Keras 3 also runs on the installed torch
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        return None, "Keras not installed (pip install keras, with tensorflow-cpu or KERAS_BACKEND=torch)"
    apps = {"mobilenetv2": ("MobileNetV2", 224), "densenet201": ("DenseNet201", 224), "vgg16": ("VGG16", 224),
            "efficientnetb0": ("EfficientNetB0", 224)}
    name, size = apps[app_name]
    model = getattr(keras.applications, name)(weights=None)
    x = np.random.default_rng(0).random((batch_size, size, size, 3), dtype=np.float32)
    model.predict(x, batch_size=batch_size, verbose=0)
    n_batches = max(1, n // batch_size)
    t = time.perf_counter()
    for _ in range(n_batches):
        model.predict(x, batch_size=batch_size, verbose=0)
    return n_batches * batch_size / (time.perf_counter() - t), f"keras {keras.__version__} ({keras.backend.backend()})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--kind", choices=["fashion", "photo"], default="fashion")
    ap.add_argument("--keras", default="mobilenetv2", help="Keras application for contrast ('' to skip)")
    ap.add_argument("--work", default=str(REPO / "bench" / "out"))
    args = ap.parse_args()

    work = Path(args.work)
    if args.kind == "fashion":
        images_dir, _, _ = fashion_mnist.write(work / f"fmnist-{args.n}", n=args.n)
    else:
        images_dir = write_photos(work / f"photos-{args.n}", args.n)
    backbone = backbones.get(args.network)
    print(f"{args.network}, batch {args.batch_size}, {args.n} {args.kind} images, {os.cpu_count()} cores")

    engine_rate, kind = bare_engine_rate(backbone, args.batch_size, args.n)
    print(f"  bare engine ({kind}), pre-decoded tensors: {engine_rate:7.1f} img/s")

    logdir = Path(tempfile.mkdtemp(prefix="nipgboard-bench-"))
    try:
        ingest(logdir, images_dir)
        steady = []
        t = time.perf_counter()
        r = embed(logdir, args.network, batch_size=args.batch_size,
                  progress=lambda p: steady.append((time.perf_counter(), p.done)))
        total = time.perf_counter() - t
        (t1, d1), (t2, d2) = steady[min(2, len(steady) - 2)], steady[-1]
        steady_rate = (d2 - d1) / (t2 - t1)
        print(f"  whole path (embed):                   {steady_rate:7.1f} img/s steady "
              f"({100 * steady_rate / engine_rate:.0f}% of the engine); "
              f"{r['extracted'] / total:.1f} img/s including start-up")
        t = time.perf_counter()
        embed(logdir, args.network)
        print(f"  embed again, unchanged:               {time.perf_counter() - t:7.2f} s")
    finally:
        shutil.rmtree(logdir, ignore_errors=True)

    if args.keras:
        rate, what = keras_predict_rate(args.keras, args.batch_size, min(args.n, 256))
        print(f"  Keras predict, {args.keras}: " + (f"{rate:7.1f} img/s [{what}]" if rate else what))


if __name__ == "__main__":
    main()
