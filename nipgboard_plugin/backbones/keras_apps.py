"""Keras applications: the source paper's six networks and a few more.

Weights are Keras's own ImageNet files (include_top variants), looked up where
``keras.applications`` caches them: ``$KERAS_HOME/models/`` (default ``~/.keras/models/``).
They are never downloaded by us; with internet access Keras fetches them on first use.
Features are the input of the layer named 'predictions' (the layer before softmax).
On the TensorFlow backend a network is exported once to ONNX and run by ONNX Runtime
(:mod:`.keras_export`); Keras ``predict`` runs where that fails.
"""
import importlib.util
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .base import (Availability, Backbone, BackboneInfo, NetworkUnavailable, Preprocess,
                   file_fingerprint)

# keras.applications.<x>.preprocess_input modes, as data (channels_last input).
CAFFE = Preprocess(size=(224, 224), scale=1.0, mean=(103.939, 116.779, 123.68),
                   channel_order="BGR", layout="NHWC")                    # x[..., ::-1] - mean
TF = Preprocess(size=(224, 224), scale=1 / 127.5, mean=(1.0,) * 3, layout="NHWC")   # x/127.5 - 1
TORCH = Preprocess(size=(224, 224), scale=1 / 255, mean=(0.485, 0.456, 0.406),
                   std=(0.229, 0.224, 0.225), layout="NHWC")
RAW = Preprocess(size=(224, 224), scale=1.0, layout="NHWC")  # EfficientNet rescales inside

BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
BACKEND_PIP = {"tensorflow": "pip install tensorflow-cpu", "jax": "pip install jax",
               "torch": "pip install torch==2.13.0"}
DEFAULT_BATCH = 32


@dataclass(frozen=True)
class KerasApp:
    id: str
    constructor: str          # keras.applications attribute
    size: int
    feature_dim: int
    mode: Preprocess
    weights_file: str         # file name keras.applications caches the include_top weights under
    weights_md5: str          # file_hash in Keras's source ('' where Keras has none)
    paper: bool = False

    @property
    def preprocess(self) -> Preprocess:
        return replace(self.mode, size=(self.size, self.size))


KERAS_APPS = [
    KerasApp("vgg16", "VGG16", 224, 4096, CAFFE,
             "vgg16_weights_tf_dim_ordering_tf_kernels.h5",
             "64373286793e3c8b2b4e3219cbf3544b", paper=True),
    KerasApp("vgg19", "VGG19", 224, 4096, CAFFE,
             "vgg19_weights_tf_dim_ordering_tf_kernels.h5",
             "cbe5617147190e668d6c5d5026f83318", paper=True),
    KerasApp("nasnetlarge", "NASNetLarge", 331, 4032, TF,
             "nasnet_large.h5", "11577c9a518f0070763c2b964a382f17", paper=True),
    KerasApp("xception", "Xception", 299, 2048, TF,
             "xception_weights_tf_dim_ordering_tf_kernels.h5",
             "0a58e3b7378bc2990ea3b43d5981f1f6", paper=True),
    KerasApp("inceptionresnetv2", "InceptionResNetV2", 299, 1536, TF,
             "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels.h5",
             "e693bd0210a403b3192acc6073ad2e96", paper=True),
    KerasApp("densenet201", "DenseNet201", 224, 1920, TORCH,
             "densenet201_weights_tf_dim_ordering_tf_kernels.h5",
             "1ceb130c1ea1b78c3bf6114dbdfd8807", paper=True),
    KerasApp("resnet50", "ResNet50", 224, 2048, CAFFE,
             "resnet50_weights_tf_dim_ordering_tf_kernels.h5",
             "2cb95161c43110f7111970584f804107"),
    KerasApp("keras_mobilenet_v2", "MobileNetV2", 224, 1280, TF,
             "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5", ""),
    KerasApp("efficientnetb0", "EfficientNetB0", 224, 1280, RAW,
             "efficientnetb0.h5", "902e53a9f72be733fc0bcb005b3ebbac"),
]


def keras_home() -> Path:
    """Where Keras keeps its config and downloads (mirrors keras.src.backend.config)."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"])
    home = Path.home()
    return (home if os.access(home, os.W_OK) else Path("/tmp")) / ".keras"


def keras_models_dir() -> Path:
    return keras_home() / "models"


def keras_backend() -> str:
    """The backend Keras will pick: $KERAS_BACKEND, else keras.json, else tensorflow."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    try:
        return json.loads((keras_home() / "keras.json").read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def keras_problem() -> str:
    """Why Keras cannot run here, or '' when it can (checked without importing it)."""
    if importlib.util.find_spec("keras") is None:
        return "needs Keras: pip install keras tensorflow-cpu"
    backend = keras_backend()
    module = BACKEND_MODULES.get(backend)
    if module is None:
        return f"Keras backend {backend!r} is not supported here: set KERAS_BACKEND to tensorflow, jax or torch"
    if importlib.util.find_spec(module) is None:
        return (f"Keras backend {backend!r} is not installed: {BACKEND_PIP[backend]} "
                "(or set KERAS_BACKEND to an installed one: tensorflow, jax or torch)")
    return ""


def import_keras():
    problem = keras_problem()
    if problem:
        raise NetworkUnavailable(problem)
    # TensorFlow's C++ start-up messages (CPU features, oneDNN) are noise for users; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def features_before_predictions(keras, model):
    """The model cut before its softmax layer, when it has one named 'predictions'."""
    try:
        head = model.get_layer("predictions")
    except ValueError:
        return model
    return keras.Model(model.inputs, head.input)


class KerasEngine:
    """``model.predict`` on whole batches: compiled graph, never eager calls in a loop."""

    kind = "keras"

    def __init__(self, model, feature_dim=None, batch_size_hint=DEFAULT_BATCH, engine_note=""):
        self.model = model
        self.feature_dim = feature_dim
        self.batch_size_hint = batch_size_hint
        self.exported = False
        self.engine_note = engine_note  # why ONNX Runtime is not running, when it fell back

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0 and self.feature_dim:
            return np.zeros((0, self.feature_dim), np.float32)
        out = self.model.predict(batch, batch_size=min(len(batch), self.batch_size_hint), verbose=0)
        return np.asarray(out, dtype=np.float32).reshape(len(batch), -1)


class KerasAppBackbone(Backbone):
    def __init__(self, app: KerasApp):
        self.app = app
        self.preprocess = app.preprocess
        self.info = BackboneInfo(
            id=app.id, name=app.constructor, family="keras",
            input_size=(app.size, app.size), feature_dim=app.feature_dim,
            weights=f"ImageNet, Keras file {app.weights_file}", paper=app.paper,
            extra={"weights_file": app.weights_file, "weights_md5": app.weights_md5},
        )

    def weights_path(self) -> Path:
        return keras_models_dir() / self.app.weights_file

    def _weights_problem(self) -> str:
        if self.weights_path().is_file():
            return ""
        md5 = f" (md5 {self.app.weights_md5})" if self.app.weights_md5 else ""
        return (f"weights not found: put {self.app.weights_file}{md5} into "
                f"{keras_models_dir()}/ (or run once with internet access)")

    def availability(self) -> Availability:
        problems = [p for p in (keras_problem(), self._weights_problem()) if p]
        return Availability(not problems, "; ".join(problems))

    def weights_fingerprint(self) -> str:
        # Keras's md5 names the official file without reading 500 MB on every listing.
        if self.app.weights_md5:
            return self.app.weights_md5[:16]
        path = self.weights_path()
        return file_fingerprint(path) if path.is_file() else "missing"

    def engine(self, weights="imagenet", kind: str = "auto", threads: int = None,
               batch_size_hint: int = DEFAULT_BATCH):
        """ONNX Runtime on the model exported once (cached by the weights file's hash), else ``predict``.

        ``weights``: 'imagenet' (the official file), a path of a weights file, or None (untrained,
        for tests and benchmarks: exported afresh each time, never cached). ``kind``: 'auto',
        'onnxruntime' (fail rather than fall back) or 'keras' (``predict`` only).
        """
        problems = [keras_problem()]
        if weights == "imagenet":
            problems.append(self._weights_problem())
            weights = str(self.weights_path())
        elif weights is not None and not Path(weights).is_file():
            problems.append(f"weights file not found: {weights}")
        problems = [p for p in problems if p]
        if problems:
            raise NetworkUnavailable(f"{self.id}: " + "; ".join(problems))
        from .keras_export import keras_engine

        # The file's own hash, not Keras's md5 of the official file: the engine must follow the file.
        key = None if weights is None else (
            f"{self.id}:{file_fingerprint(weights)}:{self.preprocess.signature()}")
        return keras_engine(self.id, lambda: self.feature_model(weights), self.app.feature_dim,
                            (self.app.size, self.app.size, 3), key, kind=kind, threads=threads,
                            batch_size_hint=batch_size_hint)

    def feature_model(self, weights):
        """The Keras application cut before its softmax, with ``weights`` (a path, or None)."""
        keras = import_keras()
        try:
            build = getattr(keras.applications, self.app.constructor)
            model = build(include_top=True, weights=weights)
        except Exception as exc:
            raise NetworkUnavailable(f"{self.id}: Keras could not build the model: {exc}") from exc
        return features_before_predictions(keras, model)
