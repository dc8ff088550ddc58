"""A folder of images segmented into label maps: `semseg predict`, and the panel's *Segment a folder*.

The maps go into a folder, a file per image (`<name>.tif`), or into one multi-page TIFF with a page per image in
the images' order (`--out labels.tif`), as Fiji and napari keep a label stack: a z-stack of 500 slices should not
come back as 500 files. The images are read one at a time (`lazy_stack`) and each map is written as soon as it is
predicted, so a stack of any size fits in memory. A folder's images may differ in size, as fields saved by a
plate reader or cut from a slide often do: each is predicted as it is (into a folder of maps; one TIFF stack holds
one size). The maps get the model's classes.csv beside them, so that they say what their values are, and can be
read back as labels (`read_labels`, the panel's *Load labels...*). Everything that can be refused is refused before
the first map is written: images the model cannot take, an output that is an input or inside an input folder, files
there that an earlier prediction did not write (labels a person painted, say), a classes.csv of other classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .classes import read_classes_csv, write_classes_csv
from .errors import InputError
from .lazy_stack import open_stack
from .model_file import SemSegModel
from .prediction import PredictConfig, Prediction, predict_stack
from .stack_io import (
    OVERWRITE_ADVICE,
    TIFF_SUFFIXES,
    ImageStack,
    check_output_dir,
    check_overwrite,
    label_dtype,
    tiff_options,
    write_tiff,
)

WRITTEN_BY = "semseg predict"  # the maps' ImageDescription: a later prediction may replace them
# A classic TIFF addresses 4 GiB; past half of that (uncompressed) a stack file is written as BigTIFF, which Fiji,
# napari and tifffile read as well.
BIGTIFF_BYTES = 2**31


def writes_one_file(out: str | Path) -> bool:
    """Whether `out` names one multi-page TIFF for all maps (labels.tif) rather than a folder of them."""
    return Path(out).suffix.lower() in TIFF_SUFFIXES and not Path(out).is_dir()


@dataclass
class FolderPrediction:
    """A checked plan: what `run` reads and where it writes."""

    model: SemSegModel
    stack: ImageStack
    out: Path
    config: PredictConfig
    uncertainty: bool = False
    probabilities: bool = False
    one_file: bool = False  # `out` is one multi-page TIFF (`writes_one_file`), not a folder

    @property
    def suffixes(self) -> list[str]:
        """What is written of each image: "" (the label map), "_uncertainty", "_probabilities"."""
        return [""] + ["_uncertainty"] * self.uncertainty + ["_probabilities"] * self.probabilities

    def paths(self) -> list[Path]:
        """Every file a complete run writes, classes.csv aside."""
        if self.one_file:
            return [self.out.with_name(f"{self.out.stem}{suffix}{self.out.suffix}") for suffix in self.suffixes]
        return [self.out / f"{name}{suffix}.tif" for name in self.stack.names for suffix in self.suffixes]

    def run(self, progress: Callable[[int, int, float], None] | None = None,
            should_stop: Callable[[], bool] | None = None,
            each: Callable[[int, Prediction], None] | None = None) -> list[float]:
        """Predict and write each image's maps; returns the seconds each image whose maps were written took. A
        stopped run keeps the maps of a folder it wrote; a stopped run into one file writes nothing. `each(i,
        prediction)` is called with every image's prediction as it comes (`semseg predict --suggest`)."""
        # classes.csv first: a stopped run's maps have it too. One of the same classes is left as it is: it may be
        # the person's, with their colours.
        csv = (self.out.parent if self.one_file else self.out) / "classes.csv"
        if not (csv.is_file() and _class_names(read_classes_csv(csv)) == _class_names(self.model.classes)):
            write_classes_csv(csv, self.model.classes)
        predictions = predict_stack(self.model, self.stack.images, self.config, with_probabilities=self.probabilities,
                                    progress=progress, should_stop=should_stop)
        if each is not None:
            predictions = _seen(predictions, each)
        if self.one_file:
            return self._write_stack_files(predictions)
        seconds = []
        for i, pred in predictions:
            for suffix, page in _pages(pred, self.suffixes):
                write_tiff(self.out / f"{self.stack.names[i]}{suffix}.tif", page, WRITTEN_BY)
            seconds.append(pred.seconds)
        return seconds

    def _write_stack_files(self, predictions: Iterator[tuple[int, Prediction]]) -> list[float]:
        """A page per image into each file, under temporary names; renamed into place once all images are in."""
        import tifffile

        seconds: list[float] = []
        try:
            with ExitStack() as files:
                writers = {}
                for suffix, path in zip(self.suffixes, self.paths()):
                    tmp = files.enter_context(atomic_path(path))
                    writers[suffix] = files.enter_context(tifffile.TiffWriter(tmp, bigtiff=self._bigtiff(suffix)))
                for _, pred in predictions:
                    for suffix, page in _pages(pred, self.suffixes):
                        # metadata=None: plain pages, which tifffile reads back as one (N, ...) series; an image's
                        # probabilities are one page of K samples, so that it reads as (N, K, H, W).
                        planar = {"planarconfig": "separate"} if page.ndim == 3 else {}
                        writers[suffix].write(page, description=None if seconds else WRITTEN_BY, metadata=None,
                                              **tiff_options(page), **planar)
                    seconds.append(pred.seconds)
                if len(seconds) < len(self.stack):
                    raise _Stopped
        except _Stopped:
            return []
        return seconds

    def _bigtiff(self, suffix: str) -> bool:
        n, _, h, w = self.stack.shape
        per_pixel = {"": np.dtype(label_dtype(self.model.num_classes)).itemsize, "_uncertainty": 4,
                     "_probabilities": 4 * self.model.num_classes}[suffix]
        return n * h * w * per_pixel > BIGTIFF_BYTES


class _Stopped(Exception):
    """A run into one file stopped before its last image: its files are not put in place."""


def _seen(predictions: Iterator[tuple[int, Prediction]],
          each: Callable[[int, Prediction], None]) -> Iterator[tuple[int, Prediction]]:
    for i, pred in predictions:
        each(i, pred)
        yield i, pred


def _pages(pred: Prediction, suffixes: list[str]) -> Iterator[tuple[str, np.ndarray]]:
    arrays = {"": pred.labels, "_uncertainty": pred.uncertainty,
              "_probabilities": None if pred.probabilities is None else pred.probabilities.astype(np.float32)}
    return ((suffix, arrays[suffix]) for suffix in suffixes)


def plan_folder_prediction(model: SemSegModel, images: str | Path, out: str | Path, config: PredictConfig,
                           uncertainty: bool = False, probabilities: bool = False, overwrite: bool = False,
                           advice: str = OVERWRITE_ADVICE, channel_axis: int | None = None) -> FolderPrediction:
    """Check everything a prediction of `images` (a folder or a multi-page TIFF) into `out` needs: a folder (made),
    or one multi-page TIFF (`writes_one_file`; its folder is made); `advice`: what to do about files there that a
    prediction did not write; `channel_axis`: as `open_stack`'s."""
    from .devices import resolve_device

    stack = open_stack(images, channel_axis, one_size=False)
    model.check_stack(stack.channels, str(images))
    resolve_device(config.device)  # a device it cannot use is refused before the output folder is made
    one_file = writes_one_file(out)
    if one_file and not stack.one_size:
        sizes = sorted({stack.image_size(i) for i in range(len(stack))})
        listed = ", ".join(f"{h}x{w}" for h, w in sizes[:5]) + (" ..." if len(sizes) > 5 else "")
        raise InputError(f"{images}: the images differ in size ({listed}), and one multi-page TIFF holds maps of one "
                         f"size. Give a folder for the maps instead of {Path(out).name} (a map per image).")
    # Maps beside a stack file are where a person wants them; inside a folder of images they would be read as an
    # image next time.
    protected = [images] if Path(images).is_dir() or not one_file else []
    folder = check_output_dir(Path(out).parent if one_file else out, protected)
    plan = FolderPrediction(model, stack, folder / Path(out).name if one_file else folder, config, uncertainty,
                            probabilities, one_file)
    if Path(images).resolve() in [path.resolve() for path in plan.paths()]:  # even with --overwrite
        raise InputError(f"{images}: the images would be overwritten by their own label maps; name another file "
                         "for the maps.")
    check_overwrite(plan.paths(), WRITTEN_BY, overwrite, advice)
    csv = folder / "classes.csv"
    if csv.is_file() and not overwrite:
        theirs = _class_names(read_classes_csv(csv))
        if theirs != _class_names(model.classes):
            raise InputError(f"{csv}: the label maps there are of the classes {', '.join(theirs)}, this model's are "
                             f"{', '.join(_class_names(model.classes))}. Choose another output folder.")
    return plan


def _class_names(classes: list) -> list[str]:
    return [c.name for c in classes]
