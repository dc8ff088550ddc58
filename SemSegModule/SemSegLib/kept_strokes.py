"""The strokes each training used, kept in the temporary folder (beside the autosaved models).

Why: a crash, or a scene closed unsaved, must not take what the person painted. The Slicer module writes them
before each training and offers them back when images of the same names are loaded again; `read_labels` reads
them as it reads any label folder.

They are a safety net, not storage: `prune` removes models and strokes unused for KEEP_DAYS beyond the KEEP_NEWEST
newest of each, since some systems (Windows) never empty the temporary folder, and one model (2.5-5 MB) and a
strokes folder per stack come with every Slicer session that trains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .atomic import write_bytes_atomic
from .classes import ClassInfo, write_classes_csv
from .stack_io import label_dtype, write_label_folder

MARK = "SemSeg strokes kept at a training"  # the TIFFs' ImageDescription
KEEP_DAYS = 30
KEEP_NEWEST = 10  # of each kind, however old: a person back after months still finds their last strokes
IMAGES_FILE = "images.json"  # the images' names and fingerprint, to offer the strokes for these images only
_numbers = itertools.count(1)  # tells apart two names of one process in one second (a stack loaded again, say)


def autosave_folder() -> Path:
    """Where SemSeg keeps the latest model and the strokes trainings used: the temporary folder's SemSeg, on Linux
    and macOS SemSeg-<user id>, since there the temporary folder may be shared by the people of a workstation, and
    one person's folder would be another's to read and nobody else's to write."""
    uid = getattr(os, "getuid", None)
    return Path(tempfile.gettempdir()) / (f"SemSeg-{uid()}" if uid else "SemSeg")


def _made_autosave_folder() -> Path:
    root = autosave_folder()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)  # its owner's only (a folder there already stays as it is)
    if hasattr(os, "getuid") and root.stat().st_uid != os.getuid():
        # Made by someone else in the shared temporary folder: what SemSeg keeps there would be theirs to read.
        raise OSError(f"{root} belongs to another user")
    return root


def new_folder(stack_name: str) -> Path:
    """A folder no other stack or session writes to (not made yet): the time, the process and a counter."""
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stack_name)
    return autosave_folder() / f"strokes-{name}-{_unique()}"


def new_model_file() -> Path:
    """A model file no other session writes to, in the autosave folder (made if needed; the file is not)."""
    return _made_autosave_folder() / f"model-{_unique()}.pt"


def _unique() -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_numbers)}"


def fingerprint(images: np.ndarray) -> str:
    """What tells these (N, C, H, W) images from others of the same names: a hash of their shape and of every 7th
    pixel of every 7th row (microscopes name files alike, img_0001 ...; 0.01 s for 100 images of 1024 x 1024)."""
    digest = hashlib.sha1(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images[..., ::7, ::7]).tobytes())
    return digest.hexdigest()


def keep_strokes(folder: Path, images: np.ndarray, names: list[str], labels: np.ndarray,
                 classes: list[ClassInfo]) -> None:
    """(N, H, W) labels of the (N, C, H, W) images `names` into `folder`, with their classes.csv and the images'
    fingerprint: a file per painted image, and none left for an image no longer painted."""
    if folder.parent == autosave_folder():
        _made_autosave_folder()
    write_classes_csv(folder / "classes.csv", classes)
    write_bytes_atomic(folder / IMAGES_FILE, json.dumps({"names": names, "fingerprint": fingerprint(images)}).encode())
    write_label_folder(folder, names, labels.astype(label_dtype(len(classes))), MARK)


def kept_folders(images: np.ndarray, names: list[str], exclude: Path | None = None) -> list[Path]:
    """Kept folders of these images (the same fingerprint, every label file named after one of them), the newest
    first (`exclude`: one not to list)."""
    root, mark = autosave_folder(), fingerprint(images)
    found = []
    for folder in (root.glob("strokes-*") if root.is_dir() else []):
        stems = {p.stem for p in folder.glob("*.tif")}
        if folder == exclude or not stems or not stems <= set(names) or not (folder / "classes.csv").is_file():
            continue
        try:
            if json.loads((folder / IMAGES_FILE).read_text())["fingerprint"] == mark:
                found.append(folder)
        except (OSError, ValueError, KeyError):  # unreadable: not offered, still loadable by hand
            continue
    return sorted(found, key=lambda folder: folder.stat().st_mtime, reverse=True)


def prune(now: float | None = None) -> list[Path]:
    """Remove autosaved models and kept strokes folders last written more than KEEP_DAYS days ago, beyond the
    KEEP_NEWEST newest of each kind; returns what was removed. Only SemSeg's own files go: a strokes folder that
    holds anything else stays with that in it, and what cannot be removed (in use by another Slicer, say) stays."""
    root = autosave_folder()
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    models = [p for p in root.glob("model-*.pt") if p.is_file()]
    for kind in (models, [p for p in root.glob("strokes-*") if p.is_dir()]):
        newest_first = sorted(kind, key=_modified, reverse=True)
        for path in newest_first[KEEP_NEWEST:]:
            if now - _modified(path) > KEEP_DAYS * 86400 and _remove(path):
                removed.append(path)
    return removed


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime  # a folder's changes with every file written into it (atomic renames)
    except OSError:
        return float("inf")  # gone or unreadable: never removed


def _remove(path: Path) -> bool:
    try:
        if path.is_file():
            path.unlink()
            return True
        for f in path.iterdir():
            if f.is_file() and (f.suffix == ".tif" or f.name in ("classes.csv", IMAGES_FILE) or ".tmp" in f.name):
                f.unlink()
        path.rmdir()  # refused if anything else is in it
        return True
    except OSError:
        return False
