"""`nipgboard embed`: real offline networks, the cache, resuming after Ctrl-C and kill -9;
near duplicates, similar and rare images from the features."""
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist, squareform

from images import write_shapes
from nipgboard_plugin import paths
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.features import FeaturesMissing, embed, load_features
from nipgboard_plugin.neighbours import near_duplicate_groups, normalise
from nipgboard_plugin.store import Store

NET = "efficientnet_lite0"
REPO = Path(__file__).resolve().parent.parent


def cli(*argv, timeout=300):
    proc = subprocess.run([sys.executable, "-m", "nipgboard_plugin.cli", *argv, "--json"],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return proc.returncode, (json.loads(proc.stdout) if proc.stdout.strip() else None), proc.stderr


@pytest.fixture(scope="module")
def shapes_logdir(tmp_path_factory):
    """30 shapes in three classes, embedded once for the tests that only read features."""
    base = tmp_path_factory.mktemp("shapes")
    root = base / "images"
    write_shapes(root, per_class=10, size=96)
    # Near duplicates: the same picture a little brighter, and shifted by two pixels.
    src = Image.open(root / "circle/circle_000.png")
    ImageEnhance.Brightness(src).enhance(1.08).save(root / "circle/near_bright.png")
    Image.fromarray(np.roll(np.asarray(src), 2, axis=1)).save(root / "circle/near_shift.png")
    # Something unlike everything else: the rare image.
    rng = np.random.default_rng(5)
    Image.fromarray((rng.random((96, 96, 3)) * 255).astype(np.uint8)).save(root / "odd_noise.png")
    logdir = base / "log"
    ingest(logdir, root, folder_labels_from_subdirs=True)
    embed(logdir, NET)
    return logdir


def test_embed_caches_and_second_run_costs_nothing(shapes_logdir):
    ids, X = load_features(shapes_logdir, NET)
    assert X.shape == (33, 1280) and X.dtype == np.float32
    assert np.isfinite(X).all() and (np.linalg.norm(X, axis=1) > 0).all()
    assert len(set(map(tuple, np.round(X[:, :8], 4)))) == 33  # every image has its own vector
    again = embed(shapes_logdir, NET)
    assert again["extracted"] == 0 and again["cached_before"] == 33 and again["engine"] is None
    assert again["seconds"] < 5


def test_features_do_not_depend_on_batch_composition(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=3, size=80)
    a, b = tmp_path / "a", tmp_path / "b"
    ingest(a, root)
    ingest(b, root)
    embed(a, NET, batch_size=1)
    embed(b, NET, batch_size=16)
    ids_a, Xa = load_features(a, NET)
    ids_b, Xb = load_features(b, NET)
    assert np.abs(Xa - Xb).max() < 1e-3


def test_features_separate_classes(shapes_logdir):
    """Real pretrained features: each shape's nearest neighbour is mostly the same shape."""
    ids, X = load_features(shapes_logdir, NET)
    with Store(shapes_logdir) as store:
        labels = store.labels()
    rows = [r for r, i in enumerate(ids) if i in labels]
    y = np.array([labels[ids[r]] for r in rows])
    Xn = X[rows] / np.linalg.norm(X[rows], axis=1, keepdims=True)
    sim = Xn @ Xn.T
    np.fill_diagonal(sim, -np.inf)
    accuracy = (y[sim.argmax(axis=1)] == y).mean()
    assert accuracy >= 0.8, accuracy


def test_new_images_cost_only_themselves(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=2, size=64)
    logdir = tmp_path / "log"
    ingest(logdir, root)
    assert embed(logdir, NET)["extracted"] == 6
    write_shapes(root, per_class=1, size=64, start_seed=40)
    ingest(logdir, root)
    r = embed(logdir, NET)
    assert r["extracted"] == 3 and r["cached_before"] == 6
    assert load_features(logdir, NET)[1].shape == (9, 1280)


def test_load_before_embed_says_what_to_run(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=1)
    ingest(tmp_path / "log", root)
    with pytest.raises(FeaturesMissing, match=f"nipgboard embed .* --network {NET}"):
        load_features(tmp_path / "log", NET)
    rc, out, _ = cli("duplicates", str(tmp_path / "log"), "--network", NET)
    assert rc == 2 and "nipgboard embed" in out["error"]
    rc, out, _ = cli("embed", str(tmp_path / "log"), "--network", "no_such_net")
    assert rc == 2 and "efficientnet_lite0" in out["error"]  # the message lists the known networks


def test_a_file_that_went_bad_after_init_is_skipped(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=2)
    logdir = tmp_path / "log"
    ingest(logdir, root)
    (root / "circle/circle_000.png").write_bytes(b"garbage now")
    (root / "square/square_001.png").unlink()
    r = embed(logdir, NET)
    assert r["extracted"] == 4 and len(r["failed"]) == 2
    assert any("circle/circle_000.png" in f for f in r["failed"])


def _big_dataset(tmp_path, n_per_class):
    root = tmp_path / "images"
    write_shapes(root, per_class=n_per_class, size=64)
    logdir = tmp_path / "log"
    ingest(logdir, root)
    return logdir


def _cached_rows(logdir):
    path = paths.features_path(logdir)
    if not path.exists():
        return 0
    con = sqlite3.connect(path, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM features").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _interruptible():
    # As in a terminal: a shell that starts the test run in the background (`cmd &`) passes SIGINT
    # on as ignored, and Python then never turns it into KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_embed(logdir):
    return subprocess.Popen([sys.executable, "-m", "nipgboard_plugin.cli", "embed", str(logdir), "--network", NET,
                             "--batch-size", "4"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)


def _wait_for_some_cached(logdir, proc, at_least=8, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if _cached_rows(logdir) >= at_least:
            return
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    raise AssertionError("embedding made no progress")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_interrupted_embed_resumes_without_corrupt_entries(tmp_path, sig):
    # enough images that the run outlasts this process's polling even on a busy machine
    logdir = _big_dataset(tmp_path, n_per_class=120)
    with Store(logdir) as st:
        total = len(list(st.image_rows("id")))
    assert total == 360
    proc = _start_embed(logdir)
    _wait_for_some_cached(logdir, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "run the same command again to resume" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done_before = _cached_rows(logdir)
    assert 0 < done_before < total
    con = sqlite3.connect(paths.features_path(logdir))
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert {len(v) for (v,) in con.execute("SELECT vec FROM features")} == {1280 * 4}
    con.close()

    r = embed(logdir, NET)
    assert r["cached_before"] == done_before and r["extracted"] == total - done_before
    ids, X = load_features(logdir, NET)
    # What was cached before the interruption equals a fresh extraction of the same images.
    fresh_dir = tmp_path / "fresh"
    ingest(fresh_dir, Store(logdir).images_root())
    embed(fresh_dir, NET)
    ids2, X2 = load_features(fresh_dir, NET)
    assert np.abs(X - X2).max() < 1e-3


# -- near duplicates, similar, rare -----------------------------------------------------------------
def test_near_duplicates_at_the_documented_distance(shapes_logdir):
    rc, out, _ = cli("duplicates", str(shapes_logdir), "--network", NET, "--threshold", "0.3")
    assert rc == 0
    groups = [sorted(e["path"] for e in g) for g in out["groups"]]
    first = next(g for g in groups if "circle/circle_000.png" in g)
    assert {"circle/near_bright.png", "circle/near_shift.png"} <= set(first)
    assert all(len({p.split("/")[0] for p in g}) == 1 for g in groups)  # never across shapes at 0.3
    rc, out_tight, _ = cli("duplicates", str(shapes_logdir), "--network", NET, "--threshold", "0.08")
    assert [sorted(e["path"] for e in g) for g in out_tight["groups"]] == \
        [["circle/circle_000.png", "circle/near_bright.png"]]  # the brightened copy alone is that close
    rc, out_wide, _ = cli("duplicates", str(shapes_logdir), "--network", NET, "--threshold", "1.0")
    assert out_wide["images_in_groups"] > out["images_in_groups"]


def _brute_force_groups(X, threshold):
    """Every pairwise distance (float64, between the L2-normalised rows), then connected components."""
    linked = squareform(pdist(normalise(X).astype(np.float64))) <= threshold
    _, comp = connected_components(linked, directed=False)
    groups = [np.flatnonzero(comp == c).tolist() for c in np.unique(comp) if (comp == c).sum() >= 2]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def test_near_duplicate_groups_are_exactly_the_brute_force_ones(shapes_logdir):
    _, X = load_features(shapes_logdir, NET)
    # Rows repeated as they are (two files of one picture), so that distance 0 links something.
    X = np.vstack([X, X[[3, 3, 17]]])
    n = len(X)
    seen = set()
    for threshold in (0.0, 0.08, 0.3, 0.45, 0.6, 0.8, 1.0, 1.4, 2.0):
        want = _brute_force_groups(X, threshold)
        seen.add(tuple(map(len, want)))
        # One block; blocks of 5 rows; single rows (every tile a 1 x 16 slice of the later rows).
        for block_rows in (512, 5, 1):
            assert near_duplicate_groups(X, threshold, block_rows=block_rows) == want, (threshold, block_rows)
    assert _brute_force_groups(X, 0.0) == [[3, n - 3, n - 2], [17, n - 1]]
    assert _brute_force_groups(X, 2.0) == [list(range(n))]
    assert len(seen) >= 6  # the thresholds give different groupings, not just "none" and "all"


def test_near_duplicate_search_reports_progress_and_stops_when_asked(shapes_logdir):
    _, X = load_features(shapes_logdir, NET)
    n = len(X)
    calls = []
    near_duplicate_groups(X, 0.3, progress=lambda done, total: calls.append((done, total)), block_rows=8)
    assert calls == [(min(start + 8, n), n) for start in range(0, n, 8)]
    asked = []

    def stop_at_the_second_question():
        asked.append(len(calls))
        return len(asked) == 2

    calls.clear()
    assert near_duplicate_groups(X, 2.0, progress=lambda done, total: calls.append((done, total)),
                                 should_stop=stop_at_the_second_question, block_rows=8) is None
    assert calls == [(8, n), (16, n)] and asked == [1, 2]


def test_similar_and_rare(shapes_logdir):
    rc, out, _ = cli("similar", str(shapes_logdir), "--network", NET, "--image", "square/square_003.png", "-k", "5")
    assert rc == 0 and out["query"]["path"] == "square/square_003.png"
    neighbours = [e["path"] for e in out["similar"]]
    assert len(neighbours) == 5 and "square/square_003.png" not in neighbours
    assert sum(p.startswith("square/") for p in neighbours) >= 4
    assert [e["distance"] for e in out["similar"]] == sorted(e["distance"] for e in out["similar"])
    rc, out, _ = cli("rare", str(shapes_logdir), "--network", NET, "-n", "3")
    assert rc == 0 and out["rare"][0]["path"] == "odd_noise.png"
    rc, out, _ = cli("similar", str(shapes_logdir), "--network", NET, "--image", "/etc/passwd")
    assert rc == 2 and "not an image of this dataset" in out["error"]


def test_networks_lists_every_network_with_availability():
    rc, out, _ = cli("networks")
    assert rc == 0
    nets = {n["id"]: n for n in out["networks"]}
    for offline in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2"):
        assert nets[offline]["available"] and nets[offline]["feature_dim"] == 1280
    for paper in ("vgg16", "vgg19", "nasnetlarge", "xception", "inceptionresnetv2", "densenet201",
                  "resnet50", "efficientnetb0"):
        assert paper in nets
        if not nets[paper]["available"]:
            assert nets[paper]["message"]  # says what to install or which file to put where
    assert nets["vgg16"]["feature_dim"] == 4096 and nets["nasnetlarge"]["input_size"] == [331, 331]


def _pooling_onnx(path):
    """A real ONNX model (global average pooling: 3 features per image) built with onnx's helpers."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 3, 16, 16])
    y = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])
    graph = helper.make_graph([helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
                               helper.make_node("Flatten", ["pooled"], ["features"])], "pool", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_user_onnx_network_from_the_cli(tmp_path):
    model = _pooling_onnx(tmp_path / "pool.onnx")
    rc, out, err = cli("register-network", "--path", str(model), "--id", "mean_colour", "--input-size", "16", "16",
                       "--scale", "1", "--mean", "0", "0", "0", "--std", "1", "1", "1")
    assert rc == 0, err
    assert out["feature_dim"] == 3 and out["available"]
    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (30, 20), (200, 10, 50)).save(root / "red.png")
    Image.new("RGB", (30, 20), (0, 0, 255)).save(root / "blue.jpg", quality=100)
    ingest(tmp_path / "log", root)
    rc, out, err = cli("embed", str(tmp_path / "log"), "--network", "mean_colour")
    assert rc == 0 and out["extracted"] == 2, err
    ids, X = load_features(tmp_path / "log", "mean_colour")
    with Store(tmp_path / "log") as store:
        by_path = {store.image_by_id(i)["path"]: x for i, x in zip(ids, X)}
    np.testing.assert_allclose(by_path["red.png"], [200, 10, 50], atol=0.5)  # the model's real output
    assert np.abs(by_path["blue.jpg"] - [0, 0, 255]).max() < 3
    model.unlink()
    rc, out, _ = cli("networks")
    gone = next(n for n in out["networks"] if n["id"] == "mean_colour")
    assert not gone["available"] and "pool.onnx" in gone["message"]
    rc, out, _ = cli("unregister-network", "mean_colour")
    assert rc == 0
    rc, out, _ = cli("networks")
    assert "mean_colour" not in {n["id"] for n in out["networks"]}
