"""Real labelled image sets for the pipeline tests, ingested and embedded with both offline networks.

* ``faces``: skimage's ``lfw_subset`` (100 faces, 100 non-faces, 25x25 greyscale, written as PNG);
  60 labelled (30 per class) -> 48 train / 12 test, 140 unlabelled. A binary task like the paper's.
* ``digits``: scikit-learn's handwritten digits 0, 1, 4, 7 (8x8, upscaled to 32x32 PNG), 60 per class;
  a third labelled. A multi-class task.

Both are built once per test session (about 10 s each) and copied when a test changes them.
"""
import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

NETWORKS = ("efficientnet_lite0", "mobilenet_v2")
_BUILT = {}  # one build per session even though every test module imports the fixtures


def _build(root, images, labels, labelled_mask, networks=NETWORKS):
    from nipgboard_plugin.dataset import ingest
    from nipgboard_plugin.features import embed

    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rows = []
    truth = {}
    for i, (img, lab) in enumerate(zip(images, labels)):
        rel = f"img_{i:04d}.png"
        Image.fromarray(img).save(img_dir / rel)
        truth[rel] = lab
        if labelled_mask[i]:
            rows.append((rel, lab))
    csv_path = root / "labels.csv"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    logdir = root / "logdir"
    ingest(logdir, img_dir, labels_csv=csv_path, test_fraction=0.2, seed=0)
    for net in networks:
        embed(logdir, net)
    return {"logdir": logdir, "images": img_dir, "truth": truth, "networks": networks}


@pytest.fixture(scope="session")
def faces(tmp_path_factory):
    if "faces" not in _BUILT:
        _BUILT["faces"] = _faces(tmp_path_factory)
    return _BUILT["faces"]


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    if "digits" not in _BUILT:
        _BUILT["digits"] = _digits(tmp_path_factory)
    return _BUILT["digits"]


def _faces(tmp_path_factory, **build_options):
    """lfw_subset's 100 faces and 100 non-faces, 30 of each labelled."""
    from skimage.data import lfw_subset

    X = (lfw_subset() * 255).round().astype(np.uint8)
    labels = ["face"] * 100 + ["nonface"] * 100
    rng = np.random.default_rng(0)
    mask = np.zeros(200, bool)
    mask[rng.choice(100, 30, replace=False)] = True
    mask[100 + rng.choice(100, 30, replace=False)] = True
    return _build(tmp_path_factory.mktemp("faces"), X, labels, mask, **build_options)


def _digits(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.flatnonzero(np.isin(d.target, [0, 1, 4, 7]))
    rng = np.random.default_rng(0)
    chosen = np.concatenate([rng.choice(keep[d.target[keep] == c], 60, replace=False) for c in (0, 1, 4, 7)])
    imgs = [np.array(Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).resize((32, 32), Image.BICUBIC))
            for i in chosen]
    labels = [f"digit{d.target[i]}" for i in chosen]
    mask = np.zeros(len(chosen), bool)
    mask[rng.permutation(len(chosen))[: len(chosen) // 3]] = True
    return _build(tmp_path_factory.mktemp("digits"), imgs, labels, mask)


def copy_dataset(ds, dest):
    """A private copy of a built dataset (its logdir refers to the same images folder)."""
    dest = Path(dest) / "logdir"
    shutil.copytree(ds["logdir"], dest)
    return dict(ds, logdir=dest)
