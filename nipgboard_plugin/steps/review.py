"""review: the queue of images to check, most doubtful first (networks or predictors disagreeing,
low confidence)."""
from ..params import Param
from . import Step, register


def run(ctx, run_dir, p):
    from ..review import review_queue

    ctx.stage("ordering the review queue")
    return review_queue(run_dir, p["networks"], include_labelled=p["include_labelled"],
                        low_confidence=p["low_confidence"], limit=p["limit"], flagged_only=not p["all"])


def render(r):
    lines = [f"networks {', '.join(r['networks'])}: {r['unlabelled']} unlabelled images, {r['flagged']} flagged "
             f"({r['disagreements']} network disagreements, {r['predictor_disagreements']} cluster-rule "
             f"disagreements, {r['low_confidence']} low confidence); showing {r['shown']} of {r['queue_length']}"]
    for it in r["items"]:
        lines.append(f"  {it['doubt']:.2f}  {it['path']}  -> {it['consensus']}  ({'; '.join(it['reasons'])})")
    for n in r.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


STEP = register(Step(
    "disagreements", "the review queue: images the networks disagree on or are unsure about, most doubtful first",
    params=(Param("networks", "networks", None, help="networks to compare (default: all with predictions)"),
            Param("limit", "int", 100, 1, 100000, help="how many images to list"),
            Param("low_confidence", "float", 0.6, 0.0, 1.0, help="confidence below which an image is in doubt"),
            Param("include_labelled", "bool", False, help="also labelled images the networks contradict"),
            Param("all", "bool", False, help="every unlabelled image in doubt order, flagged or not")),
    run=run, render=render, needs=("predict",), module="nipgboard_plugin.review"))
