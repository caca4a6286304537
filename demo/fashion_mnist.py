"""Fashion-MNIST (Debian package `dataset-fashion-mnist`, MIT licence) written out as image files.

Images go into a small folder tree like a real collection ("batch_000/img_00000.png"),
and a labels CSV names about 8% of them, as in the paper: the rest is the unlabelled pool.
"""
import csv
import gzip
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def ensure_installed():
    """Install the Debian package if its files are missing (needs root and the Debian mirror)."""
    if (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        return
    if shutil.which("apt-get") is None:
        raise SystemExit(f"Fashion-MNIST not found in {FASHION_DIR}: install the Debian package dataset-fashion-mnist")
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"], check=True)


def _read_idx(path):
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load():
    """(images uint8 (70000, 28, 28), labels int (70000,)): the 60k train then the 10k test images."""
    ensure_installed()
    x = np.concatenate([_read_idx(FASHION_DIR / "train-images-idx3-ubyte.gz"),
                        _read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")])
    y = np.concatenate([_read_idx(FASHION_DIR / "train-labels-idx1-ubyte.gz"),
                        _read_idx(FASHION_DIR / "t10k-labels-idx1-ubyte.gz")])
    return x, y.astype(int)


def write(out_dir, n=None, labelled_fraction=0.08, seed=0, per_folder=1000, extra_flipped=0):
    """Write n images (all 70k when None) as PNG files and a labels CSV for a labelled share of them.

    ``extra_flipped`` adds that many mirrored copies (new, distinct images) to reach sizes above 70k.
    Returns (images_dir, labels_csv, truth) with truth {relative path: class name} for every image.
    Files already there are left as they are, so a second call is cheap.
    """
    x, y = load()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))[: n or len(x)]
    images, labels = x[order], y[order]
    if extra_flipped:
        pick = rng.choice(len(images), size=extra_flipped, replace=extra_flipped > len(images))
        images = np.concatenate([images, images[pick][:, :, ::-1]])
        labels = np.concatenate([labels, labels[pick]])
    out_dir = Path(out_dir)
    images_dir = out_dir / "images"
    truth = {}
    for i, (img, lab) in enumerate(zip(images, labels)):
        rel = f"batch_{i // per_folder:03d}/img_{i:06d}.png"
        truth[rel] = CLASSES[lab]
        path = images_dir / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(path, optimize=False, compress_level=1)
    labelled = rng.permutation(len(images))[: int(round(len(images) * labelled_fraction))]
    labels_csv = out_dir / "labels.csv"
    rels = list(truth)
    with open(labels_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for i in sorted(labelled):
            w.writerow([rels[i], truth[rels[i]]])
    truth_csv = out_dir / "truth.csv"
    with open(truth_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(truth.items())
    return images_dir, labels_csv, truth
