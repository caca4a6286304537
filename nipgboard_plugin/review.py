"""The review queue: images the networks disagree on or are unsure about, most doubtful first.

For every image the stored predictions of each network (``nipgboard predict``) give a vote and class
probabilities; with two or more networks each votes with its logistic regression (``vote_proba``,
see :mod:`.predict`: errors hide less in their disagreements). The *consensus* is the majority vote
(ties: the label with the higher mean probability); networks voting otherwise are *dissenters*. The
queue's order is the *doubt*, ``1 - mean probability of the consensus label`` over the networks: two
networks that disagree split the probability and land at the top, and so does a lone network that is
unsure.

An image is *flagged* (it enters the queue) when

* the networks disagree (with three or more: anyone dissents from the majority),
* a network's predictor disagrees with its own cluster rule (``nipgboard cluster``), or
* the consensus probability is below ``low_confidence``.

By default the queue holds the images without an expert label; ``include_labelled`` adds labelled
images whose label contradicts the consensus (possible labelling mistakes).

:func:`label_images` resolves queue entries (one image, a list, or a whole cluster) through
:meth:`Store.set_labels`, which records every change in the label history, and reports how often each
network's prediction matched what the expert decided ("metrics after review").
"""
import numpy as np

from .errors import InvalidParameter, MissingStep, NotFound, UserError


def network_weights(probas, truth):
    """Each network's weight in the consensus: all alike, or one network alone where that was right more often.

    ``truth``: per row the expert's class code on the train images, -1 elsewhere. Their probabilities
    are out-of-fold (:mod:`.predict`), so the consensus of each choice is scored on images no network
    learnt from: the choice right most often wins, ties going to all networks alike. So the labels handed
    out by several networks are as good as the best network's alone on the expert's labels, or better.
    """
    k = len(probas)
    choices = [np.ones(k)] + [np.eye(k)[j] for j in range(k)] if k > 1 else [np.ones(1)]
    truth = np.asarray(truth) if truth is not None else np.zeros(0)
    train = np.flatnonzero(truth >= 0)
    if len(choices) == 1 or len(train) == 0:
        return choices[0]
    scores = [float((np.tensordot(w, np.stack([p[train] for p in probas]), axes=1).argmax(axis=1)
                     == truth[train]).mean()) for w in choices]
    return choices[int(np.argmax(scores))]


def truth_codes(labels, roles, classes):
    """Class codes of the train images' expert labels, -1 elsewhere (for :func:`network_weights`)."""
    col = {c: i for i, c in enumerate(classes)}
    return np.array([col.get(lab, -1) if role == "train" else -1 for lab, role in zip(labels, roles)], dtype=np.int64)


def doubt_from_probas(probas, cluster_preds=None, low_confidence=0.6, truth=None):
    """Consensus, doubt and flags from per-network class probabilities (same class order in each).

    ``cluster_preds``: optional list (per network) of cluster-rule class codes (-1: none). ``truth``
    (see :func:`network_weights`) weighs the networks; networks of weight 0 vote but neither make the
    consensus nor dissent from it.
    """
    probas = [np.asarray(p, dtype=np.float64) for p in probas]
    if not probas:
        raise ValueError("no predictions")
    n, k = probas[0].shape
    weights = network_weights(probas, truth)
    mean = np.tensordot(weights / weights.sum(), np.stack(probas), axes=1)
    votes = np.stack([p.argmax(axis=1) for p in probas], axis=1)  # (n, networks)
    counts = np.zeros((n, k))
    for j in range(votes.shape[1]):
        counts[np.arange(n), votes[:, j]] += weights[j]
    consensus = (counts + 1e-3 * mean).argmax(axis=1)
    dissent = (votes != consensus[:, None]) & (weights > 0)[None, :]
    p_cons = mean[np.arange(n), consensus]
    predictor = np.zeros(n, dtype=bool)
    if cluster_preds is not None:
        for j, cp in enumerate(cluster_preds):
            if cp is not None:
                cp = np.asarray(cp)
                predictor |= (cp >= 0) & (cp != votes[:, j])
    low = p_cons < low_confidence
    disagree = dissent.any(axis=1)
    return {
        "consensus": consensus, "votes": votes, "dissent": dissent, "disagree": disagree,
        "predictor_disagree": predictor, "low_confidence": low, "confidence": p_cons,
        "doubt": 1.0 - p_cons, "flagged": disagree | predictor | low, "weights": weights,
    }


def _network_predictions(logdir, networks, image_ids):
    """Per network: probabilities over the union of classes, aligned to image_ids; plus cluster votes."""
    from . import graph, predict, results

    loaded = []
    notes = []
    stale = []
    classes = set()
    for net in networks:
        arrays, meta = predict.load_predictions(logdir, net)
        if meta.get("stale"):
            stale.append(net)
            notes.append(f"{net}: labels changed since its predictions; run `nipgboard predict {logdir} "
                         f"--network {net}` again")
        loaded.append((net, arrays, meta))
        classes |= set(meta["classes"])
    classes = sorted(classes)
    col = {c: i for i, c in enumerate(classes)}
    probas, cluster_preds, clusters = [], [], {}
    for net, arrays, meta in loaded:
        rows = results.align(arrays["image_ids"], image_ids)
        if (rows < 0).any():
            raise UserError(f"The predictions of {net!r} miss {int((rows < 0).sum())} images: run "
                            f"`nipgboard predict {logdir} --network {net}` again.")
        p = np.zeros((len(image_ids), len(classes)))
        # one network alone is judged by its own best method; in a committee it votes (see module docstring)
        source = "vote_proba" if len(loaded) > 1 and "vote_proba" in arrays else "proba"
        p[:, [col[c] for c in meta["classes"]]] = arrays[source][rows]
        probas.append(p)
        cp = None
        carr, cmeta = graph.load_clusters_if_current(logdir, net, notes)
        if carr is not None:
            crow = results.align(carr["image_ids"], image_ids)
            ok = crow >= 0
            codes = np.full(len(image_ids), -1, dtype=np.int64)
            src = carr["pred"][crow[ok]]
            codes[ok] = [col.get(cmeta["classes"][c], -1) if c >= 0 else -1 for c in src]
            cp = codes
            cl = np.full(len(image_ids), -1, dtype=np.int64)
            cl[ok] = carr["cluster"][crow[ok]]
            clusters[net] = cl
        cluster_preds.append(cp)
    return classes, probas, cluster_preds, clusters, notes, stale


def review_queue(logdir, networks=None, include_labelled=False, low_confidence=0.6, limit=100, flagged_only=True):
    """The review queue of a dataset as a JSON-able dict (see the module docstring)."""
    from . import results

    if networks is None:
        networks = results.networks_with(logdir, "predictions")
        if not networks:
            raise MissingStep(f"No predictions in {logdir}: run `nipgboard predict {logdir} --network ID` "
                            "for one or more networks first.")
    networks = list(dict.fromkeys(networks))
    inp = results.load_inputs(logdir, features=False)
    classes, probas, cluster_preds, clusters, notes, stale = _network_predictions(logdir, networks, inp.image_ids)
    d = doubt_from_probas(probas, cluster_preds, low_confidence, truth_codes(inp.labels, inp.roles, classes))
    if d["weights"].min() == 0:
        alone = networks[int(d["weights"].argmax())]
        notes.append(f"the consensus is {alone}'s alone: on the expert's labels it was right more often "
                     "than the networks together")
    unlabelled = inp.roles == "pool"
    cons_label = np.array(classes, dtype=object)[d["consensus"]]
    if include_labelled:
        contradicted = ~unlabelled & (inp.labels != cons_label)
        candidates = unlabelled | contradicted
    else:
        contradicted = np.zeros(len(unlabelled), dtype=bool)
        candidates = unlabelled
    selected = candidates & (d["flagged"] | contradicted) if flagged_only else candidates
    idx = np.flatnonzero(selected)
    idx = idx[np.lexsort((inp.image_ids[idx], -d["doubt"][idx]))]
    total = len(idx)
    if limit:
        idx = idx[: int(limit)]
    items = []
    for i in idx:
        votes = {net: classes[d["votes"][i, j]] for j, net in enumerate(networks)}
        reasons = []
        if d["disagree"][i]:
            reasons.append("networks disagree: " + ", ".join(f"{n}={v}" for n, v in votes.items()))
        if d["predictor_disagree"][i]:
            reasons.append("cluster rule disagrees: " + ", ".join(
                f"{net} cluster says {classes[cp[i]]}" for net, cp in zip(networks, cluster_preds)
                if cp is not None and cp[i] >= 0 and cp[i] != d["votes"][i, networks.index(net)]))
        if d["low_confidence"][i]:
            reasons.append(f"low confidence {d['confidence'][i]:.2f}")
        if contradicted[i]:
            reasons.append(f"expert label {inp.labels[i]!r} contradicts the networks")
        items.append({
            "id": int(inp.image_ids[i]), "path": inp.paths[i], "role": inp.roles[i], "label": inp.labels[i],
            "consensus": classes[d["consensus"][i]], "confidence": round(float(d["confidence"][i]), 4),
            "doubt": round(float(d["doubt"][i]), 4), "votes": votes,
            "dissenters": [net for j, net in enumerate(networks) if d["dissent"][i, j]],
            "clusters": {net: int(c[i]) for net, c in clusters.items()},
            "reasons": reasons,
        })
    pool = unlabelled
    return {
        "networks": networks, "classes": classes,
        "unlabelled": int(pool.sum()),
        "flagged": int((d["flagged"] & pool).sum()),
        "disagreements": int((d["disagree"] & pool).sum()),
        "predictor_disagreements": int((d["predictor_disagree"] & pool).sum()),
        "low_confidence": int((d["low_confidence"] & pool).sum()),
        "contradicted_labels": int(contradicted.sum()),
        "weights": dict(zip(networks, d["weights"].tolist())),
        "queue_length": int(total), "shown": len(items), "items": items, "notes": notes,
        "stale": stale,  # networks whose predictions predate the latest label changes
    }


def load_queue(logdir, limit=500):
    """The queue over every network with predictions (what the plugin's review panel shows)."""
    return review_queue(logdir, limit=limit)


def _resolve_images(store, images):
    ids, missing = [], []
    for p in images:
        iid = store.image_id_for_path(p)
        (missing.append(p) if iid is None else ids.append(int(iid)))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise UserError(f"{len(missing)} image(s) not in the dataset: {shown} (paths are relative to the images "
                        f"folder {store.get_meta('images_root')}, or absolute inside it). Nothing was labelled.")
    return ids


def label_images(logdir, label=None, images=(), ids=(), pairs=(), cluster=None, network=None, overwrite=False):
    """Give expert labels and report the networks' agreement with them.

    Forms: ``images`` (paths) and/or ``ids`` with one ``label``; ``pairs`` [(path, label)] from a list;
    ``cluster`` (with ``network``) labels every member of that cluster that has no label yet (all of
    them with ``overwrite``). Nothing is written when any image is unknown.
    """
    from . import results
    from .labels import clean_label, printable
    from .run import Run

    if label is not None and str(label).strip() != "":
        label = clean_label(label)  # the same rule as the web panel and the labels CSV: refused, never stored
    pairs = [(p, clean_label(lab, f"the label of {printable(p, 80)}")) for p, lab in pairs]
    run = Run(logdir)
    with results.open_store(logdir) as store:
        assignments = []
        if pairs:
            pids = _resolve_images(store, [p for p, _ in pairs])
            assignments += [(i, lab) for i, (_, lab) in zip(pids, pairs)]
        targets = []
        if images:
            targets += _resolve_images(store, images)
        for i in ids:
            if store.image_by_id(int(i)) is None:
                raise NotFound(f"Unknown image id {i}. Nothing was labelled.")
            targets.append(int(i))
    if cluster is not None:
        if not network:
            raise InvalidParameter("Labelling a cluster needs --network (whose clusters).")
        targets += run.cluster_members(network, cluster, overwrite)
    if targets:
        if label is None or str(label).strip() == "":
            raise InvalidParameter("Give the label with --label.")
        assignments += [(i, label) for i in targets]
    if not assignments:
        raise InvalidParameter("Nothing to label: give --image, --id, --list or --cluster.")
    answer = run.set_labels(assignments, report=True)
    answer.pop("labels")
    answer.pop("run")
    return answer


def review_metrics(logdir, batch, user_labels):
    """How often each network's stored prediction matched the expert: on this batch and on all user labels."""
    from . import results

    out = {}
    for net in results.networks_with(logdir, "predictions"):
        arrays, meta = results.load_result(logdir, net, "predictions")
        classes = meta["classes"]
        entry = {}
        for name, labs in (("this_batch", batch), ("all_reviewed", user_labels)):
            if not labs:
                continue
            ids = np.fromiter(labs.keys(), dtype=np.int64)
            rows = results.align(arrays["image_ids"], ids)
            ok = rows >= 0
            pred = [classes[c] for c in arrays["pred"][rows[ok]]]
            truth = [labs[int(i)] for i in ids[ok]]
            agree = sum(p == t for p, t in zip(pred, truth))
            entry[name] = {"n": int(ok.sum()), "agreed": int(agree),
                           "accuracy": round(agree / ok.sum(), 4) if ok.any() else None}
        out[net] = entry
    return out
