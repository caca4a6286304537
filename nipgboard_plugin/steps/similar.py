"""similar: the images nearest to one image in a network's feature space."""
from ..errors import InvalidParameter
from ..params import Param
from ..run import Run
from . import NETWORK, Step, register


def check(p, run_dir, face, allowed_roots=None):
    if (p.get("image") is None) == (p.get("id") is None):
        raise InvalidParameter("give exactly one of 'id' or 'image'" if face != "web" else "parameter 'id' is required")
    return p


def run(ctx, run_dir, p):
    r = Run(run_dir)
    image_id = r.image_id(image=p.get("image"), image_id=p.get("id"))
    return r.similar(p["network"], image_id, p["k"])


def render(r):
    lines = [f"Most similar to {r['query']['path']} ({r['network']}):"]
    lines += [f"  {e['distance']:.4f}  {e['path']}" for e in r["similar"]]
    return "\n".join(lines)


STEP = register(Step(
    "similar", "the images most similar to one image",
    params=(NETWORK,
            Param("id", "int", None, 1, 2 ** 62, help="image id"),
            Param("image", "str", None, help="path of the image (relative to the images folder, or absolute)",
                  web=False, max_len=4096),
            Param("k", "int", 10, 1, 1000, help="how many to list", flag="-k")),
    run=run, check=check, render=render, needs=("embed",), job=False))
