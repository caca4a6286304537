"""The review queue's arithmetic on hand-made class probabilities, where doubt, consensus, dissenters and
reasons can be worked out by hand (the probabilities are sums of powers of two, exact in floating point).

`doubt_from_probas` alone, then `review_queue` on a real (tiny) dataset whose stored predictions and
clusters are written with the library's own result files, as `nipgboard predict` and `cluster` leave them.
"""
import numpy as np
import pytest

from images import write_shapes
from nipgboard_plugin import results, review
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.store import Store

A, B = "efficientnet_lite0", "mobilenet_v2"


# -- doubt_from_probas -------------------------------------------------------------------------------------
def test_two_networks_agreeing_disagreeing_and_unsure():
    p1 = [[0.875, 0.0625, 0.0625],    # row 0: both say class 0, confidently
          [0.75, 0.25, 0.0],          # row 1: the networks disagree (0 against 1)
          [0.5, 0.25, 0.25]]          # row 2: both say class 0, without confidence
    p2 = [[0.75, 0.125, 0.125],
          [0.0625, 0.6875, 0.25],
          [0.5, 0.375, 0.125]]
    d = review.doubt_from_probas([np.array(p1), np.array(p2)])
    # mean probabilities: [0.8125, 0.09375, 0.09375], [0.40625, 0.46875, 0.125], [0.5, 0.3125, 0.1875]
    assert d["votes"].tolist() == [[0, 0], [0, 1], [0, 0]]
    # row 1: one vote each; the tie goes to the higher mean probability, class 1
    assert d["consensus"].tolist() == [0, 1, 0]
    assert d["dissent"].tolist() == [[False, False], [True, False], [False, False]]
    assert d["confidence"].tolist() == [0.8125, 0.46875, 0.5]
    assert d["doubt"].tolist() == [0.1875, 0.53125, 0.5]
    assert d["disagree"].tolist() == [False, True, False]
    assert d["low_confidence"].tolist() == [False, True, True]      # below 0.6
    assert d["predictor_disagree"].tolist() == [False, False, False]
    assert d["flagged"].tolist() == [False, True, True]
    # the queue's order: the disagreement first, then the unsure image, the confident one last
    assert np.argsort(-d["doubt"]).tolist() == [1, 2, 0]


def test_low_confidence_is_strictly_below_the_threshold():
    p = np.array([[0.625, 0.25, 0.125], [0.5625, 0.4375, 0.0]])
    d = review.doubt_from_probas([p, p], low_confidence=0.625)
    assert d["low_confidence"].tolist() == [False, True]
    assert d["flagged"].tolist() == [False, True]
    assert review.doubt_from_probas([p, p], low_confidence=0.5)["flagged"].tolist() == [False, False]


def test_three_networks_the_majority_wins_over_a_confident_dissenter():
    yes = np.array([[0.5625, 0.4375]])
    no = np.array([[0.0, 1.0]])
    d = review.doubt_from_probas([yes, yes, no])
    assert d["consensus"].tolist() == [0]                    # two votes against one, whatever the mean says
    assert d["dissent"].tolist() == [[False, False, True]]
    assert d["confidence"].tolist() == [0.375] and d["doubt"].tolist() == [0.625]   # mean of 0.5625, 0.5625, 0
    assert d["disagree"].tolist() == [True] and d["flagged"].tolist() == [True]
    # with the dissenter alone the same image is not in doubt at all
    alone = review.doubt_from_probas([no])
    assert alone["consensus"].tolist() == [1] and alone["doubt"].tolist() == [0.0]
    assert alone["flagged"].tolist() == [False]


def test_a_cluster_rule_that_disagrees_flags_the_image():
    p = np.array([[0.875, 0.125], [0.875, 0.125], [0.875, 0.125]])
    clusters_a = np.array([1, -1, 0])   # row 0: A's cluster says class 1; row 1: no cluster label; row 2: agrees
    d = review.doubt_from_probas([p, p], cluster_preds=[clusters_a, None])
    assert d["predictor_disagree"].tolist() == [True, False, False]
    assert d["disagree"].tolist() == [False, False, False] and d["low_confidence"].tolist() == [False] * 3
    assert d["flagged"].tolist() == [True, False, False]
    assert d["doubt"].tolist() == [0.125] * 3           # the cluster rule flags, it does not change the doubt
    # the cluster rule is compared with each network's own vote
    q = np.array([[0.125, 0.875]] * 3)
    d = review.doubt_from_probas([p, q], cluster_preds=[np.array([0, 0, 1]), np.array([1, 0, -1])])
    assert d["predictor_disagree"].tolist() == [False, True, True]


def test_no_networks_is_an_error():
    with pytest.raises(ValueError):
        review.doubt_from_probas([])


# -- review_queue on stored predictions -------------------------------------------------------------------
CLASSES = ["circle", "square"]


@pytest.fixture
def tiny(tmp_path):
    """Four labelled images (two per class) and three unlabelled ones, ingested from real PNG files."""
    images = tmp_path / "images"
    write_shapes(images, per_class=2, size=32, classes=("circle", "square"))
    write_shapes(images / "unlabelled", per_class=1, size=32, start_seed=10)
    logdir = tmp_path / "run"
    ingest(logdir, images, folder_labels_from_subdirs=True, test_fraction=0.0)
    inp = results.load_inputs(logdir, features=False)
    row = {p: i for i, p in enumerate(inp.paths)}
    assert list(inp.roles).count("pool") == 3 and list(inp.roles).count("train") == 4
    return logdir, inp, row


def save_predictions(logdir, inp, net, proba, vote=None):
    proba = np.asarray(proba, dtype=np.float32)
    arrays = {"image_ids": inp.image_ids, "pred": proba.argmax(1), "confidence": proba.max(1), "proba": proba}
    if vote is not None:
        arrays["vote_proba"] = np.asarray(vote, dtype=np.float32)
    results.save_result(logdir, net, "predictions", arrays, {
        "method": "knn", "requested": "knn", "classes": CLASSES,
        "labels_fingerprint": results.labels_fingerprint(inp.image_ids, inp.labels, inp.roles)})


def save_clusters(logdir, inp, net, cluster_label):
    """A projection and clusters of ``net`` in which every image's cluster says ``cluster_label[row]``."""
    n = len(inp.image_ids)
    results.save_result(logdir, net, "projection", {"image_ids": inp.image_ids,
                                                     "points": np.zeros((n, 2), np.float32)}, {"token": "p1"})
    pred = np.array([CLASSES.index(c) if c else -1 for c in cluster_label])
    results.save_result(logdir, net, "clusters", {
        "image_ids": inp.image_ids, "cluster": np.where(pred >= 0, pred, -1),
        "pred": pred, "confidence": np.ones(n, np.float32), "rule": np.zeros(n, np.int64)},
        {"classes": CLASSES, "clusters": [], "n_clusters": 2, "projection_token": "p1"})


def test_queue_reasons_consensus_and_order(tiny):
    logdir, inp, row = tiny
    pool1 = row["unlabelled/circle/circle_010.png"]
    pool2 = row["unlabelled/square/square_010.png"]
    pool3 = row["unlabelled/triangle/triangle_010.png"]
    truth = np.array([[0.875, 0.125] if lab == "circle" else [0.125, 0.875] for lab in inp.labels])
    pa, pb = truth.copy(), truth.copy()
    pa[pool1], pb[pool1] = [0.875, 0.125], [0.75, 0.25]        # both: circle, confidently
    pa[pool2], pb[pool2] = [0.75, 0.25], [0.125, 0.875]        # A circle, B square
    pa[pool3], pb[pool3] = [0.375, 0.625], [0.4375, 0.5625]    # both square, unsure
    save_predictions(logdir, inp, A, pa)
    save_predictions(logdir, inp, B, pb)
    q = review.review_queue(logdir, networks=[A, B])
    assert q["networks"] == [A, B] and q["classes"] == CLASSES and q["stale"] == [] and q["notes"] == []
    assert (q["unlabelled"], q["flagged"], q["disagreements"], q["predictor_disagreements"], q["low_confidence"]) \
        == (3, 2, 1, 0, 2)
    assert q["queue_length"] == q["shown"] == 2
    first, second = q["items"]
    assert first["path"] == "unlabelled/square/square_010.png" and first["role"] == "pool" and first["label"] is None
    assert first["votes"] == {A: "circle", B: "square"} and first["dissenters"] == [A]
    assert first["consensus"] == "square"                      # tie of votes: mean 0.5625 for square
    assert (first["confidence"], first["doubt"]) == (0.5625, 0.4375)
    assert first["reasons"] == [f"networks disagree: {A}=circle, {B}=square", "low confidence 0.56"]
    assert second["path"] == "unlabelled/triangle/triangle_010.png"
    assert (second["consensus"], second["confidence"], second["doubt"]) == ("square", 0.5938, 0.4062)
    assert second["dissenters"] == [] and second["reasons"] == ["low confidence 0.59"]
    assert first["clusters"] == second["clusters"] == {}
    # every unlabelled image in doubt order, flagged or not
    everything = review.review_queue(logdir, networks=[A, B], flagged_only=False)
    assert [it["path"] for it in everything["items"]] == [
        "unlabelled/square/square_010.png", "unlabelled/triangle/triangle_010.png", "unlabelled/circle/circle_010.png"]
    assert everything["items"][2]["doubt"] == 0.1875 and everything["items"][2]["reasons"] == []
    # a lower threshold: the unsure-but-agreeing image leaves the queue, the disagreement stays
    lower = review.review_queue(logdir, networks=[A, B], low_confidence=0.5)
    assert [it["path"] for it in lower["items"]] == ["unlabelled/square/square_010.png"]
    assert lower["items"][0]["reasons"] == [f"networks disagree: {A}=circle, {B}=square"]

    # A's clusters: the confident circle sits in a cluster labelled square
    labels = [None] * len(inp.image_ids)
    labels[pool1] = "square"
    save_clusters(logdir, inp, A, labels)
    q = review.review_queue(logdir, networks=[A, B])
    assert (q["flagged"], q["predictor_disagreements"]) == (3, 1)
    last = q["items"][-1]
    assert last["path"] == "unlabelled/circle/circle_010.png" and last["consensus"] == "circle"
    assert last["reasons"] == [f"cluster rule disagrees: {A} cluster says square"] and last["doubt"] == 0.1875
    assert last["clusters"] == {A: 1} and q["items"][0]["clusters"] == {A: -1}


def test_in_a_committee_each_network_votes_with_its_vote_probabilities(tiny):
    logdir, inp, row = tiny
    pool = row["unlabelled/circle/circle_010.png"]
    base = np.array([[0.875, 0.125] if lab == "circle" else [0.125, 0.875] for lab in inp.labels])
    base[[row["unlabelled/square/square_010.png"], row["unlabelled/triangle/triangle_010.png"]]] = [0.125, 0.875]
    pb, vote_b = base.copy(), base.copy()
    pb[pool] = [0.125, 0.875]                 # B's own method says square...
    vote_b[pool] = [0.75, 0.25]               # ...its vote in a committee says circle
    base[pool] = [0.875, 0.125]
    save_predictions(logdir, inp, A, base)
    save_predictions(logdir, inp, B, pb, vote=vote_b)
    both = review.review_queue(logdir, networks=[A, B], flagged_only=False)
    item = next(it for it in both["items"] if it["path"] == "unlabelled/circle/circle_010.png")
    assert item["votes"] == {A: "circle", B: "circle"} and item["dissenters"] == [] and item["doubt"] == 0.1875
    assert both["disagreements"] == 0
    alone = review.review_queue(logdir, networks=[B], flagged_only=False)   # alone: judged by its own method
    item = next(it for it in alone["items"] if it["path"] == "unlabelled/circle/circle_010.png")
    assert item["votes"] == {B: "square"} and item["doubt"] == 0.125


def test_labelled_images_the_networks_contradict_and_stale_predictions(tiny):
    logdir, inp, row = tiny
    p = np.array([[0.875, 0.125] if lab == "circle" else [0.125, 0.875] for lab in inp.labels])
    wrong = row["circle/circle_001.png"]
    p[wrong] = [0.25, 0.75]                   # both networks: this "circle" is a square
    for r in ("unlabelled/circle/circle_010.png", "unlabelled/square/square_010.png",
              "unlabelled/triangle/triangle_010.png"):
        p[row[r]] = [0.875, 0.125]
    save_predictions(logdir, inp, A, p)
    save_predictions(logdir, inp, B, p)
    assert review.review_queue(logdir, networks=[A, B])["queue_length"] == 0
    q = review.review_queue(logdir, networks=[A, B], include_labelled=True)
    assert q["contradicted_labels"] == 1 and q["queue_length"] == 1
    (item,) = q["items"]
    assert (item["path"], item["role"], item["label"], item["consensus"]) == \
        ("circle/circle_001.png", "train", "circle", "square")
    assert item["reasons"] == ["expert label 'circle' contradicts the networks"] and item["doubt"] == 0.25
    # the expert corrects it: the stored predictions now come from other labels and say so
    with Store(logdir) as st:
        st.set_labels([(int(inp.image_ids[wrong]), "square")])
    q = review.review_queue(logdir, networks=[A, B], include_labelled=True)
    assert q["stale"] == [A, B] and q["contradicted_labels"] == 0
    assert len(q["notes"]) == 2 and all("labels changed since its predictions" in n for n in q["notes"])
    assert f"nipgboard predict {logdir} --network {A}" in q["notes"][0]


def test_several_networks_are_never_worse_than_the_best_alone():
    """The consensus weighs networks on the expert's labels: a network that is mostly wrong there does not
    drag the labels handed out below the good network's; two networks that are both good stay together."""
    rng = np.random.default_rng(0)
    n, k = 400, 3
    truth = rng.integers(0, k, n)
    good = np.full((n, k), 0.1)
    good[np.arange(n), truth] = 0.8
    good[:40] = np.roll(good[:40], 1, axis=1)                # 10% wrong
    bad = np.full((n, k), 0.05)
    wrong = (truth + 1) % k
    bad[np.arange(n), np.where(np.arange(n) % 2 == 0, wrong, truth)] = 0.9   # half wrong, and very sure
    train = np.where(np.arange(n) < 200, truth, -1)
    d = review.doubt_from_probas([good, bad], truth=train)
    assert d["weights"].tolist() == [1.0, 0.0]
    pool = np.arange(200, n)
    assert (d["consensus"][pool] == truth[pool]).mean() == (good[pool].argmax(axis=1) == truth[pool]).mean()
    assert not d["disagree"].any()                            # a network of weight 0 does not dissent
    equal = review.doubt_from_probas([good, bad])             # without the expert's labels: as before
    assert equal["weights"].tolist() == [1.0, 1.0] and equal["disagree"].any()
    also_good = np.roll(good, -40, axis=0)                    # as good, wrong on other images
    also_good[np.arange(n), truth] = np.maximum(also_good[np.arange(n), truth], 0.5)
    assert review.doubt_from_probas([good, also_good], truth=train)["weights"].tolist() == [1.0, 1.0]
