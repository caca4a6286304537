"""`nipgboard`: every step of the pipeline from the shell.

The step commands and their options come from the registry (:mod:`.steps`): each parameter's flag,
default, range and help are the step's own declaration. A few commands are not steps (summary,
networks, label, register-network). Each command returns a JSON-able dict; with ``--json`` it is
printed as one JSON document, otherwise as readable text. Errors the user can fix print one line (no
traceback; ``{"error": ...}`` under ``--json``) and exit with the error's exit code (2).
"""
import argparse
import json
import math
import sys
from pathlib import Path

from . import __version__
from .errors import Cancelled, InvalidParameter, UserError
from .params import Param
from .steps import Context, all_steps


class CliContext(Context):
    """Stages and progress as a tqdm bar on stderr."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.bar = None

    def stage(self, name, total=None, message=None):
        self.current_stage = name
        self.close()
        if total is not None:
            self._open(total)

    def _open(self, total):
        if self.quiet:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=self.current_stage, file=sys.stderr, mininterval=0.5,
                        dynamic_ncols=True)

    def progress(self, done, total=None, rate=None, eta=None, message=None, force=False, check_cancel=True):
        if self.bar is None and total is not None:
            self._open(total)
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


# -- commands that are not steps ------------------------------------------------------------------------
def cmd_summary(args):
    from .run import Run

    return Run(args.logdir).summary()


def cmd_networks(args):
    from . import backbones

    return {"networks": backbones.describe_all()}


def render_speed(speed) -> str:
    """'85 cpu, 910 cuda' from {device: images/s}, or '-' before an embed measured it here."""
    return ", ".join(f"{v:.0f} {dev}" for dev, v in sorted(speed.items())) or "-"


def render_networks(result):
    lines = [f"{'id':<22}{'input':<10}{'dim':>6}  {'here':<5}{'images/s':<12}weights"]
    for n in result["networks"]:
        size = "x".join(str(v) for v in n["input_size"])
        mark = "yes" if n["available"] else "no"
        lines.append(f"{n['id']:<22}{size:<10}{n['feature_dim']:>6}  {mark:<5}{render_speed(n.get('speed') or {}):<12}"
                     f"{n['weights']}")
        if not n["available"]:
            lines.append(f"{'':<22}-> {n['message']}")
    lines.append("images/s: measured on this machine by the last embed of 64 images or more")
    return "\n".join(lines)


def cmd_register_network(args):
    from . import backbones

    kwargs = dict(input_size=tuple(args.input_size) if args.input_size else None, scale=args.scale,
                  mean=tuple(args.mean), std=tuple(args.std), channel_order=args.channel_order, name=args.name)
    if args.layout:
        kwargs["layout"] = args.layout
    return backbones.register_user_model(args.path, args.id, **kwargs).describe()


def cmd_unregister_network(args):
    from . import backbones

    backbones.unregister_user_model(args.id)
    return {"removed": args.id}


def _unneutralise(cell):
    """A path as `suggest --out` and `export` wrote it: a leading ``'`` that keeps a spreadsheet from
    running the cell as a formula is not part of the path."""
    from .export import FORMULA_STARTS

    return cell[1:] if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS) else cell


def _read_list(path):
    import csv

    p = Path(path)
    if not p.is_file():
        raise UserError(f"List file not found: {path}")
    images, pairs = [], []
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            for row in csv.reader(fh):
                if not row or not row[0].strip() or row[0].strip().startswith("#"):
                    continue
                if [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                    continue
                path = _unneutralise(row[0])
                if len(row) >= 2 and row[1].strip():
                    pairs.append((path, row[1].strip()))
                else:
                    images.append(path)
    except UnicodeDecodeError:
        raise UserError(f"The list {path} is not UTF-8 text: save it as UTF-8. Nothing was labelled.") from None
    except (OSError, csv.Error) as exc:
        raise UserError(f"Cannot read the list {path}: {type(exc).__name__}. Nothing was labelled.") from None
    return images, pairs


ID = Param("id", "int", None, 1, 2 ** 62, help="image id")


def cmd_label(args):
    from . import review

    images = list(args.image or [])
    pairs = []
    skipped = 0
    if args.list:
        more, pairs = _read_list(args.list)
        if args.label is None and more:
            if not pairs:
                raise InvalidParameter(f"{args.list} holds no labels: fill in its label column (path,label "
                                       "rows), or give --label to give every listed image that label. "
                                       "Nothing was labelled.")
            skipped = len(more)  # rows the expert left empty: not labelled this time
            more = []
        images += more
    ids = [ID.clean(i) for i in (args.id or [])]
    cluster = None if args.cluster is None else Param("cluster", "int", None, 0, 10 ** 9).clean(args.cluster)
    answer = review.label_images(args.logdir, label=args.label, images=images, ids=ids, pairs=pairs,
                                 cluster=cluster, network=args.network, overwrite=args.overwrite)
    if args.list:
        answer["skipped_without_label"] = skipped
    return answer


def render_label(r):
    lines = [f"{r['changed']} of {r['requested']} labels changed"]
    if r.get("skipped_without_label"):
        lines.append(f"  {r['skipped_without_label']} listed images without a label were left as they are")
    for net, e in r["after_review"].items():
        for k, v in e.items():
            lines.append(f"  {net} {k.replace('_', ' ')}: {v['agreed']}/{v['n']} predictions confirmed")
    return "\n".join(lines)


def _add_label_command(command):
    p = command("label", cmd_label, "give expert labels: one image, a CSV of path,label rows, or a whole cluster",
                render_label)
    p.add_argument("logdir")
    p.add_argument("--image", action="append", help="image path (repeatable)")
    p.add_argument("--id", action="append", help="image id (repeatable)")
    p.add_argument("--csv", "--list", dest="list", metavar="FILE",
                   help="a CSV of path,label rows, e.g. the file `suggest --out` wrote with its labels filled "
                        "in (rows left without a label are skipped); or of paths alone, with --label")
    p.add_argument("--cluster", help="label the members of this cluster (with --network)")
    p.add_argument("--network", help="whose clusters --cluster means")
    p.add_argument("--label")
    p.add_argument("--overwrite", action="store_true", help="--cluster: also relabel members that have a label")


def _add_network_commands(command):
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


# -- step commands ----------------------------------------------------------------------------------------
def step_handler(step):
    def handler(args):
        given = {p.name: getattr(args, p.name, None) for p in step.params if p.cli}
        params = step.clean(given, args.logdir, face="cli")
        ctx = CliContext(quiet=args.json)
        try:
            return step.call(args.logdir, params, ctx)
        except (KeyboardInterrupt, Cancelled):
            ctx.close()
            print("Interrupted: finished work is kept (every finished batch is cached); run the same command "
                  "again to resume.", file=sys.stderr)
            raise SystemExit(130)
        finally:
            ctx.close()
    return handler


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nipgboard", description="Label large image sets with pretrained-network features, UMAP and graph "
                                      "clustering.")
    parser.add_argument("--version", action="version", version=f"nipgboard {__version__}")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, func, help_, render=None):
        p = sub.add_parser(name, parents=[common], help=help_, description=help_)
        p.set_defaults(func=func, render=render)
        return p

    steps = all_steps()
    for step in steps.values():
        if not step.cli:
            continue
        p = command(step.command, step_handler(step), step.help, step.render)
        p.add_argument("logdir", help="the dataset's folder (a TensorBoard run)")
        for param in step.params:
            if param.cli:
                param.add_to_parser(p)
        if step.name == "ingest":  # `summary` shows what `init` shows
            p = command("summary", cmd_summary, "show the dataset: counts, unreadable files, duplicates",
                        step.render)
            p.add_argument("logdir")
            _add_network_commands(command)
    _add_label_command(command)
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
    args.json = getattr(args, "json", False)
    try:
        result = args.func(args)
    except UserError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"nipgboard: {exc}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(json.dumps(result, default=_json_default))
    elif getattr(args, "render", None):
        print(args.render(result))
    else:
        print(json.dumps(result, indent=2, default=_json_default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
