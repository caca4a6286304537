"""Tiny randomly initialised transformers models saved like real downloads, for the foundation-model tests.

``make_models(root)`` writes a DINOv2 and a CLIP checkpoint (config, safetensors weights, processor
config, CLIP's tokenizer) with ``save_pretrained``; ``into_hub_cache`` lays a model folder out as the
Hugging Face hub cache does (blobs named by their sha256, a snapshot of symlinks, refs/main).
"""
import hashlib
import json
import os
import shutil
import string
from pathlib import Path

import pytest

DINO_REPO = "facebook/dinov2-small"
CLIP_REPO = "openai/clip-vit-base-patch32"
SIGLIP_REPO = "google/siglip-base-patch16-224"
CHARS = string.ascii_lowercase + string.digits + ".,'-!? "


def _processor(folder, size, mean, std, crop=True):
    cfg = {"do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
           "image_mean": list(mean), "image_std": list(std), "resample": 3, "rescale_factor": 1 / 255,
           "size": {"shortest_edge": size}}
    if crop:
        cfg.update(do_center_crop=True, crop_size={"height": size, "width": size})
    (Path(folder) / "preprocessor_config.json").write_text(json.dumps(cfg))


def make_models(root):
    """{'dino': folder, 'clip': folder, 'siglip': folder} of tiny random checkpoints under ``root``.

    SigLIP's own tokenizer needs sentencepiece; its folder holds the tiny CLIP tokenizer instead, which
    serves the plumbing alike."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import (CLIPConfig, CLIPModel, CLIPTokenizer, Dinov2Config, Dinov2Model, SiglipConfig,
                              SiglipModel)

    root = Path(root)
    torch.manual_seed(0)
    dino = root / "dino"
    # Trained at 56 px, used at 28 px: the position embeddings are resized, as DINOv2's 518 -> 224.
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                             image_size=56, patch_size=14)).eval().save_pretrained(dino)
    _processor(dino, 28, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in CHARS.strip():
            vocab.setdefault(c + suffix, len(vocab))
    tok = CLIPTokenizer(vocab=vocab, merges=[])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=16)
    clip = root / "clip"
    CLIPModel(cfg).eval().save_pretrained(clip)
    tok.save_pretrained(clip)
    _processor(clip, 32, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
    siglip = root / "siglip"
    SiglipModel(SiglipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=24, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=1, eos_token_id=1),
        vision_config=dict(hidden_size=24, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=16))).eval().save_pretrained(siglip)
    tok.save_pretrained(siglip)
    _processor(siglip, 32, (0.5,) * 3, (0.5,) * 3, crop=False)
    return {"dino": dino, "clip": clip, "siglip": siglip}


def into_hub_cache(folder, cache_dir, repo, commit="0123456789abcdef0123456789abcdef01234567"):
    """Copy a model folder into ``cache_dir`` as the hub lays out a download of ``repo``; the snapshot path."""
    base = Path(cache_dir) / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / commit
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    for f in Path(folder).iterdir():
        data = f.read_bytes()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    return snap


def into_models_dir(folder, home, repo):
    """Copy a model folder to where NIPGBoard looks for one put there by hand."""
    dest = Path(home) / "models" / repo
    shutil.copytree(folder, dest)
    return dest


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """A NIPGBOARD_HOME and a hub cache holding the tiny models: DINOv2 and SigLIP in the hub cache, CLIP
    in the home's models folder (the two ways a user provides weights)."""
    root = tmp_path_factory.mktemp("hf")
    made = make_models(root / "src")
    dino = into_hub_cache(made["dino"], root / "hub", DINO_REPO)
    clip = into_models_dir(made["clip"], root / "home", CLIP_REPO)
    siglip = into_hub_cache(made["siglip"], root / "hub", SIGLIP_REPO)
    return {"home": root / "home", "hub": root / "hub", "dino": dino, "clip": clip, "siglip": siglip}


@pytest.fixture(scope="module")
def hf_env(tiny_checkpoints):
    """The tiny models' home and hub cache in the environment for one test module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NIPGBOARD_HOME", str(tiny_checkpoints["home"]))
        mp.setenv("HF_HUB_CACHE", str(tiny_checkpoints["hub"]))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tiny_checkpoints
