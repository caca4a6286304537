"""Networks the user brings: an ONNX file or a Keras model file, registered by path.

The registry is a small JSON file (``paths.user_networks_file()``) holding, per network,
the path, the preprocessing and the feature dimension (read from the model once, at
registration, so listing never loads a model).
"""
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .. import paths
from .base import Availability, Backbone, BackboneInfo, NetworkUnavailable, Preprocess, file_fingerprint

REGISTRY_VERSION = 1
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


# --- the JSON registry ---

def load_entries() -> list:
    path = paths.user_networks_file()
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); fix or delete it") from None
    return list(data.get("networks", []))


def save_entries(entries: list) -> None:
    """Atomic: a crash mid-write leaves the previous registry intact."""
    path = paths.user_networks_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": REGISTRY_VERSION, "networks": entries}, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def backbone_from_entry(entry: dict) -> Backbone:
    family = entry["family"]
    if family == "onnx":
        return OnnxFileBackbone(entry)
    if family == "keras-file":
        return KerasFileBackbone(entry)
    raise ValueError(f"unknown network family {family!r} in {paths.user_networks_file()}")


def user_backbones() -> list:
    return [backbone_from_entry(e) for e in load_entries()]


def register(path, network_id, reserved_ids=(), input_size=None, scale=1 / 255,
             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), channel_order="RGB", layout=None,
             name=None) -> Backbone:
    """Probe the model file, then add (or replace) its entry in the registry."""
    if not ID_PATTERN.match(network_id or ""):
        raise ValueError(f"network id {network_id!r}: use lower-case letters, digits, '_', '-', '.'")
    if network_id in reserved_ids:
        raise ValueError(f"network id {network_id!r} is a built-in network; choose another id")
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if channel_order not in ("RGB", "BGR"):
        raise ValueError("channel_order must be 'RGB' or 'BGR'")
    if layout not in (None, "NCHW", "NHWC"):
        raise ValueError("layout must be 'NCHW' or 'NHWC'")
    family = "onnx" if path.suffix.lower() == ".onnx" else (
        "keras-file" if path.suffix.lower() in KERAS_SUFFIXES else None)
    if family is None:
        raise ValueError(f"{path.name}: expected a .onnx, .keras or .h5 model file")
    probe = probe_onnx if family == "onnx" else probe_keras
    size, layout, feature_dim = probe(path, _pair(input_size), layout, channel_order, scale, mean, std)
    entry = {
        "id": network_id, "family": family, "path": str(path), "name": name or path.stem,
        "input_size": list(size), "scale": float(scale), "mean": list(_triple(mean)),
        "std": list(_triple(std)), "channel_order": channel_order, "layout": layout,
        "feature_dim": int(feature_dim),
    }
    entries = [e for e in load_entries() if e["id"] != network_id] + [entry]
    save_entries(entries)
    return backbone_from_entry(entry)


def unregister(network_id: str) -> bool:
    entries = load_entries()
    kept = [e for e in entries if e["id"] != network_id]
    if len(kept) == len(entries):
        return False
    save_entries(kept)
    return True


def _pair(size):
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    h, w = size
    return (int(h), int(w))


def _triple(v):
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else (float(v),) * 3


def _preprocess_of(entry: dict) -> Preprocess:
    return Preprocess(size=tuple(entry["input_size"]), scale=entry["scale"],
                      mean=tuple(entry["mean"]), std=tuple(entry["std"]),
                      channel_order=entry["channel_order"], layout=entry["layout"])


# --- probing a model file ---

def probe_onnx(path, size, layout, channel_order, scale, mean, std):
    """(input size, layout, feature dim): from the graph, else by running one dummy image."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    initialisers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ValueError(f"{path.name}: expected one image input, found {len(inputs)}")
    in_dims = _dims(inputs[0])
    if layout is None:
        layout = "NHWC" if len(in_dims) == 4 and in_dims[3] == 3 and in_dims[1] != 3 else "NCHW"
    static_hw = tuple(in_dims[1:3] if layout == "NHWC" else in_dims[2:4]) if len(in_dims) == 4 else ()
    if size is None:
        size = static_hw if static_hw and all(static_hw) else (224, 224)
    elif static_hw and all(static_hw) and tuple(size) != static_hw:
        raise ValueError(f"{path.name} takes {static_hw[0]}x{static_hw[1]} images, not {size[0]}x{size[1]}")
    out_dims = _dims(graph.output[0])[1:]
    if out_dims and all(out_dims):
        return size, layout, int(np.prod(out_dims))
    # Symbolic output shape: ask ONNX Runtime.
    from .onnx_engine import OrtEngine

    pre = Preprocess(size=size, scale=scale, mean=_triple(mean), std=_triple(std),
                     channel_order=channel_order, layout=layout)
    dummy = pre.normalise(np.zeros((1, *size, 3), np.uint8))
    return size, layout, OrtEngine(path, threads=1).run(dummy).shape[1]


def _dims(value_info):
    """Shape of a graph input/output with 0 for symbolic dimensions."""
    return [d.dim_value if d.HasField("dim_value") else 0
            for d in value_info.type.tensor_type.shape.dim]


def probe_keras(path, size, layout, channel_order, scale, mean, std):
    from .keras_apps import features_before_predictions, import_keras

    keras = import_keras()
    model = features_before_predictions(keras, keras.models.load_model(str(path), compile=False))
    _, h, w, _ = model.input_shape
    if size is None:
        size = (h or 224, w or 224)
    elif h and w and tuple(size) != (h, w):
        raise ValueError(f"{path.name} takes {h}x{w} images, not {size[0]}x{size[1]}")
    return size, layout or "NHWC", int(np.prod(model.output_shape[1:]))


# --- the backbones ---

class UserFileBackbone(Backbone):
    family = ""

    def __init__(self, entry: dict):
        self.entry = entry
        self.path = Path(entry["path"])
        self.preprocess = _preprocess_of(entry)
        self.info = BackboneInfo(
            id=entry["id"], name=entry.get("name") or self.path.stem, family=self.family,
            input_size=tuple(entry["input_size"]), feature_dim=int(entry["feature_dim"]),
            weights=f"user file {self.path}", extra={"path": str(self.path)},
        )

    def availability(self) -> Availability:
        if not self.path.is_file():
            return Availability(False, f"file missing: {self.path}")
        return Availability(True)

    def weights_fingerprint(self) -> str:
        if not self.path.is_file():
            raise NetworkUnavailable(f"{self.id}: file missing: {self.path}")
        return file_fingerprint(self.path)

    def _check(self):
        a = self.availability()
        if not a.available:
            raise NetworkUnavailable(f"{self.id}: {a.message}")


class OnnxFileBackbone(UserFileBackbone):
    family = "onnx"

    def engine(self, threads: int = None, batch_size_hint: int = 32):
        self._check()
        from .onnx_engine import OrtEngine

        try:
            return OrtEngine(self.path, self.info.feature_dim, batch_size_hint, threads)
        except Exception as exc:
            raise NetworkUnavailable(f"{self.id}: ONNX Runtime cannot load {self.path}: {exc}") from exc


class KerasFileBackbone(UserFileBackbone):
    family = "keras-file"

    def availability(self) -> Availability:
        from .keras_apps import keras_problem

        a = super().availability()
        problems = [p for p in (a.message, keras_problem()) if p]
        return Availability(not problems, "; ".join(problems))

    def engine(self, kind: str = "auto", threads: int = None, batch_size_hint: int = 32):
        """ONNX Runtime on the file exported once (TensorFlow backend), else Keras ``predict``."""
        self._check()
        from .keras_export import keras_engine

        h, w = self.preprocess.size
        shape = (3, h, w) if self.preprocess.layout == "NCHW" else (h, w, 3)
        return keras_engine(self.id, self.feature_model, self.info.feature_dim, shape,
                            self.cache_key(), kind=kind, threads=threads,
                            batch_size_hint=batch_size_hint)

    def feature_model(self):
        from .keras_apps import features_before_predictions, import_keras

        keras = import_keras()
        try:
            model = keras.models.load_model(str(self.path), compile=False)
        except Exception as exc:
            raise NetworkUnavailable(f"{self.id}: Keras cannot load {self.path}: {exc}") from exc
        return features_before_predictions(keras, model)
