"""The panel end to end: real TensorBoard, real images, headless Chromium driven by Playwright.

The browser script is ``frontend/e2e/flow.mjs``; its header lists what it covers: option forms from
/kinds, a network's pipeline that finishes with the tab closed, the points coloured by prediction,
colour by cluster, hover, box selection, clusters, similar images, near duplicates, the review queue
with keyboard labelling and prediction updates, undo of a relabel and of a cluster label, a failed
job's error after a reload, a refused option, a reload while one job runs and a pipeline waits, Cancel,
the 2-D view and two networks' disagreements.
Screenshots land in ``test-artifacts/e2e/``. Needs what ``scripts/setup.sh`` installs: the frontend
bundle and its npm packages (``scripts/build-frontend.sh``) and Debian's ``chromium``.
"""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline_fixtures import _faces
from plugin_server import TensorBoardServer

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "frontend"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _missing():
    if shutil.which("node") is None:
        return "node is not installed"
    if not (FRONTEND / "node_modules" / "playwright-core").is_dir():
        return "frontend packages not installed: run scripts/build-frontend.sh"
    if not (ROOT / "nipgboard_plugin" / "static" / "index.js").is_file():
        return "frontend bundle missing: run scripts/build-frontend.sh"
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not found: apt-get install -y chromium"
    return None


def require_browser():
    """On a developer's machine without the browser tools the e2e tests are skipped; in CI, where
    scripts/setup.sh has installed them, a missing piece is a failure."""
    missing = _missing()
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)


@pytest.fixture(scope="module")
def faces_run(tmp_path_factory):
    """lfw_subset's faces and non-faces, 60 labelled, ingested but not embedded yet."""
    return _faces(tmp_path_factory, networks=())["logdir"]


def test_panel_end_to_end(faces_run, nipgboard_home, tmp_path):
    require_browser()
    artifacts = ROOT / "test-artifacts" / "e2e"
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    with TensorBoardServer(faces_run, nipgboard_home, log_path=tmp_path / "tensorboard.log") as tb:
        env = dict(os.environ, TB_URL=f"http://127.0.0.1:{tb.port}", NETWORK="efficientnet_lite0", NETWORK2="mobilenet_v2",
                   METHOD="pca", ARTIFACTS=str(artifacts), CHROMIUM=CHROMIUM)
        proc = subprocess.run(["node", "e2e/flow.mjs"], cwd=FRONTEND, env=env, capture_output=True, text=True,
                              timeout=1500)
    (artifacts / "flow.log").write_text(proc.stdout + proc.stderr)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:] + "\n--- tensorboard log ---\n" + \
        (tmp_path / "tensorboard.log").read_text()[-4000:]
    assert "PASS" in proc.stdout
    assert (artifacts / "03-points-predicted.png").is_file()


def test_panel_onboarding_adds_a_folder(nipgboard_home, tmp_path):
    require_browser()
    logdir = tmp_path / "empty"
    logdir.mkdir()
    artifacts = ROOT / "test-artifacts" / "e2e-onboarding"
    artifacts.mkdir(parents=True, exist_ok=True)
    from images import write_shapes

    images = tmp_path / "photos"
    write_shapes(images, per_class=4)
    with TensorBoardServer(logdir, nipgboard_home, log_path=tmp_path / "tensorboard.log", roots=[images]) as tb:
        env = dict(os.environ, TB_URL=f"http://127.0.0.1:{tb.port}", ARTIFACTS=str(artifacts), CHROMIUM=CHROMIUM,
                   IMAGES=str(images))
        proc = subprocess.run(["node", "e2e/onboarding.mjs"], cwd=FRONTEND, env=env, capture_output=True, text=True,
                              timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS" in proc.stdout
