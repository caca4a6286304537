"""Drawing thumbnails at scale: big sprite pages in processes, tiles cached only where that pays, and the
Projector's sprite drawn once for the same images. Real Pillow images, a real dataset, real files."""
import io

import numpy as np
import pytest
from PIL import Image

from images import shape_image
from nipgboard_plugin import projector, thumbnails
from nipgboard_plugin.dataset import ingest
from nipgboard_plugin.store import Store


def _dataset(tmp_path, n, size):
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
    return thumbnails._draw_page(logdir, str(root), tile, pg, rows)


def test_a_big_page_drawn_in_processes_equals_the_page_drawn_in_threads(tmp_path, monkeypatch):
    logdir, root, rows = _dataset(tmp_path, 40, 48)
    (root / "img_007.png").write_bytes(b"not an image any more")   # a placeholder tile, noted
    in_threads, noted_threads = _page(logdir, root, rows)
    monkeypatch.setattr(thumbnails, "SYNC_SPRITE_LIMIT", 10)     # 40 tiles count as a big page now
    monkeypatch.setattr(thumbnails, "_usable_cpus", lambda: 2)
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
