"""The package as pip builds it for someone else: a wheel built from a clean clone of the committed tree
carries the panel's bundle, and a TensorBoard started from a fresh environment that holds only that
wheel serves the full panel, not the "build the panel" page.

Offline: the wheel is built with this environment's setuptools (``--no-build-isolation``) and the clone
borrows this checkout's frontend/node_modules (hard links), so ``npm ci`` has nothing to fetch; the
fresh environment reaches the dependencies through a ``.pth`` file instead of downloading them.
"""
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from plugin_server import TensorBoardServer

REPO = Path(__file__).resolve().parents[1]
BUNDLE = "nipgboard_plugin/static/index.js"
MINIMAL = "nipgboard_plugin/static/minimal/index.js"
SKIP_ENV = "NIPGBOARD_SKIP_FRONTEND"


def run(cmd, cwd=None, env=None, check=True, timeout=300):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited with {res.returncode}:\n{res.stdout}\n{res.stderr}")
    return res


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", SKIP_ENV)}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


def pip_wheel(src, out, env, verbose=False):
    """``pip wheel`` of the source tree ``src`` into ``out`` with this environment's setuptools."""
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src]
    return run(cmd + (["-v"] if verbose else []), env=env, check=False)


@pytest.fixture(scope="module")
def make_clone(tmp_path_factory):
    """A clone of this checkout's HEAD (committed files only) in a new temp folder."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout of NIPGBoard")
    head = run(["git", "rev-parse", "HEAD"], cwd=REPO).stdout.strip()

    def make(node_modules=False):
        dest = tmp_path_factory.mktemp("clone") / "nipgboard"
        run(["git", "clone", "--quiet", "--no-checkout", REPO, dest])
        run(["git", "-c", "advice.detachedHead=false", "checkout", "--quiet", head], cwd=dest)
        assert not (dest / BUNDLE).exists(), "the bundle is committed; it must be built"
        modules = REPO / "frontend" / "node_modules"
        if node_modules and modules.is_dir():
            # Hard links (no copy, no download); npm ci, if the lock differs, removes them before installing.
            if run(["cp", "-al", modules, dest / "frontend" / "node_modules"], check=False).returncode != 0:
                shutil.copytree(modules, dest / "frontend" / "node_modules", symlinks=True, dirs_exist_ok=True)
        return dest
    return make


def test_without_npm_the_build_says_what_to_install_or_opts_out(make_clone, tmp_path):
    clone = make_clone()
    bindir = Path(sys.executable).parent          # python and pip, but no node or npm
    assert shutil.which("npm", path=str(bindir)) is None
    env = clean_env(PATH=str(bindir))

    res = pip_wheel(clone, tmp_path / "refused", env)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "needs npm and Node.js" in out and "apt install nodejs npm" in out and f"{SKIP_ENV}=1" in out, out
    assert not list((tmp_path / "refused").glob("*.whl"))

    res = pip_wheel(clone, tmp_path / "minimal", dict(env, **{SKIP_ENV: "1"}), verbose=True)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert f"{SKIP_ENV} is set: the panel is not built" in out, out
    (wheel,) = (tmp_path / "minimal").glob("nipgboard_plugin-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert MINIMAL in names and BUNDLE not in names, names


@pytest.fixture(scope="module")
def built(make_clone, tmp_path_factory):
    """(clone, wheel): the wheel pip builds from a clean clone, panel included."""
    clone = make_clone(node_modules=True)
    out = tmp_path_factory.mktemp("wheel")
    res = pip_wheel(clone, out, clean_env(), verbose=True)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr
    log = res.stdout + res.stderr
    assert "building the panel's bundle because it is missing" in log, log[-6000:]
    (wheel,) = out.glob("nipgboard_plugin-*.whl")
    return clone, wheel


def test_wheel_from_a_clean_clone_holds_the_built_panel(built):
    clone, wheel = built
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert BUNDLE in names and MINIMAL in names, names
        bundle = zf.read(BUNDLE)
        assert not any("node_modules" in n or n.startswith("frontend/") for n in names)
    assert bundle == (clone / BUNDLE).read_bytes()
    assert len(bundle) > 100_000 and b"not built in this installation" not in bundle
    assert b"render" in bundle


def test_sdist_holds_the_panel_and_what_rebuilds_it(built, tmp_path):
    clone, _wheel = built
    res = run([sys.executable, "-c", "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))",
               tmp_path], cwd=clone, env=clean_env())
    assert "bundle nipgboard_plugin/static/index.js is up to date" in res.stdout, res.stdout
    with tarfile.open(tmp_path / res.stdout.strip().splitlines()[-1]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for needed in (BUNDLE, MINIMAL, "frontend/package.json", "frontend/package-lock.json", "frontend/tsconfig.json",
                   "frontend/src/index.ts", "setup.py", "pyproject.toml"):
        assert needed in names, needed
    assert not any("node_modules" in n for n in names)


def test_tensorboard_from_a_fresh_environment_serves_the_wheels_panel(built, tmp_path):
    _clone, wheel = built
    fresh = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", fresh])
    python = fresh / "bin" / "python"
    purelib = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip()
    # The dependencies (and pip) from this environment; its own nipgboard_plugin is not reachable
    # (lines of a .pth only extend sys.path, and the editable install's finder is itself a .pth hook).
    Path(purelib, "test_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = clean_env()
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "--no-warn-script-location",
         "-q", wheel], env=env, cwd=tmp_path)

    where = run([python, "-c", "import importlib.metadata as m, nipgboard_plugin\n"
                 "print(nipgboard_plugin.__file__)\n"
                 "(ep,) = [e for e in m.entry_points(group='tensorboard_plugins') if e.name == 'nipgboard']\n"
                 "print(ep.dist.locate_file(''))"], env=env, cwd=tmp_path).stdout.split()
    assert all(Path(p).resolve().is_relative_to(Path(purelib).resolve()) for p in where), where
    installed_bundle = Path(purelib, BUNDLE).read_bytes()
    assert installed_bundle == zipfile.ZipFile(wheel).read(BUNDLE)

    logdir = tmp_path / "logs"
    logdir.mkdir()
    with TensorBoardServer(logdir, tmp_path / "home", python=python, cwd=tmp_path,
                           env={"PYTHONPATH": ""}) as tb:
        status, headers, body = tb.get("index.js")
    assert status == 200, body[:500]
    assert "javascript" in headers.get("content-type", ""), headers
    assert body == installed_bundle, "the server did not serve the wheel's bundle"
    assert b"not built in this installation" not in body
