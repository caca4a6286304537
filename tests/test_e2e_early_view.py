"""The first picture early, through the real TensorBoard in headless Chromium (``frontend/e2e/early_view.mjs``,
whose header lists what it covers): a pipeline started with ``early_view`` shows the images placed so far
as dots while the others are still embedded, says how many are still coming, and ends with every image
and its thumbnail.

The job is held mid-way without racing it: the labelled images' features are cached beforehand, so the
pipeline fits its first view on them without writing to the feature cache; its next write waits on
SQLite's write lock of that cache, which this test takes when the browser script asks (a file in HOLD)
and gives back when it says so. Screenshots land in ``test-artifacts/e2e/ev-*.png``.
"""
import contextlib
import os
import subprocess
import time
from pathlib import Path

from images import shape_image, write_shapes
from nipgboard_plugin import paths
from plugin_server import TensorBoardServer, writer_lock
from test_e2e import CHROMIUM, FRONTEND, ROOT, require_browser

NETWORK = "efficientnet_lite0"


def follow_hold(proc, hold, db, timeout):
    """Wait for the browser script, holding the feature cache's write lock from HOLD/take to HOLD/release."""
    deadline = time.monotonic() + timeout
    with contextlib.ExitStack() as held:
        taken = False
        while proc.poll() is None:
            if not taken and (hold / "take").exists():
                held.enter_context(writer_lock(db))
                (hold / "taken").touch()
                taken = True
            if taken and (hold / "release").exists():
                held.close()
            if time.monotonic() > deadline:
                proc.kill()
                break
            time.sleep(0.05)
    return proc.wait(timeout=30)


def test_panel_shows_the_first_picture_early(nipgboard_home, tmp_path):
    require_browser()
    from nipgboard_plugin.dataset import ingest

    images = tmp_path / "photos"
    write_shapes(images, per_class=8)                      # 24 labelled, by their class folders
    logdir = tmp_path / "logdir"
    run_dir = logdir / "shapes"
    ingest(run_dir, images, folder_labels_from_subdirs=True)
    artifacts = ROOT / "test-artifacts" / "e2e"
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob("ev-*"):
        old.unlink()
    hold = tmp_path / "hold"
    hold.mkdir()
    log = artifacts / "ev-early_view.log"
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tensorboard.log") as tb:
        tb.run_job("shapes", "embed", network=NETWORK)     # the labelled images' features, cached
        unlabelled = images / "unlabelled"
        unlabelled.mkdir()
        for i in range(36):
            shape_image(("circle", "square", "triangle")[i % 3], seed=5000 + i).save(unlabelled / f"u_{i:03d}.png")
        ingest(run_dir, images, folder_labels_from_subdirs=True)
        assert tb.get_json("summary", run="shapes")["images"] == 60
        env = dict(os.environ, TB_URL=f"http://127.0.0.1:{tb.port}", NETWORK=NETWORK, ARTIFACTS=str(artifacts),
                   CHROMIUM=CHROMIUM, HOLD=str(hold))
        with open(log, "w") as out:
            proc = subprocess.Popen(["node", "e2e/early_view.mjs"], cwd=FRONTEND, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, text=True)
            rc = follow_hold(proc, hold, paths.features_path(run_dir), timeout=600)
    text = log.read_text()
    print(text)
    assert rc == 0, text[-4000:] + "\n--- tensorboard log ---\n" + (tmp_path / "tensorboard.log").read_text()[-4000:]
    assert "PASS" in text
    assert (artifacts / "ev-01-preview.png").is_file() and (artifacts / "ev-02-final.png").is_file()
