"""Real image files for the tests, drawn with Pillow: good ones of every supported kind and bad ones."""
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")


def shape_image(shape, seed, size=64, colour=None):
    """A filled shape on a textured background: classes a pretrained network tells apart."""
    rng = np.random.default_rng(seed)
    bg = (rng.random((size, size, 3)) * 60 + 20).astype(np.uint8)
    img = Image.fromarray(bg)
    d = ImageDraw.Draw(img)
    c = colour or tuple(int(v) for v in rng.integers(120, 256, 3))
    m = size // 8 + int(rng.integers(0, size // 8))
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=c)
    elif shape == "square":
        d.rectangle(box, fill=c)
    else:
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=c)
    return img


def write_shapes(folder, per_class=6, classes=SHAPES, size=64, fmt="png", start_seed=0):
    """Write per_class images of each shape into folder/<shape>/; returns the relative paths."""
    folder = Path(folder)
    out = []
    for ci, shape in enumerate(classes):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            rel = f"{shape}/{shape}_{start_seed + i:03d}.{fmt}"
            shape_image(shape, seed=1000 * ci + start_seed + i, size=size).save(folder / rel)
            out.append(rel)
    return out


def png_bytes_with_size(width, height):
    """A syntactically valid PNG header claiming width x height, with a tiny compressed body."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def write_bad_files(folder):
    """Every kind of unusable file; returns {relative path: substring expected in its reason}."""
    folder = Path(folder)
    bad = folder / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    expected = {}
    (bad / "empty.jpg").write_bytes(b"")
    expected["bad/empty.jpg"] = "empty"
    buf = io.BytesIO()
    shape_image("circle", 99, size=128).save(buf, format="JPEG", quality=90)
    (bad / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    expected["bad/truncated.jpg"] = "truncated"
    (bad / "notes.jpg").write_text("this is not an image\n")
    expected["bad/notes.jpg"] = "not an image"
    (bad / "random.xyz").write_bytes(os.urandom(2048))
    expected["bad/random.xyz"] = "not an image"
    shape_image("square", 98).save(bad / "portable.ppm")
    expected["bad/portable.ppm"] = "unsupported image format PPM"
    (bad / "bomb.png").write_bytes(png_bytes_with_size(40000, 40000))
    expected["bad/bomb.png"] = "decompression bomb"
    return expected
