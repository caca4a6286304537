"""embed: extract and cache every image's features with a network."""
from ..errors import Cancelled
from ..params import Param
from . import NETWORK, Step, register


def run(ctx, run_dir, p):
    from ..features import embed

    ctx.stage("loading the network")

    def progress(pr):
        ctx.stage_once("extracting features", pr.total)
        ctx.progress(pr.done, pr.total, rate=pr.rate, eta=pr.eta, check_cancel=False)

    result = embed(run_dir, p["network"], batch_size=p["batch_size"], progress=progress,
                   should_stop=ctx.should_stop)
    if result.get("stopped"):
        raise Cancelled(result)
    return result


def render(r):
    text = (f"{r['network']}: {r['extracted']} images extracted, {r['cached_before']} from the cache, "
            f"{r['images']} in all ({r['seconds']} s" + (f", engine {r['engine']})" if r["engine"] else ")"))
    if r["failed"]:
        text += f"\n{len(r['failed'])} images could not be read and were skipped:\n  " + "\n  ".join(r["failed"][:50])
    return text


STEP = register(Step(
    "embed", "extract (and cache) features of every image with a network",
    params=(NETWORK, Param("batch_size", "int", 32, 1, 512, help="images per batch")),
    run=run, render=render, produces=("features",)))
