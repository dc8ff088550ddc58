"""The results folder an export writes: label maps of every image, the person's strokes, the uncertainty of every
predicted image, one NRRD volume, classes.csv and the model.

Nothing in a results folder is replaced unless an earlier export wrote it: its TIFFs carry EXPORT_MARK in their
ImageDescription, and MANIFEST lists the other files it wrote. A folder chosen where a person keeps their own
label maps, or a model, under the same names is refused with the names.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import write_atomic
from .classes import ClassInfo, write_classes_csv
from .errors import InputError
from .stack_io import check_output_dir, check_overwrite, write_label_folder, write_tiff

EXPORT_MARK = "SemSeg export"
MANIFEST = "semseg-export.json"
ADVICE = "Choose another results folder, or move those files away first."


# gzip level of labels.nrrd. pynrrd's default, 9, took 15-20 s for 100 generated label slices of 1024 x 1024 on
# this project's 2-core machine; 3 takes 0.5 s for a file 1.9x as large (4.4% of the raw labels instead of 2.3%;
# bench/RESULTS.md, session 61).
NRRD_GZIP_LEVEL = 3


def check_results_folder(folder: str | Path, names: list[str], with_model: bool,
                         protected: list[str | Path | None]) -> Path:
    """Refuse, before anything is written, a results folder that is an input folder or holds files of the names an
    export writes that no SemSeg export wrote; returns the folder (made if needed)."""
    out = check_output_dir(folder, protected)
    check_overwrite([out / sub / f"{name}.tif" for sub in ("labels", "strokes", "uncertainty") for name in names],
                    EXPORT_MARK, advice=ADVICE)
    ours = set(json.loads((out / MANIFEST).read_text())["files"]) if (out / MANIFEST).is_file() else set()
    foreign = [name for name in _other_files(with_model) if (out / name).exists() and name not in ours]
    if foreign:
        raise InputError(f"{out}: {', '.join(foreign)} already exist(s) and no SemSeg export wrote them. {ADVICE}")
    return out


def _other_files(with_model: bool) -> list[str]:
    return ["labels.nrrd", "classes.csv"] + (["model.pt"] if with_model else [])


def write_results(folder: str | Path, names: list[str], labels: np.ndarray, strokes: np.ndarray,
                  classes: list[ClassInfo], model, spacing_xyz: tuple[float, float, float],
                  protected: list[str | Path | None], uncertainty: dict[int, np.ndarray] | None = None
                  ) -> dict[str, str]:
    """labels/<name>.tif and strokes/<name>.tif (slices with strokes) from (N, H, W) arrays, uncertainty/<name>.tif
    (float32, 0 = sure, 1 = uniform) of the images `uncertainty` has (by index: the predicted ones), labels.nrrd,
    classes.csv and model.pt (when `model` is given); returns what was written where."""
    out = check_results_folder(folder, names, model is not None, protected)
    others = _other_files(model is not None)
    for k, name in enumerate(names):
        write_tiff(out / "labels" / f"{name}.tif", labels[k], EXPORT_MARK)
    # A slice no longer painted loses an earlier export's strokes file (checked above to be one).
    write_label_folder(out / "strokes", names, strokes, EXPORT_MARK)
    uncertainty = uncertainty or {}
    for k, name in enumerate(names):  # an image not predicted now loses an earlier export's file (checked above)
        path = out / "uncertainty" / f"{name}.tif"
        if k in uncertainty:
            write_tiff(path, uncertainty[k].astype(np.float32, copy=False), EXPORT_MARK)
        elif path.exists():
            path.unlink()
    import nrrd

    x, y, z = spacing_xyz
    # Axis order (slice, row, column) as in the TIFFs, documented in the header for other tools.
    header = {"space dimension": 3, "space directions": np.diag([z, y, x]), "kinds": ["domain"] * 3,
              "encoding": "gzip", "labels": ["slice", "row", "column"]}
    write_atomic(out / "labels.nrrd", lambda tmp: nrrd.write(str(tmp), labels, header, index_order="C",
                                                             compression_level=NRRD_GZIP_LEVEL))
    write_classes_csv(out / "classes.csv", classes)
    if model is not None:
        model.save(out / "model.pt")
    write_atomic(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps({"written_by": EXPORT_MARK,
                                                                       "files": others}, indent=1)))
    written = {"labels": out / "labels", "nrrd": out / "labels.nrrd", "strokes": out / "strokes",
               "classes": out / "classes.csv"}
    if uncertainty:
        written["uncertainty"] = out / "uncertainty"
    if model is not None:
        written["model"] = out / "model.pt"
    return {key: str(path) for key, path in written.items()}
