"""predict: a label, a confidence and class probabilities for every image, from the expert's labels."""
from ..params import Param
from ..predict import METHODS as LEARNED
from . import NETWORK, PROJECTOR, SEED, Step, register, with_projector
from .project import render_projector_note

METHODS = LEARNED + ("zeroshot",)  # zeroshot labels from class names, with no labels to learn from


def check(p, run_dir, face, allowed_roots=None):
    if p["method"] == "zeroshot":
        from ..zeroshot import prompts_for, text_backbone

        text_backbone(p["network"])
        prompts_for(["x"], p["prompt"])
    return p


def run(ctx, run_dir, p):
    from ..predict import predict_dataset

    if p["method"] == "zeroshot":
        from ..zeroshot import predict_zeroshot

        result = predict_zeroshot(run_dir, p["network"], p["classes"], p["prompt"], ctx)
        return with_projector(run_dir, p, result, ctx)
    ctx.stage("predicting")
    result = predict_dataset(run_dir, p["network"], method=p["method"], k=p["k"], C=p["C"],
                             random_state=p["random_state"], spread=p["spread"])
    return with_projector(run_dir, p, result, ctx)


def render(r):
    if r["method"] == "zeroshot":
        from ..zeroshot import render as render_zeroshot

        return render_zeroshot(r) + render_projector_note(r)
    cv = ", ".join(f"{k} {v:.3f}" for k, v in r["cv_accuracy"].items()) or "none"
    lines = [f"{r['network']}: method {r['method']} (asked: {r['requested']}; cross-validated accuracy: {cv})",
             "pool predictions: " + ", ".join(f"{k} {v}" for k, v in r["pool_predicted"].items()),
             f"{r['low_confidence']} pool images below 0.6 confidence; {r['seconds']}s"]
    e = r.get("estimate")
    if e:
        lines.append(f"estimated accuracy on the unlabelled images {e['accuracy']:.3f} ({e['low']:.3f}-{e['high']:.3f}); "
                     f"all images with a right label: about {e['overall']:.1%} ({e['labels']} expert labels)")
    return "\n".join(lines) + render_projector_note(r)


STEP = register(Step(
    "predict", "a label, confidence and class probabilities for every image from the expert's labels",
    params=(NETWORK,
            Param("method", "choice", "auto", choices=METHODS,
                  help="auto picks by cross-validation on the train images; zeroshot labels from class names alone "
                       "with an image-text network (clip_vit_b32, siglip_b16)"),
            Param("k", "int", 10, 1, 200, flag="-k", help="neighbours (knn, spread)"),
            Param("C", "float", 10.0, 1e-4, 1e4, flag="-C", help="inverse regularisation of the logistic regression"),
            Param("spread", "bool", True, help="consider label spreading (with method auto)"),
            Param("classes", "str", None, max_len=20000,
                  help="zeroshot: class names, comma-separated (default: the labels the dataset has)"),
            Param("prompt", "str", "a photo of a {label}.", help="zeroshot: the text for each class name"),
            SEED, PROJECTOR),
    run=run, check=check, render=render, needs=("embed",), produces=("predictions",),
    module="nipgboard_plugin.predict"))
