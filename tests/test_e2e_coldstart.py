"""The panel from a folder with no labels to labelled and exported: real TensorBoard, real images,
headless Chromium (``frontend/e2e/coldstart.mjs``, whose header lists what it covers: the pipeline
from zero labels, the Next queue labelled by keyboard with classes made by typing, rounds of
predictions, bulk labels after a look, the accuracy plot, the export).

Screenshots land in ``test-artifacts/e2e/cs-*.png``.
"""
import os
import subprocess
import time
from pathlib import Path

from images import shape_image
from plugin_server import TensorBoardServer
from test_e2e import CHROMIUM, FRONTEND, ROOT, require_browser

# Three classes a pretrained network tells apart at a glance: a shape and a colour each.
CLASSES = {"circle": (220, 60, 50), "square": (60, 110, 230), "triangle": (70, 190, 80)}
PER_CLASS = 30


def write_images(folder):
    """PER_CLASS images of each class in one flat folder; only the file names say the class."""
    folder.mkdir(parents=True)
    for ci, (shape, colour) in enumerate(CLASSES.items()):
        for i in range(PER_CLASS):
            jitter = tuple(max(0, min(255, c + (7 * i) % 31 - 15)) for c in colour)
            shape_image(shape, seed=1000 * ci + i, colour=jitter).save(folder / f"{shape}_{i:03d}.png")


def test_panel_from_no_labels_to_export(nipgboard_home, tmp_path):
    require_browser()
    from nipgboard_plugin.dataset import ingest

    images = tmp_path / "photos"
    write_images(images)
    logdir = tmp_path / "logdir"
    ingest(logdir / "shapes", images)
    artifacts = ROOT / "test-artifacts" / "e2e"
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("cs-*"):
        old.unlink()
    started = time.monotonic()
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tensorboard.log") as tb:
        env = dict(os.environ, TB_URL=f"http://127.0.0.1:{tb.port}", NETWORK="efficientnet_lite0",
                   ARTIFACTS=str(artifacts), CHROMIUM=CHROMIUM)
        proc = subprocess.run(["node", "e2e/coldstart.mjs"], cwd=FRONTEND, env=env, capture_output=True, text=True,
                              timeout=600)
    (artifacts / "coldstart.log").write_text(proc.stdout + proc.stderr)
    print(proc.stdout)
    print(f"coldstart e2e: {time.monotonic() - started:.0f} s")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + "\n--- tensorboard log ---\n" + \
        Path(tmp_path / "tensorboard.log").read_text()[-4000:]
    assert "PASS" in proc.stdout
    assert (artifacts / "cs-02-next-queue.png").is_file()


def test_pipeline_adapts_to_the_labels_there_are(tmp_path):
    """Without browser or network: from zero labels the pipeline's projection is made without labels and
    predict is skipped, with one note each; with one class still so; with two classes of train labels
    the steps run as asked."""
    from nipgboard_plugin import steps
    from nipgboard_plugin.dataset import ingest
    from nipgboard_plugin.steps.pipeline import _adapt, train_classes
    from nipgboard_plugin.store import Store

    images = tmp_path / "photos"
    write_images(images)
    run_dir = tmp_path / "logdir" / "shapes"
    ingest(run_dir, images)
    project = steps.get("project").clean({"network": "efficientnet_lite0"}, run_dir, face="job")
    predict = steps.get("predict").clean({"network": "efficientnet_lite0"}, run_dir, face="job")
    assert project["mode"] == "supervised" and project["method"] == "umap"

    notes = []
    assert train_classes(run_dir) == {}
    assert _adapt("project", project, {}, notes)["mode"] == "unsupervised"
    assert _adapt("predict", predict, {}, notes) is None
    assert notes == ["project: no labels yet, so the projection was made without labels (unsupervised)",
                     "predict: skipped, no labels yet: label images of at least two classes, then predict"]
    assert _adapt("cluster", {"network": "x"}, {}, notes) == {"network": "x"}
    zeroshot = dict(predict, method="zeroshot")
    assert _adapt("predict", zeroshot, {}, notes) == zeroshot  # class names, no labels needed
    pca = dict(project, method="pca")
    assert _adapt("project", pca, {}, []) == pca  # PCA never uses labels

    with Store(run_dir) as store:
        ids = [i for i, _sha, path in store.image_rows() if path.startswith(("circle_000", "circle_001"))]
        store.set_labels([(i, "circle") for i in ids])
    assert train_classes(run_dir) == {"circle": 2}
    notes = []
    assert _adapt("predict", predict, train_classes(run_dir), notes) is None
    assert "only one class labelled ('circle')" in notes[0]

    with Store(run_dir) as store:
        ids = [i for i, _sha, path in store.image_rows() if path.startswith("square_000")]
        store.set_labels([(i, "square") for i in ids])
    notes = []
    classes = train_classes(run_dir)
    assert classes == {"circle": 2, "square": 1}
    assert _adapt("project", project, classes, notes) == project
    assert _adapt("predict", predict, classes, notes) == predict and notes == []
