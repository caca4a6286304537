"""Build the demo logdir: Fashion-MNIST images, 8% labelled, features from the offline networks.

    python demo/build.py [--logdir demo_logdir] [--n 6000] [--networks efficientnet_lite0 mobilenet_v2]

Images are written once to demo_data/; running it again only adds what is missing.
"""
import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from demo import fashion_mnist  # noqa: E402
from nipgboard_plugin import cli  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--logdir", default=str(REPO / "demo_logdir"))
    ap.add_argument("--data", default=str(REPO / "demo_data"))
    ap.add_argument("--n", type=int, default=6000, help="images (Fashion-MNIST has 70000)")
    ap.add_argument("--labelled", type=float, default=0.08, help="labelled share (0.08, as in the paper)")
    ap.add_argument("--networks", nargs="*", default=["efficientnet_lite0", "mobilenet_v2"])
    args = ap.parse_args(argv)

    data_dir = Path(args.data) / f"fashion-mnist-{args.n}"
    print(f"Writing {args.n} Fashion-MNIST images to {data_dir}")
    images_dir, labels_csv, _ = fashion_mnist.write(data_dir, n=args.n, labelled_fraction=args.labelled)
    run_dir = Path(args.logdir) / "fashion-mnist"
    steps = [["init", str(run_dir), "--images", str(images_dir), "--labels", str(labels_csv)]]
    steps += [["embed", str(run_dir), "--network", net] for net in args.networks]
    for step in steps:
        print("nipgboard " + " ".join(step), flush=True)
        rc = cli.main(step)
        if rc:
            return rc
    print(f"Demo logdir ready: {args.logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
