"""pipeline: a chain of steps run as one job on the server (by default embed, project, cluster,
predict; the panel's "Auto" is search with apply, then predict), so it finishes with the browser tab
closed and resumes after a restart (features come from the cache; later steps recompute and replace
their results atomically)."""
from ..errors import Cancelled, InvalidParameter
from ..params import Param
from . import NETWORK, Context, Step, get, register

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


def run(ctx, run_dir, p):
    done = {}
    for n, name in enumerate(p["steps"], 1):
        if ctx.should_stop():
            raise Cancelled({"network": p["network"], "steps": done})
        step = get(name)
        params = (p["options"] or {}).get(name) or step.clean({"network": p["network"]}, run_dir, face="job")
        if name != p["steps"][-1] and "projector" in params:
            params = dict(params, projector=False)  # the Projector files are written once, at the end
        inner = _StepContext(ctx, f"{n}/{len(p['steps'])} {name}: ")
        inner.stage("starting")
        done[name] = step.run(inner, run_dir, params)
    return {"network": p["network"], "steps": done}


def render(r):
    from . import all_steps

    parts = []
    for name, result in r["steps"].items():
        step = all_steps()[name]
        parts.append(step.render(result) if step.render else name)
    return "\n".join(parts)


STEP = register(Step(
    "pipeline", "a network's whole chain as one job: embed, project, cluster and predict",
    params=(NETWORK,
            Param("steps", "choice_list", list(DEFAULT), choices=CHAIN, help="the steps, in order"),
            Param("options", "object", None, cli=False,
                  help="parameters per step, e.g. {\"project\": {\"n_neighbors\": 30}}")),
    run=run, check=check, render=render, needs=(), produces=("features", "projection", "clusters", "predictions")))
