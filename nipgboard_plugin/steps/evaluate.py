"""evaluate: the paper's Tables 1-2 (accuracy, precision, specificity, recall, F1) per network."""
from ..params import Param
from . import Step, register


def run(ctx, run_dir, p):
    from ..evaluate import metrics_report

    ctx.stage("evaluating")
    return metrics_report(run_dir, p["networks"], positive=p["positive"])


def render(r):
    from ..evaluate import render_table

    return render_table(r)


STEP = register(Step(
    "evaluate", "accuracy, precision, specificity, recall and F1 per network on train and test",
    params=(Param("networks", "networks", None, flag=("--networks", "--network"),
                  help="networks (default: all with results)"),
            Param("positive", "str", None, help="positive class of a binary task (default: the rarer class)")),
    run=run, render=render, needs=("predict",), module="nipgboard_plugin.evaluate"))
