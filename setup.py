"""NIPGBoard: a TensorBoard plugin for labelling large image sets with pretrained networks.

Building a wheel or an sdist also builds the panel (frontend/ bundled by esbuild into
nipgboard_plugin/static/index.js) when that bundle is missing or older than its sources: ``npm ci``
(skipped when frontend/node_modules already matches package-lock.json), then ``npm run build``. This
needs Node.js 18+ and npm. NIPGBOARD_SKIP_FRONTEND=1 builds without them: the package then holds the
bundle only if one is already there, else just the page saying how to build it (static/minimal/).
Editable installs (``pip install -e .``) never run npm: scripts/setup.sh builds the panel in place.
"""
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
FRONTEND = ROOT / "frontend"
BUNDLE = ROOT / "nipgboard_plugin" / "static" / "index.js"
SKIP_ENV = "NIPGBOARD_SKIP_FRONTEND"
INSTALL_HINT = ("install Node.js 18+ and npm (Debian/Ubuntu: apt install nodejs npm; others: https://nodejs.org), "
                f"or set {SKIP_ENV}=1 to build a package without the panel (TensorBoard then shows a page "
                "saying how to build it)")


def _say(msg):
    print(f"nipgboard: {msg}", flush=True)


def _frontend_sources():
    names = ["package.json", "package-lock.json", "tsconfig.json"]
    files = [FRONTEND / n for n in names if (FRONTEND / n).is_file()]
    return files + sorted(p for p in (FRONTEND / "src").rglob("*") if p.is_file())


def _bundle_outdated():
    """Why the bundle must be (re)built, or None when it is up to date (or there is nothing to build it from)."""
    if not (FRONTEND / "package.json").is_file():
        return None
    if not BUNDLE.is_file():
        return "it is missing"
    built = BUNDLE.stat().st_mtime
    newer = [p for p in _frontend_sources() if p.stat().st_mtime > built]
    return f"{newer[0].relative_to(ROOT)} is newer" if newer else None


def _run(cmd):
    _say("running " + " ".join(cmd) + " in frontend/")
    try:
        subprocess.run(cmd, cwd=FRONTEND, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"error: building the NIPGBoard panel failed: {' '.join(cmd)}: {exc}") from None


def build_frontend():
    """Build the panel's bundle if it is missing or older than its sources (see the module docstring)."""
    reason = _bundle_outdated()
    if reason is None:
        if BUNDLE.is_file():
            _say(f"the panel's bundle {BUNDLE.relative_to(ROOT)} is up to date")
        else:
            _say("no frontend/ sources and no bundle: the package holds only the page saying how to build the panel")
        return
    if os.environ.get(SKIP_ENV, "") not in ("", "0"):
        if BUNDLE.is_file():
            _say(f"{SKIP_ENV} is set: packaging the existing panel bundle as it is, though {reason}")
        else:
            _say(f"{SKIP_ENV} is set: the panel is not built; this package holds only the page saying how to "
                 "build it (static/minimal/)")
        return
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        raise SystemExit(f"error: building the NIPGBoard panel needs npm and Node.js, not found on PATH: {INSTALL_HINT}")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        major = 0
    if major < 18:
        raise SystemExit(f"error: building the NIPGBoard panel needs Node.js 18 or newer, found {version or 'unknown'}: "
                         f"{INSTALL_HINT}")
    _say(f"building the panel's bundle because {reason} (Node.js {version})")
    # Same stamp as scripts/build-frontend.sh: node_modules installed from exactly this package(-lock).json.
    lock = (FRONTEND / "package.json").read_bytes() + (FRONTEND / "package-lock.json").read_bytes()
    stamp = FRONTEND / "node_modules" / f".nipgboard-deps-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not stamp.is_file():
        _run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"])
        for old in (FRONTEND / "node_modules").glob(".nipgboard-deps-*"):
            old.unlink()
        stamp.touch()
    _run([npm, "run", "--silent", "build"])
    if not BUNDLE.is_file():
        raise SystemExit(f"error: npm run build did not write {BUNDLE.relative_to(ROOT)}")


class BuildPyWithPanel(build_py):
    """build_py that first builds the panel's bundle, so the wheel carries it as package data."""

    def run(self):
        if not self.editable_mode:
            build_frontend()
            self.__dict__.pop("data_files", None)   # list the package data again, bundle included
        super().run()


class SdistWithPanel(sdist):
    """sdist holding the built bundle (a wheel built from it needs no Node.js) and the sources to rebuild it."""

    def run(self):
        build_frontend()
        self.distribution.get_command_obj("build_py").__dict__.pop("data_files", None)
        super().run()


setup(
    name="nipgboard-plugin",
    version="0.1.0",
    description="Label tens of thousands of images with pretrained-network features, UMAP and graph clustering, inside TensorBoard.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["nipgboard_plugin", "nipgboard_plugin.*"]),
    package_data={"nipgboard_plugin": ["static/*", "static/**/*"]},
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "scikit-learn>=1.3",
        "threadpoolctl>=3.1",  # also scikit-learn's; used directly to pin BLAS threads
        "Pillow>=10.0",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "tensorboard>=2.16",
        "tqdm>=4.60",
        "umap-learn>=0.5.5",
        "python-louvain>=0.16",
        "networkx>=3.0",
    ],
    extras_require={
        # torch is pinned: an unpinned torch pulls gigabytes of CUDA packages.
        "torch": ["torch==2.13.0"],
        # The source paper's Keras applications on TensorFlow (exported to ONNX by tf2onnx).
        "keras": ["keras>=3.0", "tensorflow-cpu>=2.16", "tf2onnx>=1.16"],
        # Extraction over a Ray cluster (Ray Data + actors holding ONNX Runtime sessions).
        "ray": ["ray[data]>=2.40"],
        # Foundation models (DINOv2, CLIP, SigLIP image towers) through their own loaders.
        "transformers": ["transformers>=4.45", "torch==2.13.0"],
        "test": ["pytest>=7", "scikit-image>=0.22"],
    },
    cmdclass={"build_py": BuildPyWithPanel, "sdist": SdistWithPanel},
    entry_points={
        "tensorboard_plugins": ["nipgboard = nipgboard_plugin.plugin:NipgboardLoader"],
        "console_scripts": ["nipgboard = nipgboard_plugin.cli:main"],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)
