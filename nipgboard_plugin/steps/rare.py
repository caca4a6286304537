"""rare: the images whose nearest neighbours are farthest away."""
from ..params import Param
from ..run import Run
from . import NETWORK, Step, register


def run(ctx, run_dir, p):
    ctx.stage("scoring rarity")
    return Run(run_dir).rare(p["network"], p["n"], p["k"])


def render(r):
    lines = [f"Least similar images ({r['network']}; mean distance to their {r['k']} nearest):"]
    lines += [f"  {e['rarity']:.4f}  {e['path']}" for e in r["rare"]]
    return "\n".join(lines)


STEP = register(Step(
    "rare", "the least similar (rarest) images",
    params=(NETWORK,
            Param("n", "int", 20, 1, 10000, help="how many to list", flag="-n"),
            Param("k", "int", 10, 1, 200, help="neighbours averaged for the rarity score", flag="-k")),
    run=run, render=render, needs=("embed",)))
