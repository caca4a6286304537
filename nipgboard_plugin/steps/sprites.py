"""sprites: draw the sprite atlases of thumbnails that the panel's 3-D view shows."""
from ..params import Param
from ..thumbnails import DEFAULT_TILE, TILE_SIZES
from . import Step, register


def run(ctx, run_dir, p):
    from .. import thumbnails

    ctx.stage("drawing sprite atlases")
    return thumbnails.build_sprites(run_dir, p["tile"], progress=ctx.counts_progress)


STEP = register(Step(
    "sprites", "draw the sprite atlases of thumbnails for the 3-D view",
    params=(Param("tile", "int", DEFAULT_TILE, min(TILE_SIZES), max(TILE_SIZES), choices=TILE_SIZES, help="tile size in pixels"),),
    run=run, cli=False))
