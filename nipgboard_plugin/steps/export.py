"""export: the labels CSV of every image (expert label, predicted, final label, clusters, votes, flags)."""
from .. import paths
from ..errors import InvalidParameter
from ..params import Param
from . import Step, register


def check(p, run_dir, face, allowed_roots=None):
    if face == "cli" and not p["out"]:
        raise InvalidParameter("give the CSV file to write with --out")
    return p


def run(ctx, run_dir, p):
    from ..export import export_csv

    ctx.stage("writing the CSV")
    # Over HTTP there is no `out`: the file goes inside the run's data folder, never elsewhere.
    out = p.get("out") or paths.export_path(run_dir)
    return export_csv(run_dir, out, networks=p["networks"], low_confidence=p["low_confidence"])


def render(r):
    s = f"wrote {r['rows']} rows to {r['out']} ({r['expert_labelled']} expert labels, {r['flagged']} flagged)"
    return "\n".join([s] + [f"note: {n}" for n in r.get("notes", [])])


STEP = register(Step(
    "export", "CSV of every image: expert label, predicted, cluster, votes, flagged",
    params=(Param("out", "path", None, web=False, help="the CSV file to write (required)"),
            Param("networks", "networks", None, help="networks whose predictions to include (default: all)"),
            Param("low_confidence", "float", 0.6, 0.0, 1.0, help="confidence below which an image is flagged")),
    run=run, check=check, render=render, module="nipgboard_plugin.export"))
