"""Files for TensorBoard's built-in Projector tab, so it shows the same projection, labels and clusters.

The Projector finds ``projector_config.pbtxt`` only at the logdir root or in a run folder that holds an
event file, and refuses asset paths outside the config's folder. So the config is written at the
dataset's folder (``LOGDIR``), its assets under ``LOGDIR/nipgboard/projector/``, and an (empty) event
file is added when the folder has none, which makes the dataset a run also when TensorBoard is started
on a parent folder.

Per network with a projection: one embedding whose tensor is the stored 2-D/3-D coordinates (TSV) and
whose metadata TSV has the columns label (the expert's), predicted, confidence, cluster, cluster_label,
split, disagreement (the networks' consensus disagrees / a network dissents) and path. All embeddings
share one sprite PNG of thumbnails in the same order.

Limits of the Projector: at most 100,000 points and a sprite of at most 8192 x 8192 pixels. Beyond
100,000 images a reproducible random sample of 100,000 is written (labelled images and images in
the review queue first); the sprite's tiles shrink to fit (never below ``MIN_TILE`` pixels: below
that no sprite is written). The result says what was left out.
"""
import contextlib
import math
import time
from pathlib import Path

import numpy as np

from . import atomic, paths
from .errors import MissingStep, UserError

MAX_POINTS = 100_000
MAX_SPRITE_PX = 8192
MAX_TILE = 64
MIN_TILE = 8
assets_dir = paths.projector_assets_dir


def _has_event_file(folder: Path) -> bool:
    return any(p.name.startswith("events.out.tfevents") for p in folder.iterdir() if p.is_file())


def _ensure_event_file(logdir):
    """Make LOGDIR a run (the Projector looks for configs in run folders); no-op when it has events."""
    logdir = Path(logdir)
    if _has_event_file(logdir):
        return False
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    w = EventFileWriter(str(logdir), filename_suffix=".nipgboard")
    w.flush()
    w.close()
    return True


def _tsv_cell(v):
    s = "" if v is None else str(v)
    return s.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def sprite_tile(n, max_tile=MAX_TILE, max_px=MAX_SPRITE_PX):
    """Largest square tile (<= max_tile) such that n tiles fit in a max_px x max_px sprite."""
    if n <= 0:
        return max_tile
    per_row = math.ceil(math.sqrt(n))
    return int(min(max_tile, max_px // per_row))


def _write_sprite(logdir, store, ids, tile, out_dir):
    """Draw the sprite of ``ids`` at ``tile`` px unless the same one is there; return its path.

    The file's name carries a hash of the tiles it holds (image ids, contents and tile size), so a
    Projector rewrite after new labels or predictions, which shows the same images, draws nothing.
    JPEG, as the panel's atlases: at 70,000 images it is a third of the PNG's size and encodes in
    well under a second where PNG took 20 s.
    """
    from . import sheets, thumbnails

    info = {int(i): (int(i), sha, rel) for i, sha, rel in store.image_rows("id, sha256, path")}
    rows = [info[int(iid)] for iid in ids]
    path = out_dir / f"sprite-{thumbnails.sheet_key(tile, rows)}.jpg"
    sheets.draw_sheet(logdir, store, tile, rows, math.ceil(math.sqrt(len(ids))), path)
    keep = (path, path.with_suffix(".placeholders.json"))
    for old in out_dir.glob("sprite*"):  # earlier sprites (and their notes)
        if old not in keep:
            with contextlib.suppress(OSError):
                old.unlink()
    return path


def write_projector(logdir, networks=None, max_points=MAX_POINTS, max_tile=MAX_TILE, sprite=True, seed=0):
    """Write the Projector's config, tensors, metadata and sprite; return what was written."""
    from google.protobuf import text_format
    from tensorboard.plugins import projector as tb_projector

    from . import graph, results, review

    if networks is None:
        networks = results.networks_with(logdir, "projection")
    if not networks:
        raise MissingStep(f"No projection in {logdir}: run `nipgboard project {logdir} --network ID` first.")
    inp = results.load_inputs(logdir, features=False)
    n_all = len(inp.image_ids)
    notes = []
    # Which images: all of them, or a sample of max_points (labelled and queued first).
    keep = np.arange(n_all)
    queue_flag = np.zeros(n_all, dtype=bool)
    cons = np.full(n_all, None, dtype=object)
    pred_nets = [n for n in results.networks_with(logdir, "predictions")]
    if pred_nets:
        try:
            classes, probas, cps, _clusters, _notes, _stale = review._network_predictions(logdir, pred_nets, inp.image_ids)
            d = review.doubt_from_probas(probas, cps, truth=review.truth_codes(inp.labels, inp.roles, classes))
            queue_flag = d["disagree"] | d["predictor_disagree"]
            cons = np.array(classes, dtype=object)[d["consensus"]]
        except UserError as exc:
            notes.append(str(exc))
    if n_all > max_points:
        rng = np.random.default_rng(seed)
        prio = (inp.roles != "pool") | queue_flag
        first = np.flatnonzero(prio)
        rest = np.flatnonzero(~prio)
        if len(first) >= max_points:
            keep = np.sort(rng.choice(first, max_points, replace=False))
        else:
            keep = np.sort(np.concatenate([first, rng.choice(rest, max_points - len(first), replace=False)]))
        notes.append(f"the Projector loads at most {max_points} points: wrote {max_points} of {n_all} images "
                     "(all labelled and flagged ones first, then a random sample)")
    ids = inp.image_ids[keep]
    out_dir = assets_dir(logdir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = tb_projector.ProjectorConfig()
    written = []
    tile = sprite_tile(len(ids), max_tile)
    sprite_rel = None
    if sprite:
        if tile < MIN_TILE:
            notes.append(f"no sprite: {len(ids)} thumbnails would be under {MIN_TILE}px in an "
                         f"{MAX_SPRITE_PX}px sprite")
        else:
            store = results.open_store(logdir)
            try:
                sprite_path = _write_sprite(logdir, store, ids, tile, out_dir)
            finally:
                store.close()
            sprite_rel = sprite_path.relative_to(logdir).as_posix()
            if tile < max_tile:
                notes.append(f"thumbnails are {tile}px so that {len(ids)} fit in the {MAX_SPRITE_PX}px sprite limit")
    for net in networks:
        parr, _pmeta = results.load_result(logdir, net, "projection")
        prow = results.align(parr["image_ids"], ids)
        if (prow < 0).any():
            notes.append(f"{net}: {int((prow < 0).sum())} images have no coordinates (new since `nipgboard project`); "
                         "they are placed at the origin")
        coords = np.zeros((len(ids), parr["coords"].shape[1]), dtype=np.float32)
        coords[prow >= 0] = parr["coords"][prow[prow >= 0]]
        cols = {"predicted": [None] * len(ids), "confidence": [None] * len(ids), "cluster": [None] * len(ids),
                "cluster_label": [None] * len(ids)}
        if results.has_result(logdir, net, "predictions"):
            a, m = results.load_result(logdir, net, "predictions")
            r = results.align(a["image_ids"], ids)
            cols["predicted"] = [m["classes"][a["pred"][j]] if j >= 0 else None for j in r]
            cols["confidence"] = [f"{a['confidence'][j]:.3f}" if j >= 0 else None for j in r]
        try:
            a, m = graph.load_clusters(logdir, net)
            r = results.align(a["image_ids"], ids)
            cols["cluster"] = [int(a["cluster"][j]) if j >= 0 else None for j in r]
            cols["cluster_label"] = [m["classes"][a["pred"][j]] if j >= 0 and a["pred"][j] >= 0 else None for j in r]
        except UserError:
            pass
        t_path = out_dir / f"{net}.tensor.tsv"
        m_path = out_dir / f"{net}.metadata.tsv"
        atomic.write_text(t_path, "".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in coords))
        header = ["label", "predicted", "confidence", "cluster", "cluster_label", "split", "disagreement",
                  "consensus", "path"]
        lines = ["\t".join(header)]
        for k, i in enumerate(keep):
            lines.append("\t".join(_tsv_cell(v) for v in (
                inp.labels[i], cols["predicted"][k], cols["confidence"][k], cols["cluster"][k],
                cols["cluster_label"][k], inp.roles[i], "yes" if queue_flag[i] else "no", cons[i], inp.paths[i])))
        atomic.write_text(m_path, "\n".join(lines) + "\n")
        emb = config.embeddings.add()
        emb.tensor_name = f"nipgboard/{net}"
        emb.tensor_path = t_path.relative_to(logdir).as_posix()
        emb.metadata_path = m_path.relative_to(logdir).as_posix()
        emb.tensor_shape.extend([len(ids), coords.shape[1]])
        if sprite_rel:
            emb.sprite.image_path = sprite_rel
            emb.sprite.single_image_dim.extend([tile, tile])
        written.append(net)
    atomic.write_text(paths.projector_config_path(logdir), text_format.MessageToString(config))
    made_run = _ensure_event_file(logdir)
    return {
        "config": str(paths.projector_config_path(logdir)), "networks": written, "points": int(len(ids)),
        "images": int(n_all), "sprite": sprite_rel, "tile": tile if sprite_rel else None,
        "event_file_added": made_run, "notes": notes, "written_at": time.time(),
    }
