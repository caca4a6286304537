"""Serving a dataset's pictures: full images, thumbnails and sprite atlases, all by image id.

Safety: a request names an image by its dataset id, never by a path. The file's path comes from the
dataset database and is resolved (symbolic links followed) before it is opened; a file that resolves
outside the images folder, for example an image replaced by a link to ``/etc/passwd`` after it was
ingested, is refused with 403, and the final path component is opened with ``O_NOFOLLOW``.

Caches live under the run's ``nipgboard/`` folder and are keyed by the file's content hash, so a
changed file never shows a stale picture and nothing is written outside the logdir:

* ``thumbs/<size>/<aa>/<sha256>.jpg``: a thumbnail that fits in size x size, aspect kept;
* ``sprites/<tile>/page<p>-<key>.jpg``: atlases of square tiles (thumbnails centred on white), in
  image-id order, row-major, at most 8192 x 8192 px each (the Projector's and WebGL's safe limit);
  ``key`` hashes the page's (id, content) list, so adding images redraws only the pages that change.
  A page drawn while some files were unreadable notes them (``page<p>-<key>.placeholders.json``, with
  each file's mtime, size and inode then); once one of them changes (is restored), the page is redrawn;
* ``converted/<aa>/<sha256>.png``: full images converted for the browser (TIFF, BMP, 16-bit...), made by
  at most two conversions at a time, scaled down to 40 megapixels at most.
"""
import contextlib
import hashlib
import io
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from PIL import Image, ImageDraw

from . import atomic, imaging, paths
from .backbones.onnx_engine import usable_cpus
from .errors import UserError
from .store import Store

THUMB_SIZES = (32, 48, 64, 96, 128, 192, 256, 384, 512)
TILE_SIZES = (32, 48, 64, 96, 128)
DEFAULT_TILE = 64
MAX_ATLAS_PX = 8192
SYNC_SPRITE_LIMIT = 3000          # a page with more tiles than this is drawn by the ``sprites`` job
MAX_TILE_PROCESSES = 8
JPEG_QUALITY = 85
CACHE_TILE_ABOVE = 4              # sprite tiles are cached for images of more than 4x the tile's pixels
WEB_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
MAX_FULL_IMAGE_BYTES = 256 << 20
BACKGROUND = (255, 255, 255)


class ImageNotFound(UserError):
    http_status = 404


class ImageForbidden(UserError):
    http_status = 403


class SpriteNotReady(UserError):
    http_status = 409


# -- resolving an image id to a file ------------------------------------------------------------------
def resolve_image_file(store: Store, image_id: int) -> str:
    """The real path of image ``image_id``'s file, guaranteed inside the images folder."""
    info = store.image_by_id(image_id)
    if info is None:
        raise ImageNotFound(f"unknown image id {image_id}")
    root = str(store.images_root())
    real_root = os.path.realpath(root)
    rel = info["path"]
    if os.path.isabs(rel) or ".." in rel.split("/"):
        raise ImageForbidden(f"image {image_id} has an unsafe stored path")
    real = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([real, real_root]) != real_root:
        raise ImageForbidden(f"image {image_id} resolves outside the images folder; not served")
    if not os.path.isfile(real):
        raise ImageNotFound(f"the file of image {image_id} ({rel}) is no longer in the images folder")
    return real


def _read_file(real_path, limit=MAX_FULL_IMAGE_BYTES) -> bytes:
    fd = os.open(real_path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ImageForbidden(f"file too large to serve ({limit} bytes at most)")
    return data


def full_image(store: Store, image_id: int):
    """(bytes, content type) of the image at full resolution: the file itself when browsers show its
    format, otherwise (TIFF, BMP, 16-bit...) converted to PNG by the dataset's reading rule.

    A conversion is done once and cached (``converted/<aa>/<sha256>.png`` under the run's data folder),
    at most :data:`MAX_CONVERSIONS` run at a time, and images over :data:`MAX_CONVERTED_PIXELS` are
    scaled down to fit: many requests for big TIFFs cannot exhaust the server's memory.
    """
    real = resolve_image_file(store, image_id)
    info = store.image_by_id(image_id)
    mime = WEB_FORMATS.get(info["format"])
    if mime is not None and info["mode"] in ("RGB", "RGBA", "L", "LA", "P", "1", "CMYK", "YCbCr"):
        return _read_file(real), mime
    cached = converted_dir(store.logdir) / info["sha256"][:2] / f"{info['sha256']}.png"
    with contextlib.suppress(FileNotFoundError):
        return cached.read_bytes(), "image/png"
    with _conversion_slots:
        with contextlib.suppress(FileNotFoundError):  # converted while this request waited
            return cached.read_bytes(), "image/png"
        with _counting_conversion():
            data = _convert_to_png(real)
        _atomic_write(cached, data)
    return data, "image/png"


# Conversions for full_image: bounded in number and size.
MAX_CONVERSIONS = 2
MAX_CONVERTED_PIXELS = 40_000_000
_conversion_slots = threading.BoundedSemaphore(MAX_CONVERSIONS)
_conversion_stats_lock = threading.Lock()
conversion_stats = {"active": 0, "peak": 0, "done": 0}  # read by tests and diagnostics


@contextlib.contextmanager
def _counting_conversion():
    with _conversion_stats_lock:
        conversion_stats["active"] += 1
        conversion_stats["peak"] = max(conversion_stats["peak"], conversion_stats["active"])
    try:
        yield
    finally:
        with _conversion_stats_lock:
            conversion_stats["active"] -= 1
            conversion_stats["done"] += 1


def _convert_to_png(real_path) -> bytes:
    img = _decode(real_path)
    n_pixels = img.width * img.height
    if n_pixels > MAX_CONVERTED_PIXELS:
        scale = math.sqrt(MAX_CONVERTED_PIXELS / n_pixels)
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        img = img.resize(size, Image.BICUBIC, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=3)
    del img
    return buf.getvalue()


converted_dir = paths.converted_dir



def _decode(real_path, draft=None) -> Image.Image:
    try:
        return imaging.load_rgb(real_path, draft_size=draft)
    except imaging.UnreadableImage as exc:
        raise ImageNotFound(f"the image file can no longer be read: {exc}") from None


# -- thumbnails ------------------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes):
    atomic.write_bytes(path, data, durable=False)  # a cache: drawn again if lost


thumbs_dir = paths.thumbs_dir
sprites_dir = paths.sprites_dir


def _thumb_image(real_path, size) -> Image.Image:
    return _thumb_image_and_source_pixels(real_path, size)[0]


def _thumb_image_and_source_pixels(real_path, size):
    """(the image fitted in size x size, pixels decoded: fewer than the file's for a draft JPEG)."""
    img = _decode(real_path, draft=(size * 2, size * 2))
    # Fit the box both ways: small images (28 px Fashion-MNIST, say) are enlarged to fill the tile.
    # Very thin images keep at least one pixel across (a 1 x 60000 strip stays visible, never empty).
    scale = min(size / img.width, size / img.height)
    fitted = (min(size, max(1, round(img.width * scale))), min(size, max(1, round(img.height * scale))))
    pixels = img.width * img.height
    if fitted == img.size:
        return img, pixels
    return img.resize(fitted, Image.LANCZOS if size <= 128 else Image.BICUBIC), pixels


def encode_jpeg(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return buf.getvalue()


def thumbnail(run_dir, store: Store, image_id: int, size: int) -> bytes:
    """JPEG bytes of the image fitted in size x size (cached)."""
    if size not in THUMB_SIZES:
        raise UserError(f"thumbnail size must be one of {', '.join(map(str, THUMB_SIZES))}")
    info = store.image_by_id(image_id)
    if info is None:
        raise ImageNotFound(f"unknown image id {image_id}")
    cached = thumbs_dir(run_dir) / str(size) / info["sha256"][:2] / f"{info['sha256']}.jpg"
    # The cache is keyed by content, but the file must still be servable (inside the folder) now.
    real = resolve_image_file(store, image_id)
    with contextlib.suppress(FileNotFoundError):
        return cached.read_bytes()
    data = encode_jpeg(_thumb_image(real, size))
    _atomic_write(cached, data)
    return data


# -- sprite atlases ----------------------------------------------------------------------------------------
def sprite_layout(n, tile):
    """Pages of an atlas of ``n`` tiles: [{page, first, count, columns, rows, width, height}]."""
    cols_max = MAX_ATLAS_PX // tile
    per_page = cols_max * cols_max
    pages = []
    for p in range(max(1, math.ceil(n / per_page))):
        first = p * per_page
        count = max(0, min(per_page, n - first))
        cols = min(cols_max, max(1, math.ceil(math.sqrt(count))))
        rows = max(1, math.ceil(count / cols))
        pages.append(dict(page=p, first=first, count=count, columns=cols, rows=rows,
                          width=cols * tile, height=rows * tile))
    return pages


def sheet_key(tile, rows):
    h = hashlib.sha256(f"tile={tile};".encode())
    for image_id, sha, _rel in rows:
        h.update(f"{image_id}:{sha};".encode())
    return h.hexdigest()[:16]


def atlas_page_path(run_dir, tile, page, key) -> Path:
    return sprites_dir(run_dir) / str(tile) / f"page{page}-{key}.jpg"


def placeholders_path(page_path: Path) -> Path:
    """Beside a page drawn with placeholder tiles: which files they stand for, and their state then."""
    return page_path.with_suffix(".placeholders.json")


def _source_state(root, rel):
    """What identifies the current version of an image file: (mtime, size, inode), or None if absent."""
    try:
        st = os.stat(os.path.join(root, rel))
    except (OSError, ValueError):
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino]


def page_ready(path: Path, root) -> bool:
    """The page is drawn, and no file drawn as a placeholder on it has changed (been restored) since."""
    if not path.is_file():
        return False
    try:
        recorded = json.loads(placeholders_path(path).read_text())
    except FileNotFoundError:
        return True  # every tile of the page is the image's thumbnail
    except (OSError, ValueError):
        return False
    return all(_source_state(root, rel) == state for rel, state in recorded.get("files", []))


def sprite_index(run_dir, store: Store, tile: int) -> dict:
    """How the sprite atlases of a run are laid out, and which pages are drawn already."""
    if tile not in TILE_SIZES:
        raise UserError(f"tile size must be one of {', '.join(map(str, TILE_SIZES))}")
    rows = store.image_rows("id, sha256, path")
    root = str(store.images_root())
    pages = sprite_layout(len(rows), tile)
    for pg in pages:
        key = sheet_key(tile, rows[pg["first"]:pg["first"] + pg["count"]])
        pg["ready"] = page_ready(atlas_page_path(run_dir, tile, pg["page"], key), root)
    return {"tile": tile, "images": len(rows), "order": "image id, ascending (the order of /images)",
            "pages": pages}


_page_locks = {}
_page_locks_guard = threading.Lock()


def _lock_for(key):
    with _page_locks_guard:
        return _page_locks.setdefault(key, threading.Lock())


def _placeholder(tile):
    img = Image.new("RGB", (tile, tile), (200, 200, 200))
    d = ImageDraw.Draw(img)
    d.line((0, 0, tile, tile), fill=(150, 0, 0), width=max(1, tile // 16))
    d.line((0, tile, tile, 0), fill=(150, 0, 0), width=max(1, tile // 16))
    return img


def _tile_image(run_dir, root, real_root, tile, row):
    """The tile of one image, from the thumbnail cache when possible; a placeholder if unreadable."""
    return _tile_and_kind(run_dir, root, real_root, tile, row)[0]


def _tile_and_kind(run_dir, root, real_root, tile, row):
    """(tile image, whether it is a placeholder)."""
    image_id, sha, rel = row
    cached = thumbs_dir(run_dir) / str(tile) / sha[:2] / f"{sha}.jpg"
    try:
        real = os.path.realpath(os.path.join(root, rel))
        if os.path.commonpath([real, real_root]) != real_root or ".." in rel.split("/"):
            return _placeholder(tile), True
        try:
            with Image.open(cached) as im:
                img = im.convert("RGB")
        except (FileNotFoundError, OSError):
            img, source_pixels = _thumb_image_and_source_pixels(real, tile)
            # A tile is kept only where reading it back is cheaper than decoding the file again: not
            # for images about the tile's size (a file write costs more than decoding 28 x 28 pixels).
            if source_pixels > CACHE_TILE_ABOVE * tile * tile:
                _atomic_write(cached, encode_jpeg(img))
    except (UserError, OSError):
        return _placeholder(tile), True
    if img.size == (tile, tile):
        return img, False
    canvas = Image.new("RGB", (tile, tile), BACKGROUND)
    canvas.paste(img, ((tile - img.width) // 2, (tile - img.height) // 2))
    return canvas, False


def draw_page(run_dir, root, tile, pg, rows, progress=None, done_before=0, total=None, threads=2):
    """(JPEG bytes of the page, [(path, file state)] of the tiles drawn as placeholders).

    A big page (the ``sprites`` job's, the Projector's sprite) is drawn in strips by one process per
    core: decoding and resizing hold Python's lock, so threads drew 70,000 tiles no faster than one.
    """
    atlas = Image.new("RGB", (pg["width"], pg["height"]), BACKGROUND)
    cols = pg["columns"]
    processes = min(usable_cpus(), MAX_TILE_PROCESSES)
    if len(rows) > SYNC_SPRITE_LIMIT and processes > 1:
        # Strips of whole atlas rows, a few per process, so that progress moves along.
        per_strip = cols * max(1, math.ceil(len(rows) / cols / (4 * processes)))
        tasks = [(run_dir, root, tile, cols, rows[a:a + per_strip]) for a in range(0, len(rows), per_strip)]
        placeholders = []
        Image.init()  # every format plugin imported before the fork: a child imports nothing
        # fork as ingest does (spawn would run an unguarded __main__ of the caller's script again).
        with get_context("fork" if os.name == "posix" else "spawn").Pool(processes) as pool:
            for k, (raw, size, missing) in enumerate(pool.imap(_draw_strip, tasks)):
                atlas.paste(Image.frombytes("RGB", size, raw), (0, k * (per_strip // cols) * tile))
                placeholders += missing
                if progress:
                    progress(done_before + min(len(rows), (k + 1) * per_strip), total)
        return encode_jpeg(atlas), placeholders

    real_root = os.path.realpath(root)

    def one(row):
        return _tile_and_note(run_dir, root, real_root, tile, row)

    placeholders = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for i, (img, missing) in enumerate(pool.map(one, rows)):
            atlas.paste(img, ((i % cols) * tile, (i // cols) * tile))
            if missing is not None:
                placeholders.append(missing)
            if progress and (i % 256 == 255 or i == len(rows) - 1):
                progress(done_before + i + 1, total)
    return encode_jpeg(atlas), placeholders


def _draw_strip(task):
    """In a drawing process: (RGB bytes, size, placeholders) of a strip of ``cols`` tiles a row."""
    run_dir, root, tile, cols, rows = task
    real_root = os.path.realpath(root)
    strip = Image.new("RGB", (cols * tile, math.ceil(len(rows) / cols) * tile), BACKGROUND)
    placeholders = []
    for i, row in enumerate(rows):
        img, missing = _tile_and_note(run_dir, root, real_root, tile, row)
        strip.paste(img, ((i % cols) * tile, (i // cols) * tile))
        if missing is not None:
            placeholders.append(missing)
    return strip.tobytes(), strip.size, placeholders


def _tile_and_note(run_dir, root, real_root, tile, row):
    """(tile image, (path, file state) when it is a placeholder, else None)."""
    state = _source_state(root, row[2])  # before reading: a later change always shows as a change
    img, placeholder = _tile_and_kind(run_dir, root, real_root, tile, row)
    return img, ((row[2], state) if placeholder else None)


def sprite_page(run_dir, store: Store, tile: int, page: int, allow_draw_limit=SYNC_SPRITE_LIMIT) -> bytes:
    """JPEG bytes of one atlas page, drawn now if small enough, else SpriteNotReady (run the job)."""
    if tile not in TILE_SIZES:
        raise UserError(f"tile size must be one of {', '.join(map(str, TILE_SIZES))}")
    rows = store.image_rows("id, sha256, path")
    pages = sprite_layout(len(rows), tile)
    if not 0 <= page < len(pages):
        raise ImageNotFound(f"no sprite page {page} (there are {len(pages)})")
    pg = pages[page]
    page_rows = rows[pg["first"]:pg["first"] + pg["count"]]
    key = sheet_key(tile, page_rows)
    path = atlas_page_path(run_dir, tile, page, key)
    root = str(store.images_root())
    if page_ready(path, root):
        with contextlib.suppress(FileNotFoundError):
            return path.read_bytes()
    if pg["count"] > allow_draw_limit:
        raise SpriteNotReady(f"sprite page {page} ({pg['count']} images) is not drawn yet: start a 'sprites' job")
    with _lock_for((str(run_dir), tile, page)):
        if page_ready(path, root):
            with contextlib.suppress(FileNotFoundError):
                return path.read_bytes()
        data, placeholders = draw_page(run_dir, root, tile, pg, page_rows)
        _save_page(run_dir, tile, page, path, data, placeholders)
        return data


def save_drawn(path, data, placeholders=()):
    side = placeholders_path(path)
    if placeholders:  # written first: a page never looks complete while its note is missing
        _atomic_write(side, json.dumps({"files": [list(p) for p in placeholders]}).encode())
    _atomic_write(path, data)
    if not placeholders:
        with contextlib.suppress(FileNotFoundError):
            side.unlink()


def _save_page(run_dir, tile, page, path, data, placeholders=()):
    save_drawn(path, data, placeholders)
    side = placeholders_path(path)
    for old in list(path.parent.glob(f"page{page}-*.jpg")) + list(path.parent.glob(f"page{page}-*.json")):
        if old not in (path, side):
            with contextlib.suppress(OSError):
                old.unlink()


def build_sprites(run_dir, tile=DEFAULT_TILE, progress=None) -> dict:
    """Draw every atlas page of a run that is not drawn yet (the ``sprites`` job)."""
    with Store(run_dir) as store:
        rows = store.image_rows("id, sha256, path")
        root = str(store.images_root())
    pages = sprite_layout(len(rows), tile)
    drawn = 0
    for pg in pages:
        page_rows = rows[pg["first"]:pg["first"] + pg["count"]]
        path = atlas_page_path(run_dir, tile, pg["page"], sheet_key(tile, page_rows))
        if page_ready(path, root):
            if progress:
                progress(pg["first"] + pg["count"], len(rows))
            continue
        with _lock_for((str(run_dir), tile, pg["page"])):
            data, placeholders = draw_page(run_dir, root, tile, pg, page_rows, progress, pg["first"], len(rows))
            _save_page(run_dir, tile, pg["page"], path, data, placeholders)
        drawn += 1
    return {"tile": tile, "images": len(rows), "pages": len(pages), "drawn": drawn}
