"""embed: extract and cache every image's features with a network, here or on a Ray cluster."""
import os
from dataclasses import dataclass

from ..errors import Cancelled
from ..params import Param
from . import NETWORK, Step, register

RAY_ENV = "NIPGBOARD_RAY"   # the server's (and the shell's) Ray address when a call gives none


@dataclass(frozen=True)
class OptionalValue(Param):
    """A text parameter whose CLI flag may come alone (``--ray``): then its value is ``const``."""

    const: str = ""

    def add_to_parser(self, parser):
        parser.add_argument(*self.cli_flags(), dest=self.name, nargs="?", const=self.const, default=self.default,
                            metavar=self.metavar, help=self.help.replace("%", "%%"))


def ray_address(p):
    """The Ray address of this call: its own, else $NIPGBOARD_RAY (set by the server's --nipgboard_ray)."""
    given = p.get("ray")
    return os.environ.get(RAY_ENV, "") if given is None else given


def run(ctx, run_dir, p):
    from ..backbones import speeds
    from ..features import embed

    ctx.stage("loading the network")
    last = []

    def progress(pr):
        last[:] = [pr]
        ctx.stage_once(f"extracting features ({pr.where})" if pr.where else "extracting features", pr.total)
        ctx.progress(pr.done, pr.total, rate=pr.rate, eta=pr.eta, check_cancel=False)

    result = embed(run_dir, p["network"], batch_size=p["batch_size"], progress=progress,
                   should_stop=ctx.should_stop, device=p["device"], ray=ray_address(p), ray_workers=p["ray_workers"])
    if not result.get("ray"):  # a cluster's rate is not this machine's
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
    if engine and r.get("where"):
        engine = f"{r['where']}, {engine}"
    placing = f", {r['seconds_placing']} s of them fitting and placing the view" if r.get("seconds_placing") else ""
    text = (f"{r['network']}: {r['extracted']} images extracted, {r['cached_before']} from the cache, "
            f"{r['images']} in all ({r['seconds']} s{placing}" + (f", {engine})" if engine else ")"))
    if r.get("ray"):
        ray = r["ray"]
        text += (f"\nRay: {ray['nodes']} nodes, {ray['cpus']:g} CPUs, {ray['gpus']:g} GPUs; start-up "
                 f"{ray['startup_seconds']} s, extraction {ray['seconds']} s; {ray['workers_seen']} worker processes")
    if r.get("device_fallback"):
        text += f"\nWarning: ran on the {r['device_note']}."
    if r.get("engine_note"):
        text += f"\n{'Engine' if r.get('engine_measured') else 'Warning'}: {r['engine_note']}."
    if r["failed"]:
        text += f"\n{len(r['failed'])} images could not be read and were skipped:\n  " + "\n  ".join(r["failed"][:50])
    return text


STEP = register(Step(
    "embed", "extract (and cache) features of every image with a network",
    params=(NETWORK, Param("batch_size", "int", 32, 1, 512, help="images per batch"),
            Param("device", "choice", "auto", choices=("auto", "cpu", "cuda"),
                  help="where ONNX Runtime runs: auto (the GPU when onnxruntime-gpu and a GPU are there, "
                       "else the CPU), cpu, or cuda (fail rather than fall back)"),
            OptionalValue("ray", "str", None, const="local", metavar="ADDRESS", web=False,
                          help="extract on a Ray cluster: HOST:PORT of its head node (e.g. 10.0.0.5:6379), "
                               "ray://HOST:10001 (Ray Client), auto (the cluster this machine joined), or "
                               "alone for a Ray started on this machine; off: here, without Ray (default: "
                               f"${RAY_ENV}, else here)"),
            Param("ray_workers", "int", 0, 0, 256,
                  help="inference actors on Ray, each with one ONNX Runtime session (0: one per node, or per "
                       "GPU)")),
    run=run, render=render, produces=("features",)))
