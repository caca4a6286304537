"""Pipeline results per network, kept under ``<logdir>/nipgboard/results/<network>/``.

Each stage writes one result: ``projection`` (coordinates of every image, plus the fitted model in
``projection.model.pkl``), ``clusters`` (community of every image and the cluster table) and
``predictions`` (label, confidence and class probabilities of every image). A result is one ``.npz``
file whose arrays travel with a JSON document of metadata (parameters, timings, the token of the
result it was derived from).

Writes are atomic: the data goes to a temporary file in the same folder, is flushed to disk, and then
replaces the old file with :func:`os.replace`. A crash or a kill leaves either the old result or the
new one, never half of one. The projection's model is written before its coordinates, and both carry
the same random token, so a model that does not match its coordinates is detected on load.

This module also reads what the stages need from the dataset (:func:`load_inputs`): features,
labels and which role every image plays (``train``: labelled and not held out for testing,
``test``: the held-out test split, ``pool``: no label yet).
"""
import hashlib
import io
import json
import pickle
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import atomic, paths
from .errors import MissingStep, UserError

KINDS = ("projection", "clusters", "predictions")

# What to run to produce each result; used in the messages of missing results.
_PRODUCER = {
    "projection": "nipgboard project {logdir} --network {network}",
    "clusters": "nipgboard cluster {logdir} --network {network}",
    "predictions": "nipgboard predict {logdir} --network {network}",
}


def new_token() -> str:
    return uuid.uuid4().hex


def network_dir(run_dir, network_id) -> Path:
    return paths.network_dir(run_dir, network_id)


def result_path(run_dir, network_id, kind) -> Path:
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r}")
    return paths.result_path(run_dir, network_id, kind)


def networks_with(logdir, kind) -> list:
    """Network ids that have a stored result of this kind, sorted."""
    root = paths.results_dir(logdir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / f"{kind}.npz").is_file())


# -- atomic files --------------------------------------------------------------------------------
atomic_write_bytes = atomic.write_bytes
atomic_write_text = atomic.write_text


def save_npz(path, arrays: dict, meta: dict):
    buf = io.BytesIO()
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    np.savez(buf, **payload)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "__meta__"}
        meta = json.loads(z["__meta__"].tobytes().decode("utf-8"))
    return arrays, meta


def kept_npz(path, key: dict, compute) -> dict:
    """The arrays stored at ``path`` under ``key``, else ``compute()``'s (a dict of arrays), stored for
    next time: a cache of what depends on the features alone. A read-only folder computes every time."""
    try:
        arrays, meta = load_npz(path)
        if meta == key:
            return arrays
    except (OSError, ValueError, KeyError):
        pass
    arrays = compute()
    try:
        save_npz(path, arrays, key)
    except OSError:
        pass
    return arrays


# -- results -------------------------------------------------------------------------------------

def save_result(logdir, network_id, kind, arrays: dict, meta: dict):
    meta = dict(meta, kind=kind, network=network_id)
    meta.setdefault("token", new_token())
    save_npz(result_path(logdir, network_id, kind), arrays, meta)
    return meta


def load_result(logdir, network_id, kind):
    """(arrays, meta) of a stored result; :class:`UserError` naming the command to run when absent."""
    path = result_path(logdir, network_id, kind)
    if not path.is_file():
        hint = _PRODUCER[kind].format(logdir=logdir, network=network_id)
        raise MissingStep(f"No {kind} for network {network_id!r} in {logdir}: run `{hint}` first.")
    return load_npz(path)


def has_result(logdir, network_id, kind) -> bool:
    return result_path(logdir, network_id, kind).is_file()


def save_projection(logdir, network_id, arrays: dict, meta: dict, model):
    """Store the fitted model, then the coordinates; both carry one token."""
    token = new_token()
    meta = dict(meta, token=token)
    atomic_write_bytes(paths.model_path(logdir, network_id),
                       pickle.dumps({"token": token, "model": model}, protocol=pickle.HIGHEST_PROTOCOL))
    return save_result(logdir, network_id, "projection", arrays, meta)


def load_projection_model(logdir, network_id):
    """The fitted projection estimator of the stored projection."""
    _, meta = load_result(logdir, network_id, "projection")
    path = paths.model_path(logdir, network_id)
    if not path.is_file():
        raise MissingStep(f"The projection model of {network_id!r} is missing: run "
                        f"`nipgboard project {logdir} --network {network_id}` again.")
    with open(path, "rb") as fh:
        obj = pickle.load(fh)
    if obj.get("token") != meta["token"]:
        raise MissingStep(f"The projection model of {network_id!r} does not match its coordinates: run "
                        f"`nipgboard project {logdir} --network {network_id}` again.")
    return obj["model"]


# -- inputs from the dataset ---------------------------------------------------------------------

@dataclass
class Inputs:
    """Everything the stages read from a dataset for one network, aligned by row.

    ``labels`` holds the expert's label or None; ``roles`` is 'train', 'test' or 'pool' (see the
    module docstring); ``X`` may be None when features were not asked for.
    """

    image_ids: np.ndarray
    X: object
    labels: np.ndarray
    roles: np.ndarray
    paths: np.ndarray

    def mask(self, role):
        return self.roles == role

    def classes(self):
        """Sorted labels present among the train images."""
        return np.array(sorted({str(v) for v in self.labels[self.roles == "train"]}), dtype=object)


def roles_for(image_ids, labels: dict, splits: dict) -> np.ndarray:
    """'pool' when the image has no label; else 'test' in the test split, 'train' otherwise."""
    roles = np.empty(len(image_ids), dtype=object)
    for i, iid in enumerate(image_ids):
        iid = int(iid)
        if iid in labels:
            roles[i] = "test" if splits.get(iid) == "test" else "train"
        else:
            roles[i] = "pool"
    return roles


def open_store(logdir):
    from .store import Store

    try:
        return Store(logdir)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None


def load_inputs(logdir, network_id=None, features=True) -> Inputs:
    """Features (when ``features``), labels, roles and paths of every image with features.

    Without features, all images of the dataset are listed in id order.
    """
    store = open_store(logdir)
    try:
        rows = store.image_rows("id, path")
        labels = store.labels()
        splits = store.splits()
    finally:
        store.close()
    if not rows:
        raise MissingStep(f"The dataset in {logdir} has no images: run `nipgboard init {logdir} --images DIR` first.")
    path_of = {int(i): p for i, p in rows}
    X = None
    if features:
        from . import features as features_mod

        try:
            image_ids, X = features_mod.load_features(logdir, network_id)
        except features_mod.FeaturesMissing as exc:
            raise UserError(str(exc)) from None
        image_ids = np.asarray(image_ids, dtype=np.int64)
        X = np.asarray(X, dtype=np.float32)
    else:
        image_ids = np.array(sorted(path_of), dtype=np.int64)
    lab = np.array([labels.get(int(i)) for i in image_ids], dtype=object)
    roles = roles_for(image_ids, labels, splits)
    pths = np.array([path_of.get(int(i), "") for i in image_ids], dtype=object)
    return Inputs(image_ids=image_ids, X=X, labels=lab, roles=roles, paths=pths)


def labels_fingerprint(image_ids, labels, roles) -> str:
    """A short hash of the train labels: predictions made from other labels are out of date."""
    h = hashlib.sha256()
    for iid, lab, role in zip(image_ids, labels, roles):
        if role == "train":
            h.update(f"{int(iid)}\t{lab}\n".encode("utf-8"))
    return h.hexdigest()[:16]


def align(source_ids, target_ids):
    """Row index into ``source_ids`` for each of ``target_ids`` (-1 where absent)."""
    source_ids = np.asarray(source_ids, dtype=np.int64)
    target_ids = np.asarray(target_ids, dtype=np.int64)
    order = np.argsort(source_ids, kind="stable")
    sorted_ids = source_ids[order]
    pos = np.searchsorted(sorted_ids, target_ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    found = (len(sorted_ids) > 0) & (sorted_ids[pos] == target_ids) if len(sorted_ids) else np.zeros(len(target_ids), bool)
    out = np.where(found, order[pos] if len(sorted_ids) else -1, -1)
    return out.astype(np.int64)


def result_columns(run_dir, network, ids) -> dict:
    """Per image (in the order of ``ids``): cluster, cluster_label, predicted and confidence, from
    whichever of the network's results exist."""
    cols = {}
    for kind, fields in (("clusters", {"cluster": "cluster", "pred": "cluster_label"}),
                         ("predictions", {"pred": "predicted", "confidence": "confidence"})):
        if not has_result(run_dir, network, kind):
            continue
        arrays, meta = load_result(run_dir, network, kind)
        rows = align(arrays["image_ids"], ids)
        classes = meta.get("classes") or []
        for src, dst in fields.items():
            if src not in arrays:
                continue
            col = arrays[src].tolist()
            vals = [None if r < 0 else col[r] for r in rows]
            if src == "pred" and arrays[src].dtype.kind in "iu":  # class codes, -1 for none
                vals = [classes[v] if v is not None and 0 <= v < len(classes) else None for v in vals]
            elif arrays[src].dtype.kind == "f":
                vals = [None if v is None or v != v or v in (float("inf"), float("-inf")) else v for v in vals]
            elif arrays[src].dtype.kind not in "iub":
                vals = [None if v is None else str(v) for v in vals]
            cols[dst] = vals
    return cols
