"""What a job runs: a step of the registry (:mod:`..steps`), or the worker's own warm-up.

A kind is a step's name; its parameters were checked by the step's declarations when the job was
submitted, so the worker calls the step as it is.
"""
from .. import steps

WARMUP = "warmup"      # compiles UMAP's code in the worker; queued by nobody but the worker itself


def warm_up():
    """Compile UMAP's code in this process once (no-op when the projection stage is absent)."""
    try:
        from .. import projection
    except ImportError:
        return 0.0
    fn = getattr(projection, "warm_up", None)
    return float(fn() or 0.0) if fn else 0.0


def run_kind(ctx, run_dir, kind, params):
    """Run one job's kind in this process; NotFound for a kind no step has."""
    if kind == WARMUP:
        ctx.stage("compiling UMAP")
        return {"seconds": warm_up()}
    return steps.get(kind).call(run_dir, params, ctx)
