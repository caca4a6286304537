"""`nipgboard`: every pipeline operation from the shell.

Each command parses its arguments, calls the library and returns a JSON-able
dict; with ``--json`` that dict is printed as one JSON document, otherwise as
readable text. Errors the user can fix print one line (no traceback) and exit 2.
"""
import argparse
import json
import math
import sys

from . import __version__
from .errors import UserError


# -- helpers ------------------------------------------------------------------------------------------
def _progress_bar(desc, unit):
    """A tqdm bar on stderr, fed with (done, total); returns (update, close)."""
    from tqdm import tqdm

    bar = None

    def update(done, total):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
        bar.total = total
        bar.n = done
        bar.refresh()

    def close():
        if bar is not None:
            bar.close()

    return update, close


def _image_entry(store, image_id, **extra):
    info = store.image_by_id(int(image_id))
    return dict(id=info["id"], path=info["path"], split=info["split"], **extra)


def _load(logdir, network):
    from .features import load_features

    return load_features(logdir, network)


# -- commands -------------------------------------------------------------------------------------
def cmd_init(args):
    from .dataset import ingest

    update, close = _progress_bar("inspecting files", "file")
    try:
        return ingest(args.logdir, args.images, labels_csv=args.labels, folder_labels_from_subdirs=args.folder_labels,
                      test_fraction=args.test_fraction, seed=args.seed, progress=update, workers=args.workers)
    finally:
        close()


def render_summary(s):
    lines = [
        f"Dataset {s['logdir']} (images from {s['images_root']})",
        f"  images: {s['images']}   labelled: {s['labelled']}   "
        f"train/test/pool: {s['splits']['train']}/{s['splits']['test']}/{s['splits']['pool']}",
    ]
    if s["classes"]:
        lines.append("  classes: " + ", ".join(f"{k} ({v})" for k, v in s["classes"].items()))
    run = s.get("this_run")
    if run:
        lines.append(f"  this run: {run['added']} added, {run['duplicates_found']} duplicates, "
                     f"{run['unreadable_found']} unreadable, {run['labels_added']} labels added "
                     f"in {run['seconds']} s")
        if run.get("missing_files"):
            lines.append(f"  {run['missing_files']} stored images are no longer in the folder (kept, with their labels)")
    if s["unreadable"]:
        lines.append(f"  unreadable files ({len(s['unreadable'])}), skipped:")
        lines += [f"    {u['path']}: {u['reason']}" for u in s["unreadable"][:50]]
        if len(s["unreadable"]) > 50:
            lines.append(f"    ... and {len(s['unreadable']) - 50} more (see --json)")
    if s["duplicates"]:
        lines.append(f"  exact duplicates ({len(s['duplicates'])}), kept once:")
        lines += [f"    {d['path']} = {d['kept']}" for d in s["duplicates"][:50]]
    if s["label_issues"]:
        lines.append(f"  label issues ({len(s['label_issues'])}):")
        lines += [f"    {i['source']}: {i['detail']}" for i in s["label_issues"][:50]]
    return "\n".join(lines)


def cmd_summary(args):
    from .store import Store

    with Store(args.logdir) as store:
        return store.summary()


def cmd_networks(args):
    from . import backbones

    return {"networks": [b.describe() for b in backbones.all_backbones()]}


def render_networks(result):
    lines = [f"{'id':<22}{'input':<10}{'dim':>6}  {'available':<10} weights"]
    for n in result["networks"]:
        size = "x".join(str(v) for v in n["input_size"])
        mark = "yes" if n["available"] else "no"
        lines.append(f"{n['id']:<22}{size:<10}{n['feature_dim']:>6}  {mark:<10} {n['weights']}")
        if not n["available"]:
            lines.append(f"{'':<22}-> {n['message']}")
    return "\n".join(lines)


def cmd_register_network(args):
    from . import backbones

    kwargs = dict(input_size=tuple(args.input_size) if args.input_size else None, scale=args.scale, mean=tuple(args.mean), std=tuple(args.std),
                  channel_order=args.channel_order, name=args.name)
    if args.layout:
        kwargs["layout"] = args.layout
    return backbones.register_user_model(args.path, args.id, **kwargs).describe()


def cmd_unregister_network(args):
    from . import backbones

    backbones.unregister_user_model(args.id)
    return {"removed": args.id}


def cmd_embed(args):
    from .features import embed

    update, close = _progress_bar(f"embedding with {args.network}", "img")
    try:
        return embed(args.logdir, args.network, batch_size=args.batch_size,
                     progress=lambda p: update(p.done, p.total))
    except KeyboardInterrupt:
        close()
        print("Interrupted: every finished batch is cached; run the same command again to resume.", file=sys.stderr)
        raise SystemExit(130)
    finally:
        close()


def render_embed(r):
    text = (f"{r['network']}: {r['extracted']} images extracted, {r['cached_before']} from the cache, "
            f"{r['images']} in all ({r['seconds']} s" + (f", engine {r['engine']})" if r["engine"] else ")"))
    if r["failed"]:
        text += f"\n{len(r['failed'])} images could not be read and were skipped:\n  " + "\n  ".join(r["failed"][:50])
    return text


def cmd_duplicates(args):
    from .neighbours import near_duplicate_groups
    from .store import Store

    ids, X = _load(args.logdir, args.network)
    groups = near_duplicate_groups(X, args.threshold)
    with Store(args.logdir) as store:
        out = [[_image_entry(store, ids[r]) for r in g] for g in groups]
    return {"network": args.network, "threshold": args.threshold, "distance": "euclidean, L2-normalised features",
            "groups": out, "images_in_groups": sum(len(g) for g in out)}


def render_duplicates(r):
    lines = [f"{len(r['groups'])} groups ({r['images_in_groups']} images) within distance {r['threshold']} "
             f"({r['distance']}, {r['network']})"]
    for i, g in enumerate(r["groups"], 1):
        lines.append(f"  group {i}: " + "  ".join(e["path"] for e in g))
    return "\n".join(lines)


def cmd_similar(args):
    from .neighbours import most_similar
    from .store import Store

    ids, X = _load(args.logdir, args.network)
    with Store(args.logdir) as store:
        image_id = store.image_id_for_path(args.image) if args.image else args.id
        if image_id is None or image_id not in set(ids.tolist()):
            raise UserError(f"{args.image or args.id} is not an image of this dataset")
        row = int((ids == image_id).nonzero()[0][0])
        rows, dist = most_similar(X, row, args.k)
        return {"network": args.network, "query": _image_entry(store, image_id),
                "similar": [_image_entry(store, ids[r], distance=round(float(d), 5)) for r, d in zip(rows, dist)]}


def render_similar(r):
    lines = [f"Most similar to {r['query']['path']} ({r['network']}):"]
    lines += [f"  {e['distance']:.4f}  {e['path']}" for e in r["similar"]]
    return "\n".join(lines)


def cmd_rare(args):
    from .neighbours import rarest
    from .store import Store

    ids, X = _load(args.logdir, args.network)
    rows, scores = rarest(X, n=args.n, k=args.k)
    with Store(args.logdir) as store:
        return {"network": args.network, "k": args.k,
                "rare": [_image_entry(store, ids[r], rarity=round(float(s), 5)) for r, s in zip(rows, scores)]}


def render_rare(r):
    lines = [f"Least similar images ({r['network']}; mean distance to their {r['k']} nearest):"]
    lines += [f"  {e['rarity']:.4f}  {e['path']}" for e in r["rare"]]
    return "\n".join(lines)


# -- parser ---------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(prog="nipgboard", description="Label large image sets with pretrained-network features, UMAP and graph clustering.")
    parser.add_argument("--version", action="version", version=f"nipgboard {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help, render=None):
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(func=func, render=render)
        return p

    p = command("init", cmd_init, "add a folder of images (and labels) to a dataset in LOGDIR", render_summary)
    p.add_argument("logdir")
    p.add_argument("--images", required=True, help="folder of images, searched recursively")
    p.add_argument("--labels", help="CSV with rows path,label (paths relative to --images)")
    p.add_argument("--folder-labels", action="store_true",
                   help="use each image's first-level subfolder as its label ('unlabelled' = none)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share of labelled images held out (0.2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/test split (0)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")

    p = command("summary", cmd_summary, "show the dataset: counts, unreadable files, duplicates", render_summary)
    p.add_argument("logdir")

    command("networks", cmd_networks, "list the networks, their input size, feature size and availability",
            render_networks)

    p = command("register-network", cmd_register_network, "add your own model file (ONNX or Keras) as a network")
    p.add_argument("--path", required=True, help=".onnx, .keras or .h5 file")
    p.add_argument("--id", required=True, help="short name to use with --network")
    p.add_argument("--name", help="display name")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"),
                   help="default: read from the model, else 224 224")
    p.add_argument("--scale", type=float, default=1 / 255, help="pixel multiplier before mean/std (1/255)")
    p.add_argument("--mean", type=float, nargs=3, default=[0.485, 0.456, 0.406])
    p.add_argument("--std", type=float, nargs=3, default=[0.229, 0.224, 0.225])
    p.add_argument("--channel-order", choices=["RGB", "BGR"], default="RGB")
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="default: NCHW for ONNX, NHWC for Keras")

    p = command("unregister-network", cmd_unregister_network, "remove a network added with register-network")
    p.add_argument("id")

    p = command("embed", cmd_embed, "extract (and cache) features of every image with a network", render_embed)
    p.add_argument("logdir")
    p.add_argument("--network", required=True)
    p.add_argument("--batch-size", type=int, default=32)

    p = command("duplicates", cmd_duplicates, "near-duplicate groups within a feature distance", render_duplicates)
    p.add_argument("logdir")
    p.add_argument("--network", required=True)
    p.add_argument("--threshold", type=float, default=0.3,
                   help="Euclidean distance of L2-normalised features, 0..2 (0.3 ~ cosine 0.955)")

    p = command("similar", cmd_similar, "the images most similar to one image", render_similar)
    p.add_argument("logdir")
    p.add_argument("--network", required=True)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--image", help="path of the image (relative to the images folder, or absolute)")
    g.add_argument("--id", type=int, help="image id")
    p.add_argument("-k", type=int, default=10)

    p = command("rare", cmd_rare, "the least similar (rarest) images", render_rare)
    p.add_argument("logdir")
    p.add_argument("--network", required=True)
    p.add_argument("-n", type=int, default=20, help="how many to list")
    p.add_argument("-k", type=int, default=10, help="neighbours averaged for the rarity score")

    try:
        from . import cli_pipeline
    except ImportError:
        cli_pipeline = None
    if cli_pipeline is not None:
        cli_pipeline.add_commands(sub)
    for name, p in sub.choices.items():  # every command takes --json, wherever it was defined
        if "--json" not in p._option_string_actions:
            p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    return parser


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except UserError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"nipgboard: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, default=_json_default))
    elif getattr(args, "render", None):
        print(args.render(result))
    else:
        print(json.dumps(result, indent=2, default=_json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
