"""pipeline: a chain of steps run as one job on the server (by default embed, project, cluster,
predict; the panel's "Auto" is search with apply, then predict), so it finishes with the browser tab
closed and resumes after a restart (features come from the cache; later steps recompute and replace
their results atomically).

From zero labels (a folder just added) the chain still finishes: a supervised projection becomes an
unsupervised one and predict is skipped until two classes have labelled train images; the result's
``notes`` say so."""
from ..errors import Cancelled, InvalidParameter
from ..params import Param
from . import NETWORK, Context, Step, get, register, with_projector
from .project import render_projector_note

CHAIN = ("embed", "search", "project", "cluster", "predict")    # the order steps run in
DEFAULT = ("embed", "project", "cluster", "predict")


def check(p, run_dir, face, allowed_roots=None):
    order = [CHAIN.index(s) for s in p["steps"]]
    if order != sorted(set(order)):
        raise InvalidParameter(f"parameter 'steps' must list each step once, in the order {', '.join(CHAIN)}")
    options = p["options"] or {}
    clean = {}
    for name, given in options.items():
        if name not in p["steps"]:
            raise InvalidParameter(f"options for {name!r}, which is not one of the steps: {', '.join(p['steps'])}")
        if not isinstance(given, dict):
            raise InvalidParameter(f"options for {name!r} must be an object")
        if "network" in given:
            raise InvalidParameter(f"options for {name!r}: the network is the pipeline's own")
        clean[name] = get(name).clean(dict(given, network=p["network"]), run_dir, face)
    return dict(p, options=clean or None)


class _StepContext(Context):
    """The pipeline's context seen by one of its steps: stages are prefixed with the step's place."""

    def __init__(self, outer, prefix):
        self.outer, self.prefix = outer, prefix

    def stage(self, name, total=None, message=None):
        self.current_stage = name
        self.outer.stage(f"{self.prefix}{name}", total, message)

    def progress(self, *args, **kwargs):
        self.outer.progress(*args, **kwargs)

    def should_stop(self):
        return self.outer.should_stop()

    def preview(self, info):
        self.outer.preview(info)


def train_classes(run_dir) -> dict:
    """{label: count} of the labelled train images (labelled, not in the test split)."""
    from collections import Counter

    from ..store import Store

    with Store(run_dir) as store:
        labels, splits = store.labels(), store.splits()
    return dict(Counter(lab for i, lab in labels.items() if splits.get(i) != "test"))


def _too_few(classes):
    """Why labels are too few to learn from, or None."""
    if not classes:
        return "no labels yet"
    if len(classes) == 1:
        return f"only one class labelled ({next(iter(classes))!r})"
    return None


def _adapt(name, params, classes, notes):
    """The step's parameters for the labels there are, or None to skip the step (with a note why)."""
    why = _too_few(classes)
    if why is None:
        return params
    if name == "project" and params.get("mode") != "unsupervised" and params.get("method") == "umap":
        notes.append(f"project: {why}, so the projection was made without labels (unsupervised)")
        return dict(params, mode="unsupervised", fit_on=None)
    if name == "predict" and params.get("method") != "zeroshot":  # zero-shot labels from class names alone
        notes.append(f"predict: skipped, {why}: label images of at least two classes, then predict")
        return None
    return params


def _params(name, p, run_dir, notes):
    """A step's parameters in this pipeline, or None to skip it (``notes`` says why)."""
    step = get(name)
    params = (p["options"] or {}).get(name) or step.clean({"network": p["network"]}, run_dir, face="job")
    if "projector" in params:
        params = dict(params, projector=False)  # the Projector files are written once, at the end
    if name in ("project", "predict"):
        params = _adapt(name, params, train_classes(run_dir), notes)
        if params is None:
            return None
    return params


def _opens_early(p, run_dir, embed, project):
    """Whether the view opens before the embedding ends: project follows embed, extraction runs here,
    and at least ``early_view`` images need features."""
    from ..features import RAY_OFF
    from ..streaming import missing_count
    from .embed import ray_address

    steps = list(p["steps"])
    return (p["early_view"] > 0 and "embed" in steps and steps.index("embed") + 1 < len(steps)
            and steps[steps.index("embed") + 1] == "project" and project is not None
            and ray_address(embed).strip().lower() in RAY_OFF
            and missing_count(run_dir, p["network"]) >= p["early_view"])


def run(ctx, run_dir, p):
    done, notes, planned = {}, [], {}
    for n, name in enumerate(p["steps"], 1):
        if ctx.should_stop():
            raise Cancelled({"network": p["network"], "steps": done})
        if name in done:    # the project step, made while embedding
            continue
        params = planned.pop(name) if name in planned else _params(name, p, run_dir, notes)
        if params is None:
            done[name] = {"skipped": True, "note": notes[-1]}
            continue
        inner = _StepContext(ctx, f"{n}/{len(p['steps'])} {name}: ")
        inner.stage("starting")
        if name == "embed" and "project" in p["steps"]:
            planned["project"] = project = _params("project", p, run_dir, notes)
            if _opens_early(p, run_dir, params, project):
                done[name], projected = _embed_early(inner, run_dir, p["network"], params, project)
                if projected is not None:
                    done["project"] = projected
                continue
        done[name] = get(name).run(inner, run_dir, params)
    result = {"network": p["network"], "steps": done, "notes": notes}
    if ctx.should_stop():
        raise Cancelled(result)
    from .. import results

    if results.networks_with(run_dir, "projection"):
        finish = _StepContext(ctx, "")
        result["thumbnails"] = _draw_thumbnails(finish, run_dir)
        with_projector(run_dir, {}, result, finish)
    return result


def _embed_early(ctx, run_dir, network, embed, project):
    """The embed step with the view opening early (:mod:`..streaming`); the project step's result
    too, or None when it must still run."""
    from ..backbones import speeds
    from ..streaming import embed_and_place

    result, last, projected = embed_and_place(ctx, run_dir, network, embed, project)
    speeds.record_embed(result, last, embed["batch_size"])
    return result, projected


def _draw_thumbnails(ctx, run_dir):
    """The panel's sprite atlases, drawn before the job ends: the view opens with its thumbnails, and
    the Projector's sprite is cut from them instead of decoding every image again."""
    from .. import sheets, thumbnails
    from ..store import Store

    with Store(run_dir) as store:
        n = store.image_count()
    ctx.stage("drawing thumbnails", n)
    return thumbnails.build_sprites(run_dir, sheets.view_tile(n), progress=ctx.counts_progress)


def render(r):
    from . import all_steps

    parts = []
    for name, result in r["steps"].items():
        step = all_steps()[name]
        if result.get("skipped"):
            continue
        parts.append(step.render(result) if step.render else name)
    parts += [f"note: {n}" for n in r.get("notes", [])]
    return "\n".join(parts) + render_projector_note(r)


STEP = register(Step(
    "pipeline", "a network's whole chain as one job: embed, project, cluster and predict",
    params=(NETWORK,
            Param("steps", "choice_list", list(DEFAULT), choices=CHAIN, help="the steps, in order"),
            Param("options", "object", None, cli=False,
                  help="parameters per step, e.g. {\"project\": {\"n_neighbors\": 30}}"),
            Param("early_view", "int", 5000, 0, 1_000_000_000,
                  help="with at least this many images to embed, the view opens before the embedding ends: the "
                       "labelled images come first and the view is fitted on them, then the others are placed "
                       "as they are embedded (0: never)")),
    run=run, check=check, render=render, needs=(), produces=("features", "projection", "clusters", "predictions")))
