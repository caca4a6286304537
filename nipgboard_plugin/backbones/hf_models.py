"""Foundation models through Hugging Face ``transformers``: DINOv2, CLIP and SigLIP image towers.

Weights are never downloaded by us. A model is found, in this order, in

* ``NIPGBOARD_HOME/models/<owner>/<name>/`` (:func:`..paths.models_dir`): a model folder with
  ``config.json`` and ``model.safetensors`` (what ``save_pretrained`` or
  ``hf download REPO --local-dir FOLDER`` writes), or
* the user's Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
  ``~/.cache/huggingface/hub``), looked up with ``huggingface_hub.try_to_load_from_cache``.

Features: DINOv2 gives the pooled CLS token of its last layer (after the final layer norm), CLIP
and SigLIP the image embedding that zero-shot classification compares with text embeddings
(CLIP's projected one). Preprocessing comes from the model folder's ``preprocessor_config.json``
(size, mean, std, resampling) as data, so it runs in the decoding workers with numpy only; images
are resized to the model's input size (no centre crop). The image tower is exported to ONNX once
and run by ONNX Runtime like the other torch networks (:func:`.onnx_engine.torch_engine`); its
cache key holds the weights' hash (the cache blob's sha256 name, or the file's hash).

Listing and :meth:`HFBackbone.availability` read a few small JSON files and import neither torch
nor transformers.
"""
import importlib.util
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from .base import Availability, Backbone, BackboneInfo, NetworkUnavailable, Preprocess, file_fingerprint

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
PIP = "pip install transformers torch==2.13.0"


@dataclass(frozen=True)
class HFModel:
    id: str
    name: str
    repo: str                 # Hugging Face repository id
    kind: str                 # 'dinov2', 'clip', 'siglip'
    size: int                 # input size when the processor config does not say
    feature_dim: int          # feature size when the model config is not here
    mean: tuple
    std: tuple
    text: bool                # has a text tower: zero-shot classification

    @property
    def local_name(self) -> str:
        return self.repo


HF_MODELS = [
    HFModel("dinov2_vits14", "DINOv2 ViT-S/14", "facebook/dinov2-small", "dinov2", 224, 384,
            IMAGENET_MEAN, IMAGENET_STD, text=False),
    HFModel("clip_vit_b32", "CLIP ViT-B/32 (image tower)", "openai/clip-vit-base-patch32", "clip", 224, 512,
            CLIP_MEAN, CLIP_STD, text=True),
    HFModel("siglip_b16", "SigLIP ViT-B/16 (image tower)", "google/siglip-base-patch16-224", "siglip", 224, 768,
            (0.5,) * 3, (0.5,) * 3, text=True),
]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    env = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def local_model_dir(repo: str) -> Path:
    return paths.models_dir() / repo


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def weights_file(folder: Path):
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def locate(repo: str):
    """(model folder, 'local folder' or 'Hugging Face cache'), or (None, None) when not here."""
    local = local_model_dir(repo)
    if (local / "config.json").is_file() and weights_file(local):
        return local, "local folder"
    if _installed("huggingface_hub"):
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo, "config.json", cache_dir=str(hub_cache_dir()))
        if isinstance(hit, str):
            folder = Path(hit).parent
            if weights_file(folder):
                return folder, "Hugging Face cache"
    return None, None


def missing_message(model: HFModel) -> str:
    return (f"the weights of {model.repo} are not on this machine. On a machine with internet run "
            f"`hf download {model.repo}` (older huggingface_hub: `huggingface-cli download {model.repo}`) "
            f"and copy the folder models--{model.repo.replace('/', '--')} of its cache into {hub_cache_dir()}, "
            f"or put the model folder (config.json, model.safetensors, preprocessor_config.json"
            f"{', tokenizer files' if model.text else ''}) at {local_model_dir(model.repo)}")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _side(spec):
    if isinstance(spec, int):
        return (spec, spec)
    if isinstance(spec, dict):
        if "height" in spec and "width" in spec:
            return (int(spec["height"]), int(spec["width"]))
        if "shortest_edge" in spec:
            return (int(spec["shortest_edge"]),) * 2
    return None


class HFBackbone(Backbone):
    """One model of :data:`HF_MODELS`; what it knows is re-read when its folder changes."""

    def __init__(self, model: HFModel):
        self.model = model
        self._memo = {}

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def has_text(self) -> bool:
        return self.model.text

    def folder(self):
        return locate(self.model.repo)[0]

    def _configs(self):
        folder, source = locate(self.model.repo)
        stamp = None
        if folder is not None:
            stamp = tuple((folder / n).stat().st_mtime_ns if (folder / n).exists() else 0
                          for n in ("config.json", "preprocessor_config.json"))
        key = (str(folder), stamp)
        if self._memo.get("key") != key:
            cfg = _read_json(folder / "config.json") if folder else {}
            proc = _read_json(folder / "preprocessor_config.json") if folder else {}
            self._memo = {"key": key, "folder": folder, "source": source, "config": cfg, "proc": proc,
                          "preprocess": self._preprocess(cfg, proc)}
        return self._memo

    def _preprocess(self, cfg, proc) -> Preprocess:
        m = self.model
        size = None
        if proc.get("do_center_crop", m.kind != "siglip") and proc.get("crop_size") is not None:
            size = _side(proc["crop_size"])
        if size is None and proc.get("size") is not None:
            size = _side(proc["size"])
        if size is None and m.kind != "dinov2":  # DINOv2's config holds its training size (518)
            size = _side(cfg.get("vision_config", {}).get("image_size"))
        size = size or (m.size, m.size)
        return Preprocess(size=size, scale=float(proc.get("rescale_factor", 1 / 255)),
                          mean=tuple(float(v) for v in proc.get("image_mean", m.mean)),
                          std=tuple(float(v) for v in proc.get("image_std", m.std)),
                          resample=PIL_RESAMPLE.get(proc.get("resample", 3), "bicubic"))

    @property
    def preprocess(self) -> Preprocess:
        return self._configs()["preprocess"]

    @property
    def info(self) -> BackboneInfo:
        c = self._configs()
        m, cfg = self.model, c["config"]
        if m.kind == "dinov2":
            dim = cfg.get("hidden_size")
        elif m.kind == "clip":
            dim = cfg.get("projection_dim")
        else:
            dim = cfg.get("vision_config", {}).get("hidden_size")
        where = f", in the {c['source']} {c['folder']}" if c["folder"] else ""
        return BackboneInfo(
            id=m.id, name=m.name, family="transformers", input_size=tuple(c["preprocess"].size),
            feature_dim=int(dim or m.feature_dim), weights=f"Hugging Face {m.repo}{where}",
            extra={"repo": m.repo, "location": str(c["folder"]) if c["folder"] else None,
                   "zero_shot": m.text})

    def availability(self) -> Availability:
        problems = [f"needs {mod}: {PIP}" for mod in ("torch", "transformers") if not _installed(mod)]
        if self._configs()["folder"] is None:
            problems.append(missing_message(self.model))
        return Availability(not problems, "; ".join(problems))

    def _require(self) -> Path:
        a = self.availability()
        if not a.available:
            raise NetworkUnavailable(f"{self.id}: {a.message}")
        return self._configs()["folder"]

    def weights_fingerprint(self) -> str:
        folder = self._require()
        path = weights_file(folder)
        real = Path(os.path.realpath(path))
        if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
            return real.name[:16]  # the hub cache names a weights blob by its sha256
        return file_fingerprint(path)

    # -- torch ------------------------------------------------------------------------------------------
    def load_model(self):
        """The whole transformers model (eval mode, eager attention), from the local folder only."""
        folder = self._require()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import transformers

        transformers.logging.disable_progress_bar()  # per-tensor loading bars are noise here
        cls = {"dinov2": "Dinov2Model", "clip": "CLIPModel", "siglip": "SiglipModel"}[self.model.kind]
        try:
            model = getattr(transformers, cls).from_pretrained(str(folder), local_files_only=True,
                                                               attn_implementation="eager")
        except (OSError, ValueError) as exc:
            raise NetworkUnavailable(f"{self.id}: could not load {self.model.repo} from {folder} ({exc}); "
                                     f"replace the folder: {missing_message(self.model)}") from exc
        return model.float().eval()

    def feature_module(self, model=None):
        """images (N, 3, H, W) -> (N, D) features, as an ``nn.Module`` ready for ONNX export."""
        from torch import nn

        model = model if model is not None else self.load_model()
        kind, size = self.model.kind, self.preprocess.size

        class Features(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x):
                if kind == "dinov2":
                    return self.model(pixel_values=x).pooler_output
                out = self.model.vision_model(pixel_values=x).pooler_output
                return self.model.visual_projection(out) if kind == "clip" else out

        if kind == "dinov2":
            _bake_positions(model, size)
        return Features().eval()

    def engine(self, kind: str = "auto", threads: int = None, batch_size_hint: int = 32):
        """ONNX Runtime on a cached export; eager torch if that fails or ``kind='torch'``."""
        self._require()
        from .onnx_engine import torch_engine

        return torch_engine(self, self.feature_module, kind=kind, threads=threads,
                            batch_size_hint=batch_size_hint)

    def text_features(self, texts, model=None):
        """(L2-normalised text embeddings (n, D), logit scale, logit bias) of ``texts``, in torch."""
        if not self.model.text:
            raise NetworkUnavailable(f"{self.id} has no text tower")
        import torch

        model = model if model is not None else self.load_model()
        tok = self.tokenizer()
        pad = {"padding": "max_length", "max_length": 64} if self.model.kind == "siglip" else {"padding": True}
        enc = tok(list(texts), truncation=True, return_tensors="pt", **pad)
        with torch.inference_mode():
            args = {"input_ids": enc["input_ids"]}
            if self.model.kind == "clip":
                args["attention_mask"] = enc["attention_mask"]
            out = model.text_model(**args).pooler_output
            if self.model.kind == "clip":
                out = model.text_projection(out)
            out = torch.nn.functional.normalize(out.float(), dim=-1)
            scale = float(model.logit_scale.exp())
            bias = float(model.logit_bias) if hasattr(model, "logit_bias") else 0.0
        return out.numpy(), scale, bias

    def tokenizer(self):
        folder = self._require()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - missing files or a missing tokenizer package
            hint = " (SigLIP's tokenizer needs `pip install sentencepiece`)" if self.model.kind == "siglip" else ""
            raise NetworkUnavailable(f"{self.id}: cannot load the tokenizer of {self.model.repo} from {folder}: "
                                     f"{type(exc).__name__}: {exc}{hint}") from exc


def _bake_positions(model, size):
    """Store DINOv2's position embeddings resized to ``size`` once, so the graph has no resize in it."""
    import torch

    emb = model.embeddings
    h, w = size
    ph, pw = emb.patch_embeddings.patch_size
    n = (h // ph) * (w // pw)
    if emb.position_embeddings.shape[1] - 1 == n and h == w:
        return
    with torch.no_grad():
        dummy = torch.zeros(1, n + 1, emb.position_embeddings.shape[-1])
        pos = emb.interpolate_pos_encoding(dummy, h, w)
    emb.position_embeddings = torch.nn.Parameter(pos.clone(), requires_grad=False)
