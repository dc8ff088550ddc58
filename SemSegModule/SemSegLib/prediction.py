"""Sliding-window prediction with Gaussian blending, optional flip TTA, and an entropy uncertainty map; a first
model's label map without the pieces it is unsure of throughout (unsure_pieces.py).

Tiles go through the network a few at a time (MONAI's `sliding_window_inference`), so network memory is a
few tiles' worth whatever the image size; only the class-probability map of the image itself is full size.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .devices import autocast_dtype, resolve_device
from .line_classes import thin_line_classes
from .model_file import RoundMember, SemSegModel
from .normalization import normalize_image
from .stack_io import label_dtype
from .unsure_pieces import reassign_unsure_off_lines, reassign_unsure_pieces


@dataclass
class PredictConfig:
    tile_size: int = 1024  # whole microscopy fields in one pass on CPU; large images in 1024 tiles
    overlap: float = 0.125
    tile_batch: int = 2
    tta: bool = False
    device: str = "auto"
    blend: str = "gaussian"  # "constant" averages overlapping tiles uniformly
    mixed_precision: bool = True  # float16 on CUDA, bfloat16 on a CPU with AMX units (devices.autocast_dtype)
    # Unsure pieces of a class, and of a thin class off its lines, get the next likeliest class (unsure_pieces.py).
    unsure_pieces: bool = True


@dataclass
class Prediction:
    labels: np.ndarray  # (H, W) class values 1..K
    uncertainty: np.ndarray  # (H, W) normalized entropy of the networks' average, 0 = certain, 1 = uniform
    probabilities: np.ndarray | None  # (K, H, W) float32, if requested
    seconds: float


def normalized_entropy(prob: torch.Tensor) -> torch.Tensor:
    """(K, H, W) probabilities -> (H, W) entropy divided by log K, in [0, 1]."""
    k = prob.shape[0]
    ent = -(prob * torch.log(prob.clamp_min(1e-8))).sum(0)
    return (ent / math.log(k)).clamp(0, 1) if k > 1 else torch.zeros_like(ent)


def _round_up(v: int, m: int) -> int:
    return int(math.ceil(v / m) * m)


def predict_probabilities(model: SemSegModel, image: np.ndarray, config: PredictConfig | None = None,
                          device: torch.device | None = None, prior_shift: bool = True,
                          forest: bool = True, window: tuple[slice, slice] | None = None) -> torch.Tensor:
    """(C, H, W) raw image -> (K, H, W) float32 class probabilities on the CPU.

    With `prior_shift` each network's class-prior correction (calibration.py) is applied and, after correction
    rounds, the probabilities of the earlier rounds' networks are averaged in (`SemSegModel.round_members`), as
    everywhere a prediction is shown or saved; then the model's random forest gets its share
    (`SemSegModel.forest_weight`, pixel_forest.py) and the line classes are thinned to lines (line_classes.py).
    Without `prior_shift`: this model's network alone, uncorrected (to estimate the correction). Without
    `forest`: the networks' share alone, thinned (what teaches the forest, forest_teacher.py). `window` (rows,
    columns): that part of the image only, normalized as the whole image is (`normalize_image`).
    """
    networks = _networks_average(model, image, config, device, prior_shift, window)
    if not prior_shift:
        return networks
    return _with_forest(model, image, networks, window) if forest else thin_line_classes(networks, model.line_classes)


def _networks_average(model: SemSegModel, image: np.ndarray, config: PredictConfig | None,
                      device: torch.device | None, prior_shift: bool = True,
                      window: tuple[slice, slice] | None = None) -> torch.Tensor:
    model.check_stack(image.shape[0])
    members = model.round_members() if prior_shift else [(RoundMember(model.network), 1.0)]
    return members_probabilities(model, image, members, config, device, window)


def members_probabilities(model: SemSegModel, image: np.ndarray, members: list[tuple[RoundMember, float]],
                          config: PredictConfig | None = None, device: torch.device | None = None,
                          window: tuple[slice, slice] | None = None) -> torch.Tensor:
    """The weighted sum of the members' corrected probabilities of the (C, H, W) image (of its `window`, if given):
    all of `model.round_members()` for a prediction, or a part of them for a caller that keeps the rest (a round's
    previews: its start's networks do not change while it trains)."""
    config = config or PredictConfig()
    device = device or resolve_device(config.device)
    x = torch.from_numpy(normalize_image(image, model.normalization, window))[None]
    prob = None
    for member, weight in members:
        p = weight * _network_probabilities(model, member.network, member.log_prior_shift, x, config, device)
        prob = p if prob is None else prob + p
    return prob


def _with_forest(model: SemSegModel, image: np.ndarray, networks: torch.Tensor,
                 window: tuple[slice, slice] | None = None,
                 forest_probabilities: torch.Tensor | None = None) -> torch.Tensor:
    """The forest's share, then the thinning: `networks` (of the image's `window`, if given) as every shown or
    saved prediction has it. `forest_probabilities`: the forest's, when the caller has them already."""
    prob = networks
    if model.forest is not None and model.forest_weight > 0:
        # Before the thinning and the unsure-piece rules: they then act on what both models say.
        prob = model.forest.mixed_into(networks, image, model.normalization, model.forest_weight, model.line_classes,
                                       window, forest_probabilities)
    return thin_line_classes(prob, model.line_classes)


def _network_probabilities(model: SemSegModel, network: torch.nn.Module, log_prior_shift: np.ndarray | None,
                           x: torch.Tensor, config: PredictConfig, device: torch.device) -> torch.Tensor:
    from monai.inferers import sliding_window_inference

    h, w = x.shape[-2:]
    m = model.network_config.size_multiple
    roi = (min(_round_up(config.tile_size, m), _round_up(h, m)), min(_round_up(config.tile_size, m), _round_up(w, m)))
    net = network.to(device).eval()
    amp_dtype = autocast_dtype(device, config.mixed_precision)

    def predictor(tiles: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
            return torch.softmax(net(tiles.to(device)).float(), dim=1)

    flips = [(), (-1,), (-2,), (-2, -1)] if config.tta else [()]
    # A tile larger than the image is filled by reflection, which needs the image to be larger than the fill: an
    # image of a few pixels' height (a line scan, a thin crop) is filled with its edge pixels instead.
    padding = "reflect" if all(r - n - (r - n) // 2 < n for r, n in zip(roi, (h, w))) else "replicate"
    total = None
    with torch.inference_mode():
        for dims in flips:
            xi = x.flip(dims) if dims else x
            prob = sliding_window_inference(
                xi, roi, config.tile_batch, predictor, overlap=config.overlap, mode=config.blend,
                padding_mode=padding, sw_device=device, device=torch.device("cpu"),
            )
            prob = prob.flip(dims) if dims else prob
            total = prob if total is None else total + prob
    return prior_shifted((total / len(flips))[0], log_prior_shift)


def prior_shifted(prob: torch.Tensor, log_prior_shift: np.ndarray | None) -> torch.Tensor:
    """(K, H, W) probabilities with each class's multiplied by exp(its `log_prior_shift`) (calibration.py; None: as
    they are), summing to 1 again."""
    if log_prior_shift is not None:
        prob = prob * torch.exp(torch.as_tensor(log_prior_shift, dtype=prob.dtype))[:, None, None]
    return prob / prob.sum(0, keepdim=True).clamp_min(1e-8)


def predict_image(model: SemSegModel, image: np.ndarray, config: PredictConfig | None = None,
                  with_probabilities: bool = False, device: torch.device | None = None,
                  window: tuple[slice, slice] | None = None) -> Prediction:
    """(C, H, W) raw image -> its Prediction; with `window` (rows, columns), of that part of the image only,
    normalized as the whole image (`normalize_image`), for a question about a few pixels of a large image."""
    start = time.perf_counter()
    config = config or PredictConfig()
    networks = _networks_average(model, image, config, device, window=window)
    return prediction_from(model, image, networks, config, with_probabilities, window, start=start)


def prediction_from(model: SemSegModel, image: np.ndarray, networks: torch.Tensor, config: PredictConfig,
                    with_probabilities: bool = False, window: tuple[slice, slice] | None = None,
                    forest_probabilities: torch.Tensor | None = None, start: float | None = None) -> Prediction:
    """`predict_image`'s Prediction from the (K, H, W) probabilities of the networks (of `window` of the image, if
    given), corrected and averaged as `predict_image` has them: the forest's share, the thinning, the unsure-piece
    rules. `forest_probabilities`: the model's forest's of this image (`PixelForest.probabilities`), when the caller
    keeps them (a round's previews, whose forest does not change); `start`: when the prediction began (its
    seconds)."""
    start = time.perf_counter() if start is None else start
    prob = _with_forest(model, image, networks, window, forest_probabilities)
    labels = (prob.argmax(0) + 1).numpy().astype(label_dtype(model.num_classes))
    uncertainty = normalized_entropy(prob).numpy().astype(np.float32)
    probabilities = prob.numpy()
    with_forest = model.forest is not None and model.forest_weight > 0
    if config.unsure_pieces:
        first_training = len(model.history) <= 1
        if first_training or with_forest:  # see unsure_pieces.py
            labels = reassign_unsure_pieces(labels, probabilities, uncertainty, model.line_classes,
                                            thin_only=with_forest)
        labels = reassign_unsure_off_lines(labels, probabilities, uncertainty, model.line_classes)
    # The uncertainty shown, and the suggestions made from it, are the networks' alone: the places where a
    # correction teaches the networks. With the forest's share in it the suggested corrections trained worse
    # networks; the map itself keeps the forest (bench/RESULTS.md, session 44).
    if with_forest:
        uncertainty = normalized_entropy(thin_line_classes(networks, model.line_classes)).numpy().astype(np.float32)
    return Prediction(labels, uncertainty, probabilities if with_probabilities else None,
                      time.perf_counter() - start)


def predict_stack(model: SemSegModel, images: np.ndarray, config: PredictConfig | None = None,
                  indices: list[int] | None = None, with_probabilities: bool = False,
                  progress: Callable[[int, int, float], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> Iterator[tuple[int, Prediction]]:
    """Yield (index, Prediction) for each image of an (N, C, H, W) stack; `progress(done, total, seconds)`."""
    config = config or PredictConfig()
    device = resolve_device(config.device)
    model.check_stack(images.shape[1])
    indices = list(range(len(images))) if indices is None else list(indices)
    for done, i in enumerate(indices, start=1):
        if should_stop is not None and should_stop():
            return
        pred = predict_image(model, images[i], config, with_probabilities, device)
        if progress is not None:
            progress(done, len(indices), pred.seconds)
        yield i, pred
