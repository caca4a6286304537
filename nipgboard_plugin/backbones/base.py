"""What every network in the registry provides.

A backbone turns a batch of preprocessed images into one feature vector per image
(the layer before the classifier's softmax). Preprocessing is described as data
(:class:`Preprocess`) rather than code, so that it runs in the decoding workers
with numpy only and so that it enters the feature cache key: changing the size or
normalisation of a network can never serve stale features.
"""
import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``size`` (height, width), then ``(pixel * scale - mean) / std`` per channel.

    ``channel_order`` 'BGR' serves Caffe-style networks (VGG, ResNet50 in Keras);
    ``layout`` is 'NCHW' for torch/ONNX exports and 'NHWC' for Keras.
    """

    size: tuple = (224, 224)
    scale: float = 1.0 / 255.0
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)
    channel_order: str = "RGB"
    layout: str = "NCHW"
    resample: str = "bilinear"

    def signature(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]

    def resize(self, img: Image.Image) -> np.ndarray:
        """RGB PIL image -> uint8 array (H, W, 3) at the network's input size."""
        h, w = self.size
        if img.size != (w, h):
            img = img.resize((w, h), RESAMPLE[self.resample])
        return np.asarray(img, dtype=np.uint8)

    def normalise(self, batch_u8: np.ndarray) -> np.ndarray:
        """uint8 batch (N, H, W, 3) -> float32 batch in the network's layout and scale."""
        x = batch_u8.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x *= np.float32(self.scale)
        x -= np.asarray(self.mean, dtype=np.float32)
        x /= np.asarray(self.std, dtype=np.float32)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x)


class NetworkUnavailable(Exception):
    """The network cannot run here; ``str(exc)`` tells the user what to do about it."""


@dataclass
class Availability:
    available: bool
    message: str = ""


@dataclass
class BackboneInfo:
    """What `nipgboard networks` lists."""

    id: str
    name: str
    family: str                # 'offline-torch', 'keras', 'onnx', 'keras-file'
    input_size: tuple          # (height, width)
    feature_dim: int
    weights: str               # where the weights come from, in words
    paper: bool = False        # one of the source paper's six networks
    extra: dict = field(default_factory=dict)


class Backbone:
    """Base class. Subclasses set ``info`` and ``preprocess`` and implement the methods below."""

    info: BackboneInfo
    preprocess: Preprocess

    @property
    def id(self) -> str:
        return self.info.id

    def availability(self) -> Availability:
        """Cheap check (no model loading): can :meth:`engine` work here, and if not, why."""
        raise NotImplementedError

    def weights_fingerprint(self) -> str:
        """A short hash that changes when the weights change (file hash, or a fixed tag)."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """Features are cached under this key: network, weights and preprocessing together."""
        return f"{self.id}:{self.weights_fingerprint()}:{self.preprocess.signature()}"

    def engine(self):
        """Load the fastest engine available; return an object with ``run(batch) -> (N, D) float32``.

        ``batch`` is the output of ``preprocess.normalise``. Raises :class:`NetworkUnavailable`.
        ONNX Runtime engines run on the device set by ``onnx_engine.use_device`` and report it
        (``device``, ``providers``); the device never enters :meth:`cache_key`.
        """
        raise NotImplementedError

    def describe(self) -> dict:
        a = self.availability()
        d = asdict(self.info)
        d["input_size"] = list(self.info.input_size)
        d.update(available=a.available, message=a.message)
        return d


_fingerprints: dict = {}
_fingerprints_lock = threading.Lock()


def file_fingerprint(path) -> str:
    """First 16 hex digits of the file's sha256, computed once per process and file version."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    with _fingerprints_lock:
        if key in _fingerprints:
            return _fingerprints[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    with _fingerprints_lock:
        _fingerprints[key] = digest.hexdigest()[:16]
    return _fingerprints[key]
