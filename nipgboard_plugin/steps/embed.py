"""embed: extract and cache every image's features with a network."""
from ..errors import Cancelled
from ..params import Param
from . import NETWORK, Step, register


def run(ctx, run_dir, p):
    from ..backbones import speeds
    from ..features import embed

    ctx.stage("loading the network")
    last = []

    def progress(pr):
        last[:] = [pr]
        ctx.stage_once("extracting features", pr.total)
        ctx.progress(pr.done, pr.total, rate=pr.rate, eta=pr.eta, check_cancel=False)

    result = embed(run_dir, p["network"], batch_size=p["batch_size"], progress=progress,
                   should_stop=ctx.should_stop, device=p["device"])
    speeds.record_embed(result, last[0] if last else None, p["batch_size"])  # images/s, for `networks`
    if result.get("stopped"):
        raise Cancelled(result)
    return result


def engine_text(r):
    """'engine onnxruntime on cuda', or '' when no engine ran (everything came from the cache)."""
    if not r.get("engine"):
        return ""
    return f"engine {r['engine']}" + (f" on {r['device']}" if r.get("device") else "")


def render(r):
    engine = engine_text(r)
    text = (f"{r['network']}: {r['extracted']} images extracted, {r['cached_before']} from the cache, "
            f"{r['images']} in all ({r['seconds']} s" + (f", {engine})" if engine else ")"))
    if r.get("device_fallback"):
        text += f"\nWarning: ran on the {r['device_note']}."
    if r["failed"]:
        text += f"\n{len(r['failed'])} images could not be read and were skipped:\n  " + "\n  ".join(r["failed"][:50])
    return text


STEP = register(Step(
    "embed", "extract (and cache) features of every image with a network",
    params=(NETWORK, Param("batch_size", "int", 32, 1, 512, help="images per batch"),
            Param("device", "choice", "auto", choices=("auto", "cpu", "cuda"),
                  help="where ONNX Runtime runs: auto (the GPU when onnxruntime-gpu and a GPU are there, "
                       "else the CPU), cpu, or cuda (fail rather than fall back)")),
    run=run, render=render, produces=("features",)))
