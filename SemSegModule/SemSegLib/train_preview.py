"""The maps a training shows while it runs (training.TrainPreview): a first training's first map from a random
forest of the strokes, before any step; then, now and then, the network as it learns.

Why a forest first: a first training's network shows its first map 15-20 s after *Train* on 2 CPU cores (the
start's check, the arrays, 10 s of steps). A forest of the strokes (ilastik's pixel classifier, pixel_forest.py)
is fitted on the painted images and labels the shown slice in 2-5 s at 512-696 px, 8 s at 1024 x 1024, and its
map is about as good as the network's first ones (bench/RESULTS.md, session 76). It is not the model's forest:
that one is fitted after the steps, on the strokes and on what the trained networks are sure of
(forest_teacher.py). The network's later maps are its own: mixing this forest into them (0.1-0.65 of each
pixel's probabilities) gained isbi2012-em's previews up to 0.013 and lost dsb2018-fluo's up to 0.023 on one image
(session 76).

Only a first training shows it: a continued training's person already sees the model's own prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .line_classes import thin_line_classes
from .model_file import SemSegModel
from .pixel_forest import PixelForest, smoothed
from .prediction import PredictConfig, network_labels
from .stack_io import label_dtype

# The forest of the strokes is fitted on at most this many painted images, spread over them: a first training on
# many densely labeled slices must not wait for all of their filter responses before its first step. Strokes on a
# few slices are all used.
FOREST_IMAGES = 6


def forest_labels(model: SemSegModel, images: np.ndarray, stack: np.ndarray, labels: np.ndarray,
                  line_classes: list[int], seed: int) -> np.ndarray | None:
    """(M, H, W) class values of `images` (M, C, H, W) from a random forest fitted on the labeled pixels of `stack`
    (N, C, H, W) with `labels` (N, H, W), smoothed and its line classes (0-based) thinned as the model's forest is;
    None when nothing is labeled."""
    painted = np.flatnonzero(labels.reshape(len(labels), -1).any(1))
    if not len(painted):
        return None
    chosen = painted[np.unique(np.linspace(0, len(painted) - 1, FOREST_IMAGES).round().astype(int))]
    forest = PixelForest.fit(stack[chosen], labels[chosen], model.num_classes, model.normalization, seed)
    maps = []
    for image in images:
        prob = smoothed(forest.probabilities(image, model.normalization), line_classes, forest.smoothing)
        maps.append((thin_line_classes(prob, line_classes).argmax(0) + 1).numpy())
    return np.stack(maps).astype(label_dtype(model.num_classes))


def network_preview(model: SemSegModel, network: torch.nn.Module, images: np.ndarray,
                    init_model: SemSegModel | None, line_classes: list[int], device: torch.device) -> np.ndarray:
    """(M, C, H, W) -> (M, H, W) labels of `network`; a round's with its start's class-prior correction."""
    shift = init_model.log_prior_shift if init_model is not None else None
    config = PredictConfig(device=device.type)
    return np.stack([network_labels(model, network, image, shift, line_classes, config, device) for image in images])


def first_map(model: SemSegModel, images: np.ndarray, stack: np.ndarray, labels: np.ndarray, line_classes: list[int],
              seed: int, forest_weight: float, wanted: bool, report: Callable[[str], None] | None = None
              ) -> np.ndarray | None:
    """The forest's map of `images` (`forest_labels`) when `wanted` (a first training's preview that asks for it)
    and the model gets a forest (`forest_weight` > 0), `report`ing that it is made; otherwise None."""
    if not (wanted and forest_weight > 0):
        return None
    if report is not None:
        report("a first map from a random forest of the strokes")
    return forest_labels(model, images, stack, labels, line_classes, seed)
