"""bench/handwork.py on a real image set: the round schedule, and a simulated expert whose every strategy
is predicted the way `nipgboard predict` predicts (auto, with the label-spreading graph built once)."""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import handwork  # noqa: E402

from nipgboard_plugin import results  # noqa: E402
from nipgboard_plugin.features import load_features  # noqa: E402
from nipgboard_plugin.predict import LabelSpreading  # noqa: E402


def _args(**kw):
    base = dict(round=0.01, early_round=0.0025, early_until=0.03, budget=0.12)
    return argparse.Namespace(**dict(base, **kw))


def test_small_rounds_first_then_the_regular_ones():
    sizes = handwork.schedule(70000, _args())
    assert sizes[:12] == [175] * 12 and sizes[12:] == [700] * 9 and sum(sizes) == 8400
    assert handwork.schedule(200, _args()) == [2] * 12          # never under two images a round
    assert sum(handwork.schedule(1000, _args(budget=0.125))) == 125  # the last round stops at the budget


def test_the_simulated_expert_on_faces(faces):
    ids, X = load_features(faces["logdir"], "efficientnet_lite0")
    paths = results.load_inputs(faces["logdir"], features=False).paths
    assert len(paths) == len(ids)
    names = np.array([faces["truth"][p] for p in paths])
    classes = sorted(set(names))
    y = np.array([classes.index(v) for v in names])
    sizes = handwork.schedule(len(X), _args())
    rows = handwork.simulate(X, y, classes, sizes, 0, "knn", 5, LabelSpreading().build_graph(X))
    assert [r[0] for r in rows] == list(np.cumsum(sizes))     # the tool looked at what each round allowed
    assert rows[0][5] == "cold start" and rows[-1][5] == "uncertainty"
    assert rows[-1][8] == "blend"                               # 24 of 200 labelled: auto blends
    assert rows[-1][3] >= rows[-1][1] and rows[-1][3] >= 0.97    # the tool's choice, at least random's
    assert rows[-1][4] is not None and abs(rows[-1][4] - rows[-1][3]) < 0.1   # the estimate is near
