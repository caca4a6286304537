"""Feature extraction speed: the whole path against the bare engine, and Keras `predict` against ONNX Runtime.

    python bench/extraction.py [--network efficientnet_lite0] [--n 2000] [--batch-size 32]
                               [--kind fashion|photo] [--keras mobilenetv2[,vgg16,...]]
                               [--keras-only] [--keras-images 64]

- engine: ONNX Runtime on pre-decoded, pre-normalised tensors (no I/O), same batch size;
- whole path: `embed` on a fresh dataset: read, decode, resize, normalise, inference, cache write;
- Keras: for each application named (random weights: the speed is the same), `model.predict` and
  the ONNX Runtime engine its export runs in, on the same batch: images/s, their ratio and the
  largest feature difference (TensorFlow backend; `predict` alone on another backend).
  `--keras vgg16,densenet201 --keras-only` compares just those.
Goals: whole path at 85% or more of the engine's throughput; ONNX Runtime at 2x or more of Keras
`predict`, features equal within 1e-4.
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
from nipgboard_plugin.backbones.onnx_engine import usable_cpus
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


KERAS_NAMES = {"mobilenetv2": "keras_mobilenet_v2"}  # the rest: the backbone id is the name


def keras_comparison(app_name, batch_size, n):
    """Keras predict and ONNX Runtime on the same n images: a dict of figures, or a sentence why not."""
    import importlib.util

    if importlib.util.find_spec("tensorflow") is None:  # Keras 3 also runs on the installed torch
        os.environ.setdefault("KERAS_BACKEND", "torch")
    from nipgboard_plugin.backbones.keras_apps import KerasEngine, import_keras
    from nipgboard_plugin.backbones.keras_export import keras_engine

    try:
        keras = import_keras()
    except backbones.NetworkUnavailable as exc:
        return str(exc)

    b = backbones.get(KERAS_NAMES.get(app_name, app_name))
    h, w = b.preprocess.size
    x = b.preprocess.normalise(np.random.default_rng(0).integers(0, 256, (n, h, w, 3), dtype=np.uint8))
    model = b.feature_model(None)
    engines = {"predict": KerasEngine(model, b.info.feature_dim, batch_size)}
    t = time.perf_counter()
    if keras.backend.backend() == "tensorflow":
        engines["onnxruntime"] = keras_engine(b.id, lambda: model, b.info.feature_dim, (h, w, 3),
                                              batch_size_hint=batch_size)
    export_s = time.perf_counter() - t
    figures = {"backend": f"keras {keras.__version__} ({keras.backend.backend()})", "export_s": export_s}
    for engine in engines.values():
        engine.run(x[:batch_size])  # warm-up: graph tracing, ONNX Runtime's first allocations
    # Batch by batch, the engines in turn: load from other processes falls on both alike.
    out, seconds = {name: [] for name in engines}, dict.fromkeys(engines, 0.0)
    for i in range(0, n, batch_size):
        for name, engine in engines.items():
            t = time.perf_counter()
            out[name].append(engine.run(x[i:i + batch_size]))
            seconds[name] += time.perf_counter() - t
    out = {name: np.concatenate(parts) for name, parts in out.items()}
    figures.update({name: n / s for name, s in seconds.items()})
    if "onnxruntime" in out:
        figures["kind"] = engines["onnxruntime"].kind
        figures["ratio"] = figures["onnxruntime"] / figures["predict"]
        figures["max_diff"] = float(np.abs(out["onnxruntime"] - out["predict"]).max())
        figures["max_feature"] = float(np.abs(out["predict"]).max())
    return figures


def print_keras_comparison(app_name, batch_size, n):
    f = keras_comparison(app_name, batch_size, n)
    if isinstance(f, str):
        print(f"  Keras {app_name}: {f}")
        return
    print(f"  Keras {app_name}, {n} images, batch {batch_size} [{f['backend']}, {usable_cpus()} cores]:")
    print(f"    predict:      {f['predict']:7.2f} img/s")
    if "onnxruntime" in f:
        print(f"    {f['kind']}:  {f['onnxruntime']:7.2f} img/s  ({f['ratio']:.2f}x predict; export "
              f"{f['export_s']:.0f} s once; max abs feature difference {f['max_diff']:.2g} "
              f"on features up to {f['max_feature']:.2g})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--network", default="efficientnet_lite0")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--kind", choices=["fashion", "photo"], default="fashion")
    ap.add_argument("--keras", default="mobilenetv2",
                    help="Keras applications to compare, comma-separated ('' to skip)")
    ap.add_argument("--keras-only", action="store_true", help="only the Keras comparison")
    ap.add_argument("--keras-images", type=int, default=64, help="images in the Keras comparison")
    ap.add_argument("--work", default=str(REPO / "bench" / "out"))
    args = ap.parse_args()

    if args.keras_only:
        for app in filter(None, args.keras.split(",")):
            print_keras_comparison(app.strip().lower(), args.batch_size, args.keras_images)
        return
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

    for app in filter(None, args.keras.split(",")):
        print_keras_comparison(app.strip().lower(), args.batch_size, args.keras_images)


if __name__ == "__main__":
    main()
