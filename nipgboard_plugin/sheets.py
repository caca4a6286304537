"""The Projector's sprite: one square sheet of tiles, cut from the panel's atlases where they are drawn.

The panel's atlases (:mod:`thumbnails`) and the Projector's sprite show the same images; at 70,000
images cutting the sprite's tiles from the atlases took seconds where decoding every file again took
most of a minute.
"""
import json
from pathlib import Path

from PIL import Image

from . import thumbnails as T
from .store import Store


def view_tile(n_images) -> int:
    """The atlas tile the panel's 3-D view asks for at this many images (frontend/src/centre.ts)."""
    return 32 if n_images > 20000 else 64


def draw_sheet(run_dir, store: Store, tile, rows, columns, path: Path) -> bool:
    """Draw ``rows`` ((id, sha256, path) each) as one square JPEG of ``columns`` x ``columns`` tiles
    at ``path``, unless the one there is current; True when drawn. Tiles come from the panel's
    atlases where they are drawn, else from the files."""
    root = str(store.images_root())
    if T.page_ready(path, root):
        return False
    side = columns * tile
    drawn = _sheet_from_atlases(run_dir, store, tile, rows, columns)
    if drawn is None:
        drawn = T.draw_page(run_dir, root, tile, dict(columns=columns, width=side, height=side), rows)
    T.save_drawn(path, *drawn)
    return True


def _sheet_from_atlases(run_dir, store: Store, tile, rows, columns):
    """(JPEG bytes, placeholders) of the sheet cut from the panel's atlases, or None where a page is
    not drawn (or its tiles are smaller than ``tile``)."""
    every = store.image_rows("id, sha256, path")
    atlas_tile = view_tile(len(every))
    if atlas_tile < tile:
        return None
    root = str(store.images_root())
    pages, atlases, noted = T.sprite_layout(len(every), atlas_tile), [], {}
    for pg in pages:
        page_rows = every[pg["first"]:pg["first"] + pg["count"]]
        path = T.atlas_page_path(run_dir, atlas_tile, pg["page"], T.sheet_key(atlas_tile, page_rows))
        if not T.page_ready(path, root):
            return None
        try:
            with Image.open(path) as im:
                atlases.append(im.convert("RGB"))
        except OSError:
            return None  # redrawn or removed meanwhile: draw the sheet from the files
        try:
            recorded = json.loads(T.placeholders_path(path).read_text())
        except FileNotFoundError:
            continue  # every tile of the page is the image's thumbnail
        except (OSError, ValueError):
            return None
        noted.update((rel, state) for rel, state in recorded.get("files", []))
    place = {row[0]: k for k, row in enumerate(every)}
    per_page = (T.MAX_ATLAS_PX // atlas_tile) ** 2
    sheet = Image.new("RGB", (columns * tile, columns * tile), T.BACKGROUND)
    for i, row in enumerate(rows):
        k = place[row[0]]
        pg = pages[k // per_page]
        j = k - pg["first"]
        x, y = (j % pg["columns"]) * atlas_tile, (j // pg["columns"]) * atlas_tile
        cut = atlases[k // per_page].crop((x, y, x + atlas_tile, y + atlas_tile))
        if tile != atlas_tile:
            cut = cut.resize((tile, tile), Image.LANCZOS)
        sheet.paste(cut, ((i % columns) * tile, (i // columns) * tile))
    wanted = {row[2] for row in rows}
    return T.encode_jpeg(sheet), [[rel, state] for rel, state in noted.items() if rel in wanted]
