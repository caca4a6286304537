"""Reading image files the same way everywhere: ingestion, feature extraction, thumbnails.

Every readable image becomes 8-bit RGB by one rule: EXIF orientation applied,
first frame of animations, 16-bit and float samples scaled to 8 bits,
palette/greyscale/CMYK converted, and transparency composited over white.
Anything that cannot be read raises :class:`UnreadableImage` with a reason a
person can act on.
"""
import os
import warnings
from contextlib import nullcontext

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Formats we accept, by extension (lower case). Files with other extensions are not images to us.
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".gif"}

# Decompression bombs: Pillow's default limit (about 89 Mpx) raises an error only at twice the limit;
# we refuse from the limit itself, so nothing oversized is ever decoded.
MAX_PIXELS = Image.MAX_IMAGE_PIXELS

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is a reported error, never silently grey


class UnreadableImage(Exception):
    """A file that is not a usable image; ``str(exc)`` is the reason."""


def open_image(source) -> Image.Image:
    """Open and fully decode the first frame of an image (a path or a binary file object);
    raise UnreadableImage with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with (open(source, "rb") if isinstance(source, (str, bytes, os.PathLike)) else nullcontext(source)) as fh:
                if fh.seek(0, 2) == 0:
                    raise UnreadableImage("empty file (0 bytes)")
                fh.seek(0)
                img = Image.open(fh)
                if img.width * img.height > MAX_PIXELS:
                    raise UnreadableImage(
                        f"image too large ({img.width}x{img.height} pixels, limit {MAX_PIXELS}): "
                        "possible decompression bomb"
                    )
                img.seek(0)
                img.load()
                return img
    except UnreadableImage:
        raise
    except PermissionError:
        raise UnreadableImage("permission denied") from None
    except IsADirectoryError:
        raise UnreadableImage("is a directory") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImage(f"possible decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise UnreadableImage("not an image, or an image format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower() or isinstance(exc, EOFError):
            raise UnreadableImage(f"truncated or corrupt image data: {msg}") from None
        raise UnreadableImage(f"cannot decode: {msg}") from None


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag (1 = as stored; 5-8 = turned by 90 degrees), 1 when absent or broken."""
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a decoded image of any mode to 8-bit RGB by the module's single rule."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make the pixels unreadable
        pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
        mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    elif mode == "L" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "RGB" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return img


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit samples to 8 bits by their nominal range (Pillow's convert() would clip)."""
    a = np.asarray(img)
    if a.dtype.kind == "f":
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        scaled = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        a8 = np.nan_to_num(scaled).astype(np.uint8)
    else:
        full = 65535.0 if img.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        a8 = np.clip(a.astype(np.float64) * (255.0 / full), 0, 255).round().astype(np.uint8)
    return Image.fromarray(a8, mode="L")


def load_rgb(path, draft_size=None) -> Image.Image:
    """Read any supported image file as 8-bit RGB.

    ``draft_size`` lets JPEG decode at a reduced scale when only a small version is needed,
    which is several times faster for large photographs.
    """
    if draft_size is not None:
        try:
            with open(path, "rb") as fh:
                img = Image.open(fh)
                if img.format == "JPEG":
                    img.draft("RGB", draft_size)
                    img.load()
                    return to_rgb(img)
                fh.seek(0)
                # Not a JPEG: decode from the file already open (opening it again doubled the cost
                # of a small image's thumbnail).
                return to_rgb(open_image(fh))
        except UnreadableImage:
            raise
        except Exception:
            pass  # fall through to the full, error-reporting path
    return to_rgb(open_image(path))
