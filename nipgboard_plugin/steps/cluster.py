"""cluster: a graph on the projected points and its communities; clusters take their majority label."""
from ..params import Param
from . import NETWORK, PROJECTOR, SEED, Step, register, with_projector
from .project import render_projector_note

PARAMS = (
    NETWORK,
    Param("graph", "choice", "mst", choices=("mst", "knn"), help="minimum spanning tree, or kNN graph"),
    Param("k", "int", 15, 2, 200, flag="-k", help="neighbours of the kNN graph"),
    Param("threshold", "float", None, 0.0, 1e6, help="kNN graph: longest edge kept; images beyond are "
                                                      "outliers (default: 99th percentile of nearest distances)"),
    Param("method", "choice", "louvain", choices=("louvain", "girvan-newman"), help="community detection"),
    Param("resolution", "float", 1.0, 0.01, 100.0, help="Louvain resolution: higher gives more clusters"),
    SEED,
    Param("on", "choice", "all", choices=("all", "train"), help="images in the graph"),
    Param("max_clusters", "int", 50, 2, 1000, help="Girvan-Newman: levels explored"),
    PROJECTOR,
)


def run(ctx, run_dir, p):
    from ..graph import cluster_dataset

    ctx.stage("clustering")
    result = cluster_dataset(run_dir, **{k: v for k, v in p.items() if k not in ("network", "projector")},
                             network_id=p["network"])
    return with_projector(run_dir, p, result, ctx)


def render(r):
    lines = [f"{r['network']}: {r['clusters']} clusters ({r['graph']} graph, {r['method']}, resolution "
             f"{r['resolution']}), {r['needs_label']} need a label, {r['outliers']} outliers, modularity "
             f"{r['modularity']}; graph {r['seconds']['graph']}s, communities {r['seconds']['communities']}s"]
    lines.append(f"{'cluster':>7} {'size':>6} {'labelled':>8} {'label':20} purity")
    for t in r["table"][:40]:
        lab = t["label"] if t["label"] is not None else "(needs label)"
        lines.append(f"{t['cluster']:7d} {t['size']:6d} {t['n_labelled']:8d} {lab:20} {t['purity']:.2f}")
    if len(r["table"]) > 40:
        lines.append(f"... {len(r['table']) - 40} more (--json lists all)")
    return "\n".join(lines) + render_projector_note(r)


STEP = register(Step(
    "cluster", "graph clustering (MST or kNN graph, Louvain or Girvan-Newman) of the stored projection; "
               "clusters take the majority label of their train images",
    params=PARAMS, run=run, render=render, needs=("project",), produces=("clusters",),
    module="nipgboard_plugin.graph"))
