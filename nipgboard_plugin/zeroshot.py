"""Zero-shot labels: an image-text network (CLIP, SigLIP) labels every image from class names alone.

Each class name becomes a text prompt (``"a photo of a {label}."``); the network's text tower embeds
the prompts and every image goes to the class whose prompt embedding is most similar to the image's
embedding (the features ``embed`` stored). Confidences are the softmax over the cosine similarities
times the model's logit scale (what CLIP was trained with; SigLIP's bias shifts all classes alike).
No labelled image is needed: the class names are the dataset's labels, or the ``classes`` given.

The result is stored as the ``predictions`` result (method ``zeroshot``), which the panel, the review
queue and the export read like any other prediction. Text embeddings are computed with PyTorch on
the same checkpoint and cached per network and weights under :func:`.paths.text_features_dir`.
"""
import io
import re
import time

import numpy as np

from . import atomic, paths
from .errors import Cancelled, InvalidParameter, UserError

DEFAULT_PROMPT = "a photo of a {label}."
MAX_CLASSES = 1000


def text_networks() -> list:
    from . import backbones

    return [b.id for b in backbones.all_backbones() if getattr(b, "has_text", False)]


def text_backbone(network_id):
    """The backbone of an image-text network, or :class:`InvalidParameter` saying which ones are."""
    from . import backbones

    b = backbones.get(network_id)
    if not getattr(b, "has_text", False):
        raise InvalidParameter(
            f"network {network_id} has no text encoder, so it cannot label images zero-shot: use an image-text "
            f"network ({', '.join(text_networks())}) or another method (after labelling images of two classes)")
    return b


def parse_classes(classes) -> list:
    """Class names from a list or a comma-separated string, stripped, without repeats, in order."""
    if classes is None:
        return []
    items = classes.split(",") if isinstance(classes, str) else list(classes)
    out = []
    for c in (str(v).strip() for v in items):
        if c and c not in out:
            out.append(c)
    return out


def dataset_classes(logdir) -> list:
    """The class names the dataset knows: every label given so far, sorted."""
    from .store import Store

    with Store(logdir) as store:
        return sorted({str(v) for v in store.labels().values()})


def prompts_for(classes, prompt=DEFAULT_PROMPT) -> list:
    if "{label}" not in prompt:
        raise InvalidParameter(f"the prompt must contain {{label}} where the class name goes, got {prompt!r}")
    return [prompt.replace("{label}", c.replace("_", " ")) for c in classes]


# -- text embeddings, cached ---------------------------------------------------------------------------
def _cache_path(backbone):
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{backbone.id}-{backbone.weights_fingerprint()}")
    return paths.text_features_dir() / f"{safe}.npz"


def _read_cache(path):
    try:
        with np.load(path, allow_pickle=False) as z:
            return ({t: v for t, v in zip(z["texts"].tolist(), z["vectors"])},
                    float(z["logit_scale"]), float(z["logit_bias"]))
    except (OSError, KeyError, ValueError):
        return {}, None, None


def text_features(backbone, texts):
    """(L2-normalised embeddings (len(texts), D), logit scale, logit bias); new texts are cached."""
    path = _cache_path(backbone)
    known, scale, bias = _read_cache(path)
    todo = [t for t in dict.fromkeys(texts) if t not in known]
    if todo:
        vectors, scale, bias = backbone.text_features(todo)
        known.update(zip(todo, vectors))
        buf = io.BytesIO()
        names = list(known)
        np.savez(buf, texts=np.array(names, dtype=str), vectors=np.stack([known[t] for t in names]).astype(np.float32),
                 logit_scale=np.float64(scale), logit_bias=np.float64(bias))
        atomic.write_bytes(path, buf.getvalue())
    return np.stack([known[t] for t in texts]).astype(np.float32), scale, bias


def zeroshot_proba(X, text, scale):
    """Softmax over ``scale`` x the cosine similarity of each row of ``X`` to each row of ``text``."""
    X = np.asarray(X, dtype=np.float32)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    t = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
    logits = float(scale) * (X @ t.T).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


# -- the dataset -----------------------------------------------------------------------------------------
def _embed(logdir, network_id, ctx):
    """Extract whatever features are missing (nothing to do, and nothing loaded, when all are cached)."""
    from .backbones import speeds
    from .features import embed

    last = []

    def progress(pr):
        last[:] = [pr]
        if ctx is not None:
            ctx.stage_once("extracting features", pr.total)
            ctx.progress(pr.done, pr.total, rate=pr.rate, eta=pr.eta, check_cancel=False)

    result = embed(logdir, network_id, progress=progress, should_stop=ctx.should_stop if ctx else None)
    speeds.record_embed(result, last[0] if last else None)
    if result.get("stopped"):
        raise Cancelled(result)
    return result


def predict_zeroshot(logdir, network_id, classes=None, prompt=DEFAULT_PROMPT, ctx=None):
    """Label every image of the dataset from class names alone; store as the ``predictions`` result.

    ``classes``: names (a list or comma-separated text); default the labels the dataset has. Images
    without features are embedded first. ``ctx`` (a step context, optional) hears stages and progress.
    """
    from . import results

    backbone = text_backbone(network_id)
    given = parse_classes(classes)
    names = given or dataset_classes(logdir)
    if len(names) < 2:
        have = f" (the dataset knows only {names[0]!r})" if names else ""
        raise UserError(f"zero-shot needs the names of at least two classes{have}: give them, e.g. "
                        f"`--classes \"cat, dog, bird\"` (the panel: the predict option 'classes').")
    if len(names) > MAX_CLASSES:
        raise InvalidParameter(f"at most {MAX_CLASSES} class names, got {len(names)}")
    texts = prompts_for(names, prompt)
    if ctx is not None:
        ctx.stage("extracting features")
    _embed(logdir, network_id, ctx)
    if ctx is not None:
        ctx.stage("encoding the class names")
    t0 = time.perf_counter()
    text, scale, _bias = text_features(backbone, texts)
    inp = results.load_inputs(logdir, network_id, features=True)
    if inp.X.shape[1] != text.shape[1]:
        raise UserError(f"the stored {network_id} features have {inp.X.shape[1]} dimensions and its text "
                        f"embeddings {text.shape[1]}: embed again (`nipgboard embed {logdir} --network {network_id}`)")
    proba = zeroshot_proba(inp.X, text, scale)
    pred, conf = proba.argmax(axis=1), proba.max(axis=1)
    seconds = time.perf_counter() - t0
    labelled = np.array([lab is not None and str(lab) in names for lab in inp.labels])
    accuracy = None
    if labelled.any():
        index = {c: i for i, c in enumerate(names)}
        truth = np.array([index[str(lab)] for lab in inp.labels[labelled]])
        accuracy = round(float((pred[labelled] == truth).mean()), 4)
    arrays = {"image_ids": inp.image_ids, "pred": pred.astype(np.int64), "confidence": conf.astype(np.float32),
              "proba": proba.astype(np.float32)}
    meta = {
        "method": "zeroshot", "requested": "zeroshot", "classes": names, "cv_accuracy": {},
        "vote_method": "zeroshot", "params": {"prompt": prompt, "classes_given": bool(given)},
        "labelled_accuracy": accuracy, "logit_scale": scale,
        "labels_fingerprint": results.labels_fingerprint(inp.image_ids, inp.labels, inp.roles),
        "seconds": round(seconds, 3), "created_at": time.time(),
    }
    results.save_result(logdir, network_id, "predictions", arrays, meta)
    pool = inp.roles == "pool"
    return {
        "network": network_id, "method": "zeroshot", "requested": "zeroshot", "cv_accuracy": {},
        "vote_method": "zeroshot", "classes": names, "prompts": texts, "images": int(len(pred)),
        "roles": {r: int((inp.roles == r).sum()) for r in ("train", "test", "pool")},
        "pool_predicted": {c: int(((pred == i) & pool).sum()) for i, c in enumerate(names)},
        "low_confidence": int(((conf < 0.6) & pool).sum()),
        "labelled_accuracy": accuracy, "seconds": round(seconds, 3),
    }


def render(r) -> str:
    acc = r.get("labelled_accuracy")
    lines = [f"{r['network']}: zero-shot from {len(r['classes'])} class names (prompt e.g. {r['prompts'][0]!r})"
             + (f"; agrees with {acc:.3f} of the labelled images" if acc is not None else ""),
             "pool predictions: " + ", ".join(f"{k} {v}" for k, v in r["pool_predicted"].items()),
             f"{r['low_confidence']} pool images below 0.6 confidence; {r['seconds']}s"]
    return "\n".join(lines)
