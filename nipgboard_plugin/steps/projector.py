"""projector: write the built-in Projector tab's files (points, labels, clusters, sprite)."""
from ..params import Param
from . import Step, register
from .project import render_projector_note


def run(ctx, run_dir, p):
    from ..projector import write_projector

    ctx.stage("writing the Projector files")
    return write_projector(run_dir, p["networks"], sprite=p["sprite"])


def render(r):
    return render_projector_note({"projector": r}).strip()


STEP = register(Step(
    "projector", "write the built-in Projector tab's files",
    params=(Param("networks", "networks", None, help="networks to show (default: all with a projection)"),
            Param("sprite", "bool", True, help="draw the sprite of thumbnails")),
    run=run, render=render, needs=("project",), module="nipgboard_plugin.projector"))
