"""`nipgboard init`: scanning, bad files, duplicates, labels, splits, re-runs, label history."""
import csv
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from images import shape_image, write_bad_files, write_shapes
from nipgboard_plugin import imaging, paths
from nipgboard_plugin.dataset import ingest, stratified_split
from nipgboard_plugin.errors import UserError
from nipgboard_plugin.store import Store


def run_cli(*argv):
    """Run the real console entry point in a subprocess; return (exit code, parsed JSON)."""
    proc = subprocess.run([sys.executable, "-m", "nipgboard_plugin.cli", *argv, "--json"],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None


# -- reading every kind of image the same way -------------------------------------------------------
def test_every_mode_becomes_rgb_by_one_rule(tmp_path):
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    cases = {}
    red.save(tmp_path / "a.jpg", quality=100); cases["a.jpg"] = (254, 0, 0)
    red.save(tmp_path / "a.bmp"); cases["a.bmp"] = (255, 0, 0)
    red.save(tmp_path / "a.tif"); cases["a.tif"] = (255, 0, 0)
    red.save(tmp_path / "a.webp", lossless=True); cases["a.webp"] = (255, 0, 0)
    Image.new("L", (8, 8), 100).save(tmp_path / "grey.png"); cases["grey.png"] = (100, 100, 100)
    red.convert("P").save(tmp_path / "pal.png"); cases["pal.png"] = (255, 0, 0)
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100); cases["cmyk.jpg"] = (255, 255, 255)
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "cmyk.tif"); cases["cmyk.tif"] = (255, 255, 255)
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(tmp_path / "deep.png"); cases["deep.png"] = (128, 128, 128)
    Image.fromarray(np.full((8, 8), 65535, np.uint16)).save(tmp_path / "deep.tif"); cases["deep.tif"] = (255, 255, 255)
    Image.new("RGBA", (8, 8), (0, 0, 255, 0)).save(tmp_path / "clear.png"); cases["clear.png"] = (255, 255, 255)
    Image.new("RGBA", (8, 8), (0, 0, 255, 255)).save(tmp_path / "blue.png"); cases["blue.png"] = (0, 0, 255)
    Image.new("LA", (8, 8), (0, 0)).save(tmp_path / "la.png"); cases["la.png"] = (255, 255, 255)
    frames = [Image.new("RGB", (8, 8), c).convert("P") for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    cases["anim.gif"] = (255, 0, 0)
    for name, rgb in cases.items():
        img = imaging.load_rgb(tmp_path / name)
        assert img.mode == "RGB", name
        px = img.getpixel((4, 4))
        assert all(abs(a - b) <= 3 for a, b in zip(px, rgb)), (name, px, rgb)


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    img.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    out = imaging.load_rgb(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert out.getpixel((10, 5))[0] > 200 and out.getpixel((10, 35))[0] < 50  # left half went to the top


# -- a messy folder -----------------------------------------------------------------------------------
@pytest.fixture
def messy_folder(tmp_path):
    root = tmp_path / "images"
    good = write_shapes(root, per_class=6)
    expected_bad = write_bad_files(root)
    shutil.copy(root / good[0], root / "circle" / "zz_copy_of_first.png")       # exact duplicate
    os.symlink(root, root / "circle" / "loop")                                  # symlink loop
    outside = tmp_path / "outside"
    outside.mkdir()
    shape_image("square", 7).save(outside / "secret.png")
    os.symlink(outside / "secret.png", root / "square" / "link_out.png")        # symlink out of the folder
    os.symlink(outside, root / "linked_dir_out")
    os.symlink(root / "missing.png", root / "dangling.png")                     # broken symlink
    shape_image("triangle", 5).save(root / "triangle" / "real.png")
    os.symlink(root / "triangle" / "real.png", root / "triangle" / "alias.png")  # link inside: duplicate of real
    expected_bad.update({"square/link_out.png": "outside the images folder",
                         "linked_dir_out": "outside the images folder",
                         "dangling.png": "broken symbolic link"})
    return root, good, expected_bad


def test_init_reports_every_bad_file_and_keeps_the_good(messy_folder, tmp_path):
    root, good, expected_bad = messy_folder
    summary = ingest(tmp_path / "log", root, folder_labels_from_subdirs=True)
    reasons = {u["path"]: u["reason"] for u in summary["unreadable"]}
    for rel, fragment in expected_bad.items():
        assert rel in reasons, f"{rel} not reported; got {sorted(reasons)}"
        assert fragment in reasons[rel], (rel, reasons[rel])
    assert summary["images"] == len(good) + 1  # + triangle/real.png
    dupes = {d["path"]: d["kept"] for d in summary["duplicates"]}
    assert dupes["circle/zz_copy_of_first.png"] == good[0]
    assert dupes["triangle/real.png"] == "triangle/alias.png" or dupes.get("triangle/alias.png") == "triangle/real.png"
    with Store(tmp_path / "log") as store:
        paths_stored = {p for (p,) in store.conn.execute("SELECT path FROM images")}
    assert not any("loop" in p or "secret" in p for p in paths_stored)
    assert summary["classes"] == {"circle": 6, "square": 6, "triangle": 7}


def test_permission_denied_is_reported_not_fatal(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=2)
    locked = root / "circle" / "locked.png"
    shape_image("circle", 123).save(locked)
    locked.chmod(0)
    os.chmod(tmp_path, 0o755)
    logdir = tmp_path / "log"
    cmd = [sys.executable, "-m", "nipgboard_plugin.cli", "init", str(logdir), "--images", str(root), "--json"]
    if os.geteuid() == 0:
        # root reads every file: drop the capabilities that let it, as an ordinary user would run
        cmd = ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert {"path": "circle/locked.png", "reason": "permission denied"} in summary["unreadable"]
    assert summary["images"] == 6


def test_csv_labels_unknown_rows_and_split(tmp_path):
    root = tmp_path / "images"
    rels = write_shapes(root, per_class=10)
    labels_csv = tmp_path / "labels.csv"
    with open(labels_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        for rel in rels:
            if not rel.endswith(("_008.png", "_009.png")):  # 8 labelled per class, 2 left for the pool
                w.writerow([rel, rel.split("/")[0]])
        w.writerow(["circle/does_not_exist.png", "circle"])
        w.writerow([str(root / rels[0]), "circle"])  # absolute path inside the folder is fine
        w.writerow(["just-one-column"])
    summary = ingest(tmp_path / "log", root, labels_csv=labels_csv, test_fraction=0.25, seed=3)
    assert summary["images"] == 30 and summary["labelled"] == 24
    assert summary["splits"] == {"train": 18, "test": 6, "pool": 6}
    details = " | ".join(i["detail"] for i in summary["label_issues"])
    assert "circle/does_not_exist.png is not in the images folder" in details
    assert "expected 'path,label'" in details
    with Store(tmp_path / "log") as store:
        labels, splits = store.labels(), store.splits()
    per_class_test = {}
    for image_id, split in splits.items():
        if split == "test":
            per_class_test[labels[image_id]] = per_class_test.get(labels[image_id], 0) + 1
    assert per_class_test == {"circle": 2, "square": 2, "triangle": 2}  # stratified


def test_split_is_reproducible_and_independent_of_names():
    items = [(i, "ab"[i % 2], f"{i:064x}") for i in range(40)]
    a = stratified_split(items, 0.2, seed=1)
    b = stratified_split(list(reversed(items)), 0.2, seed=1)
    c = stratified_split(items, 0.2, seed=2)
    assert a == b and a != c
    assert sum(v == "test" for v in a.values()) == 8
    assert stratified_split([(1, "solo", "x")], 0.5, 0) == {1: "train"}  # a class keeps its only image


def test_rerun_adds_only_new_images_and_never_loses_a_label(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=4)
    logdir = tmp_path / "log"
    first = ingest(logdir, root, folder_labels_from_subdirs=True, seed=0)
    assert first["images"] == 12
    with Store(logdir) as store:
        target = store.image_id_for_path("circle/circle_000.png")
        store.set_labels([(target, "oval")], source="user")           # the expert corrects a label
        splits_before = store.splits()
    write_shapes(root, per_class=3, start_seed=50)                   # the folder grows
    again = ingest(logdir, root, folder_labels_from_subdirs=True, seed=0)
    assert again["this_run"]["added"] == 9
    assert again["this_run"]["files_seen"] == 9  # known files are not decoded again
    assert again["images"] == 21
    with Store(logdir) as store:
        assert store.labels()[target] == "oval"  # the folder says circle; the stored label wins
        history = store.label_history(target)
        splits_after = store.splits()
    assert [(h["old_label"], h["new_label"]) for h in history] == [(None, "circle"), ("circle", "oval")]
    assert all(splits_after[i] == s for i, s in splits_before.items())  # earlier splits never move
    assert any("stored label 'oval' kept" in i["detail"] for i in again["label_issues"])


def test_label_edits_are_durable_and_keep_full_history(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=2)
    logdir = tmp_path / "log"
    ingest(logdir, root)
    # Two writers (two browser tabs, say) edit the same image: history keeps both edits.
    a, b = Store(logdir), Store(logdir)
    a.set_labels([(1, "x")])
    b.set_labels([(1, "y")])
    a.close(); b.close()
    con = sqlite3.connect(paths.db_path(logdir))  # what is on disk, read by a different client
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT label FROM labels WHERE image_id=1").fetchone()[0] == "y"
    assert con.execute("SELECT old_label, new_label FROM label_history WHERE image_id=1 ORDER BY id").fetchall() \
        == [(None, "x"), ("x", "y")]
    with Store(logdir) as store:
        with pytest.raises(KeyError):
            store.set_labels([(1, "z"), (99999, "w")])  # nothing written when any id is unknown
        assert store.labels()[1] == "y"


def test_init_cli_json_and_clear_errors(tmp_path):
    root = tmp_path / "images"
    write_shapes(root, per_class=2)
    rc, out = run_cli("init", str(tmp_path / "log"), "--images", str(root), "--folder-labels")
    assert rc == 0 and out["images"] == 6 and out["labelled"] == 6
    rc, out = run_cli("init", str(tmp_path / "log2"), "--images", str(tmp_path / "nope"))
    assert rc == 2 and "Images folder not found" in out["error"]
    rc, out = run_cli("init", str(tmp_path / "log"), "--images", str(tmp_path))
    assert rc == 2 and "already holds the dataset" in out["error"]
    rc, out = run_cli("summary", str(tmp_path / "missing"))
    assert rc == 2 and f"nipgboard init {tmp_path / 'missing'} --images DIR" in out["error"]


def test_summary_of_missing_dataset_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="nipgboard init"):
        Store(tmp_path / "nothing")
    with pytest.raises(UserError):
        ingest(tmp_path / "log", tmp_path / "images-not-there")
