"""The maps a training shows while it runs (training.TrainPreview): a first training's first map from a random
forest of the strokes, before any step; then, now and then, the model with the network as it learns
(`PreviewModel`).

Why a forest first: a first training's network shows its first map 15-20 s after *Train* on 2 CPU cores (the
start's check, the arrays, 10 s of steps). A forest of the strokes (ilastik's pixel classifier, pixel_forest.py)
is fitted on the painted images and labels the shown slice in 2-5 s at 512-696 px, 8 s at 1024 x 1024, and its
map is about as good as the network's first ones (bench/RESULTS.md, session 76). It is not the model's forest:
that one is fitted after the steps, on the strokes and on what the trained networks are sure of
(forest_teacher.py). The later maps do not mix it in: mixed into the network's maps (0.1-0.65 of each pixel's
probabilities) it gained isbi2012-em's previews up to 0.013 and lost dsb2018-fluo's up to 0.023 on one image
(session 76).

Only a first training shows it: a continued training's person already sees the model's own prediction, and its
previews have the start's forest (`PreviewModel`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from .calibration import log_prior_shift
from .line_classes import thin_line_classes
from .model_file import RoundMember, SemSegModel
from .pixel_forest import PixelForest, smoothed
from .prediction import (
    PredictConfig,
    Prediction,
    members_probabilities,
    predict_image,
    predict_probabilities,
    prediction_from,
    prior_shifted,
)
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


class PreviewModel:
    """What a training's previews predict with: the model as it would be if the training ended now, but for what is
    only made after the steps. A first training's: its network without a forest (fitted after the steps), with a
    class-prior correction of each shown image's own (the result's is estimated on 8 images after the steps) and the
    unsure-piece rules a first training's map gets. A round's: its network and its start's networks, weighted as
    the round's result will weigh them, the start's class-prior correction and the start's forest (the round's own
    is fitted after the steps), and the rules a round's map gets; the start networks' share and the start forest's
    probabilities of the shown images are computed once.

    Why: the network alone (sessions 60-76) looked worse than what the person saw before and after. On isbi2012-em
    a round's previews were 0.011-0.025 below the start's map (mean IoU of a painted and 3 new images; start 0.753,
    result 0.760), drawn as the model would draw them 0.753-0.756 (dsb2018-fluo 0.001-0.011 below it; 0.699-0.702,
    start 0.701); a first training's were 0.006-0.023 below the same network with the rules (dsb2018-fluo level),
    and with the image's own correction too 0.011-0.032 (dsb2018-fluo -0.002 to +0.030, 13 of 14 previews up; its
    last previews 0.700 against the result's 0.701). A preview costs more: at 1024 x 1024 on 2 CPU cores 1-3 s
    instead of 0.7 s (bench/RESULTS.md, session 77).
    """

    def __init__(self, model: SemSegModel, init_model: SemSegModel | None, line_classes: list[int],
                 earlier: list[RoundMember] | None = None, first_network_share: float = 0.0):
        if init_model is None:
            self.model = replace(model, log_prior_shift=None, earlier_rounds=[], first_network_share=0.0,
                                 line_classes=list(line_classes), forest=None, forest_weight=0.0, history=[])
        else:
            # One training more in its history than its start: the rules of a retrained model's map. The earlier
            # networks are copies: a prediction moves its networks to its device, and the round's result, which
            # holds the same older rounds, must stay on the CPU.
            with_forest = init_model.forest is not None and init_model.forest_weight > 0
            earlier = [RoundMember(copy.deepcopy(m.network), m.log_prior_shift) for m in earlier or []]
            self.model = replace(model, log_prior_shift=init_model.log_prior_shift, earlier_rounds=earlier,
                                 first_network_share=first_network_share, line_classes=list(line_classes),
                                 forest=init_model.forest if with_forest else None,
                                 forest_weight=init_model.forest_weight if with_forest else 0.0,
                                 history=[*init_model.history, {}])
        self.first_training = init_model is None
        # Per shown image, what a round's previews keep: its start networks' share, its start forest's probabilities.
        self._earlier: dict[int, torch.Tensor | None] = {}
        self._forest: dict[int, torch.Tensor | None] = {}

    def labels(self, network: torch.nn.Module, images: np.ndarray, device: torch.device,
               training_mix: np.ndarray | None = None) -> np.ndarray:
        """(M, C, H, W) -> (M, H, W) class values of the model with `network` as its own; the network's train/eval
        mode is left as it was. `training_mix` (a first training's: the class mix its loss has seen so far): each
        image gets a class-prior correction of its own, from it and the image's mean probabilities
        (calibration.py), as the result gets one from 8 images after the steps."""
        model = replace(self.model, network=network)
        config = PredictConfig(device=device.type)
        was_training = network.training
        try:
            maps = []
            for j, image in enumerate(images):
                if not self.first_training:
                    maps.append(self._round_map(model, j, image, config, device).labels)
                elif training_mix is not None and np.sum(training_mix) > 0:
                    maps.append(_with_own_prior(model, image, config, device, training_mix).labels)
                else:
                    maps.append(predict_image(model, image, config, device=device).labels)
        finally:
            network.train(was_training)
        return np.stack(maps)

    def _round_map(self, model: SemSegModel, j: int, image: np.ndarray, config: PredictConfig,
                   device: torch.device) -> Prediction:
        """`predict_image` of a round's model, with what does not change while it trains (its start's networks'
        share, its start's forest) computed at the first preview of shown image `j` and kept."""
        members = model.round_members()
        if j not in self._earlier:
            self._earlier[j] = members_probabilities(model, image, members[1:], config, device) \
                if len(members) > 1 else None
            self._forest[j] = model.forest.probabilities(image, model.normalization) \
                if model.forest is not None else None
        networks = members_probabilities(model, image, members[:1], config, device)
        if self._earlier[j] is not None:
            networks = networks + self._earlier[j]
        return prediction_from(model, image, networks, config, forest_probabilities=self._forest[j])


def _with_own_prior(model: SemSegModel, image: np.ndarray, config: PredictConfig, device: torch.device,
                    training_mix: np.ndarray) -> Prediction:
    """The Prediction of `model`'s network alone with the class-prior correction of this image: its mean
    probabilities against `training_mix` (one EM step, calibration.log_prior_shift)."""
    start = time.perf_counter()
    networks = predict_probabilities(model, image, config, device, prior_shift=False)
    shift = log_prior_shift(networks.reshape(model.num_classes, -1).mean(1).double().numpy(),
                            np.asarray(training_mix, np.float64) / np.sum(training_mix))
    return prediction_from(model, image, prior_shifted(networks, shift), config, start=start)


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
