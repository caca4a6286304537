"""project: UMAP (or PCA) of a network's features to 2-D or 3-D, fitted on the train images and (by default)
a random sample of the unlabelled ones, every other image placed in it.

The UMAP options are declared here once; :class:`..projection.Projection` passes them to umap-learn.
"""
from ..params import Param
from ..projection import DEFAULT_POOL_SAMPLE, FEW_LABELS_SHARE, FIT_ON
from . import NETWORK, PROJECTOR, SEED, Step, register, with_projector

METRICS = ("euclidean", "cosine", "manhattan", "correlation")

# umap-learn's options, as the user may set them (and as `search` makes grids of them).
UMAP_OPTIONS = (
    Param("n_neighbors", "int", 15, 2, 200, help="neighbours UMAP looks at: larger keeps more global structure"),
    Param("min_dist", "float", 0.1, 0.0, 1.0, help="how tightly UMAP packs points"),
    Param("learning_rate", "float", 1.0, 1e-4, 100.0, help="UMAP's initial learning rate"),
    Param("local_connectivity", "float", 1.0, 0.1, 50.0, help="nearest neighbours assumed connected"),
    Param("negative_sample_rate", "int", 5, 1, 50, help="negative samples per positive one"),
    Param("n_epochs", "int", None, 1, 5000, help="training epochs (default: UMAP's choice by size)"),
    Param("metric", "choice", "euclidean", choices=METRICS, help="distance UMAP uses"),
)

PARAMS = (
    NETWORK,
    Param("mode", "choice", "supervised", choices=("supervised", "semi-supervised", "unsupervised"),
          choice_flags=True, help="fit with the train labels, with them and the unlabelled images (as -1), "
                                  "or without labels"),
    Param("fit_on", "choice", None, choices=FIT_ON,
          help="images the fit sees: the train images, plus a random sample of the unlabelled ones (pool_sample), "
               f"or plus all of them (default: train+sample with under {FEW_LABELS_SHARE:.0%} of train and unlabelled "
               "images labelled, or without labels; train with more; train+pool for semi-supervised)"),
    Param("pool_sample", "int", DEFAULT_POOL_SAMPLE, 1, 10_000_000,
          help="unlabelled images a train+sample fit takes (at random, by the seed); the rest are placed in the fit"),
    Param("method", "choice", "umap", choices=("umap", "pca"), help="UMAP, or PCA (fast)"),
    Param("n_components", "int", 3, 2, 3, flag="--dims", help="dimensions of the view"),
    *UMAP_OPTIONS,
    Param("target_weight", "float", 0.5, 0.0, 1.0, help="how much labels shape a supervised fit"),
    Param("pca_dims", "int", 50, 0, 1000, help="PCA dimensions before UMAP (0: off)"),
    SEED,
    PROJECTOR,
)


def run(ctx, run_dir, p):
    from ..projection import project_dataset

    ctx.stage("projecting")
    options = {k: v for k, v in p.items() if k not in ("network", "mode", "fit_on", "pool_sample", "projector")}
    result = project_dataset(run_dir, p["network"], mode=p["mode"], fit_on=p["fit_on"], pool_sample=p["pool_sample"],
                             **options)
    return with_projector(run_dir, p, result, ctx)


def render(r):
    s = (f"{r['network']}: {r['method']} {r['mode']} {r['dims']}-D, fitted on {r['fitted']} images ({r['fit_on']}) in "
         f"{r['seconds_fit']}s, {r['transformed']} more placed in {r['seconds_transform']}s")
    s += "".join(f"\n  {n}" for n in r.get("notes", []))
    return s + render_projector_note(r)


def render_projector_note(r):
    p = r.get("projector")
    if not p:
        return ""
    if "error" in p:
        return f"\nprojector files not written: {p['error']}"
    s = f"\nprojector files: {p['config']} ({p['points']} points)"
    for n in p.get("notes", []):
        s += f"\n  note: {n}"
    return s


STEP = register(Step(
    "project", "UMAP (or PCA) of a network's features to 2-D/3-D, fitted on the train images and a sample of "
               "the unlabelled ones, every other image placed in it",
    params=PARAMS, run=run, render=render, needs=("embed",), produces=("projection",),
    module="nipgboard_plugin.projection"))
