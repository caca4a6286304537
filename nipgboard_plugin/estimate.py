"""How accurate are the labels now: an estimate recorded after every prediction, to say when to stop.

Cross-validation on the expert's labels measures accuracy on images *like the labelled ones*. When the
tool chooses what to label (:mod:`.suggest`), the labelled images are the ones the networks were least
sure of, not a random sample, and plain cross-validation is far too low (digits, 240 labels chosen by
the tool: 0.72 against a true 0.98 on the unlabelled images). What transfers from the labelled images to
the others is how confidence relates to being right, so two estimators read the unlabelled images'
confidences through the labelled images' out-of-fold predictions:

* *calibrated confidence*: a logistic regression from an out-of-fold prediction's confidence and margin
  to whether it was right, applied to every unlabelled image and averaged;
* *average thresholded confidence* (ATC, Garg et al. 2022): the confidence threshold above which as many
  out-of-fold predictions lie as were right; the share of unlabelled images above it.

Measured (``bench/handwork.py`` prints both beside the truth every round): with the tool's choice the
first is low and the second high (Fashion-MNIST 3,000, 240 labels: 0.76 and 0.88 against 0.84; digits:
0.94 and 0.99 against 0.98); with random labels both land within 3 points. So the estimate is their
mean, and its interval spans both widened by the binomial error of the labelled images.

*overall* is the share of all images whose final label is right: the expert's labels count as right,
the others are right at the estimated rate. A point is recorded per prediction; the panel draws them
against the number of labels given, so the expert sees when more labels buy little.
"""
import json
import time

import numpy as np

from . import atomic, paths

MIN_LABELLED = 10     # fewer out-of-fold predictions than this: no estimate
Z95 = 1.96
METHOD = "the unlabelled images' confidences, calibrated on the expert's labels (out-of-fold)"


def _confidence_features(proba):
    top = np.sort(np.asarray(proba, dtype=np.float64), axis=1)
    conf = np.clip(top[:, -1], 1e-6, 1 - 1e-6)
    margin = top[:, -1] - (top[:, -2] if top.shape[1] > 1 else 0.0)
    return np.c_[np.log(conf / (1 - conf)), margin]


def calibrated_confidence(oof_proba, correct, proba):
    """Mean probability of being right of the rows of ``proba``, learnt from the out-of-fold rows."""
    from sklearn.linear_model import LogisticRegression

    if correct.all() or not correct.any():
        return float(correct.mean())
    model = LogisticRegression(C=1.0).fit(_confidence_features(oof_proba), correct)
    return float(model.predict_proba(_confidence_features(proba))[:, 1].mean())


def thresholded_confidence(oof_proba, correct, proba):
    """ATC: the share of rows above the confidence that as many out-of-fold rows exceed as were right."""
    threshold = np.quantile(np.asarray(oof_proba).max(axis=1), 1.0 - correct.mean())
    return float((np.asarray(proba).max(axis=1) >= threshold).mean())


def estimate(oof_proba, correct, unlabelled_proba, n_images, n_expert):
    """The estimated accuracy of the predictions on the unlabelled images, its 95% interval, and *overall*.

    ``oof_proba``/``correct``: the labelled (train) images' out-of-fold probabilities and whether their
    argmax was right; ``unlabelled_proba``: the predictions to judge; ``n_expert`` images carry an expert
    label (they count as right in *overall*). None when too few labels.
    """
    correct = np.asarray(correct, dtype=bool)
    if len(correct) < MIN_LABELLED:
        return None
    n_unlabelled = max(n_images - n_expert, 0)
    if len(unlabelled_proba):
        estimates = (calibrated_confidence(oof_proba, correct, unlabelled_proba),
                     thresholded_confidence(oof_proba, correct, unlabelled_proba))
    else:
        estimates = (float(correct.mean()),) * 2
    acc = float(np.mean(estimates))
    n = len(correct)
    p = min(max(acc, 0.5 / (n + 1)), 1 - 0.5 / (n + 1))  # never a zero-width interval
    half = Z95 * np.sqrt(p * (1 - p) / n)
    low, high = max(min(estimates) - half, 0.0), min(max(estimates) + half, 1.0)

    def overall(a):
        return (n_expert + a * n_unlabelled) / max(n_images, 1)

    return {"labels": int(n_expert), "accuracy": round(acc, 4), "low": round(low, 4), "high": round(high, 4),
            "overall": round(overall(acc), 4), "overall_low": round(overall(low), 4),
            "overall_high": round(overall(high), 4), "plain_cv": round(float(correct.mean()), 4),
            "calibrated": round(estimates[0], 4), "thresholded": round(estimates[1], 4)}


def history_path(run_dir, network_id):
    return paths.network_dir(run_dir, network_id) / "accuracy.json"


def history(run_dir, network_id) -> list:
    """The recorded points, oldest first ([] before the first prediction)."""
    try:
        return json.loads(history_path(run_dir, network_id).read_text())
    except (OSError, ValueError):
        return []


def record(run_dir, network_id, point, method) -> list:
    """Add a point (replacing the last one when the number of labels is the same); return the history."""
    points = history(run_dir, network_id)
    point = dict(point, method=method, time=round(time.time(), 1))
    if points and points[-1]["labels"] == point["labels"]:
        points[-1] = point
    else:
        points.append(point)
    atomic.write_text(history_path(run_dir, network_id), json.dumps(points))
    return points


def answer(run_dir, network_id) -> dict:
    """What the panel's "when to stop" plot draws."""
    points = history(run_dir, network_id)
    return {"network": network_id, "points": points, "method": METHOD,
            "note": "" if points else "predict (with two or more labels per class) to see how accurate the labels are"}
