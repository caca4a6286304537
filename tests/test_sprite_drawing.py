"""Drawing thumbnails at scale: big sprite pages in processes, tiles cached only where that pays, and the
Projector's sprite drawn once for the same images. Real Pillow images, a real dataset, real files."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from images import shape_image
from nipgboard_plugin import projector, sheets, thumbnails
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.store import Store


def _dataset(tmp_path, n, size):
    """n Pillow shapes of size px, ingested; (logdir, images folder, rows (id, sha256, path))."""
    root = tmp_path / "images"
    root.mkdir()
    for i in range(n):
        shape_image(("circle", "square", "triangle")[i % 3], 500 + i, size=size).save(root / f"img_{i:03d}.png")
    logdir = tmp_path / "log"
    ingest(logdir, root)
    with Store(logdir) as store:
        rows = store.image_rows("id, sha256, path")
        return logdir, root, rows


def _page(logdir, root, rows, tile=32):
    cols = 6
    pg = dict(columns=cols, width=cols * tile, height=-(-len(rows) // cols) * tile)
    return thumbnails.draw_page(logdir, str(root), tile, pg, rows)


def test_a_big_page_drawn_in_processes_equals_the_page_drawn_in_threads(tmp_path, monkeypatch):
    logdir, root, rows = _dataset(tmp_path, 40, 48)
    (root / "img_007.png").write_bytes(b"not an image any more")   # a placeholder tile, noted
    in_threads, noted_threads = _page(logdir, root, rows)
    monkeypatch.setattr(thumbnails, "SYNC_SPRITE_LIMIT", 10)     # 40 tiles count as a big page now
    monkeypatch.setattr(thumbnails, "usable_cpus", lambda: 2)
    in_processes, noted_processes = _page(logdir, root, rows)
    a = np.asarray(Image.open(io.BytesIO(in_threads))).astype(int)
    b = np.asarray(Image.open(io.BytesIO(in_processes))).astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() == 0
    assert [p for p, _state in noted_processes] == ["img_007.png"]
    assert noted_processes == noted_threads


@pytest.mark.parametrize("size, cached", [(28, False), (160, True)])
def test_tiles_are_cached_only_for_images_bigger_than_the_tile(tmp_path, size, cached):
    logdir, root, rows = _dataset(tmp_path, 6, size)
    _page(logdir, root, rows)
    files = list((logdir / "nipgboard" / "thumbs" / "32").rglob("*.jpg")) if cached else \
        list((logdir / "nipgboard" / "thumbs").rglob("*.jpg"))
    assert len(files) == (6 if cached else 0)


def test_the_projector_sprite_is_drawn_once_for_the_same_images(tmp_path):
    logdir, root, rows = _dataset(tmp_path, 9, 40)
    out = tmp_path / "assets"
    out.mkdir()
    (out / "sprite.png").write_bytes(b"an older sprite")
    ids = [r[0] for r in rows]
    with Store(logdir) as store:
        first = projector._write_sprite(logdir, store, ids, 16, out)
        drawn = first.stat().st_mtime_ns
        assert projector._write_sprite(logdir, store, ids, 16, out) == first
        assert first.stat().st_mtime_ns == drawn                       # not drawn (nor written) again
        sheet = Image.open(first)
        assert sheet.format == "JPEG" and sheet.size == (3 * 16, 3 * 16)
        assert [p.name for p in out.iterdir()] == [first.name]       # the older sprite is gone
        other = projector._write_sprite(logdir, store, ids[:4], 16, out)   # other images: a new sprite
    assert other != first and not first.exists() and Image.open(other).size == (2 * 16, 2 * 16)


def test_the_projector_sprite_is_cut_from_the_panels_atlas_when_it_is_drawn(tmp_path):
    logdir, root, rows = _dataset(tmp_path, 12, 80)
    (root / "img_005.png").write_bytes(b"broken")                 # a placeholder on the atlas, noted
    ids = [r[0] for r in rows]
    with Store(logdir) as store:
        (tmp_path / "a").mkdir()
        from_files = projector._write_sprite(logdir, store, ids, 16, tmp_path / "a")  # no atlas yet
        thumbnails.build_sprites(logdir, sheets.view_tile(len(rows)))
        (root / "img_003.png").rename(tmp_path / "away.png")    # drawn on the atlas, gone from the folder
        cut = projector._write_sprite(logdir, store, ids, 16, tmp_path / "b")
    a = np.asarray(Image.open(from_files)).astype(int)
    b = np.asarray(Image.open(cut)).astype(int)
    assert a.shape == b.shape and np.abs(a - b).mean() < 4      # the same tiles, scaled from 64 px
    # Cut from the atlas: img_003's tile is its picture, not a placeholder, though its file is gone;
    # the broken file's placeholder is noted, so the sprite is drawn again once the file is restored.
    x, y = 16 * (3 % 4), 16 * (3 // 4)
    assert np.abs(b[y:y + 16, x:x + 16] - a[y:y + 16, x:x + 16]).mean() < 6
    note = json.loads(cut.with_suffix(".placeholders.json").read_text())
    assert [rel for rel, _state in note["files"]] == ["img_005.png"]
