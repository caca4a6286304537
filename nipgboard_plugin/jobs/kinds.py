"""The job kinds: each validates its parameters when the job is submitted (a bad one is a 400 before
anything is queued) and runs in the worker. ``/kinds`` lists them; adding a library stage is one
:func:`pipeline_kind` line in :func:`_register_pipeline_kinds`."""
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import paths
from ..errors import UserError
from .progress import JobCancelled


@dataclass
class JobKind:
    name: str
    description: str
    validate: Callable          # (params: dict, run_dir: Path | None) -> clean params (raises UserError/BadRequest)
    run: Callable               # (ctx: JobContext, run_dir: Path, params: dict) -> JSON-able result
    needs_dataset: bool = True
    module: str = None          # a pipeline module the kind needs; missing -> kind unavailable
    params: dict = None         # {name: "type, default"}: what /kinds shows the frontend

    def available(self) -> bool:
        if not self.module:
            return True
        try:
            importlib.import_module(self.module)
            return True
        except ImportError:
            return False


def _v():
    from .. import web  # imported lazily: the worker process needs only what its jobs use
    return web


REQUIRED_NETWORKS = object()


def _network(params, name="network", required=True):
    """A network id of the registry that can run here."""
    web = _v()
    value = web.p_str(params, name, web.REQUIRED if required else None, max_len=100)
    if value is None:
        return None
    from .. import backbones
    try:
        backbone = backbones.get(value)
    except KeyError:
        known = ", ".join(b.describe()["id"] for b in backbones.all_backbones())
        raise web.BadRequest(f"unknown network {value!r}; known networks: {known}") from None
    avail = backbone.availability()
    if not avail.available:
        raise web.BadRequest(f"network {value} is not available here: {avail.message}")
    return value


def _networks(params, name="networks", default=REQUIRED_NETWORKS, min_n=2):
    """A list of ``min_n`` to 10 distinct runnable network ids (None when optional and absent)."""
    web = _v()
    value = params.get(name, default)
    if value is REQUIRED_NETWORKS:
        raise web.BadRequest(f"parameter {name!r} is required")
    if value is None:
        return None
    if not isinstance(value, list) or not min_n <= len(value) <= 10:
        raise web.BadRequest(f"parameter {name!r} must be a list of {min_n} to 10 network ids")
    out = [_network({name: v}, name) for v in value]
    if len(set(out)) != len(out):
        raise web.BadRequest(f"parameter {name!r} lists a network twice")
    return out


def _validate_ingest(params, run_dir):
    web = _v()
    web.check_keys(params, {"images", "labels_csv", "folder_labels", "test_fraction", "seed"})
    has_dataset = run_dir is not None and paths.is_dataset(run_dir)
    images = web.p_str(params, "images", None if has_dataset else web.REQUIRED, max_len=4096)
    if images is not None:
        if not os.path.isabs(images):
            raise web.BadRequest("parameter 'images' must be an absolute path to a folder on the server's machine")
        if not os.path.isdir(images):
            raise web.BadRequest(f"images folder not found: {images}")
        images = os.path.realpath(images)
        if run_dir is not None:
            real_run = os.path.realpath(run_dir)
            if os.path.commonpath([real_run, images]) == images:
                raise web.BadRequest("the images folder contains the run's own folder (its thumbnails and "
                                     "caches would be read as images): choose a run outside the images folder")
    labels_csv = web.p_str(params, "labels_csv", None, max_len=4096)
    if labels_csv is not None:
        if not os.path.isabs(labels_csv) or not os.path.isfile(labels_csv):
            raise web.BadRequest(f"parameter 'labels_csv' must be the absolute path of a CSV file: {labels_csv}")
    return {"images": images, "labels_csv": labels_csv,
            "folder_labels": web.p_bool(params, "folder_labels", False),
            "test_fraction": web.p_float(params, "test_fraction", 0.2, lo=0.0, hi=0.9),
            "seed": web.p_int(params, "seed", 0, lo=0, hi=2 ** 31 - 1)}


def _run_ingest(ctx, run_dir, p):
    from ..dataset import ingest
    from ..store import Store

    images = p["images"]
    if images is None:
        with Store(run_dir) as store:
            images = str(store.images_root())
    ctx.stage("inspecting files")
    return ingest(run_dir, images, labels_csv=p["labels_csv"], folder_labels_from_subdirs=p["folder_labels"],
                  test_fraction=p["test_fraction"], seed=p["seed"], progress=ctx.counts_progress)


def _validate_embed(params, run_dir):
    web = _v()
    web.check_keys(params, {"network", "batch_size"})
    return {"network": _network(params), "batch_size": web.p_int(params, "batch_size", 32, lo=1, hi=512)}


def _run_embed(ctx, run_dir, p):
    from ..features import embed

    ctx.stage("loading the network")
    result = embed(run_dir, p["network"], batch_size=p["batch_size"], progress=ctx.embed_progress,
                   should_stop=ctx.should_stop)
    if result.get("stopped"):
        raise JobCancelled(result)
    return result


def _validate_duplicates(params, run_dir):
    web = _v()
    web.check_keys(params, {"network", "threshold"})
    return {"network": _network(params), "threshold": web.p_float(params, "threshold", 0.3, lo=0.0, hi=2.0)}


def _run_duplicates(ctx, run_dir, p):
    from ..neighbours import near_duplicate_groups
    from ..features import load_features

    ctx.stage("loading features")
    ids, X = load_features(run_dir, p["network"])
    ctx.stage("finding near duplicates", total=len(ids))
    groups = near_duplicate_groups(X, p["threshold"], progress=ctx.counts_progress, should_stop=ctx.should_stop)
    if groups is None:
        raise JobCancelled()
    return {"network": p["network"], "threshold": p["threshold"],
            "groups": [[int(ids[r]) for r in g] for g in groups]}


def _validate_rare(params, run_dir):
    web = _v()
    web.check_keys(params, {"network", "n", "k"})
    return {"network": _network(params), "n": web.p_int(params, "n", 20, lo=1, hi=10000),
            "k": web.p_int(params, "k", 10, lo=1, hi=200)}


def _run_rare(ctx, run_dir, p):
    from ..neighbours import rarest
    from ..features import load_features

    ctx.stage("scoring rarity")
    ids, X = load_features(run_dir, p["network"])
    rows, scores = rarest(X, n=p["n"], k=p["k"])
    return {"network": p["network"], "k": p["k"],
            "rare": [{"id": int(ids[r]), "rarity": float(s)} for r, s in zip(rows, scores)]}


def _validate_sprites(params, run_dir):
    web = _v()
    from .. import thumbnails
    web.check_keys(params, {"tile"})
    return {"tile": web.p_int(params, "tile", thumbnails.DEFAULT_TILE, lo=min(thumbnails.TILE_SIZES),
                              hi=max(thumbnails.TILE_SIZES))}


def _run_sprites(ctx, run_dir, p):
    from .. import thumbnails

    ctx.stage("drawing sprite atlases")
    return thumbnails.build_sprites(run_dir, p["tile"], progress=ctx.counts_progress)


def _run_warmup(ctx, run_dir, p):
    ctx.stage("compiling UMAP")
    return {"seconds": warm_up()}


def warm_up():
    """Compile UMAP's code in this process once (no-op when the projection stage is absent)."""
    try:
        from .. import projection
    except ImportError:
        return 0.0
    fn = getattr(projection, "warm_up", None)
    return float(fn() or 0.0) if fn else 0.0


# -- pipeline stages: one line each ---------------------------------------------------------------------
# A spec maps each parameter to (type, default, *limits). Types: network (a runnable network id),
# networks (a list of them, at least ``limits[0]``), int, float, bool, choice (limits[0]: the choices),
# str, and int_list / float_list / choice_list (a list of 1 to 10 such values, for grids).
MAX_GRID_VALUES = 10


def _list_param(params, name, default, item_check):
    web = _v()
    value = params.get(name, default)
    if value is None:
        return None
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_GRID_VALUES:
        raise web.BadRequest(f"parameter {name!r} must be a list of 1 to {MAX_GRID_VALUES} values")
    return [item_check({name: v}, name) for v in value]


def _spec_validator(spec):
    def validate(params, run_dir):
        web = _v()
        web.check_keys(params, set(spec))
        out = {}
        for name, (kind, default, *extra) in spec.items():
            if kind == "network":
                out[name] = _network(params, name, required=default is web.REQUIRED)
            elif kind == "networks":
                out[name] = _networks(params, name, default, *extra)
            elif kind == "int":
                out[name] = web.p_int(params, name, default, *extra)
            elif kind == "float":
                out[name] = web.p_float(params, name, default, *extra)
            elif kind == "bool":
                out[name] = web.p_bool(params, name, default)
            elif kind == "choice":
                out[name] = web.p_str(params, name, default, choices=extra[0])
            elif kind == "str":
                out[name] = web.p_str(params, name, default, max_len=200)
            elif kind == "int_list":
                out[name] = _list_param(params, name, default, lambda p, n: web.p_int(p, n, web.REQUIRED, *extra))
            elif kind == "float_list":
                out[name] = _list_param(params, name, default, lambda p, n: web.p_float(p, n, web.REQUIRED, *extra))
            elif kind == "choice_list":
                out[name] = _list_param(params, name, default,
                                        lambda p, n: web.p_str(p, n, web.REQUIRED, choices=extra[0]))
            else:  # pragma: no cover - a programming error in a spec
                raise ValueError(kind)
        return out
    return validate


def _with_projector(run_dir, params, result):
    """After a stage that changes what the Projector tab shows, rewrite its files (as the CLI does)."""
    if params.get("projector") is False or not isinstance(result, dict):
        return result
    from .. import projector

    try:
        result["projector"] = projector.write_projector(run_dir)
    except UserError as exc:
        result["projector"] = {"error": str(exc)}
    return result


def pipeline_kind(name, target, spec, description, positional=("network",), stage=None, projector=False):
    """A job kind that calls the library function ``target`` ('module:function') as
    ``function(run_dir, *positional params, **other params)``; parameters valued None are left to the
    function's defaults, and ``progress``/``should_stop`` are passed when the function takes them.
    With ``projector``, the Projector tab's files are rewritten afterwards (parameter ``projector``:
    false skips it), as the CLI does."""
    module, func = target.split(":")
    if projector:
        spec = dict(spec, projector=("bool", True))

    def run(ctx, run_dir, params):
        fn = getattr(importlib.import_module(module), func)
        ctx.stage(stage or name)
        args = [params[p] for p in positional if p in params]
        kwargs = {k: v for k, v in params.items() if v is not None and k not in positional and k != "projector"}
        kwargs.update(_progress_kwargs(fn, ctx))
        result = fn(run_dir, *args, **kwargs)
        if projector:
            ctx.stage("writing the Projector files")
            result = _with_projector(run_dir, params, result)
        return result

    return JobKind(name, description, _spec_validator(spec), run, module=module, params=describe_spec(spec))


def describe_spec(spec):
    """{name: 'type, default'} of a spec, for the /kinds route."""
    out = {}
    for name, (kind, default, *extra) in spec.items():
        text = kind
        if kind.startswith("choice"):
            text += " of " + "|".join(map(str, extra[0]))
        elif extra:
            text += f" in [{extra[0]}, {extra[1]}]" if len(extra) > 1 else f" (at least {extra[0]})"
        if default is REQUIRED_NETWORKS or default is _v().REQUIRED:
            text += ", required"
        elif default is not None:
            text += f", default {default}"
        out[name] = text
    return out


def _progress_kwargs(fn, ctx):
    """Pass ``progress``/``should_stop`` to library functions that accept them."""
    import inspect

    try:
        sig = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    out = {}
    if "progress" in sig:
        out["progress"] = ctx.counts_progress
    if "should_stop" in sig:
        out["should_stop"] = ctx.should_stop
    return out


def _run_search(ctx, run_dir, p):
    """The grid search, with the grids completed by the defaults as ``nipgboard search`` does."""
    from .. import projection

    umap_grid = {k: p[k] for k in ("n_neighbors", "min_dist", "learning_rate", "local_connectivity",
                                   "negative_sample_rate", "n_epochs", "metric") if p.get(k)}
    graph_grid = {k: p[k] for k in ("graph", "resolution") if p.get(k)}
    umap_grid = dict(projection.DEFAULT_UMAP_GRID, **umap_grid) if umap_grid else None
    graph_grid = dict(projection.DEFAULT_GRAPH_GRID, **graph_grid) if graph_grid else None
    ctx.stage("cross-validating configurations")
    result = projection.search_dataset(run_dir, p["network"], umap_grid, graph_grid, n_folds=p["folds"],
                                       n_components=p["n_components"], random_state=p["random_state"],
                                       apply=p["apply"], progress=ctx.counts_progress)
    if p["apply"]:
        result = _with_projector(run_dir, p, result)
    return result


def _run_export(ctx, run_dir, p):
    from .. import export

    ctx.stage("writing the CSV")
    return export.export_csv(run_dir, export_path(run_dir), networks=p["networks"],
                             low_confidence=p["low_confidence"])


def export_path(run_dir) -> Path:
    """Where the ``export`` job writes the run's labels CSV (inside the run's data folder)."""
    return paths.data_dir(run_dir) / "exports" / "labels.csv"


def _req():
    return _v().REQUIRED


KINDS = {k.name: k for k in [
    JobKind("ingest", "add a folder of images (and labels) to a run, creating it if needed",
            _validate_ingest, _run_ingest, needs_dataset=False,
            params={"images": "absolute folder path, required for a new run",
                    "labels_csv": "absolute path of a path,label CSV", "folder_labels": "bool, default False",
                    "test_fraction": "float in [0, 0.9], default 0.2", "seed": "int, default 0"}),
    JobKind("embed", "extract and cache the features of every image with a network", _validate_embed, _run_embed,
            params={"network": "network, required", "batch_size": "int in [1, 512], default 32"}),
    JobKind("duplicates", "near-duplicate groups within a feature distance", _validate_duplicates, _run_duplicates,
            params={"network": "network, required", "threshold": "float in [0, 2], default 0.3"}),
    JobKind("rare", "the least similar images", _validate_rare, _run_rare,
            params={"network": "network, required", "n": "int in [1, 10000], default 20",
                    "k": "int in [1, 200], default 10"}),
    JobKind("sprites", "draw the sprite atlases of thumbnails for the 3-D view", _validate_sprites, _run_sprites,
            params={"tile": "int of 32|48|64|96|128, default 64"}),
    JobKind("warmup", "compile UMAP's code in the worker", lambda p, d: {}, _run_warmup, needs_dataset=False),
]}


def _register_pipeline_kinds():
    REQ = _req()
    seed = ("int", 0, 0, 2 ** 31 - 1)
    metrics = ("euclidean", "cosine", "manhattan", "correlation")
    umap_opts = {
        "n_neighbors": ("int", None, 2, 200), "min_dist": ("float", None, 0.0, 1.0),
        "learning_rate": ("float", None, 1e-4, 100.0), "local_connectivity": ("float", None, 0.1, 50.0),
        "negative_sample_rate": ("int", None, 1, 50), "n_epochs": ("int", None, 1, 5000),
        "metric": ("choice", None, metrics),
        "target_weight": ("float", None, 0.0, 1.0), "pca_dims": ("int", None, 0, 1000),
    }
    umap_grid = {k: (kind + "_list", None, *rest) for k, (kind, _d, *rest) in umap_opts.items()
                 if k not in ("target_weight", "pca_dims")}
    search_spec = dict(
        network=("network", REQ), **umap_grid, graph=("choice_list", None, ("mst", "knn")),
        resolution=("float_list", None, 0.01, 100.0), folds=("int", 3, 2, 10), n_components=("int", 3, 2, 3),
        random_state=seed, apply=("bool", False), projector=("bool", True))
    export_spec = dict(networks=("networks", None, 1), low_confidence=("float", 0.6, 0.0, 1.0))
    kinds = [
        pipeline_kind("project", "nipgboard_plugin.projection:project_dataset", dict(
            network=("network", REQ),
            mode=("choice", "supervised", ("supervised", "semi-supervised", "unsupervised")),
            fit_on=("choice", None, ("train", "train+pool")), method=("choice", "umap", ("umap", "pca")),
            n_components=("int", 3, 2, 3), random_state=seed, **umap_opts),
            "UMAP (or PCA) of a network's features to 2-D or 3-D", projector=True),
        pipeline_kind("cluster", "nipgboard_plugin.graph:cluster_dataset", dict(
            network=("network", REQ), graph=("choice", "mst", ("mst", "knn")), k=("int", None, 2, 200),
            threshold=("float", None, 0.0, 1e6), method=("choice", "louvain", ("louvain", "girvan-newman")),
            resolution=("float", None, 0.01, 100.0), random_state=seed,
            on=("choice", None, ("all", "train")), max_clusters=("int", None, 2, 1000)),
            "graph clustering (MST or kNN graph, Louvain or Girvan-Newman) of the stored projection",
            projector=True),
        pipeline_kind("predict", "nipgboard_plugin.predict:predict_dataset", dict(
            network=("network", REQ),
            method=("choice", "auto", ("auto", "cluster", "knn", "logreg", "ensemble", "spread", "all")),
            k=("int", None, 1, 200), C=("float", None, 1e-4, 1e4), random_state=seed, spread=("bool", None)),
            "a label, confidence and class probabilities for every image from the expert's labels",
            projector=True),
        pipeline_kind("evaluate", "nipgboard_plugin.evaluate:metrics_report", dict(
            networks=("networks", None, 1), positive=("str", None)),
            "accuracy, precision, specificity, recall and F1 per network on train and test", positional=()),
        pipeline_kind("disagreements", "nipgboard_plugin.review:review_queue", dict(
            networks=("networks", None, 1), include_labelled=("bool", None),
            low_confidence=("float", None, 0.0, 1.0), limit=("int", 500, 1, 100000), flagged_only=("bool", None)),
            "the review queue: images the networks disagree on or are unsure about", positional=()),
        pipeline_kind("projector", "nipgboard_plugin.projector:write_projector", dict(
            networks=("networks", None, 1), sprite=("bool", None)),
            "write the built-in Projector tab's files", positional=()),
        JobKind("search", "grid search of UMAP and graph options by cross-validated accuracy on the train images",
                _spec_validator(search_spec), _run_search, module="nipgboard_plugin.projection",
                params=describe_spec(search_spec)),
        JobKind("export", "write the labels CSV (expert labels, predictions, clusters, votes, flags)",
                _spec_validator(export_spec), _run_export, module="nipgboard_plugin.export",
                params=describe_spec(export_spec)),
    ]
    for k in kinds:
        KINDS[k.name] = k


_register_pipeline_kinds()


def kinds_info():
    return [{"kind": k.name, "description": k.description, "available": k.available(),
             "needs_dataset": k.needs_dataset, "params": k.params or {}}
            for k in KINDS.values() if k.name != "warmup"]

