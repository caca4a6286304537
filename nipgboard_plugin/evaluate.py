"""Metrics per network on the train and test images, as one table (the paper's Tables 1 and 2).

:func:`classification_metrics` computes accuracy, precision, specificity, recall and F1 with
scikit-learn. Binary tasks report them for the positive class (``positive``; by default the rarer class
among the train images, the one an inspection usually hunts for). Multi-class tasks report them per
class and their macro average (specificity of a class: true negatives / all images not of that class).
Both include the confusion matrix (rows: true label, columns: predicted, in ``labels`` order).

:func:`metrics_report` reads the stored results of a dataset: for every network, the predictions
(``nipgboard predict``; train images carry out-of-fold predictions, so train figures are honest) and,
when clusters exist, the paper's cluster rule (train figures are then in-sample, as in the paper).
Without labelled images it reports the silhouette of the clusters in the projection instead.
"""
import numpy as np

from .errors import MissingStep


def classification_metrics(y_true, y_pred, labels, positive=None):
    """Metrics of ``y_pred`` against ``y_true`` over ``labels`` (a list giving the class order)."""
    from sklearn.metrics import accuracy_score, confusion_matrix

    y_true = list(y_true)
    y_pred = list(y_pred)
    labels = list(labels)
    n = len(y_true)
    out = {"n": n, "labels": labels}
    if n == 0:
        out.update(accuracy=None, precision=None, specificity=None, recall=None, f1=None,
                   confusion=[[0] * len(labels) for _ in labels], per_class={})
        return out
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn

    def ratio(a, b):
        return np.where(b > 0, a / np.maximum(b, 1e-300), np.nan)

    precision = ratio(tp, tp + fp)
    recall = ratio(tp, tp + fn)
    specificity = ratio(tn, tn + fp)
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    per_class = {
        str(lab): {"precision": _num(precision[i]), "recall": _num(recall[i]), "specificity": _num(specificity[i]),
                   "f1": _num(f1[i]), "support": int(cm[i].sum())}
        for i, lab in enumerate(labels)
    }
    out["accuracy"] = float(accuracy_score(y_true, y_pred))
    out["confusion"] = cm.tolist()
    out["per_class"] = per_class
    if len(labels) == 2:
        pos = labels.index(positive) if positive in labels else 1
        out["positive"] = labels[pos]
        out["average"] = "binary"
        for key, arr in (("precision", precision), ("specificity", specificity), ("recall", recall), ("f1", f1)):
            out[key] = _num(arr[pos])
    else:
        out["average"] = "macro"
        present = cm.sum(axis=1) > 0  # macro over the classes that occur in y_true
        for key, arr in (("precision", precision), ("specificity", specificity), ("recall", recall), ("f1", f1)):
            vals = arr[present]
            vals = np.where(np.isnan(vals), 0.0, vals)  # a class never predicted scores 0, as in sklearn
            out[key] = _num(vals.mean()) if len(vals) else None
    return out


def _num(v):
    v = float(v)
    return None if np.isnan(v) else v


def default_positive(train_labels):
    """The rarer class among the train labels (ties: the alphabetically later)."""
    vals, counts = np.unique(np.asarray(list(train_labels), dtype=object).astype(str), return_counts=True)
    if len(vals) == 0:
        return None
    rarest = [str(v) for v, c in zip(vals, counts) if c == counts.min()]
    return max(rarest)


def silhouette(coords, clusters, sample_size=10000, random_state=0):
    """Silhouette of the clusters in the projection (outliers left out); None with fewer than 2 clusters."""
    from sklearn.metrics import silhouette_score

    coords = np.asarray(coords)
    clusters = np.asarray(clusters)
    keep = clusters >= 0
    if len(np.unique(clusters[keep])) < 2 or keep.sum() < 3:
        return None
    n = int(keep.sum())
    return float(silhouette_score(coords[keep], clusters[keep], sample_size=min(sample_size, n),
                                  random_state=random_state))


def metrics_report(logdir, networks=None, positive=None):
    """One table over the networks: rows (network, method, split) with the metrics; see the module docstring."""
    from . import graph, predict, results

    inp = results.load_inputs(logdir, features=False)
    if networks is None:
        networks = sorted(set(results.networks_with(logdir, "predictions")) |
                          set(results.networks_with(logdir, "clusters")) |
                          set(results.networks_with(logdir, "projection")))
    if not networks:
        raise MissingStep(f"Nothing to evaluate in {logdir}: run `nipgboard project`, `nipgboard cluster` and "
                        f"`nipgboard predict {logdir} --network ID` first.")
    train_labels = inp.labels[inp.roles == "train"]
    has_labels = len(train_labels) > 0 or (inp.roles == "test").any()
    if positive is None and len(set(train_labels)) == 2:
        positive = default_positive(train_labels)
    rows, details, notes, silhouettes = [], {}, [], {}
    for net in networks:
        sources = []
        if results.has_result(logdir, net, "predictions"):
            arrays, meta = predict.load_predictions(logdir, net)
            if meta.get("stale"):
                notes.append(f"{net}: labels changed since `nipgboard predict`; run it again for current figures")
            sources.append((meta["method"], arrays, meta["classes"]))
        carr, cmeta = graph.load_clusters_if_current(logdir, net, notes)
        if carr is not None:
            if sources and sources[0][0] == "cluster":
                sources = []
            sources.append(("cluster", carr, cmeta["classes"]))
            parr, _ = results.load_result(logdir, net, "projection")
            prow = results.align(parr["image_ids"], carr["image_ids"])
            silhouettes[net] = silhouette(parr["coords"][prow], carr["cluster"])
        if not sources:
            if not results.has_result(logdir, net, "projection"):
                raise MissingStep(f"No results for network {net!r} in {logdir}: run "
                                f"`nipgboard project {logdir} --network {net}` first.")
            notes.append(f"{net}: no clusters or predictions yet; run `nipgboard cluster` or `nipgboard predict`")
            continue
        for method, arrays, classes in sources:
            rows_idx = results.align(arrays["image_ids"], inp.image_ids)
            for split in ("train", "test"):
                sel = (inp.roles == split) & (rows_idx >= 0)
                if not sel.any():
                    continue
                codes = arrays["pred"][rows_idx[sel]]
                pred = [classes[c] if c >= 0 else "" for c in codes]
                true = [str(v) for v in inp.labels[sel]]
                labs = sorted(set(classes) | set(true))
                m = classification_metrics(true, pred, labs, positive)
                rows.append({"network": net, "method": method, "split": split, "n": m["n"],
                             "accuracy": m["accuracy"], "precision": m["precision"],
                             "specificity": m["specificity"], "recall": m["recall"], "f1": m["f1"]})
                details[f"{net}/{method}/{split}"] = m
    return {
        "positive": positive if len(set(train_labels)) == 2 else None,
        "average": "binary" if len(set(train_labels)) == 2 else "macro",
        "has_labels": bool(has_labels),
        "rows": rows,
        "details": details,
        "silhouette": silhouettes,
        "notes": notes,
    }


def render_table(report):
    """The report's rows as a text table (the paper's Tables 1 and 2 side by side)."""
    lines = []
    hdr = f"{'network':22} {'method':9} {'split':5} {'n':>6} {'accuracy':>8} {'precision':>9} {'specificity':>11} " \
          f"{'recall':>7} {'F1':>7}"
    lines.append(hdr)
    lines.append("-" * len(hdr))

    def f(v, w):
        return f"{v:{w}.4f}" if isinstance(v, float) else f"{'-':>{w}}"

    for r in report["rows"]:
        lines.append(f"{r['network']:22} {r['method']:9} {r['split']:5} {r['n']:6d} {f(r['accuracy'], 8)} "
                     f"{f(r['precision'], 9)} {f(r['specificity'], 11)} {f(r['recall'], 7)} {f(r['f1'], 7)}")
    if report.get("positive"):
        lines.append(f"(binary metrics for the positive class {report['positive']!r})")
    elif report["rows"]:
        lines.append("(precision, specificity, recall and F1: macro averages over the classes)")
    for net, s in report.get("silhouette", {}).items():
        if s is not None:
            lines.append(f"silhouette of the clusters of {net}: {s:.4f}")
    for n in report.get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)
