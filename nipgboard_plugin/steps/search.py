"""search: a grid search over UMAP and graph options, scored by cross-validated accuracy on the train
images. Each UMAP option's grid axis is the `project` step's own declaration, as a list."""
import dataclasses

from ..params import Param
from . import NETWORK, PROJECTOR, SEED, Step, register, with_projector
from .cluster import PARAMS as CLUSTER_PARAMS
from .project import UMAP_OPTIONS, render as render_project


def _axis(param):
    """The grid axis of a parameter: a list of its values, absent unless given."""
    return dataclasses.replace(param, type=param.type + "_list", default=None, choice_flags=False,
                               help=f"values of {param.name} to try")


UMAP_AXES = tuple(_axis(p) for p in UMAP_OPTIONS)
GRAPH_AXES = tuple(_axis(p) for p in CLUSTER_PARAMS if p.name in ("graph", "resolution"))


def grids(p):
    """(UMAP grid, graph grid) of the given axes, completed by the library's default grids."""
    from .. import projection

    umap_grid = {a.name: p[a.name] for a in UMAP_AXES if p.get(a.name)}
    graph_grid = {a.name: p[a.name] for a in GRAPH_AXES if p.get(a.name)}
    return (dict(projection.DEFAULT_UMAP_GRID, **umap_grid) if umap_grid else None,
            dict(projection.DEFAULT_GRAPH_GRID, **graph_grid) if graph_grid else None)


def check(p, run_dir, face, allowed_roots=None):
    from ..projection import check_grid

    check_grid(*grids(p))  # refused when submitted, before anything is queued or fitted
    return p


def run(ctx, run_dir, p):
    from .. import projection

    umap_grid, graph_grid = grids(p)
    ctx.stage("cross-validating configurations")
    result = projection.search_dataset(run_dir, p["network"], umap_grid, graph_grid, n_folds=p["folds"],
                                       n_components=p["n_components"], random_state=p["random_state"],
                                       apply=p["apply"], progress=ctx.counts_progress)
    return with_projector(run_dir, p, result, ctx) if p["apply"] else result


def render(r):
    lines = [f"{r['network']}: {len(r['configs'])} configurations, {r['folds']}-fold CV on {r['train_images']} "
             f"train images, {r['seconds']}s"]
    for c in r["configs"]:
        lines.append(f"  {c['accuracy']:.4f} ±{c['std']:.4f}  umap {c['umap']}  graph {c['graph']}")
    if "applied" in r:
        lines.append("applied the best: " + render_project(r["applied"]["project"]))
        lines.append(f"  {r['applied']['cluster']['clusters']} clusters")
    else:
        lines.append("apply the best with --apply")
    return "\n".join(lines)


STEP = register(Step(
    "search", "grid search of UMAP and graph options by cross-validated accuracy on the train images",
    params=(NETWORK, *UMAP_AXES, *GRAPH_AXES,
            Param("folds", "int", 3, 2, 10, help="cross-validation folds"),
            Param("n_components", "int", 3, 2, 3, flag="--dims", help="dimensions of the projection"),
            SEED,
            Param("apply", "bool", False, help="project and cluster with the best configuration"),
            PROJECTOR),
    run=run, check=check, render=render, needs=("embed",), produces=("projection", "clusters"),
    module="nipgboard_plugin.projection"))
