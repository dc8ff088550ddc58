"""A folder of images segmented into a folder of label maps: `semseg predict`, and the panel's *Segment a folder*.

The images are read one at a time (`lazy_stack`), so a folder of any size fits in memory. The maps get the model's
classes.csv beside them, so that they say what their values are, and can be read back as labels (`read_labels`, the
panel's *Load labels...*). Everything that can be refused is refused before the first map is written: images the
model cannot take, an output folder that is an input folder, files there that an earlier prediction did not write
(labels a person painted, say), a classes.csv of other classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classes import read_classes_csv, write_classes_csv
from .errors import InputError
from .lazy_stack import open_stack
from .model_file import SemSegModel
from .prediction import PredictConfig, predict_stack
from .stack_io import OVERWRITE_ADVICE, ImageStack, check_output_dir, check_overwrite, write_tiff

WRITTEN_BY = "semseg predict"  # the maps' ImageDescription: a later prediction may replace them


@dataclass
class FolderPrediction:
    """A checked plan: what `run` reads and where it writes."""

    model: SemSegModel
    stack: ImageStack
    out: Path
    config: PredictConfig
    uncertainty: bool = False
    probabilities: bool = False

    def run(self, progress: Callable[[int, int, float], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> list[float]:
        """Predict and write each image's maps; returns the seconds each image took (fewer if stopped)."""
        write_classes_csv(self.out / "classes.csv", self.model.classes)  # first: a stopped run's maps have it too
        seconds = []
        for i, pred in predict_stack(self.model, self.stack.images, self.config, with_probabilities=self.probabilities,
                                     progress=progress, should_stop=should_stop):
            name = self.stack.names[i]
            write_tiff(self.out / f"{name}.tif", pred.labels, WRITTEN_BY)
            if self.uncertainty:
                write_tiff(self.out / f"{name}_uncertainty.tif", pred.uncertainty, WRITTEN_BY)
            if self.probabilities:
                write_tiff(self.out / f"{name}_probabilities.tif", pred.probabilities.astype(np.float32), WRITTEN_BY)
            seconds.append(pred.seconds)
        return seconds


def plan_folder_prediction(model: SemSegModel, images: str | Path, out: str | Path, config: PredictConfig,
                           uncertainty: bool = False, probabilities: bool = False, overwrite: bool = False,
                           advice: str = OVERWRITE_ADVICE, channel_axis: int | None = None) -> FolderPrediction:
    """Check everything a prediction of the folder `images` into `out` needs (the output folder is made); `advice`:
    what to do about files `out` holds that a prediction did not write; `channel_axis`: as `open_stack`'s."""
    from .devices import resolve_device

    stack = open_stack(images, channel_axis)
    model.check_stack(stack.channels, str(images))
    resolve_device(config.device)  # a device it cannot use is refused before the output folder is made
    folder = check_output_dir(out, [images])
    suffixes = [""] + ["_uncertainty"] * uncertainty + ["_probabilities"] * probabilities
    paths = [folder / f"{name}{suffix}.tif" for name in stack.names for suffix in suffixes]
    check_overwrite(paths, WRITTEN_BY, overwrite, advice)
    csv = folder / "classes.csv"
    if csv.is_file() and not overwrite:
        theirs = [c.name for c in read_classes_csv(csv)]
        if theirs != [c.name for c in model.classes]:
            raise InputError(f"{csv}: the label maps there are of the classes {', '.join(theirs)}, this model's are "
                             f"{', '.join(c.name for c in model.classes)}. Choose another output folder.")
    return FolderPrediction(model, stack, folder, config, uncertainty, probabilities)
