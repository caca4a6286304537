"""Hostile or unlucky inputs: what each one could do, and what NIPGBoard promises instead.

Each section names a threat (a file name, an image, a labels file, a request that could crash a step,
leak a secret, mislead a spreadsheet or exhaust memory) and tests the promise that answers it, with
real files made with Pillow, real SQLite and the real command line.
"""
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from images import shape_image, write_shapes
from nipgboard_plugin import export, labels, paths, projection, thumbnails
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.errors import InvalidParameter, UserError
from nipgboard_plugin.store import Store

_SCRIPT = Path(sys.executable).with_name("nipgboard")
NIPGBOARD = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "nipgboard_plugin.cli"]


def run_cli(*argv, json_out=True):
    """The real console command in a subprocess: (exit code, parsed JSON or None, the process)."""
    args = [*NIPGBOARD, *map(str, argv)] + (["--json"] if json_out else [])
    proc = subprocess.run(args, capture_output=True, timeout=600)
    out = proc.stdout.decode("utf-8", "replace")
    parsed = json.loads(out) if json_out and out.strip() else None
    return proc.returncode, parsed, proc


def one_image_per_id(logdir):
    with Store(logdir) as store:
        return {path: image_id for image_id, _sha, path in store.image_rows("id, sha256, path")}


# == 1. File names that are not UTF-8 =====================================================================
class TestFileNamesNotUtf8:
    """Threat: a file (or folder) whose name is not valid UTF-8 bytes, as old archives and Windows shares
    produce, made `nipgboard init` fail with a traceback and ingest nothing. Promise: such a file is listed
    with the unreadable files, under its name with the bad bytes escaped (``bad\\xffname.png``) and the
    reason "file name is not valid UTF-8"; it is skipped (rename it to include it), and the rest of the
    folder is ingested."""

    def test_a_file_name_that_is_not_utf8_is_reported_and_skipped(self, tmp_path):
        root = tmp_path / "images"
        write_shapes(root, per_class=2)
        broot = os.fsencode(root)
        with open(os.path.join(broot, b"circle", b"bad\xffname.png"), "wb") as fh:
            shape_image("circle", 77).save(fh, format="PNG")
        os.mkdir(os.path.join(broot, b"dir\xfe"))
        with open(os.path.join(broot, b"dir\xfe", b"inside.png"), "wb") as fh:
            shape_image("square", 78).save(fh, format="PNG")

        rc, out, proc = run_cli("init", tmp_path / "log", "--images", root)
        assert rc == 0, proc.stderr.decode(errors="replace")
        assert out["images"] == 6
        reasons = {u["path"]: u["reason"] for u in out["unreadable"]}
        assert "not valid UTF-8" in reasons["circle/bad\\xffname.png"]
        assert "not valid UTF-8" in reasons["dir\\xfe"]
        rc, _, proc = run_cli("summary", tmp_path / "log", json_out=False)
        assert rc == 0 and b"bad\\xffname.png" in proc.stdout and b"Traceback" not in proc.stderr


# == 2. Very thin images ==================================================================================
@pytest.fixture
def thin_dataset(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for name, size in {"strip.png": (1, 60000), "needle.png": (20, 2000), "line.png": (60000, 1)}.items():
        Image.new("RGB", size, (0, 0, 255)).save(root / name)
    logdir = tmp_path / "log"
    assert ingest(logdir, root)["images"] == 3
    return logdir


class TestThinImages:
    """Threat: a 1 x 60000 or 20 x 2000 image scaled to a thumbnail became 0 pixels wide, and Pillow refused
    to write it: the thumbnail and the whole sprite page failed. Promise: every thumbnail and sprite tile is
    drawn, at least one pixel across in each direction."""

    def test_thin_images_get_thumbnails_and_sprite_tiles(self, thin_dataset):
        logdir = thin_dataset
        with Store(logdir) as store:
            for path, image_id in one_image_per_id(logdir).items():
                for size in thumbnails.THUMB_SIZES:
                    with Image.open(io.BytesIO(thumbnails.thumbnail(logdir, store, image_id, size))) as im:
                        w, h = im.size
                    assert 1 <= w <= size and 1 <= h <= size and max(w, h) == size, (path, size, im.size)
            for tile in thumbnails.TILE_SIZES:
                page = np.asarray(Image.open(io.BytesIO(thumbnails.sprite_page(logdir, store, tile, 0))))
                for i in range(3):  # each tile shows its blue strip, not the grey-and-red placeholder
                    cell = page[(i // 2) * tile:(i // 2 + 1) * tile, (i % 2) * tile:(i % 2 + 1) * tile].astype(int)
                    assert ((cell[..., 2] - cell[..., 0]) > 80).any(), (tile, i)


# == 3. Few UMAP epochs ===================================================================================
class TestFewEpochs:
    """Threat: `nipgboard project --n-epochs 1` (allowed: 1-5000) crashed inside UMAP ("zero-size array"),
    because UMAP places new images with a third of the epochs. Promise: small epoch counts work (UMAP runs
    at least projection.MIN_UMAP_EPOCHS)."""

    @pytest.mark.parametrize("n_epochs", [1, 2])
    def test_a_projection_with_one_or_two_epochs_works(self, n_epochs):
        rng = np.random.default_rng(0)
        X = rng.normal(size=(120, 32)).astype(np.float32)
        y = np.arange(120) % 3
        proj = projection.Projection(n_epochs=n_epochs, n_neighbors=10).fit(X[:90], y[:90])
        placed = proj.transform(X[90:])
        assert placed.shape == (30, 3) and np.isfinite(placed).all()
        assert np.isfinite(proj.embedding_).all()


# == 4. Search grid size ==================================================================================
BIG_UMAP_GRID = {"n_neighbors": list(range(1000, 1020)), "min_dist": [0.0, 0.1, 0.2, 0.3, 0.4]}  # 100


BIG_GRAPH_GRID = {"graph": ["mst", "knn"], "resolution": [0.5, 1.0]}                               # x 4


class TestSearchGridSize:
    """Threat: a grid search multiplies its options, and nothing bounded the product: one request could
    queue weeks of UMAP fits. Promise: a grid of more than projection.MAX_GRID_CONFIGS configurations is
    refused with InvalidParameter, saying the count and the limit, before anything is loaded or fitted; the
    count is the product of the lists' lengths (the grid itself is never materialised)."""

    def test_a_grid_over_the_limit_is_refused_before_any_fit(self, tmp_path):
        rng = np.random.default_rng(0)
        X, y = rng.normal(size=(30, 8)).astype(np.float32), np.arange(30) % 2
        calls = []
        with pytest.raises(InvalidParameter, match=f"400 configurations.*limit of {projection.MAX_GRID_CONFIGS}"):
            projection.grid_search(X, y, BIG_UMAP_GRID, BIG_GRAPH_GRID, progress=lambda *a: calls.append(a))
        assert calls == []
        with pytest.raises(InvalidParameter, match="400 configurations"):
            projection.search_dataset(tmp_path / "no-dataset", "efficientnet_lite0", BIG_UMAP_GRID, BIG_GRAPH_GRID)
        assert projection.check_grid() == 8  # the default grid is well inside
        with pytest.raises(InvalidParameter, match="non-empty list"):
            projection.check_grid({"n_neighbors": 15})


# == 5. CSV export ========================================================================================
class TestCsvExport:
    """Threat: the exported CSV is opened in a spreadsheet. A path with a line break split a row in two (a
    carriage return was not even quoted), and a file or label starting with ``=``, ``+``, ``-`` or ``@``
    ran as a formula ("CSV injection"). Promise: every field is quoted; such cells start with ``'``
    (OWASP's advice); reading the file back with the csv module gives one row per image."""

    def test_export_quotes_every_field_and_neutralises_formulas(self, tmp_path):
        root = tmp_path / "images"
        root.mkdir()
        names = ["=HYPERLINK(1).png", "+sum.png", "-minus.png", "@at.png", "\tlead.png", "line\nfeed.png",
                 "carriage\rreturn.png", "plain.png"]
        for i, name in enumerate(names):
            shape_image("circle", 200 + i).save(root / name, format="PNG")
        labels_csv = tmp_path / "labels.csv"
        with open(labels_csv, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["plain.png", "=1+1"], ["+sum.png", "@SUM(A1)"], ["line\nfeed.png", "ok"]])
        summary = ingest(tmp_path / "log", root, labels_csv=labels_csv)
        assert summary["images"] == len(names) and summary["labelled"] == 3

        out = tmp_path / "labels-out.csv"
        export.export_csv(tmp_path / "log", out)
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert len(rows) == 1 + len(names) and all(len(r) == len(export.COLUMNS) for r in rows)
        by_path = {r[0]: dict(zip(export.COLUMNS, r)) for r in rows[1:]}
        expected = {n if n[0] not in "=+-@\t\r" else "'" + n for n in names}
        assert set(by_path) == expected
        assert by_path["plain.png"]["expert_label"] == "'=1+1" and by_path["plain.png"]["final_label"] == "'=1+1"
        assert by_path["'+sum.png"]["expert_label"] == "'@SUM(A1)"
        assert by_path["line\nfeed.png"]["expert_label"] == "ok"
        assert out.read_text(encoding="utf-8").startswith('"path","role"')


# == 6. A bad labels file =================================================================================
class TestBadLabelsFile:
    """Threat: the labels file is in Latin-1, binary, a folder or otherwise unreadable, and `init` failed
    with a traceback after adding the images (a half-built dataset). Or it is the wrong file (a key file),
    and its lines were echoed into the label issues ("got 'API_KEY=...'"). Promise: the labels file is read
    first; if it cannot be read as UTF-8 CSV, a clear error names the problem and nothing is added (no
    dataset created, nothing added to an existing one). Row problems say the row number and what is wrong,
    never the row's cells (a path is shown only when it names an image file)."""

    @pytest.mark.parametrize("kind", ["latin-1", "binary", "folder"])
    def test_an_unreadable_labels_file_adds_nothing(self, tmp_path, kind):
        root = tmp_path / "images"
        rels = write_shapes(root, per_class=2)
        bad = tmp_path / "labels.csv"
        if kind == "latin-1":
            bad.write_bytes("\n".join(f"{r},café" for r in rels).encode("latin-1"))
        elif kind == "binary":
            bad.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
        else:
            bad.mkdir()
        fresh = tmp_path / "fresh"
        rc, out, proc = run_cli("init", fresh, "--images", root, "--labels", bad)
        assert rc == 2 and out["error"] and b"Traceback" not in proc.stderr
        assert not paths.db_path(fresh).exists()
        reason = {"latin-1": "not UTF-8", "binary": "not UTF-8", "folder": "is a folder"}[kind]
        with pytest.raises(UserError, match=reason):
            ingest(fresh, root, labels_csv=bad)
        assert not paths.db_path(fresh).exists()

        existing = tmp_path / "existing"
        assert ingest(existing, root)["images"] == 6
        write_shapes(root, per_class=1, start_seed=40)  # the folder grows
        with pytest.raises(UserError):
            ingest(existing, root, labels_csv=bad)
        with Store(existing) as store:
            assert store.image_count() == 6 and store.labels() == {}

    def test_label_issues_never_echo_the_labels_file(self, tmp_path):
        root = tmp_path / "images"
        rels = write_shapes(root, per_class=2)
        wrong = tmp_path / "secrets.env"
        wrong.write_text("API_KEY=sk-live-0123456789\nDB_PASSWORD=hunter2,admin\nuser,supersecretpassword\n"
                         f"{rels[0]},circle\ncircle/missing.png,circle\n")
        summary = ingest(tmp_path / "log", root, labels_csv=wrong)
        assert summary["labelled"] == 1
        text = json.dumps(summary["label_issues"])
        for secret in ("sk-live", "hunter2", "DB_PASSWORD", "supersecret", "API_KEY"):
            assert secret not in text
        issues = {i["source"]: i["detail"] for i in summary["label_issues"]}
        assert "expected 'path,label', found 1 column" in issues["secrets.env row 1"]
        assert "not in the images folder" in issues["secrets.env row 2"]
        assert "circle/missing.png is not in the images folder" in issues["secrets.env row 5"]  # an image name


# == 7. One rule for labels ===============================================================================
BAD_LABELS = ["a\x00b", "\x1b[31mred", "two\nlines", "x" * 5000, "c1\x9bcontrol", "lone\ud800"]


class TestOneLabelRule:
    """Threat: a label is shown in terminals, tables and the panel. NUL, escape sequences (``\\x1b[31m``
    recolours or clears a terminal), line breaks, C1 controls, lone surrogates or 5,000 characters were
    accepted by the labels CSV and `nipgboard label`, though the web panel refused them. Promise: one rule,
    labels.clean_label, everywhere: such a label is refused (InvalidParameter naming the parameter, never
    repeating the value); in a labels CSV it is reported and not stored; `nipgboard label` exits 2 with a
    JSON error; `nipgboard summary` never prints an escape character."""

    def test_clean_label_rule(self):
        assert labels.clean_label("  good label ") == "good label"
        assert labels.clean_label(None) is None
        assert labels.clean_label("é" * labels.MAX_LABEL_LENGTH) == "é" * 100
        for bad in BAD_LABELS + ["", "   ", "x" * 101, "del\x7f"]:
            with pytest.raises(InvalidParameter, match="^the label "):
                labels.clean_label(bad, "the label")
        with pytest.raises(InvalidParameter, match="must be a string"):
            labels.clean_label(5)

    def test_bad_labels_are_refused_by_csv_ingest_and_by_the_label_command(self, tmp_path):
        root = tmp_path / "images"
        rels = write_shapes(root, per_class=3)
        labels_csv = tmp_path / "labels.csv"
        with open(labels_csv, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            for rel, bad in zip(rels, BAD_LABELS[:-1]):  # a lone surrogate is not UTF-8: see below
                w.writerow([rel, bad])
            w.writerow([rels[-1], "fine"])
        logdir = tmp_path / "log"
        summary = ingest(logdir, root, labels_csv=labels_csv)
        assert summary["classes"] == {"fine": 1}
        refused = [i for i in summary["label_issues"] if "label refused" in i["detail"]]
        assert len(refused) == len(BAD_LABELS) - 1
        rc, _, proc = run_cli("summary", logdir, json_out=False)
        assert rc == 0 and b"\x1b" not in proc.stdout and b"\x00" not in proc.stdout

        # The label command: on the command line, and from a list file (NUL cannot be an argument).
        target = rels[0]
        for bad in ["\x1b[31mred", "two\nlines", "x" * 5000, "c1\x9bcontrol"]:
            rc, out, proc = run_cli("label", logdir, "--image", target, "--label", bad)
            assert rc == 2 and "label" in out["error"] and "\x1b" not in out["error"], (bad, out)
            assert b"\x1b" not in proc.stdout + proc.stderr
        listed = tmp_path / "list.csv"
        listed.write_bytes(f"{target},a\x00b\n".encode())
        rc, out, _ = run_cli("label", logdir, "--list", listed)
        assert rc == 2 and "control characters" in out["error"]
        with Store(logdir) as store:
            assert list(store.labels().values()) == ["fine"]

    def test_a_labels_csv_that_is_not_utf8_is_refused_whole(self, tmp_path):
        """A lone surrogate in a CSV is not UTF-8 at all: the file is refused before anything is added."""
        root = tmp_path / "images"
        rels = write_shapes(root, per_class=1)
        labels_csv = tmp_path / "labels.csv"
        labels_csv.write_bytes(f"{rels[0]},lone".encode() + b"\xed\xa0\x80\n")
        with pytest.raises(UserError, match="not UTF-8"):
            ingest(tmp_path / "log", root, labels_csv=labels_csv)
        assert not paths.db_path(tmp_path / "log").exists()


# == 8. Huge files are hashed by streaming ================================================================
class TestHugeFiles:
    """Threat: `init` read each file whole into memory to hash it: a folder holding a multi-gigabyte video
    or disk image exhausted the machine's memory. Promise: files are hashed in 1 MiB chunks and decoded
    lazily; a 300 MiB file that is not an image costs the process far less than its size."""

    def test_a_huge_file_is_hashed_without_reading_it_whole(self, tmp_path):
        root = tmp_path / "images"
        write_shapes(root, per_class=1)
        with open(root / "disk.img", "wb") as fh:
            fh.truncate(300 << 20)  # sparse: 300 MiB of zeros, no disk space used
        probe = ("import json, resource, subprocess, sys\n"
                 "proc = subprocess.run(sys.argv[1:], capture_output=True)\n"
                 "print(json.dumps({'rc': proc.returncode, 'out': proc.stdout.decode(),"
                 " 'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
        done = subprocess.run([sys.executable, "-c", probe, *NIPGBOARD, "init", str(tmp_path / "log"),
                               "--images", str(root), "--workers", "1", "--json"],
                              capture_output=True, text=True, timeout=600)
        result = json.loads(done.stdout)
        assert result["rc"] == 0, done.stderr
        summary = json.loads(result["out"])
        assert summary["images"] == 3
        assert {u["path"] for u in summary["unreadable"]} == {"disk.img"}
        assert result["maxrss_kib"] < 200 * 1024, result["maxrss_kib"]


# == 9. Sprite pages after a file comes back ==============================================================
def _tile(page_bytes, index, tile=64, columns=2):
    page = np.asarray(Image.open(io.BytesIO(page_bytes)).convert("RGB")).astype(int)
    r, c = divmod(index, columns)
    return page[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile]


def _thumb_as_tile(data, tile=64):
    img = Image.open(io.BytesIO(data)).convert("RGB")
    canvas = Image.new("RGB", (tile, tile), thumbnails.BACKGROUND)
    canvas.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    return np.asarray(canvas).astype(int)


class TestSpritePagesAfterRestore:
    """Threat: a sprite page drawn while an image was unreadable (moved away, half copied) kept its
    placeholder tile for good, because the page's cache key was only the ids and content hashes. Promise:
    a page notes which tiles were placeholders and the state of their files; when one of those files
    changes (is restored), the page is drawn again and its tile matches the image's thumbnail."""

    @pytest.mark.parametrize("how", ["moved away", "truncated"])
    def test_a_restored_image_replaces_its_placeholder_tile(self, tmp_path, how):
        root = tmp_path / "images"
        root.mkdir()
        for i, name in enumerate(["a.png", "b.png", "c.png"]):
            shape_image("triangle", 300 + i, size=96).save(root / name)
        logdir = tmp_path / "log"
        ingest(logdir, root)
        target = root / "b.png"
        original = target.read_bytes()
        if how == "moved away":
            shutil.move(target, tmp_path / "b.png")
        else:
            target.write_bytes(original[:40])
        with Store(logdir) as store:
            image_id = one_image_per_id(logdir)["b.png"]
            index = sorted(one_image_per_id(logdir).values()).index(image_id)
            broken = thumbnails.sprite_page(logdir, store, 64, 0)
            assert thumbnails.sprite_page(logdir, store, 64, 0) == broken  # still cached while nothing changed
            if how == "moved away":
                shutil.move(tmp_path / "b.png", target)
            else:
                target.write_bytes(original)
            assert thumbnails.sprite_index(logdir, store, 64)["pages"][0]["ready"] is False
            restored = thumbnails.sprite_page(logdir, store, 64, 0)
            assert restored != broken
            expected = _thumb_as_tile(thumbnails.thumbnail(logdir, store, image_id, 64))
            assert np.abs(_tile(restored, index) - expected).mean() < 6
            assert np.abs(_tile(broken, index) - expected).mean() > 20
            assert thumbnails.sprite_index(logdir, store, 64)["pages"][0]["ready"] is True


# == 10. Full images: converted once, a few at a time =====================================================
def _big_tiff(path, seed, size=(3000, 3000)):
    grad = Image.linear_gradient("L").resize(size)
    Image.merge("RGB", (grad, grad.rotate(90), Image.new("L", size, seed * 20))).save(path, compression="tiff_lzw")


def _vm_hwm_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM")


class TestFullImages:
    """Threat: /image converted TIFF, BMP and 16-bit files to PNG on every request, without a cache or a
    limit: 16 concurrent requests for one 6000 x 6000 TIFF took the server from 257 MB to 4 GB. Promise:
    a conversion is cached on disk under the run's data folder (keyed by content hash, written atomically),
    at most thumbnails.MAX_CONVERSIONS run at once, and images over MAX_CONVERTED_PIXELS are scaled down;
    formats browsers show are served as they are."""

    def test_a_converted_full_image_is_cached(self, tmp_path):
        root = tmp_path / "images"
        root.mkdir()
        Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).save(root / "deep.png")
        shape_image("circle", 1).save(root / "web.png")
        logdir = tmp_path / "log"
        ingest(logdir, root)
        ids = one_image_per_id(logdir)
        with Store(logdir) as store:
            done_before = thumbnails.conversion_stats["done"]
            data, ctype = thumbnails.full_image(store, ids["deep.png"])
            sha = store.image_by_id(ids["deep.png"])["sha256"]
            cached = paths.data_dir(logdir) / "converted" / sha[:2] / f"{sha}.png"
            assert ctype == "image/png" and cached.read_bytes() == data
            assert thumbnails.full_image(store, ids["deep.png"]) == (data, "image/png")
            assert thumbnails.conversion_stats["done"] == done_before + 1  # the second call read the cache
            assert thumbnails.full_image(store, ids["web.png"]) == ((root / "web.png").read_bytes(), "image/png")
        assert Image.open(cached).size == (64, 64)

    def test_concurrent_conversions_are_bounded_in_number_and_memory(self, tmp_path):
        root = tmp_path / "images"
        root.mkdir()
        for i in range(8):
            _big_tiff(root / f"big{i}.tif", i)
        logdir = tmp_path / "log"
        ingest(logdir, root, workers=1)
        ids = sorted(one_image_per_id(logdir).values())
        Path("/proc/self/clear_refs").write_text("5")  # restart this process's peak-memory count
        baseline = _vm_hwm_kib()
        thumbnails.conversion_stats["peak"] = 0
        start, errors, sizes = threading.Barrier(len(ids)), [], []

        def fetch(image_id):
            try:
                with Store(logdir) as store:
                    start.wait()
                    data, ctype = thumbnails.full_image(store, image_id)
                    sizes.append(len(data))
            except Exception as exc:  # reported below: a thread's failure must fail the test
                errors.append(exc)

        threads = [threading.Thread(target=fetch, args=(i,)) for i in ids]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(sizes) == 8
        assert 1 <= thumbnails.conversion_stats["peak"] <= thumbnails.MAX_CONVERSIONS
        growth_mib = (_vm_hwm_kib() - baseline) / 1024
        assert growth_mib < 300, growth_mib  # ~140 MiB with two conversions at once, ~550 with eight

    def test_an_oversized_image_is_scaled_down_when_converted(self, tmp_path):
        root = tmp_path / "images"
        root.mkdir()
        Image.linear_gradient("L").resize((7000, 6000)).save(root / "huge.tif", compression="tiff_lzw")  # 42 Mpx
        ingest(tmp_path / "log", root)
        with Store(tmp_path / "log") as store:
            data, _ = thumbnails.full_image(store, 1)
        w, h = Image.open(io.BytesIO(data)).size
        assert w * h <= thumbnails.MAX_CONVERTED_PIXELS and abs(w / h - 7000 / 6000) < 0.01


# == 11. What a label replaced, under concurrent writers ==================================================
class TestPreviousLabelsUnderRace:
    """Threat: the answer to a label change reported the labels read before its write transaction, so with
    two writers (two browser tabs) an answer could name a "previous" label that its own change did not
    replace (14 of 200 under a race). Promise: Store.set_labels_with_previous reads the previous labels
    inside the change's own write transaction: every answer agrees with the history."""

    def test_previous_labels_agree_with_the_history_under_a_race(self, tmp_path):
        root = tmp_path / "images"
        write_shapes(root, per_class=2)
        logdir = tmp_path / "log"
        ingest(logdir, root)
        ids = sorted(one_image_per_id(logdir).values())[:3]
        answers = []

        def writer(name):
            with Store(logdir) as store:
                for n in range(100):
                    source = f"{name}-{n}"
                    changed, previous = store.set_labels_with_previous([(i, source) for i in ids], source=source)
                    assert changed == len(ids)
                    answers.append((source, previous))

        threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with Store(logdir) as store:
            recorded = {(h["source"], h["image_id"]): h["old_label"] for h in store.label_history()}
            assert store.set_labels([(ids[0], "plain")]) == 1  # the old form still answers a count
        assert len(answers) == 200
        for source, previous in answers:
            assert previous == {i: recorded[(source, i)] for i in ids}, source


# == 12. Paths with surrounding spaces ===================================================================
class TestPathsWithSpaces:
    """Threat: the labels CSV stripped every path, so a file whose name ends (or starts) with a space,
    ``img.png `` say, could never be labelled by CSV, or took the label of its neighbour ``img.png``.
    Promise: a path is matched exactly as written first, then stripped of surrounding spaces."""

    def test_a_path_with_a_trailing_space_is_labelled_by_csv(self, tmp_path):
        root = tmp_path / "images"
        root.mkdir()
        for i, name in enumerate(["img.png ", "img.png", " lead.png", "plain.png"]):
            shape_image("circle", 10 + i).save(root / name, format="PNG")
        labels_csv = tmp_path / "labels.csv"
        labels_csv.write_text("path,label\nimg.png ,spaced\nimg.png,tight\n lead.png,leading\n plain.png ,plain\n")
        logdir = tmp_path / "log"
        summary = ingest(logdir, root, labels_csv=labels_csv)
        assert summary["label_issues"] == []
        ids = one_image_per_id(logdir)
        with Store(logdir) as store:
            assert store.labels() == {ids["img.png "]: "spaced", ids["img.png"]: "tight", ids[" lead.png"]: "leading",
                                      ids["plain.png"]: "plain"}


# == 13. A running server, reached from a browser =========================================================
# One real `tensorboard --logdir` with the plugin serves the sections below: the logdir, an images folder and
# a labels folder beside it (allowed with NIPGBOARD_ROOTS), and an "outside" folder that nothing allows.
SECRETS = ("sk-live-0123456789", "hunter2", "DB_PASSWORD", "API_KEY", "supersecretpassword")
PROXY_HOST = "nipgboard-proxy.internal"
WEB_RUN = "shapes"


@pytest.fixture(scope="module")
def served(tmp_path_factory, nipgboard_home):
    from plugin_server import TensorBoardServer

    base = tmp_path_factory.mktemp("served")
    images, labels_dir, outside, logdir = (base / n for n in ("images", "labels", "outside", "logdir"))
    rels = write_shapes(images, per_class=4, size=48)
    labels_dir.mkdir()
    logdir.mkdir()
    (labels_dir / "secrets.csv").write_text(
        "API_KEY=sk-live-0123456789\nDB_PASSWORD=hunter2,admin\nuser,supersecretpassword\n"
        f"{rels[0]},circle\n{rels[4]},square\n{rels[8]},triangle\n", encoding="utf-8")
    (labels_dir / "latin1.csv").write_bytes(f"{rels[1]},café\n".encode("latin-1"))
    write_shapes(outside, per_class=1, size=48, start_seed=500)
    (outside / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    os.symlink(outside, labels_dir / "escape")                        # a link inside a root leading out
    os.symlink(outside / "passwd", labels_dir / "escape.csv")
    # Roots through the environment variable: the old plugin had no --nipgboard_roots flag.
    env = {"NIPGBOARD_ROOTS": os.pathsep.join(map(str, (images, labels_dir))),
           "NIPGBOARD_ALLOWED_HOSTS": PROXY_HOST}
    server = TensorBoardServer(logdir, nipgboard_home, log_path=base / "tensorboard.log", env=env).start()
    try:
        ingest_job = server.run_job(WEB_RUN, "ingest", images=str(images), labels_csv=str(labels_dir / "secrets.csv"))
        yield {"tb": server, "base": base, "images": images, "labels": labels_dir, "outside": outside,
               "logdir": logdir, "ingest": ingest_job}
    finally:
        server.stop()


def _answer(tb, method, route, body=None, headers=None):
    """(status, text of the body) of a request to the plugin's ``route`` (a path with its query)."""
    from plugin_server import HEADER, PREFIX

    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    status, _h, data = tb.request(method, PREFIX + route, body=body,
                                  headers=headers if headers is not None else (HEADER if method == "POST" else {}))
    return status, data.decode("utf-8", "replace")


def _ingest(tb, run, **params):
    return _answer(tb, "POST", "start_job", {"run": run, "kind": "ingest", "params": params})


class TestBrowserNamedPaths:
    """Threat: any file on the server could be read over HTTP. An ``ingest`` job accepted any absolute path:
    ``labels_csv=/etc/passwd`` put the file's lines into the summary's label issues, ``images=/etc`` listed
    every file name under it, and every image found anywhere then downloaded through /image. Promise: the
    browser may name only paths inside the logdir and the folders given with --nipgboard_roots (or
    NIPGBOARD_ROOTS), checked after resolving links; anything else is refused with 403, with the same answer
    whether the path exists or not, and nothing is queued; a labels file's contents never appear in any
    answer."""

    def test_paths_outside_the_allowed_folders_are_refused_alike(self, served):
        tb, outside, labels_dir = served["tb"], served["outside"], served["labels"]
        images = str(served["images"])
        refusals = {
            "images outside": dict(images=str(outside)),
            "images nowhere": dict(images=str(outside / "no-such-folder")),
            "labels outside": dict(images=images, labels_csv="/etc/passwd"),
            "labels nowhere": dict(images=images, labels_csv=str(outside / "no-such-file.csv")),
            "folder through a link": dict(images=str(labels_dir / "escape")),
            "file through a link": dict(images=images, labels_csv=str(labels_dir / "escape.csv")),
            "dot-dot out of a root": dict(images=str(served["images"] / ".." / "outside")),
        }
        answers = {}
        for what, params in refusals.items():
            status, text = _ingest(tb, "stolen", **params)
            assert status == 403, (what, status, text)
            answers[what] = json.loads(text)["error"]
            assert "root:x" not in text and str(outside) not in text, (what, text)
        # Whether the path exists is not revealed: the answers are the same word for word.
        assert answers["images outside"] == answers["images nowhere"]
        assert answers["labels outside"] == answers["labels nowhere"]
        assert "stolen" not in [r["name"] for r in tb.get_json("runs")["runs"]]  # nothing was queued
        assert not (served["logdir"] / "stolen").exists()

    def test_an_allowed_folder_works_and_its_labels_file_is_never_echoed(self, served):
        tb, job = served["tb"], served["ingest"]
        assert job["state"] == "done" and job["result"]["images"] == 12 and job["result"]["labelled"] == 3
        image_id = tb.get_json("metadata", run=WEB_RUN)["ids"][0]
        status, headers, _ = tb.get("image", run=WEB_RUN, id=image_id)
        assert status == 200 and headers["content-type"].startswith("image/")
        answers = [json.dumps(job), json.dumps(tb.get_json("summary", run=WEB_RUN)),
                   json.dumps(tb.get_json("jobs")), json.dumps(tb.get_json("runs")),
                   json.dumps(tb.get_json("metadata", run=WEB_RUN)), tb.get("export", run=WEB_RUN)[2].decode()]
        # The same file again, now as an error: an existing dataset with a labels file that only mislabels.
        answers.append(_ingest(tb, WEB_RUN, labels_csv=str(served["labels"] / "secrets.csv"), test_fraction=2)[1])
        for text in answers:
            for secret in SECRETS:
                assert secret not in text, (secret, text[:300])
        issues = tb.get_json("summary", run=WEB_RUN)["label_issues"]
        assert issues and all(i["source"].startswith("secrets.csv row") for i in issues)


class TestRebinding:
    """Threat: DNS rebinding. A page on evil.example re-points its name to 127.0.0.1 and then reads the
    server as its own origin; the Host and Origin checks ran only on POST, so GET /export, /summary and /image
    answered 200 with ``Host: evil.example``. Promise: every route checks ``Host`` (403 for a name the
    server does not answer to) and ``Origin`` where a browser sends one; NIPGBOARD_ALLOWED_HOSTS admits the
    name of a proxy."""

    def test_every_route_checks_host_and_origin(self, served):
        tb = served["tb"]
        image_id = tb.get_json("metadata", run=WEB_RUN)["ids"][0]
        routes = [f"summary?run={WEB_RUN}", f"export?run={WEB_RUN}", f"image?run={WEB_RUN}&id={image_id}",
                  "index.js", f"metadata?run={WEB_RUN}", "runs", f"thumbnail?run={WEB_RUN}&id={image_id}"]
        own = f"127.0.0.1:{tb.port}"
        for route in routes:
            for host in ("evil.example", f"evil.example:{tb.port}", "127.0.0.1.evil.example"):
                status, text = _answer(tb, "GET", route, headers={"Host": host})
                assert status == 403, (route, host, status, text[:200])
                assert "circle" not in text and "shapes" not in text, (route, text[:200])
            status, text = _answer(tb, "GET", route, headers={"Host": own, "Origin": "http://evil.example"})
            assert status == 403, (route, "cross-site Origin", status)
            assert _answer(tb, "GET", route, headers={"Host": own})[0] == 200, route
            assert _answer(tb, "GET", route, headers={"Host": own, "Origin": f"http://{own}"})[0] == 200, route
            assert _answer(tb, "GET", route, headers={"Host": f"{PROXY_HOST}:443"})[0] == 200, route
            assert _answer(tb, "GET", route, headers={"Host": "localhost"})[0] == 200, route


class TestMalformedBodies:
    """Threat: bodies the JSON parser accepts but the code below it did not: a lone surrogate label
    (``"\\ud800"``) reached SQLite and failed as a 500; an array nested 100,000 deep blew Python's recursion
    limit (another 500). Promise: both are answered 400 with a JSON error, and the server keeps answering."""

    def test_a_lone_surrogate_label_and_deep_nesting_are_400(self, served):
        tb = served["tb"]
        image_id = tb.get_json("metadata", run=WEB_RUN)["ids"][1]
        bodies = {
            "lone surrogate": '{"run": "%s", "id": %d, "label": "\\ud800"}' % (WEB_RUN, image_id),
            "surrogate in assignments": '{"run": "%s", "assignments": [[%d, "a\\udfffb"]]}' % (WEB_RUN, image_id),
            "nested array": "[" * 100_000,
            "nested object": '{"run": ' + '{"a": ' * 50_000 + "1" + "}" * 50_000 + "}",
            "nested closed": '{"run": "%s", "id": %d, "label": %s}' % (WEB_RUN, image_id,
                                                                        "[" * 100_000 + "]" * 100_000),
        }
        for what, body in bodies.items():
            status, text = _answer(tb, "POST", "set_labels", body)
            assert status == 400, (what, status, text[:200])
            assert json.loads(text)["status"] == 400 and json.loads(text)["error"], what
        status, text = _answer(tb, "POST", "start_job", "[" * 100_000)
        assert status == 400, text[:200]
        assert tb.get_json("runs")["runs"]  # still answering
        assert tb.get_json("metadata", run=WEB_RUN)["label"][1] is None  # nothing was stored


class TestNoServerPathsInErrors:
    """Threat: error answers named absolute paths of the server's machine (``No predictions in
    /home/alice/experiments/run``), which tells a visitor the layout of the disk and the user's name.
    Promise: errors over HTTP (the answer's own error and a failed job's) name paths relative to the logdir;
    an allowed folder outside it is shown only by its last name (``…/images``)."""

    def test_errors_show_no_absolute_paths(self, served):
        tb = served["tb"]
        secret_paths = [str(served["logdir"]), os.path.realpath(served["logdir"]), str(served["base"]),
                        os.path.realpath(served["base"])]
        errors = {
            "points before a projection": _answer(tb, "GET", f"points?run={WEB_RUN}&network=efficientnet_lite0"),
            "clusters before clustering": _answer(tb, "GET", f"clusters?run={WEB_RUN}&network=efficientnet_lite0"),
            "metrics before results": _answer(tb, "GET", f"metrics?run={WEB_RUN}"),
            "review before predictions": _answer(tb, "GET", f"review?run={WEB_RUN}"),
            "unknown run": _answer(tb, "GET", "summary?run=no-such-run"),
            "unknown image": _answer(tb, "GET", f"image?run={WEB_RUN}&id=999999"),
            "images folder missing": _ingest(tb, "later", images=str(served["images"] / "no-such-folder")),
        }
        expected = {"points before a projection": 409, "clusters before clustering": 409,
                    "metrics before results": 409, "review before predictions": 409, "unknown run": 404,
                    "unknown image": 404, "images folder missing": 404}
        for what, (status, text) in errors.items():
            assert status == expected[what], (what, status, text)
            assert json.loads(text)["error"], what
            for secret in secret_paths:
                assert secret not in text, (what, text)
        # Jobs that fail in the worker: one naming the run's folder, one naming the labels file's.
        failed = []
        for run, kind, params in ((WEB_RUN, "project", {"network": "efficientnet_lite0", "method": "pca"}),
                                  ("latin", "ingest", {"images": str(served["images"]),
                                                       "labels_csv": str(served["labels"] / "latin1.csv")})):
            job = tb.post_json("start_job", {"run": run, "kind": kind, "params": params}, expect=202)
            done = tb.wait_job(run, job["id"], timeout=120)
            assert done["state"] == "failed" and done["error"], done
            failed.append((run, done))
        assert "embed" in failed[0][1]["error"] and "not UTF-8" in failed[1][1]["error"]
        assert "latin1.csv" in failed[1][1]["error"]  # the file is named, its folder only by its last name
        for run, done in failed:
            listed = [j for j in tb.get_json("jobs", run=run)["jobs"] + tb.get_json("jobs")["jobs"]
                      if j["id"] == done["id"] and j["run"] == run]
            for text in [done["error"]] + [j["error"] for j in listed]:
                for secret in secret_paths:
                    assert secret not in text, (run, text)


class TestRunAtTheLogdirRoot:
    """Threat: the runs of a logdir must not nest (a run's images folder would hold another run's
    thumbnails and caches, and discovery would show one inside the other); the check was skipped for the
    run ``.`` (the logdir itself): an ingest into ``.`` with other runs below it was queued. Promise: it is
    refused with 400 naming the run it would contain, before anything is queued; so is a new run whose
    images folder contains the run's own folder."""

    def test_a_run_at_the_root_above_other_runs_is_refused(self, served):
        tb = served["tb"]
        status, text = _ingest(tb, ".", images=str(served["images"]))
        assert status == 400, (status, text)
        assert "would contain the run" in json.loads(text)["error"] and "nest" in json.loads(text)["error"]
        status, text = _ingest(tb, "inner", images=str(served["logdir"]))
        assert status == 400 and "contains the run" in json.loads(text)["error"], (status, text)
        names = [r["name"] for r in tb.get_json("runs")["runs"]]
        assert "." not in names and "inner" not in names
        assert not paths.data_dir(served["logdir"]).exists()


class TestSearchGridOverHttp:
    """Threat: a `search` job multiplies its axes (up to 10 values each): one request could queue weeks of
    UMAP fits, refused only when the worker reached it. Promise: a grid of more than
    projection.MAX_GRID_CONFIGS configurations is answered 400 when submitted, with the count and the
    limit, and never queued."""

    def test_an_oversized_grid_is_refused_at_submission(self, served):
        tb = served["tb"]
        params = {"network": "efficientnet_lite0", "n_neighbors": [5, 10, 15, 20, 30],
                  "min_dist": [0.0, 0.1, 0.2, 0.3, 0.5], "learning_rate": [0.5, 1.0, 2.0],
                  "graph": ["mst", "knn"], "resolution": [0.5, 1.0]}
        status, text = _answer(tb, "POST", "start_job", {"run": WEB_RUN, "kind": "search", "params": params})
        assert status == 400, (status, text)
        error = json.loads(text)["error"]
        assert "300 configurations" in error and f"limit of {projection.MAX_GRID_CONFIGS}" in error, error
        assert "search" not in {j["kind"] for j in tb.get_json("jobs", run=WEB_RUN)["jobs"]}
