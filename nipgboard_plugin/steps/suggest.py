"""suggest: the images the expert should label next, each with a one-line reason.

From zero labels: the most typical image of each group of the data (k-means); once every class has
labels and predictions: the images the networks are least sure of, spread over the data. See
:mod:`..suggest`. ``--out`` writes them as a ``path,label`` CSV to fill in and give back with
``nipgboard label LOGDIR --csv FILE``.
"""
from ..params import Param
from . import SEED, Step, register


def run(ctx, run_dir, p):
    from ..suggest import suggest_for_dataset, write_csv

    result = suggest_for_dataset(run_dir, networks=p["networks"], n=p["n"], random_state=p["random_state"],
                                 ctx=ctx)
    result["out"] = None
    if p.get("out"):
        ctx.stage("writing the CSV")
        result["out"] = write_csv(p["out"], result["items"])
        result["give_back"] = f"nipgboard label {run_dir} --csv {result['out']}"
    return result


def render(r):
    source = f"predictions of {', '.join(r['predictions'])}" if r["mode"] == "uncertainty" else \
        f"{r['network']} features"
    lines = [f"Label these {r['shown']} next ({r['mode']}: {r['why']}; {source}; "
             f"{r['labelled']} labelled, {r['unlabelled']} not; {r['seconds']}s):"]
    lines += [f"  {e['score']:.4f}  {e['path']}  ({e['reason']})" for e in r["items"]]
    lines += [f"note: {n}" for n in r.get("notes", [])]
    if r.get("out"):
        lines.append(f"wrote {r['shown']} rows to {r['out']}: fill in the label column, then `{r['give_back']}`")
    return "\n".join(lines)


STEP = register(Step(
    "suggest", "the images to label next: typical and diverse at first, then the least sure",
    params=(Param("networks", "networks", None,
                  help="networks whose predictions to weigh; the first gives the features "
                       "(default: all with features)"),
            Param("n", "int", 50, 1, 5000, help="how many images to suggest", flag="-n"),
            SEED,
            Param("out", "path", None, web=False,
                  help="also write them to this CSV (path,label; fill in the labels, then `label --csv`)")),
    run=run, render=render, needs=("embed",), module="nipgboard_plugin.suggest"))
