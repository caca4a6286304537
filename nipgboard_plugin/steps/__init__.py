"""The registry of steps: every operation of the pipeline, declared once.

A step is one module of this package that declares, as data, its parameters (:class:`..params.Param`),
the steps it needs before it and what it produces, and a ``run(ctx, run_dir, params)`` function that
calls the library. It registers itself with :func:`register`. From the registry come:

* the CLI's commands and options (:mod:`..cli`),
* job validation and the worker's job bodies (:mod:`..jobs.kinds`),
* the ``/kinds`` route, from which the panel builds its option forms,
* the server-side pipelines (:mod:`.pipeline`: a chain of steps run as one job).

``ctx`` is a :class:`Context`: it reports stages and progress and says when to stop. The CLI passes
one that draws a progress bar, the worker one that writes the job's row, routes a silent one.

Adding a step: write ``steps/NAME.py`` with a ``register(Step(...))`` call and add NAME to
:data:`STEP_MODULES`; see ARCHITECTURE.md.
"""
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import NotFound, Unavailable
from ..params import REQUIRED, Param, clean_all

# Import order is the order of the CLI's command list and of /kinds.
STEP_MODULES = ("ingest", "embed", "duplicates", "similar", "rare", "project", "cluster", "predict", "evaluate",
                "search", "review", "suggest", "export", "projector", "sprites", "pipeline")


class Context:
    """What a step sees while it runs: stages, progress and cancellation. This one is silent."""

    current_stage = None

    def stage(self, name, total=None, message=None):
        self.current_stage = name

    def stage_once(self, name, total=None):
        """Enter stage ``name`` unless already in it (for callbacks called once per batch)."""
        if self.current_stage != name:
            self.stage(name, total)

    def progress(self, done, total=None, rate=None, eta=None, message=None, force=False, check_cancel=True):
        pass

    def should_stop(self) -> bool:
        return False

    def preview(self, info: dict):
        """A partial result the faces may show before the step ends (e.g. how many images are placed)."""

    def counts_progress(self, done, total):
        """Adapter for library ``progress(done, total)`` callbacks."""
        self.progress(done, total)


@dataclass
class Step:
    """One step of the pipeline.

    ``run(ctx, run_dir, params)`` gets the checked parameters and returns a JSON-able dict.
    ``check(params, run_dir, face)`` (optional) checks what one parameter alone cannot (a path
    against the allowed folders, a pipeline's per-step options). ``needs``: steps that must have run
    for the same network; ``produces``: what it stores. ``module``: an optional library module the
    step cannot run without. ``render``: the CLI's text for the result. ``job``: may run as a
    background job; ``cli``: has a CLI command (named ``command``, default the step's name);
    ``needs_dataset``: the run must hold a dataset (ingest creates one).
    """

    name: str
    help: str
    params: tuple
    run: Callable
    needs: tuple = ()
    produces: tuple = ()
    check: Callable = None
    render: Callable = None
    module: str = None
    command: str = None
    job: bool = True
    cli: bool = True
    needs_dataset: bool = True

    def __post_init__(self):
        names = [p.name for p in self.params]
        assert len(names) == len(set(names)), f"{self.name}: a parameter is declared twice"
        self.command = self.command or self.name

    def param(self, name) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def available(self) -> bool:
        if not self.module:
            return True
        try:
            importlib.import_module(self.module)
            return True
        except ImportError:
            return False

    def clean(self, given: dict, run_dir=None, face="web", allowed_roots=None) -> dict:
        """The checked parameters of one call of this step; raises InvalidParameter and friends."""
        out = clean_all(self.params, given, face)
        if self.check is not None:
            out = self.check(out, None if run_dir is None else Path(run_dir), face=face,
                             allowed_roots=allowed_roots)
        return out

    def call(self, run_dir, params: dict, ctx: Context = None):
        if not self.available():
            raise Unavailable(f"step {self.name!r} needs the module {self.module}, which is not installed")
        return self.run(ctx or Context(), Path(run_dir), params)

    def describe(self) -> dict:
        return {"kind": self.name, "description": self.help, "available": self.available(),
                "needs_dataset": self.needs_dataset, "needs": list(self.needs), "produces": list(self.produces),
                "params": [p.describe() for p in self.params if p.web]}


_REGISTRY: dict = {}
_loaded = False


def register(step: Step) -> Step:
    assert step.name not in _REGISTRY, f"step {step.name} registered twice"
    _REGISTRY[step.name] = step
    return step


def _load():
    global _loaded
    if not _loaded:
        _loaded = True
        for name in STEP_MODULES:
            importlib.import_module(f"{__name__}.{name}")


def all_steps() -> dict:
    """{name: Step} of every registered step, in declaration order."""
    _load()
    return dict(_REGISTRY)


def get(name) -> Step:
    steps = all_steps()
    if name not in steps:
        raise NotFound(f"unknown step {name!r}; known steps: {', '.join(steps)}")
    return steps[name]


def job_steps() -> dict:
    return {n: s for n, s in all_steps().items() if s.job}


def with_projector(run_dir, params, result, ctx=None):
    """After a step that changes what the Projector tab shows, rewrite its files (unless told not to)."""
    if not params.get("projector", True) or not isinstance(result, dict):
        return result
    from .. import projector
    from ..errors import UserError

    if ctx is not None:
        ctx.stage("writing the Projector files")
    try:
        result["projector"] = projector.write_projector(run_dir)
    except UserError as exc:
        result["projector"] = {"error": str(exc)}
    return result


PROJECTOR = Param("projector", "bool", True, help="rewrite the Projector tab's files afterwards",
                  flag="--no-projector")
# Parameters that several steps share.
NETWORK = Param("network", "network", REQUIRED, help="network id (see `nipgboard networks`)")
SEED = Param("random_state", "int", 0, 0, 2 ** 31 - 1, help="random seed", flag="--seed")
NETWORKS = Param("networks", "networks", None, help="networks (default: all with results)")
