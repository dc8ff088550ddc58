"""Class-prior correction: predictions follow the stack's mix of classes, not the strokes' mix.

Why: a network trained on strokes learns the strokes' class mix as its prior. A thin class (membrane, nucleus
border) gets as many strokes as the background, far more than its share of the image, and strokes keep away
from class borders, so in the band between strokes of two classes the network favours the thin class and
draws it too thick (bench/RESULTS.md, session 9). The standard correction for such a prior shift (Saerens et
al., Neural Computation 2002) reweights each pixel's class probabilities by new prior / training prior.
The new prior is the mean predicted probability over the stack: one EM step. Iterating to convergence drives
a class with diffuse probabilities (a 1-pixel border) to nothing, so one step is all it takes (measured).
The training prior is the class mix of the labeled pixels in the batches the loss saw, which train() counts:
patches are centered on a class drawn uniformly, so long strokes are picked more often than short ones and
bring the strokes around them into the patch; that mix differs from the strokes' pixel shares by up to a
third for a thin class (bench/RESULTS.md, session 12). A retrained network's prior is the strokes' shares
now, less the corrections, times that sampling bias of its first training; see `learned_class_mix`.
"""

from __future__ import annotations

import numpy as np
import torch

from .model_file import SemSegModel
from .prediction import PredictConfig, predict_image, predict_probabilities


def log_prior_shift(mean_probability: np.ndarray, label_fractions: np.ndarray) -> np.ndarray:
    """log(stack prior / stroke prior) per class; 0 for a class with no labeled pixel (nothing to correct)."""
    mean_probability = np.asarray(mean_probability, np.float64)
    label_fractions = np.asarray(label_fractions, np.float64)
    shift = np.zeros(len(label_fractions))
    painted = label_fractions > 0
    shift[painted] = np.log(np.maximum(mean_probability[painted], 1e-6) / label_fractions[painted])
    return shift


def label_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Number of labeled pixels of each class 1..K in (N, H, W) labels (or labels of any shape)."""
    parts = labels if labels.ndim == 3 else [labels]  # image by image: no stack-sized temporaries
    return sum((np.bincount(part.ravel(), minlength=num_classes + 1)[1:num_classes + 1] for part in parts),
               np.zeros(num_classes, np.int64))


def label_fractions(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of each class 1..K among the labeled pixels of (N, H, W) labels."""
    counts = label_counts(labels, num_classes)
    return counts / max(counts.sum(), 1)


def learned_class_mix(history: list[dict]) -> np.ndarray | None:
    """The class mix a network learned as its prior, from its training history (oldest first).

    The shares of the labeled pixels of its last training less every round's corrections (labeled pixels the
    model of the time predicted as another class, `corrected_class_pixels`), times the bias of the first
    training's patch sampling (the mix its loss saw / the labeled pixels' shares). For a first training that
    is the mix its loss saw. Why not the pixels all its trainings' losses saw: a first training sees several
    times the labeled pixels of a retraining, so new strokes would hardly move the prior (bench/RESULTS.md,
    session 13); why not the retraining's batches alone: they are full of corrections (session 12). Why not
    the corrections: see `carried_log_prior_shift`. A first training from before these counts (an older
    model file) gives no bias: the plain label shares. None when the last training has no label counts.
    """

    def counts(entry: dict, key: str) -> np.ndarray | None:
        values = entry.get(key)
        return np.asarray(values, np.float64) if values is not None and np.sum(values) > 0 else None

    if not history:
        return None
    first, last = history[0], history[-1]
    now = counts(last, "labeled_class_pixels")
    seen, then = counts(first, "training_class_pixels"), counts(first, "labeled_class_pixels")
    if now is None:
        return None
    for entry in history[1:]:
        corrected = counts(entry, "corrected_class_pixels")
        if corrected is not None and len(corrected) == len(now):
            now = now - corrected
    now = np.maximum(now, 0.0)
    if not now.sum() > 0:
        return None
    bias = np.ones(len(now))
    if seen is not None and then is not None and len(seen) == len(then) == len(now):
        both = (seen > 0) & (then > 0)
        bias[both] = (seen[both] / seen.sum()) / (then[both] / then.sum())
    mix = now / now.sum() * bias
    return mix / mix.sum()


def carried_log_prior_shift(init_model: SemSegModel, history: list[dict]) -> np.ndarray | None:
    """A retrained network's correction: the one of the model it started from, moved by the change of the class
    mix it learned (`learned_class_mix` of `init_model.history` -> of `history`, the retrained model's). None
    when either is unknown (the caller estimates it afresh).

    Why not estimated afresh from the retrained network's mean probability: corrections teach it a class in the
    places they were (a membrane gap closed), its mean probability of that class goes up, and one EM step takes
    that for more of the class in the stack. Counted in the learned mix, the corrections pushed the other way
    and more: on isbi2012-em, where the suggested corrections are mostly membrane, the membrane was drawn ever
    thinner (T2 0.749 -> 0.723 in three rounds, seed 6). New strokes that confirm the prediction are a sample of
    the stack; they move the learned mix, and the correction with it (random strokes on dsb2018-fluo are mostly
    background: a correction that did not follow them lost 0.005 after three rounds, 4 seeds). bench/RESULTS.md,
    session 32.
    """
    if init_model.log_prior_shift is None:
        return None
    before, after = learned_class_mix(init_model.history), learned_class_mix(history)
    if before is None or after is None or not len(before) == len(after) == len(init_model.log_prior_shift):
        return None
    shift = np.array(init_model.log_prior_shift, np.float64)
    both = (before > 0) & (after > 0)
    shift[both] += np.log(before[both] / after[both])
    return shift


def corrected_class_pixels(model: SemSegModel, images: np.ndarray, labels: np.ndarray, new: np.ndarray,
                           device: torch.device | None = None, mixed_precision: bool = True) -> np.ndarray:
    """Per class 1..K, the `new` labeled pixels that `model` (the one the person saw and corrected) predicts
    as another class: corrections, as opposed to new strokes that confirm its prediction. Of a large image only
    the new pixels' `labeled_window` is predicted."""
    out = np.zeros(model.num_classes)
    for i in range(len(new)):
        new_i = (new[i] > 0) & (labels[i] > 0)  # image by image: no stack-sized temporaries
        if not new_i.any():
            continue
        window = labeled_window(new_i)
        shown = predict_image(model, images[i], PredictConfig(mixed_precision=mixed_precision), device=device,
                              window=window)
        rows, cols = window or (slice(None), slice(None))
        wrong = new_i[rows, cols] & (shown.labels != labels[i, rows, cols])
        out += label_counts(labels[i, rows, cols][wrong], model.num_classes)
    for member, _ in model.round_members():
        member.network.cpu()  # the caller's model: it does not hold GPU memory after this
    return out


def spread_indices(n: int, count: int) -> list[int]:
    """Up to `count` indices evenly spread over range(n)."""
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, min(count, n))})


# What a training estimates over the stack after its steps (this class-prior correction, the forest's teaching
# pixels) predicts within a window of at most ESTIMATE_WINDOW pixels a side of each image it looks at. Why: the cost
# grew with the images' size, not the training's: 18 predictions of 2048 x 2048 images took 104 of the 123 s a
# 50-step training of 10 such images took on this project's 2-core machine (bench/RESULTS.md, session 64). The
# benchmark's images (512 x 512, 520 x 696) fit in one window, so nothing changes for them.
ESTIMATE_WINDOW = 1024


def estimate_window(shape: tuple[int, ...], k: int, size: int | None = None) -> tuple[slice, slice]:
    """Rows and columns of the `k`-th image's window, at most `size` (ESTIMATE_WINDOW) a side, in an image of
    `shape` (..., H, W). Successive k take windows of a grid over the image in an order that spreads the first few
    over all of it, so that the images looked at together see their whole field, not only its centre (a tissue
    section surrounded by background would give the centre's class mix)."""
    h, w = shape[-2:]
    size = size or ESTIMATE_WINDOW
    rows, cols = -(-h // size), -(-w // size)
    n = rows * cols
    step = next(s for s in range(max(1, round(n * 0.618)), 0, -1) if np.gcd(s, n) == 1)  # visits all n, spread
    r, c = divmod(k * step % n, cols)
    top = round(r * (h - min(h, size)) / max(rows - 1, 1))
    left = round(c * (w - min(w, size)) / max(cols - 1, 1))
    return slice(top, top + min(h, size)), slice(left, left + min(w, size))


# Around labeled pixels a window keeps this much of the image on each side, as context for the network.
LABEL_MARGIN = 64


def labeled_window(labels: np.ndarray, margin: int = LABEL_MARGIN) -> tuple[slice, slice] | None:
    """Rows and columns of the labeled pixels' bounding box in (H, W) `labels`, `margin` wider on each side, where
    only the prediction at the labels is wanted; None (the whole image) for an image that fits in one
    ESTIMATE_WINDOW, as the benchmark's do, or one without labels."""
    h, w = labels.shape
    if max(h, w) <= ESTIMATE_WINDOW or not labels.any():
        return None
    rows, cols = np.flatnonzero(labels.any(1)), np.flatnonzero(labels.any(0))
    return (slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
            slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)))


def estimate_log_prior_shift(model: SemSegModel, images: np.ndarray, labels: np.ndarray, max_images: int = 8,
                             device: torch.device | None = None,
                             training_mix: np.ndarray | None = None, mixed_precision: bool = True) -> np.ndarray:
    """The model's prior correction for this stack: mean probability over up to `max_images` images spread
    over the stack (`estimate_window` of each; the network without any correction) against the training prior:
    `training_mix` (class shares of the labeled pixels the loss saw) if given, else the class shares of the
    labeled pixels."""
    total = np.zeros(model.num_classes)
    pixels = 0
    for k, i in enumerate(spread_indices(len(images), max_images)):
        prob = predict_probabilities(model, images[i], PredictConfig(mixed_precision=mixed_precision), device,
                                     prior_shift=False, window=estimate_window(images.shape, k))
        total += prob.reshape(model.num_classes, -1).sum(1).double().numpy()
        pixels += prob[0].numel()
    if training_mix is None or not np.sum(training_mix) > 0:
        prior = label_fractions(labels, model.num_classes)
    else:
        prior = np.asarray(training_mix, np.float64) / np.sum(training_mix)
    return log_prior_shift(total / pixels, prior)
