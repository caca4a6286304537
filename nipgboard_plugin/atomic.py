"""Atomic file writes: readers see the old content or the new one, never a mix, and a crash or a
kill leaves no half-written file (the data goes to a temporary file in the same folder, is flushed
to disk, then renamed over the target)."""
import os
import tempfile
from pathlib import Path


def write_bytes(path, data: bytes, durable=True):
    """``durable=False`` skips the fsync: for caches that can be drawn again (thumbnails, sprites)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_text(path, text: str):
    write_bytes(path, text.encode("utf-8"))


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
