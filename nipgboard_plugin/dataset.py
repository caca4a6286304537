"""Turning a messy image folder into a clean dataset in the store.

``ingest`` scans a folder recursively (safe against symlink loops), decodes every
file once in worker processes, keeps each distinct content once (SHA-256 of the
file's bytes), records every skipped file with its reason, reads labels from
class subfolders or a CSV, and splits the labelled images into train and test.
Running it again on a grown folder only adds what is new; a stored label is
never overwritten by a CSV or folder label.
"""
import csv
import hashlib
import os
import time
from collections import defaultdict
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from . import imaging
from .errors import InvalidParameter, UserError
from .labels import clean_label, printable
from .store import Store

# Formats accepted by content (a PNG named .dat is still a PNG).
ACCEPTED_FORMATS = {"JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "MPO"}
UNLABELLED_FOLDERS = {"unlabelled", "unlabeled", "unknown", "_unlabelled", "_unlabeled"}


# -- scanning ---------------------------------------------------------------------------------------
NOT_UTF8 = "file name is not valid UTF-8"
HASH_CHUNK = 1 << 20


def utf8_name(name: str) -> bool:
    """Whether a name from the file system is valid UTF-8 (Python maps other bytes to lone surrogates)."""
    try:
        name.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def shown_name(name: str) -> str:
    """A file name as text that can be stored and printed: bytes that are not UTF-8 as ``\\xff``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        if not utf8_name(name) else name


def scan(root):
    """Yield ('file', rel_path) for candidate files and ('skip', rel_path, reason) for what cannot be used.

    Follows symbolic links inside the folder, never the same directory twice (no loops),
    and never out of the folder.
    """
    root = Path(root)
    real_root = root.resolve()
    seen_dirs = set()
    skipped = []

    def inside_root(p: Path) -> bool:
        try:
            p.resolve().relative_to(real_root)
            return True
        except (ValueError, OSError, RuntimeError):
            return False

    def on_error(err):
        skipped.append((shown_name(os.path.relpath(err.filename, root)), f"cannot read folder: {err.strerror}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=on_error):
        st = os.stat(dirpath)
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        while skipped:
            yield ("skip",) + skipped.pop()
        rel_dir = Path(dirpath).relative_to(root)
        keep = []
        for d in sorted(dirnames):
            full = Path(dirpath) / d
            if d.startswith("."):
                continue
            if not utf8_name(d):
                yield ("skip", shown_name((rel_dir / d).as_posix()), f"{NOT_UTF8} (folder skipped: rename it)")
                continue
            if full.is_symlink():
                if not inside_root(full):
                    yield ("skip", (rel_dir / d).as_posix(), "symbolic link to a folder outside the images folder")
                    continue
                try:
                    if (os.stat(full).st_dev, os.stat(full).st_ino) in seen_dirs:
                        continue  # a loop or a second way to the same folder
                except OSError:
                    yield ("skip", (rel_dir / d).as_posix(), "broken symbolic link")
                    continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = (rel_dir / name).as_posix()
            if not utf8_name(name):
                yield ("skip", shown_name(rel), f"{NOT_UTF8} (skipped: rename it)")
                continue
            if full.is_symlink():
                if not full.exists():
                    yield ("skip", rel, "broken symbolic link")
                    continue
                if not inside_root(full):
                    yield ("skip", rel, "symbolic link to a file outside the images folder")
                    continue
            if not full.is_file():
                yield ("skip", rel, "not a regular file")
                continue
            yield ("file", rel)
    while skipped:
        yield ("skip",) + skipped.pop()


def inspect_file(args):
    """Worker: hash and fully decode one file. Returns a dict with 'ok' and either facts or a reason.

    The file is hashed in chunks and decoded from the same open file (Pillow reads what it needs), so
    a huge file never sits in memory whole.
    """
    root, rel = args
    path = os.path.join(root, rel)
    try:
        fh = open(path, "rb")
    except PermissionError:
        return {"rel": rel, "ok": False, "reason": "permission denied"}
    except OSError as exc:
        return {"rel": rel, "ok": False, "reason": f"cannot read file: {exc.strerror or exc}"}
    with fh:
        digest, n_bytes = hashlib.sha256(), 0
        try:
            while True:
                chunk = fh.read(HASH_CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                n_bytes += len(chunk)
            fh.seek(0)
        except OSError as exc:
            return {"rel": rel, "ok": False, "reason": f"cannot read file: {exc.strerror or exc}"}
        if not n_bytes:
            return {"rel": rel, "ok": False, "reason": "empty file (0 bytes)"}
        try:
            img = imaging.open_image(fh)
            if img.format not in ACCEPTED_FORMATS:
                return {"rel": rel, "ok": False, "reason": f"unsupported image format {img.format}"}
            width, height = img.size
            if imaging.exif_orientation(img) in (5, 6, 7, 8):  # rotated by 90 degrees when shown
                width, height = height, width
            mode, fmt = img.mode, img.format
        except imaging.UnreadableImage as exc:
            return {"rel": rel, "ok": False, "reason": str(exc)}
        except Exception as exc:  # whatever a decoder throws, one bad file never stops an ingest
            return {"rel": rel, "ok": False, "reason": f"cannot decode: {type(exc).__name__}: {exc}"}
    return {
        "rel": rel,
        "ok": True,
        "sha256": digest.hexdigest(),
        "width": width,
        "height": height,
        "mode": mode,
        "format": "JPEG" if fmt == "MPO" else fmt,
        "n_bytes": n_bytes,
    }


# -- labels -----------------------------------------------------------------------------------------
def folder_labels(rel_paths):
    """{rel_path: label} from the first-level subfolder; images at the top level or in an
    'unlabelled' folder get none."""
    out = {}
    for rel in rel_paths:
        parts = rel.split("/")
        if len(parts) >= 2 and parts[0].lower() not in UNLABELLED_FOLDERS:
            out[rel] = parts[0]
    return out


def read_labels_csv(csv_path, images_root):
    """Read ``path,label`` rows (header optional), before anything is added to the dataset.

    Returns ``([(where, paths, label)], [(where, issue)])``: ``paths`` are the row's path as written
    and, when it differs, stripped of surrounding spaces (tried in that order); absolute paths are
    made relative to ``images_root``. A file that cannot be read as UTF-8 CSV raises UserError.
    Messages never repeat a row's cells unless they are a valid label or an image file name, so a
    wrong file given as labels (a key file, say) is not echoed.
    """
    csv_path = Path(csv_path)
    if not csv_path.exists():
        raise UserError(f"Labels file not found: {csv_path}")
    if csv_path.is_dir():
        raise UserError(f"The labels file {csv_path} is a folder: give the CSV file of path,label rows.")
    if not csv_path.is_file():
        raise UserError(f"The labels file {csv_path} is not a regular file: give the CSV file of path,label rows.")
    root = Path(images_root).resolve()
    entries, issues = [], []
    row_no = 0
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            for row_no, row in enumerate(csv.reader(fh), start=1):
                if not row or all(not c.strip() for c in row):
                    continue
                if row_no == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                    continue
                where = f"{csv_path.name} row {row_no}"
                if len(row) < 2:
                    issues.append((where, f"expected 'path,label', found {len(row)} column"))
                    continue
                if not row[1].strip():
                    continue  # an explicitly unlabelled image
                try:
                    label = clean_label(row[1])
                except InvalidParameter as exc:
                    issues.append((where, f"label refused: {exc}"))
                    continue
                raw_path = row[0]
                if not raw_path.strip():
                    issues.append((where, "the path is empty"))
                    continue
                rels = []
                for candidate in dict.fromkeys([raw_path, raw_path.strip()]):
                    p = Path(candidate)
                    if p.is_absolute():
                        try:
                            p = p.resolve().relative_to(root)
                        except (ValueError, OSError, RuntimeError):
                            continue
                    rels.append(p.as_posix())
                if not rels:
                    issues.append((where, f"{_shown_path(raw_path)} is outside the images folder {root}"))
                    continue
                entries.append((where, rels, label))
    except PermissionError:
        raise UserError(f"Cannot read the labels file {csv_path}: permission denied. Nothing was added.") from None
    except UnicodeDecodeError:
        raise UserError(f"The labels file {csv_path} is not UTF-8 text (saved as Latin-1 or Windows-1252, or not "
                        "a CSV file at all): save it as a UTF-8 CSV of path,label rows. Nothing was added.") from None
    except csv.Error as exc:
        raise UserError(f"The labels file {csv_path} is not a valid CSV file (row {row_no + 1}: {exc}). "
                        "Nothing was added.") from None
    except OSError as exc:
        raise UserError(f"Cannot read the labels file {csv_path}: {exc.strerror or type(exc).__name__}. "
                        "Nothing was added.") from None
    return entries, issues


def _shown_path(raw_path):
    """A path from the labels CSV for a message: shown when it is an image file name, else described."""
    text = raw_path.strip()
    if (os.path.splitext(text)[1].lower() in imaging.IMAGE_EXTENSIONS and len(text) <= 300
            and text == printable(text, 300)):
        return text
    return "a path that names no image file (not shown)"


# -- splits -----------------------------------------------------------------------------------------
def stratified_split(items, test_fraction, seed):
    """Split [(image_id, label, sha256)] into train/test per class, reproducibly.

    Within a class the order is the content hash (independent of file names and scan order),
    shuffled by ``seed``; round(n * test_fraction) go to test, but a class never loses its last
    training image. Returns {image_id: 'train' | 'test'}.
    """
    by_class = defaultdict(list)
    for image_id, label, sha in items:
        by_class[label].append((sha, image_id))
    out = {}
    for label in sorted(by_class):
        members = [i for _, i in sorted(by_class[label])]
        rng = np.random.default_rng([seed, int(hashlib.sha256(label.encode()).hexdigest()[:8], 16)])
        order = rng.permutation(len(members))
        n_test = min(int(round(len(members) * test_fraction)), len(members) - 1)
        for rank, idx in enumerate(order):
            out[members[idx]] = "test" if rank < n_test else "train"
    return out


# -- ingest -----------------------------------------------------------------------------------------
def ingest(logdir, images_dir, labels_csv=None, folder_labels_from_subdirs=False, test_fraction=0.2, seed=0,
           progress=None, workers=None):
    """Add a folder of images (and their labels) to the dataset in ``logdir``; return the summary.

    ``progress(done, total)`` is called as files are inspected.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"Images folder not found: {images_dir}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise UserError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    started = time.time()
    root = images_dir.resolve()
    # The labels file is read before the dataset is touched: a bad file adds nothing.
    csv_rows = read_labels_csv(labels_csv, root) if labels_csv else None
    store = Store(logdir, create=True)
    try:
        known_root = store.get_meta("images_root")
        if known_root is not None and Path(known_root) != root:
            raise UserError(
                f"{logdir} already holds the dataset of {known_root}; use another LOGDIR for {root}."
            )
        with store.transaction() as conn:
            store.set_meta("images_root", str(root), conn)
            store.set_meta("test_fraction", float(test_fraction), conn)
            store.set_meta("seed", int(seed), conn)

        report = _add_files(store, root, progress, workers)
        label_report = _apply_labels(store, csv_rows, folder_labels_from_subdirs)
        new_splits = _assign_splits(store, float(test_fraction), int(seed))
        summary = store.summary()
        summary["this_run"] = dict(report, **label_report, newly_split=new_splits,
                                   seconds=round(time.time() - started, 2))
        return summary
    finally:
        store.close()


def _add_files(store, root, progress, workers):
    known = store.known_paths()
    sha_to_id = store.ids_by_hash()
    todo, skipped = [], []
    for entry in scan(root):
        if entry[0] == "skip":
            skipped.append(entry[1:])
        elif entry[1] not in known:
            todo.append(entry[1])
    now = time.time()
    added = duplicates = 0
    unreadable = list(skipped)
    if progress:
        progress(0, len(todo))
    ctx = get_context("fork" if os.name == "posix" else "spawn")
    n_workers = workers or max(1, min(os.cpu_count() or 1, 8))
    chunk = []

    def flush():
        nonlocal added, duplicates
        n_added, n_duplicates = store.add_images([r for r in chunk if r["ok"]], now, sha_to_id)
        added += n_added
        duplicates += n_duplicates
        chunk.clear()

    # Sorted order makes "which copy is kept" deterministic: the first path in sort order.
    todo.sort()
    done = 0
    with ctx.Pool(n_workers) if n_workers > 1 and len(todo) > 64 else _InlinePool() as pool:
        for r in pool.imap(inspect_file, ((str(root), rel) for rel in todo), chunksize=64):
            if not r["ok"]:
                unreadable.append((r["rel"], r["reason"]))
            chunk.append(r)
            done += 1
            if len(chunk) >= 2000:
                flush()
                if progress:
                    progress(done, len(todo))
    flush()
    if progress:
        progress(done, len(todo))
    store.record_unreadable(unreadable, now)
    missing = sum(1 for p in store.stored_paths() if not (root / p).exists()) if len(known) else 0
    return {"files_seen": len(todo), "added": added, "duplicates_found": duplicates,
            "unreadable_found": len(unreadable), "missing_files": missing}


class _InlinePool:
    """A stand-in for a process pool when the work is too small to be worth one."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, func, iterable, chunksize=1):
        return map(func, iterable)


def _apply_labels(store, csv_rows, from_folders):
    """Store the labels from class folders and the CSV rows (``read_labels_csv``'s answer), never
    overwriting a stored label; record every problem in ``label_issues``."""
    wanted, issues = {}, []  # rel -> (where, label)
    if from_folders:
        paths = store.known_paths()
        refused = {}
        for rel, folder in folder_labels(paths).items():
            try:
                wanted[rel] = ("folders", clean_label(folder, "folder label"))
            except InvalidParameter as exc:
                refused.setdefault(folder, str(exc))
        for folder, why in sorted(refused.items()):
            issues.append(("folders", f"folder {printable(folder)}/ gives no label: {why}"))
    unreadable = store.unreadable_paths()
    if csv_rows is not None:
        entries, csv_issues = csv_rows
        issues.extend(csv_issues)
        from_csv = {}
        for where, rels, label in entries:
            rel = next((r for r in rels if store.image_id_for_path(r) is not None), None)
            if rel is None:
                bad = next((r for r in rels if r in unreadable), None)
                shown = _shown_path(rels[0])
                if bad is not None:
                    issues.append((where, f"{shown} is unreadable (see the unreadable files)"))
                else:
                    issues.append((where, f"{shown} is not in the images folder"))
                continue
            if rel in from_csv and from_csv[rel] != label:
                issues.append((where, f"{printable(rel, 300)} labelled twice ('{printable(from_csv[rel])}', then "
                                      f"'{printable(label)}'); the last one is used"))
            from_csv[rel] = label
            wanted[rel] = (where, label)
    if not wanted and not issues:
        return {"labels_added": 0, "label_conflicts": 0}

    current = store.labels()
    per_image = {}
    for rel, (where, label) in sorted(wanted.items()):
        image_id = store.image_id_for_path(rel)
        if image_id is None:
            continue  # a folder label of a path that is no longer stored
        if image_id in per_image and per_image[image_id][1] != label:
            kept = printable(per_image[image_id][1])
            issues.append((where, f"{printable(rel, 300)} is a duplicate of an image labelled '{kept}'; "
                                  f"keeping that label, not '{printable(label)}'"))
            continue
        per_image.setdefault(image_id, (rel, label))
    new, conflicts = [], 0
    for image_id, (rel, label) in per_image.items():
        stored = current.get(image_id)
        if stored is None:
            new.append((image_id, label))
        elif stored != label:
            conflicts += 1
            issues.append(("labels", f"{printable(rel, 300)}: stored label '{printable(stored)}' kept; "
                                     f"the input says '{printable(label)}'"))
    source = "csv" if csv_rows is not None else "folder"
    store.set_labels(new, source=source)
    store.replace_label_issues(issues)
    return {"labels_added": len(new), "label_conflicts": conflicts}


def _assign_splits(store, test_fraction, seed):
    """Give labelled images still in the pool a train/test split; existing splits never move."""
    rows = store.labelled_pool_images()
    if not rows:
        return 0
    assignment = stratified_split(rows, test_fraction, seed)
    store.set_splits(assignment)
    return len(assignment)
