"""duplicates: groups of near-identical images (feature distance at most a threshold)."""
from ..errors import Cancelled
from ..params import Param
from ..run import Run
from . import NETWORK, Step, register


def run(ctx, run_dir, p):
    ctx.stage("loading features")
    found = Run(run_dir).duplicates(p["network"], p["threshold"], progress=_progress(ctx),
                                    should_stop=ctx.should_stop)
    if found is None:
        raise Cancelled()
    return found


def _progress(ctx):
    def progress(done, total):
        ctx.stage_once("finding near duplicates", total)
        ctx.progress(done, total)
    return progress


def render(r):
    lines = [f"{len(r['groups'])} groups ({r['images_in_groups']} images) within distance {r['threshold']} "
             f"({r['distance']}, {r['network']})"]
    for i, g in enumerate(r["groups"], 1):
        lines.append(f"  group {i}: " + "  ".join(e["path"] for e in g))
    return "\n".join(lines)


STEP = register(Step(
    "duplicates", "near-duplicate groups within a feature distance",
    params=(NETWORK, Param("threshold", "float", 0.3, 0.0, 2.0,
                           help="Euclidean distance of L2-normalised features, 0..2 (0.3 ~ cosine 0.955)")),
    run=run, render=render, needs=("embed",)))
