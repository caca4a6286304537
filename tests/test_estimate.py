"""The accuracy estimate that says when to stop, on real data with labels chosen by the tool and at random.

scikit-learn's handwritten digits (1,797 real 8x8 scans, 10 classes; pixels as features) are labelled in
rounds by a simulated expert: 40 random images, then four rounds of 40 chosen by :mod:`.suggest` (the
least sure, spread out) or at random. Plain cross-validation on such chosen labels is far below the truth;
the estimate must be much closer, and the truth must lie in its interval.
"""
import numpy as np
import pytest

from nipgboard_plugin import estimate
from nipgboard_plugin import suggest as S
from nipgboard_plugin.predict import predict_arrays


def _rounds(X, y, chosen_by, seed):
    n, k = len(y), int(y.max()) + 1
    classes = [str(c) for c in range(k)]
    rng = np.random.default_rng(seed)
    labelled = list(rng.choice(n, 40, replace=False))

    def predict():
        roles = np.array(["pool"] * n, dtype=object)
        roles[labelled] = "train"
        proba, _, scores = predict_arrays(X, np.where(roles == "train", y, -1), roles, k, method="logreg",
                                          keep_oof=True)
        return roles, proba, scores.get("logreg", (None, None))[1]

    for r in range(4):
        roles, proba, _ = predict()
        if chosen_by == "tool":
            labels = [classes[y[i]] if roles[i] == "train" else None for i in range(n)]
            s = S.suggest(X, 40, labels=labels, probas=[proba], classes=classes, networks=["pixels"],
                          random_state=seed + r)
            labelled += list(s.rows)
        else:
            labelled += list(rng.choice(np.setdiff1d(np.arange(n), labelled), 40, replace=False))
    roles, proba, oof = predict()
    train, pool = roles == "train", roles == "pool"
    correct = oof.argmax(axis=1) == y[train]
    e = estimate.estimate(oof, correct, proba[pool], n, int(train.sum()))
    truth = float((proba[pool].argmax(axis=1) == y[pool]).mean())
    return e, truth


@pytest.fixture(scope="module")
def digits_pixels():
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target


@pytest.mark.parametrize("seed", [0, 1])
def test_labels_chosen_by_the_tool_are_estimated_far_better_than_by_plain_cross_validation(digits_pixels, seed):
    e, truth = _rounds(*digits_pixels, "tool", seed)
    assert e["labels"] == 200
    assert truth - e["plain_cv"] > 0.15, "the tool's labels were not the hard ones: the test shows nothing"
    assert abs(e["accuracy"] - truth) < 0.04
    assert e["low"] <= truth <= e["high"]
    assert e["overall"] == pytest.approx((200 + e["accuracy"] * (len(digits_pixels[1]) - 200)) / len(digits_pixels[1]),
                                         abs=1e-4)


def test_random_labels_are_estimated_close_to_the_truth(digits_pixels):
    e, truth = _rounds(*digits_pixels, "random", 0)
    assert abs(e["accuracy"] - truth) < 0.05
    assert e["low"] < e["accuracy"] < e["high"]


def test_too_few_labels_give_no_estimate_and_every_label_right_gives_a_bounded_one():
    proba = np.array([[0.9, 0.1]] * 5)
    assert estimate.estimate(proba, np.ones(5, bool), proba, 100, 5) is None
    proba = np.array([[0.9, 0.1], [0.2, 0.8]] * 10)
    e = estimate.estimate(proba, np.ones(20, bool), proba, 100, 20)
    assert e["accuracy"] == 1.0 and e["low"] < 1.0 and e["overall"] == 1.0


def test_the_history_keeps_one_point_per_number_of_labels(tmp_path):
    point = {"labels": 20, "accuracy": 0.9, "low": 0.8, "high": 0.95, "overall": 0.92}
    estimate.record(tmp_path, "net", point, "logreg")
    estimate.record(tmp_path, "net", dict(point, accuracy=0.91), "logreg")
    points = estimate.record(tmp_path, "net", dict(point, labels=40, accuracy=0.95), "knn")
    assert [(p["labels"], p["accuracy"], p["method"]) for p in points] == [(20, 0.91, "logreg"), (40, 0.95, "knn")]
    assert estimate.answer(tmp_path, "net")["points"] == points
    assert estimate.answer(tmp_path, "other")["points"] == []
