"""ingest (the CLI's `init`): add a folder of images, and their labels, to a run, creating it if needed.

Over HTTP the folder and the labels file must lie inside the folders the person who started the
server allowed (the logdir and ``--nipgboard_roots``), checked after resolving links.

Runs never nest: a new run may not hold other runs below it (the run ``.``, the logdir itself, while runs
exist in its subfolders), nor may its images folder contain its own folder.
"""
import os

from ..errors import Forbidden, InvalidParameter, NotFound
from ..params import Param
from .. import paths
from . import Step, register


def inside(path, roots) -> bool:
    """Whether the real path of ``path`` lies in one of ``roots`` (real paths)."""
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, root]) == root for root in roots)


def check(p, run_dir, face, allowed_roots=None):
    web = face == "web"
    roots = [os.path.realpath(r) for r in (allowed_roots or ())]
    images, labels = p["images"], p["labels_csv"]
    if images is None and not (run_dir is not None and paths.is_dataset(run_dir)):
        raise InvalidParameter("parameter 'images' is required for a new run" if web
                               else "the images folder is required (--images)")
    for name, value, want_dir in (("images", images, True), ("labels_csv", labels, False)):
        if value is None:
            continue
        if web and not os.path.isabs(value):
            raise InvalidParameter(f"parameter {name!r} must be an absolute path on the server's machine")
        if web and not inside(value, roots):
            # Say nothing about whether the path exists: the answer must not reveal the disk.
            raise Forbidden(f"parameter {name!r} names a path outside the folders this server may read; "
                            "the person who started TensorBoard can allow it with --nipgboard_roots")
        ok = os.path.isdir(value) if want_dir else os.path.isfile(value)
        if not ok:
            what = "Images folder" if want_dir else "Labels file"
            raise NotFound(f"{what} not found: {os.path.basename(value) if web else value}")
    if run_dir is not None and not paths.is_dataset(run_dir):
        check_no_runs_below(run_dir, web)
    if images is not None:
        images = os.path.realpath(images)
        if run_dir is not None and not paths.is_dataset(run_dir):  # an existing one keeps its own folder
            real_run = os.path.realpath(run_dir)
            if os.path.commonpath([real_run, images]) == images:
                raise InvalidParameter("the images folder contains the run's own folder (its thumbnails and "
                                       "caches would be read as images): choose a run outside the images folder")
    return dict(p, images=images, labels_csv=None if labels is None else os.path.realpath(labels))


def check_no_runs_below(run_dir, web):
    """InvalidParameter when a new run at ``run_dir`` would contain other runs (e.g. the run ``.``)."""
    from ..runs import discover

    below = [name for name in discover(run_dir) if name != "."]
    if not below:
        return
    more = f" and {len(below) - 1} more" if len(below) > 1 else ""
    if web:
        raise InvalidParameter(f"this run would contain the run {below[0]!r}{more}: runs cannot nest. Choose a new "
                               "run name beside the others (not '.', the logdir itself).")
    raise InvalidParameter(f"{run_dir} would contain the dataset {below[0]!r}{more}: datasets cannot nest. Choose a "
                           "folder that holds no other NIPGBoard dataset.")


def run(ctx, run_dir, p):
    from ..dataset import ingest
    from ..store import Store

    images = p["images"]
    if images is None:
        with Store(run_dir) as store:
            images = str(store.images_root())
    ctx.stage("inspecting files")
    return ingest(run_dir, images, labels_csv=p["labels_csv"], folder_labels_from_subdirs=p["folder_labels"],
                  test_fraction=p["test_fraction"], seed=p["seed"], progress=ctx.counts_progress,
                  workers=p.get("workers"))


def render(s):
    """The dataset summary as text (also `nipgboard summary`'s)."""
    lines = [
        f"Dataset {s['logdir']} (images from {s['images_root']})",
        f"  images: {s['images']}   labelled: {s['labelled']}   "
        f"train/test/pool: {s['splits']['train']}/{s['splits']['test']}/{s['splits']['pool']}",
    ]
    if s["classes"]:
        lines.append("  classes: " + ", ".join(f"{k} ({v})" for k, v in s["classes"].items()))
    run_ = s.get("this_run")
    if run_:
        lines.append(f"  this run: {run_['added']} added, {run_['duplicates_found']} duplicates, "
                     f"{run_['unreadable_found']} unreadable, {run_['labels_added']} labels added "
                     f"in {run_['seconds']} s")
        if run_.get("missing_files"):
            lines.append(f"  {run_['missing_files']} stored images are no longer in the folder (kept, with their labels)")
    if s["unreadable"]:
        lines.append(f"  unreadable files ({len(s['unreadable'])}), skipped:")
        lines += [f"    {u['path']}: {u['reason']}" for u in s["unreadable"][:50]]
        if len(s["unreadable"]) > 50:
            lines.append(f"    ... and {len(s['unreadable']) - 50} more (see --json)")
    if s["duplicates"]:
        lines.append(f"  exact duplicates ({len(s['duplicates'])}), kept once:")
        lines += [f"    {d['path']} = {d['kept']}" for d in s["duplicates"][:50]]
    if s["label_issues"]:
        lines.append(f"  label issues ({len(s['label_issues'])}):")
        lines += [f"    {i['source']}: {i['detail']}" for i in s["label_issues"][:50]]
    return "\n".join(lines)


STEP = register(Step(
    "ingest", "add a folder of images (and labels) to a dataset, creating it if needed",
    params=(Param("images", "path", None, help="folder of images, searched recursively"),
            Param("labels_csv", "path", None, flag="--labels",
                  help="CSV with rows path,label (paths relative to the images folder)"),
            Param("folder_labels", "bool", False,
                  help="use each image's first-level subfolder as its label ('unlabelled' = none)"),
            Param("test_fraction", "float", 0.2, 0.0, 0.9, help="share of labelled images held out"),
            Param("seed", "int", 0, 0, 2 ** 31 - 1, help="seed of the train/test split"),
            Param("workers", "int", None, 1, 64, web=False, help="decoding processes (default: all cores)")),
    run=run, check=check, render=render, command="init", needs_dataset=False, produces=("dataset",)))
