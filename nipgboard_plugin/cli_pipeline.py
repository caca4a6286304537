"""The pipeline's commands: project, cluster, predict, evaluate, search, disagreements, label, export, projector.

Each handler takes the parsed arguments and returns a JSON-able dict; ``render_*`` turn it into text.
Errors a user can fix raise :class:`UserError` with what to run first.
"""
from .errors import UserError


def _progress(desc):
    try:
        from .cli import _progress_bar
    except ImportError:  # pragma: no cover
        return None, lambda: None
    return _progress_bar(desc, "fold")


def _umap_kwargs(args):
    out = {}
    for name in ("n_neighbors", "min_dist", "learning_rate", "local_connectivity", "negative_sample_rate",
                 "n_epochs", "metric", "target_weight", "pca_dims"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    return out


def _maybe_projector(args, result):
    if getattr(args, "no_projector", False):
        return result
    from . import projector

    try:
        result["projector"] = projector.write_projector(args.logdir)
    except UserError as exc:
        result["projector"] = {"error": str(exc)}
    return result


# -- handlers ---------------------------------------------------------------------------------------------
def cmd_project(args):
    from . import projection

    return _maybe_projector(args, projection.project_dataset(
        args.logdir, args.network, mode=args.mode, fit_on=args.fit_on, method=args.method,
        n_components=args.dims, random_state=args.seed, **_umap_kwargs(args)))


def cmd_cluster(args):
    from . import graph

    result = graph.cluster_dataset(args.logdir, args.network, graph=args.graph, k=args.k, threshold=args.threshold,
                                   method=args.method, resolution=args.resolution, random_state=args.seed, on=args.on,
                                   max_clusters=args.max_clusters)
    return _maybe_projector(args, result)


def cmd_predict(args):
    from . import predict

    result = predict.predict_dataset(args.logdir, args.network, method=args.method, k=args.k, C=args.C,
                                     random_state=args.seed, spread=not args.no_spread)
    return _maybe_projector(args, result)


def cmd_evaluate(args):
    from . import evaluate

    return evaluate.metrics_report(args.logdir, args.network or None, positive=args.positive)


def cmd_search(args):
    from . import projection

    umap_grid = {k: v for k, v in (("n_neighbors", args.n_neighbors), ("min_dist", args.min_dist),
                                   ("learning_rate", args.learning_rate),
                                   ("local_connectivity", args.local_connectivity),
                                   ("negative_sample_rate", args.negative_sample_rate),
                                   ("n_epochs", args.n_epochs), ("metric", args.metric)) if v}
    graph_grid = {k: v for k, v in (("graph", args.graph), ("resolution", args.resolution)) if v}
    umap_grid = dict(projection.DEFAULT_UMAP_GRID, **umap_grid) if umap_grid else None
    graph_grid = dict(projection.DEFAULT_GRAPH_GRID, **graph_grid) if graph_grid else None
    update, close = _progress("search")
    try:
        result = projection.search_dataset(args.logdir, args.network, umap_grid, graph_grid, n_folds=args.folds,
                                           n_components=args.dims, random_state=args.seed, apply=args.apply,
                                           progress=None if getattr(args, "json", False) else update)
    finally:
        close()
    if args.apply:
        _maybe_projector(args, result)
    return result


def cmd_disagreements(args):
    from . import review

    return review.review_queue(args.logdir, args.networks or None, include_labelled=args.include_labelled,
                               low_confidence=args.low_confidence, limit=args.limit, flagged_only=not args.all)


def _read_list(path):
    import csv
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UserError(f"List file not found: {path}")
    images, pairs = [], []
    with open(p, newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if not row or not row[0].strip() or row[0].strip().startswith("#"):
                continue
            if [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) >= 2 and row[1].strip():
                pairs.append((row[0].strip(), row[1].strip()))
            else:
                images.append(row[0].strip())
    return images, pairs


def cmd_label(args):
    from . import review

    images = list(args.image or [])
    pairs = []
    if args.list:
        more, pairs = _read_list(args.list)
        images += more
    return review.label_images(args.logdir, label=args.label, images=images, ids=args.id or [], pairs=pairs,
                               cluster=args.cluster, network=args.network, overwrite=args.overwrite)


def cmd_export(args):
    from . import export

    return export.export_csv(args.logdir, args.out, networks=args.networks or None)


def cmd_projector(args):
    from . import projector

    return projector.write_projector(args.logdir, args.networks or None, sprite=not args.no_sprite)


# -- text output -----------------------------------------------------------------------------------------
def render_project(r):
    s = (f"{r['network']}: {r['method']} {r['mode']} {r['dims']}-D, fitted on {r['fitted']} images ({r['fit_on']}) in "
         f"{r['seconds_fit']}s, {r['transformed']} more placed in {r['seconds_transform']}s")
    return s + _render_projector(r)


def _render_projector(r):
    p = r.get("projector")
    if not p:
        return ""
    if "error" in p:
        return f"\nprojector files not written: {p['error']}"
    s = f"\nprojector files: {p['config']} ({p['points']} points)"
    for n in p.get("notes", []):
        s += f"\n  note: {n}"
    return s


def render_cluster(r):
    lines = [f"{r['network']}: {r['clusters']} clusters ({r['graph']} graph, {r['method']}, resolution "
             f"{r['resolution']}), {r['needs_label']} need a label, {r['outliers']} outliers, modularity "
             f"{r['modularity']}; graph {r['seconds']['graph']}s, communities {r['seconds']['communities']}s"]
    lines.append(f"{'cluster':>7} {'size':>6} {'labelled':>8} {'label':20} purity")
    for t in r["table"][:40]:
        lab = t["label"] if t["label"] is not None else "(needs label)"
        lines.append(f"{t['cluster']:7d} {t['size']:6d} {t['n_labelled']:8d} {lab:20} {t['purity']:.2f}")
    if len(r["table"]) > 40:
        lines.append(f"... {len(r['table']) - 40} more (--json lists all)")
    return "\n".join(lines) + _render_projector(r)


def render_predict(r):
    cv = ", ".join(f"{k} {v:.3f}" for k, v in r["cv_accuracy"].items()) or "none"
    lines = [f"{r['network']}: method {r['method']} (asked: {r['requested']}; cross-validated accuracy: {cv})",
             "pool predictions: " + ", ".join(f"{k} {v}" for k, v in r["pool_predicted"].items()),
             f"{r['low_confidence']} pool images below 0.6 confidence; {r['seconds']}s"]
    return "\n".join(lines) + _render_projector(r)


def render_evaluate(r):
    from .evaluate import render_table

    return render_table(r)


def render_search(r):
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


def render_disagreements(r):
    lines = [f"networks {', '.join(r['networks'])}: {r['unlabelled']} unlabelled images, {r['flagged']} flagged "
             f"({r['disagreements']} network disagreements, {r['predictor_disagreements']} cluster-rule "
             f"disagreements, {r['low_confidence']} low confidence); showing {r['shown']} of {r['queue_length']}"]
    for it in r["items"]:
        lines.append(f"  {it['doubt']:.2f}  {it['path']}  -> {it['consensus']}  ({'; '.join(it['reasons'])})")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


def render_label(r):
    lines = [f"{r['changed']} of {r['requested']} labels changed"]
    for net, e in r["after_review"].items():
        for k, v in e.items():
            lines.append(f"  {net} {k.replace('_', ' ')}: {v['agreed']}/{v['n']} predictions confirmed")
    return "\n".join(lines)


def render_export(r):
    s = f"wrote {r['rows']} rows to {r['out']} ({r['expert_labelled']} expert labels, {r['flagged']} flagged)"
    return "\n".join([s] + [f"note: {n}" for n in r.get("notes", [])])


def render_projector(r):
    return _render_projector({"projector": r}).strip()


# -- registration ----------------------------------------------------------------------------------------
def _add_umap_options(p, multi=False):
    nargs = "+" if multi else None
    p.add_argument("--n-neighbors", type=int, nargs=nargs)
    p.add_argument("--min-dist", type=float, nargs=nargs)
    p.add_argument("--learning-rate", type=float, nargs=nargs)
    p.add_argument("--local-connectivity", type=float, nargs=nargs)
    p.add_argument("--negative-sample-rate", type=int, nargs=nargs)
    p.add_argument("--n-epochs", type=int, nargs=nargs)
    p.add_argument("--metric", nargs=nargs, help="distance UMAP uses (euclidean, cosine, manhattan, ...)")


def add_commands(sub):
    def command(name, func, help_, render):
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func, render=render)
        p.add_argument("logdir")
        return p

    p = command("project", cmd_project, "UMAP (or PCA) of a network's features to 2-D/3-D, fitted on the train "
                "images, every other image placed in it", render_project)
    p.add_argument("--network", required=True)
    p.add_argument("--dims", type=int, choices=(2, 3), default=3)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--supervised", dest="mode", action="store_const", const="supervised",
                   help="fit with the train labels (default)")
    g.add_argument("--semi-supervised", dest="mode", action="store_const", const="semi-supervised",
                   help="fit on train and unlabelled images, the latter as label -1")
    g.add_argument("--unsupervised", dest="mode", action="store_const", const="unsupervised",
                   help="fit without labels")
    p.set_defaults(mode="supervised")
    p.add_argument("--fit-on", choices=("train", "train+pool"), default=None,
                   help="images the fit sees (default: train; train+pool for --semi-supervised)")
    p.add_argument("--method", choices=("umap", "pca"), default="umap")
    _add_umap_options(p)
    p.add_argument("--target-weight", type=float, help="how much labels shape a supervised fit, 0..1 (0.5)")
    p.add_argument("--pca-dims", type=int, help="PCA dimensions before UMAP (50; 0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-projector", action="store_true", help="do not update the Projector tab's files")

    p = command("cluster", cmd_cluster, "graph clustering of the stored projection; clusters take the majority "
                "label of their train images", render_cluster)
    p.add_argument("--network", required=True)
    p.add_argument("--graph", choices=("mst", "knn"), default="mst")
    p.add_argument("-k", type=int, default=15, help="neighbours of the kNN graph")
    p.add_argument("--threshold", type=float, help="kNN graph: longest edge kept; images beyond are outliers "
                   "(default: 99th percentile of nearest-neighbour distances)")
    p.add_argument("--method", choices=("louvain", "girvan-newman"), default="louvain")
    p.add_argument("--resolution", type=float, default=1.0, help="Louvain resolution: higher gives more clusters")
    p.add_argument("--on", choices=("all", "train"), default="all", help="images in the graph (default all)")
    p.add_argument("--max-clusters", type=int, default=50, help="Girvan-Newman: levels explored")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-projector", action="store_true")

    p = command("predict", cmd_predict, "a label and a confidence for every image", render_predict)
    p.add_argument("--network", required=True)
    p.add_argument("--method", choices=("auto", "cluster", "knn", "logreg", "ensemble", "spread", "all"), default="auto")
    p.add_argument("-k", type=int, default=10, help="neighbours (knn, spread)")
    p.add_argument("-C", type=float, default=10.0, help="inverse regularisation of the logistic regression")
    p.add_argument("--no-spread", action="store_true", help="auto: leave label spreading out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-projector", action="store_true")

    p = command("evaluate", cmd_evaluate, "accuracy, precision, specificity, recall and F1 per network on train "
                "and test", render_evaluate)
    p.add_argument("--network", nargs="+", help="networks (default: all with results)")
    p.add_argument("--positive", help="positive class of a binary task (default: the rarer class)")

    p = command("search", cmd_search, "grid search of UMAP and graph options by cross-validated accuracy on the "
                "train images", render_search)
    p.add_argument("--network", required=True)
    _add_umap_options(p, multi=True)
    p.add_argument("--graph", nargs="+", choices=("mst", "knn"))
    p.add_argument("--resolution", type=float, nargs="+")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--dims", type=int, choices=(2, 3), default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--apply", action="store_true", help="project and cluster with the best configuration")
    p.add_argument("--no-projector", action="store_true")

    p = command("disagreements", cmd_disagreements, "the review queue: images the networks disagree on or are "
                "unsure about, most doubtful first", render_disagreements)
    p.add_argument("--networks", nargs="+", help="networks to compare (default: all with predictions)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--low-confidence", type=float, default=0.6)
    p.add_argument("--include-labelled", action="store_true", help="also labelled images the networks contradict")
    p.add_argument("--all", action="store_true", help="every unlabelled image in doubt order, flagged or not")

    p = command("label", cmd_label, "give expert labels: one image, a list, or a whole cluster", render_label)
    p.add_argument("--image", action="append", help="image path (repeatable)")
    p.add_argument("--id", type=int, action="append", help="image id (repeatable)")
    p.add_argument("--list", help="file of paths (one per line) or 'path,label' rows")
    p.add_argument("--cluster", type=int, help="label the members of this cluster (with --network)")
    p.add_argument("--network", help="whose clusters --cluster means")
    p.add_argument("--label")
    p.add_argument("--overwrite", action="store_true", help="--cluster: also relabel members that have a label")

    p = command("export", cmd_export, "CSV of every image: expert label, predicted, cluster, votes, flagged",
                render_export)
    p.add_argument("--out", required=True)
    p.add_argument("--networks", nargs="+")

    p = command("projector", cmd_projector, "write the built-in Projector tab's files", render_projector)
    p.add_argument("--networks", nargs="+")
    p.add_argument("--no-sprite", action="store_true")
    return sub
