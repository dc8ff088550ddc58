"""The strokes each training used, kept in the temporary folder.

Why: a crash, or a scene closed unsaved, must not take what the person painted. The Slicer module writes them
before each training and offers them back when images of the same names are loaded again; `read_labels` reads
them as it reads any label folder.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .classes import ClassInfo, write_classes_csv
from .stack_io import label_dtype, write_label_folder

MARK = "SemSeg strokes kept at a training"  # the TIFFs' ImageDescription
_numbers = itertools.count(1)  # tells apart two stacks of one name in one process, or a stack loaded again


def autosave_folder() -> Path:
    """Where SemSeg keeps the latest model and the strokes trainings used."""
    return Path(tempfile.gettempdir()) / "SemSeg"


def new_folder(stack_name: str) -> Path:
    """A folder no other stack or session writes to (not made yet): the time, the process and a counter."""
    name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stack_name)
    return autosave_folder() / f"strokes-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{next(_numbers)}"


def keep_strokes(folder: Path, names: list[str], labels: np.ndarray, classes: list[ClassInfo]) -> None:
    """(N, H, W) labels of the images `names` into `folder`, with their classes.csv: a file per painted image, and
    none left for an image no longer painted."""
    write_classes_csv(folder / "classes.csv", classes)
    write_label_folder(folder, names, labels.astype(label_dtype(len(classes))), MARK)


def kept_folders(names: list[str], exclude: Path | None = None) -> list[Path]:
    """Kept folders whose label files all have one of `names`, the newest first (`exclude`: one not to list)."""
    root = autosave_folder()
    found = []
    for folder in (root.glob("strokes-*") if root.is_dir() else []):
        stems = {p.stem for p in folder.glob("*.tif")}
        if folder != exclude and stems and stems <= set(names) and (folder / "classes.csv").is_file():
            found.append(folder)
    return sorted(found, key=lambda folder: folder.stat().st_mtime, reverse=True)
