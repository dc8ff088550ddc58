"""Training a U-Net on sparse labels (painted strokes).

The stroke loss sees only labeled pixels (masked cross-entropy; classes balanced by sampling), and a class
traced as 1-pixel lines must peak on its traced pixels (line_position_loss); the rest of the stack teaches
through a teacher's confident pseudo-labels. Budget by iterations (deterministic with a seed) or by
wall-clock seconds (what a person waiting at the screen wants). Progress goes to a callback, cancellation
is a flag checked between iterations.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .calibration import (
    carried_log_prior_shift,
    corrected_class_pixels,
    estimate_log_prior_shift,
    label_counts,
    learned_class_mix,
)
from .classes import ClassInfo
from .devices import autocast_dtype, resolve_device
from .errors import InputError, TrainingDiverged
from .forest_teacher import confident_labels
from .line_classes import detect_line_classes
from .losses import line_position_loss, masked_cross_entropy, pseudo_targets
from .model_file import RoundMember, SemSegModel
from .normalization import percentile_range
from .patches import IGNORE, PatchSampler, PatchSource, strong_view
from .pixel_forest import PixelForest
from .starting_points import StartChoice, choose_starting_point
from .train_config import TrainConfig
from .train_preview import PreviewModel, first_map
from .weight_average import WeightAverage

log = logging.getLogger(__name__)

# A seconds budget that runs out before this many steps gives a model to distrust: a first training has not yet
# let its own teacher's pseudo-labels in (`pseudo_label_min_steps`). It happens on a slow or busy machine: the
# 60 s demo ran 592 steps (mean IoU 0.72) on an idle 2-core CPU and 55 (0.42-0.48) while two other jobs held
# the cores (bench/RESULTS.md, session 26). The result says so (`TrainResult.warning`) instead of passing silently.
FEW_ITERATIONS = 200
# Labels are dense, not strokes, when a labeled pixel lies, on average, in an image labeled at least this much
# (`TrainConfig.class_balance`). The benchmark's 10 strokes per class cover 0.5% of their images, three rounds of
# corrections at most 1.5%, with 10 more background strokes of a 9-pixel brush 1.3%; a fully labeled image 100%.
DENSE_LABELS = 0.5


@dataclass
class TrainProgress:
    iteration: int
    total_iterations: int | None  # known for an iteration budget, estimated for a seconds budget
    loss: float
    seconds: float
    remaining_seconds: float
    message: str = ""


PREVIEW_TIME_SHARE = 0.1


@dataclass
class TrainPreview:
    """Labels of a few images now and then while a training runs: `show(iteration, labels)` gets (M, H, W) class
    values, on the training's thread (the caller moves them to its own; the Logic (SemSegMRML) writes them into MRML
    on the main thread).

    Why: a first training takes a minute or more on a CPU. A person who watches the map form sees early that a
    class is missing or a stroke went astray, and can cancel and paint instead of waiting. A first training with a
    forest (`forest`, and the config's forest weight above 0) shows a random forest of the strokes first, before
    any step, as iteration 0 (train_preview.py). Then each map is the model with the network the training would
    return if it ended then (the weight average; train_preview.PreviewModel): a first training's without the
    forest that comes after the steps and with a class-prior correction of each shown image's own, a round's with
    its start's correction and forest. The previews change nothing the training computes (an iteration budget
    gives the same weights); the network's take at most PREVIEW_TIME_SHARE of the steps' time: the next one waits
    `every_seconds`, or longer after a slow one.
    """

    images: np.ndarray  # (M, C, H, W) raw images
    show: Callable[[int, np.ndarray], None]
    every_seconds: float = 10.0
    forest: bool = True


@dataclass
class TrainResult:
    model: SemSegModel
    iterations: int
    seconds: float
    final_loss: float
    cancelled: bool
    device: str
    losses: list[float] = field(default_factory=list)
    warning: str = ""  # why the result may disappoint (too few steps for its seconds budget); "" if nothing


def weighs_classes(labels: np.ndarray, config: TrainConfig) -> bool:
    """Whether the loss weighs the classes (`TrainConfig.class_balance`; None: when `labels` are dense).

    Dense: a labeled pixel lies, on average, in an image whose pixels are labeled at least DENSE_LABELS; so one
    fully labeled slice among a few with strokes counts as dense, as its patches are most of what the loss sees.
    """
    if config.class_balance is not None:
        return config.class_balance
    per_image = np.array([np.count_nonzero(image) for image in labels], np.float64)  # no stack-sized temporary
    if per_image.sum() == 0:
        return False
    return float((per_image * (per_image / labels[0].size)).sum() / per_image.sum()) >= DENSE_LABELS


def _class_weights(targets: np.ndarray, num_classes: int) -> torch.Tensor:
    counts = np.bincount(targets[targets != IGNORE].ravel(), minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    # Median-frequency balancing: a class painted with few strokes weighs as much as a big one.
    weights[present] = np.median(counts[present]) / counts[present]
    weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


@dataclass
class TrainingArrays:
    """What a training samples its patches from (PatchSource): the images of `keep` as they came, each image's
    normalization, targets 0..K-1 with IGNORE, and pixel weights (None: 1 on every labeled pixel)."""

    images: np.ndarray  # (n, C, H, W), raw: normalized patch by patch (PatchSource.image_patch)
    low: np.ndarray  # (n, C) each image's percentile_range
    scale: np.ndarray  # (n, C)
    targets: np.ndarray  # (n, H, W) int8 / int16
    weights: np.ndarray | None  # (n, H, W) float16 / float32: the correction weight on corrections, else 1 or 0
    keep: list[int]  # the labeled images, by index in the stack


def _target_type(num_classes: int) -> type:
    """The smallest signed integer type that holds the targets 0..K-1 and IGNORE."""
    return np.int8 if num_classes < 2**7 else np.int16 if num_classes < 2**15 else np.int32


def prepare_training_arrays(images: np.ndarray, labels: np.ndarray, model: SemSegModel, names: list[str] | None,
                            correction_weight: float, correction_mask: np.ndarray | None = None,
                            all_images: bool = False) -> TrainingArrays:
    """The arrays a training samples from; corrections get `correction_weight`.

    Only labeled images are held unless `all_images` (pseudo-labels need the whole stack).
    Corrections are `correction_mask` if given, else pixels labeled since `model` was trained.
    """
    labeled = [i for i in range(len(labels)) if labels[i].any()]
    if not labeled:
        raise InputError("no labeled pixels: paint at least one stroke per class before training.")
    keep = list(range(len(labels))) if all_images else labeled
    largest = max(int(labels[i].max()) for i in labeled)
    if largest > model.num_classes:
        raise InputError(f"label value {largest} but the model has {model.num_classes} classes.")
    # These arrays hold every pixel of the stack for the whole training, so they are the smallest that hold their
    # values exactly: the images as they came (no normalized float32 copy), int8 targets, and weights only where
    # corrections weigh other than 1; the training's patches are the same to the bit. 400 images of 1024 x 1024,
    # 8-bit: a training's peak memory 11.0 -> 1.6 GB; beside the images and labels it held 22 bytes a pixel, now about 1
    # (bench/RESULTS.md, session 67).
    low = np.empty((len(keep), images.shape[1]))
    scale = np.empty((len(keep), images.shape[1]))
    for j, i in enumerate(keep):
        low[j], scale[j] = percentile_range(images[i], model.normalization)
    targets = np.empty((len(keep), *labels.shape[1:]), _target_type(model.num_classes))
    for j, i in enumerate(keep):
        targets[j] = labels[i]
    targets -= 1  # 0 (unlabeled) becomes IGNORE
    weights = None
    if correction_weight != 1.0:
        if correction_mask is None:
            correction_mask = correction_pixels(labels, model, names)
        if correction_mask is not None:
            exact_in_half = float(np.float16(correction_weight)) == float(correction_weight)
            weights = (targets != IGNORE).astype(np.float16 if exact_in_half else np.float32)
            for j, i in enumerate(keep):  # image by image: no stack-sized temporaries
                weights[j][(correction_mask[i] > 0) & (labels[i] > 0)] = correction_weight
    return TrainingArrays(images if keep == list(range(len(images))) else images[keep], low, scale, targets,
                          weights, labeled)


def correction_pixels(labels: np.ndarray, model: SemSegModel, names: list[str] | None,
                      correction_mask: np.ndarray | None = None) -> np.ndarray | None:
    """Labeled pixels that are corrections: `correction_mask` if given, else labeled since `model` was trained.

    None when nothing tells them apart (no mask, and a model that does not know what was labeled).
    """
    if correction_mask is not None:
        return (correction_mask > 0) & (labels > 0)
    if names is None:
        return None
    out = np.zeros(labels.shape, bool)
    known = False
    for j, name in enumerate(names):
        previous = model.previous_labeled_mask(name, labels.shape[1:])
        if previous is not None:
            known = True
            out[j] = (labels[j] > 0) & ~previous
    return out if known else None


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return max(progress / warmup, 0.01)
    p = (progress - warmup) / max(1e-8, 1 - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))


def train(
    images: np.ndarray,
    labels: np.ndarray,
    classes: list[ClassInfo],
    config: TrainConfig | None = None,
    init_model: SemSegModel | None = None,
    names: list[str] | None = None,
    progress: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    correction_mask: np.ndarray | None = None,
    preview: TrainPreview | None = None,
) -> TrainResult:
    """Train on `images` (N, C, H, W) with sparse `labels` (N, H, W), 0 = unlabeled, 1..K = classes.

    `init_model` continues from an earlier model (the correction loop); pixels labeled since it was trained
    get `config.correction_weight` (or the pixels of `correction_mask`, when the caller tracks corrections
    itself, as the Slicer module does). `should_stop()` is polled between iterations; when it returns True the
    loop ends and the best model so far (lowest smoothed loss) is returned with `cancelled=True`. `preview` shows
    the labels of a few images while the training runs (TrainPreview). `images` are read, not copied, while the
    training runs (each patch is normalized as it is cut): do not change them meanwhile.
    """
    config = config or TrainConfig()
    _check_training_input(images, labels, classes, config)
    device = resolve_device(config.device)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)

    def report(message: str) -> None:  # work before the first step (the start's check, a preview's forest): say so
        if progress is not None:
            progress(TrainProgress(0, config.iterations, float("nan"), 0.0, float("nan"), message))

    # Once, for the loss and for the model's thinning; each is its own choice.
    detected_lines = (detect_line_classes(labels, len(classes))
                      if config.line_position_weight > 0 or config.thin_line_classes else [])
    shown_lines = detected_lines if config.thin_line_classes else []  # the model's (`SemSegModel.line_classes`)
    model, start_choice = _model_to_train(images, labels, classes, config, init_model, preview, shown_lines, device,
                                          report)

    use_pseudo = config.pseudo_label_weight > 0 and (init_model is not None or config.ema_decay > 0)
    # Corrections, once for the whole stack: they get the correction weight and the focused patches.
    corrections = correction_mask
    if init_model is not None and corrections is None:
        corrections = correction_pixels(labels, init_model, names)
    weighted = weighs_classes(labels, config)
    sampler, kept, class_weights = _patch_sampler(images, labels, model, names, config, corrections, use_pseudo,
                                                  weighted, generator, fine_tuning=init_model is not None)
    class_weights = class_weights.to(device)
    class_quantile = config.finetune_pseudo_label_class_quantile if init_model is not None else 0.0
    line_classes = detected_lines if config.line_position_weight > 0 else []

    net = model.network.to(device)
    net.train()
    peak_lr = config.learning_rate * (config.finetune_lr_factor if init_model is not None else 1.0)
    optimizer = torch.optim.AdamW(net.parameters(), lr=peak_lr, weight_decay=config.weight_decay)
    amp_dtype = autocast_dtype(device, config.mixed_precision, training=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)  # bfloat16 has float32's range
    batch_size, patch_size = config.batch_size, config.patch_size

    ema = WeightAverage(net, config.ema_decay) if config.ema_decay > 0 else None
    # Fine-tuning: the previous round's model is the teacher, so corrections change what they correct and
    # the rest of the stack keeps what the person already accepted. First round: the EMA of the student.
    teacher = copy.deepcopy(init_model.network).to(device).eval() if use_pseudo and init_model else None

    # The labeled pixels the loss sees per class (with their weights): their mix is the prior the network
    # learns, which the class-prior correction undoes (calibration.py). On the device, no sync per step; float32,
    # which every device has (shares need no more precision).
    seen_mix = torch.zeros(model.num_classes, dtype=torch.float32, device=device)
    cap = config.max_finetune_iterations if init_model is not None else config.max_iterations
    start = time.perf_counter()
    losses: list[float] = []
    smoothed = best_loss = math.inf
    best_state = None
    cancelled = False
    it = 0
    next_preview = start + (preview.every_seconds if preview is not None else math.inf)
    # What the result will average with its network (fixed by its start); a round's previews draw it too.
    earlier, first_network_share = earlier_rounds(model, init_model, config)
    previewed = PreviewModel(model, init_model, shown_lines, earlier, first_network_share) \
        if preview is not None else None
    while True:
        elapsed = time.perf_counter() - start
        if config.iterations is not None:
            frac = it / config.iterations
        else:  # whichever ends first, the seconds or the cap, also ends the learning-rate schedule
            frac = max(elapsed / config.seconds, it / cap if cap else 0.0)
        if frac >= 1.0:
            break
        if should_stop is not None and should_stop():
            cancelled = True
            break
        for group in optimizer.param_groups:
            group["lr"] = peak_lr * _lr_factor(frac, config.warmup_fraction)
        x, y, w = sampler.sample(batch_size, patch_size)
        x, y, w = x.to(device), y.to(device), w.to(device)
        seen = y != IGNORE
        seen_mix += torch.bincount(y[seen], weights=w[seen] * class_weights[y[seen]],
                                   minlength=model.num_classes)[:model.num_classes].float()
        current_teacher = teacher if teacher is not None else (
            ema.module if use_pseudo and frac >= config.pseudo_label_start
            and it >= config.pseudo_label_min_steps else None)
        try:
            if current_teacher is not None:
                xu, yu, _ = sampler.sample(max(1, batch_size // 2), patch_size, anywhere=True)
                xu, yu = xu.to(device), yu.to(device)
                pseudo = pseudo_targets(current_teacher, xu, yu, config.pseudo_label_threshold, class_quantile)
                # The student sees a noisier view than the teacher: consistency, not copying.
                if config.pseudo_label_strong_view:
                    xu = strong_view(xu, generator)
                xu = xu + 0.1 * torch.randn(xu.shape, generator=generator).to(device)
                x = torch.cat([x, xu])
            with torch.autocast(device.type, dtype=amp_dtype or torch.float16, enabled=amp_dtype is not None):
                logits = net(x).float()
            loss = masked_cross_entropy(logits[:batch_size], y, w, class_weights)
            if line_classes:
                loss = loss + config.line_position_weight * line_position_loss(
                    logits[:batch_size], y, line_classes, config.line_position_margin)
            if current_teacher is not None:
                loss = loss + config.pseudo_label_weight * masked_cross_entropy(
                    logits[batch_size:], pseudo, (pseudo != IGNORE).float(), torch.ones_like(class_weights))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            if batch_size > 1:
                batch_size //= 2
            elif patch_size > 64:
                patch_size //= 2
            else:
                raise
            msg = f"GPU out of memory: retrying with batch {batch_size}, patch {patch_size}"
            log.warning(msg)
            if progress:
                progress(TrainProgress(it, None, float("nan"), elapsed, float("nan"), msg))
            continue
        if ema is not None:
            ema.update(net)
        value = float(loss.detach())
        losses.append(value)
        smoothed = value if math.isinf(smoothed) else 0.95 * smoothed + 0.05 * value
        it += 1
        # Snapshot the best weights now and then; a cancelled run returns them.
        if it % 20 == 0 and frac > 0.2 and smoothed < best_loss:
            best_loss = smoothed
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if progress is not None:
            elapsed = time.perf_counter() - start
            total, remaining = _steps_and_seconds_left(it, elapsed, config, cap)
            progress(TrainProgress(it, total, smoothed, elapsed, remaining))
        if time.perf_counter() >= next_preview:
            shown = time.perf_counter()
            mix = seen_mix.cpu().double().numpy() if init_model is None else None  # a first training's own prior
            preview.show(it, previewed.labels(ema.module if ema is not None else net, preview.images, device, mix))
            took = time.perf_counter() - shown
            next_preview = time.perf_counter() + max(preview.every_seconds, took / PREVIEW_TIME_SHARE)

    # The training arrays hold every pixel of the stack; what follows (the class-prior estimate, the forest) works
    # image by image and needs none of them, so they do not add to its peak memory.
    del sampler
    seconds = time.perf_counter() - start
    # Returned and kept in the history, not logged here: the CLI and the panel show it, and Python's fallback
    # logging handler would print it a second time on the command line.
    warning = _few_steps_warning(it, seconds, cap, config, cancelled)
    if ema is not None and it > 0:
        net.load_state_dict(ema.module.state_dict())
    elif cancelled and best_state is not None:
        net.load_state_dict(best_state)
    _refuse_diverged(net, it, losses)
    net.eval().cpu()
    model.network = net
    names = names or [f"image_{i}" for i in range(len(labels))]
    counts = {names[i]: int((labels[i] > 0).sum()) for i in kept}
    seen_pixels = seen_mix.cpu().double().numpy()
    model.history.append({
        "round": len(model.history) + 1,
        "iterations": it,
        "seconds": round(seconds, 2),
        "final_loss": round(smoothed, 5) if losses else None,
        "cancelled": cancelled,
        "device": device.type,
        "precision": str(amp_dtype or torch.float32).removeprefix("torch."),
        "labeled_pixels": counts,
        "training_class_pixels": [round(float(v), 1) for v in seen_pixels],
        "labeled_class_pixels": [int(v) for v in label_counts(labels, model.num_classes)],
        "config": config.to_dict(),
        "class_weights": [round(float(v), 4) for v in class_weights.cpu()] if weighted else None,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "warning": warning,
        "starting_point": None if start_choice is None else start_choice.to_dict(),
    })
    model.set_labeled_masks(names, labels)
    model.line_classes = list(shown_lines)
    model.history[-1]["line_classes"] = list(model.line_classes)
    model.log_prior_shift = None
    if config.prior_correction_images > 0:
        if progress is not None:
            progress(TrainProgress(it, it, smoothed, seconds, 0.0, "correcting the class balance"))
        _correct_class_prior(model, init_model, images, labels, corrections, weighted, seen_pixels, config, device)
    model.history[-1]["log_prior_shift"] = (None if model.log_prior_shift is None
                                            else [round(float(v), 4) for v in model.log_prior_shift])
    model.earlier_rounds, model.first_network_share = earlier, first_network_share
    model.history[-1]["round_networks"] = 1 + len(model.earlier_rounds)
    if model.first_network_share > 0:
        model.history[-1]["first_network_share"] = model.first_network_share
    # Last: the networks teach the forest as the model shows them (corrected, rounds averaged, lines thinned).
    if config.forest_weight > 0 and progress is not None:
        progress(TrainProgress(it, it, smoothed, seconds, 0.0, "fitting the random forest"))
    attach_forest(model, images, labels, config, device, start=init_model)
    return TrainResult(model, it, seconds, smoothed, cancelled, device.type, losses, warning)


def _steps_and_seconds_left(it: int, elapsed: float, config: TrainConfig, cap: int | None) -> tuple[int, float]:
    """The steps a training will take in all and the seconds it has left, after `it` steps in `elapsed` s."""
    if config.iterations is not None:
        return config.iterations, elapsed / it * (config.iterations - it)
    total = max(it, int(it * config.seconds / max(elapsed, 1e-6)))
    if cap and total > cap:
        return cap, elapsed / it * max(0, cap - it)
    return total, max(0.0, config.seconds - elapsed)

def _check_training_input(images: np.ndarray, labels: np.ndarray, classes: list[ClassInfo],
                          config: TrainConfig) -> None:
    """Refuse what no training can use, before any work: shapes, budget, classes, weights."""
    if images.ndim != 4 or labels.shape != (images.shape[0], *images.shape[2:]):
        raise InputError(f"images {images.shape} and labels {labels.shape} do not line up; expected (N,C,H,W) "
                         "and (N,H,W).")
    if config.iterations is None and not config.seconds:
        raise InputError("give a training budget: iterations or seconds.")
    if (config.iterations is not None and config.iterations < 1) or (config.iterations is None and config.seconds < 0):
        raise InputError(f"the training budget must be positive (at least 1 iteration, or seconds above 0), got "
                         f"{config.iterations if config.iterations is not None else config.seconds}.")
    if len(classes) < 2:
        # One class leaves nothing to tell apart: the loss is 0 from the first step and every pixel gets that class.
        raise InputError(f"a segmentation needs at least two classes, the labels define {len(classes)} "
                         f"({', '.join(c.name for c in classes) or 'none'}): paint the background (or another "
                         "class) too.")
    if config.correction_weight < 0 or config.seed < 0:
        raise InputError(f"the correction weight and the seed must not be negative, got {config.correction_weight} "
                         f"and {config.seed}.")


def _refuse_diverged(net: torch.nn.Module, iterations: int, losses: list[float]) -> None:
    """Such a network predicts one class everywhere; saved, it would look like a model that merely learned badly."""
    if not all(t.isfinite().all() for t in net.state_dict().values() if t.is_floating_point()):
        raise TrainingDiverged(
            f"the training diverged: the network's weights became NaN or infinite within {iterations} steps (last "
            f"loss {losses[-1] if losses else float('nan'):.4g}), so no model was kept. Train again with the default "
            "settings; if it happens again, start from random weights (start 'none') or check the images for "
            "extreme values.")

def _model_to_train(images: np.ndarray, labels: np.ndarray, classes: list[ClassInfo], config: TrainConfig,
                    init_model: SemSegModel | None, preview: TrainPreview | None, shown_lines: list[int],
                    device: torch.device, report: Callable[[str], None]) -> tuple[SemSegModel, StartChoice | None]:
    """A copy of `init_model` to retrain, or a new model (from a shipped starting point where one fits) and the
    choice made; a first training's preview shows the forest of the strokes first."""
    start_choice = None
    if init_model is not None:
        model = copy.deepcopy(init_model)
        model.check_stack(images.shape[1])
        if model.num_classes != len(classes):
            raise InputError(f"the starting model has {model.num_classes} classes but the labels define "
                             f"{len(classes)}; train a new model when the classes change.")
        if [c.name for c in model.classes] != [c.name for c in classes]:
            # A rename would silently give the model's class k another meaning in the file it is saved to.
            raise InputError(f"the starting model's classes are {', '.join(c.name for c in model.classes)}, the "
                             f"labels' {', '.join(c.name for c in classes)}: continue with the model's classes, in "
                             "its order, or train a new model.")
        model.classes = list(classes)  # the same names; their colors may have changed
    else:
        model = SemSegModel.create(images.shape[1], classes, base_width=config.base_width, levels=config.levels,
                                    input_filters=config.input_filters, filter_sigmas=config.filter_sigmas)
        if preview is not None:  # first, before the start's check: seconds before any network could show a map
            first = first_map(model, preview.images, images, labels, shown_lines, config.seed, config.forest_weight,
                              preview.forest, report)
            if first is not None:
                preview.show(0, first)
        start_choice = choose_starting_point(config.starting_point, images, labels, classes, model.network_config,
                                             device, report)
        if start_choice is not None:
            model.network = start_choice.network()
    return model, start_choice


def _patch_sampler(images: np.ndarray, labels: np.ndarray, model: SemSegModel, names: list[str] | None,
                   config: TrainConfig, corrections: np.ndarray | None, use_pseudo: bool, weighted: bool,
                   generator: torch.Generator, fine_tuning: bool) -> tuple[PatchSampler, list[int], torch.Tensor]:
    """The training's patches, the images whose labels they hold (in order) and the loss's class weights (ones
    unless `weighted`). The sampler holds the training arrays: they go with it."""
    arrays = prepare_training_arrays(images, labels, model, names, config.correction_weight, corrections,
                                     all_images=use_pseudo)
    keep, targets = arrays.keep, arrays.targets
    largest_crop = int(config.patch_size * max(config.max_scale, 1.0)) + 1
    focus = None
    if corrections is not None and config.correction_focus > 0:
        rows = list(range(len(labels))) if use_pseudo else keep  # the images the arrays hold, in order
        focus = (corrections[rows] > 0) & (labels[rows] > 0)
        focus = focus if focus.any() else None
    raw, targets, weights, focus = PatchSource.pad_to(arrays.images, targets, arrays.weights, largest_crop, focus)
    source = PatchSource(raw, torch.from_numpy(targets), None if weights is None else torch.from_numpy(weights),
                         model.num_classes, None if focus is None else torch.from_numpy(focus), arrays.low,
                         arrays.scale)
    labeled_fraction = config.finetune_labeled_fraction if fine_tuning else config.labeled_fraction
    sampler = PatchSampler(source, generator, labeled_fraction, max_scale=config.max_scale,
                           augment=config.augment, focus_fraction=config.correction_focus,
                           elastic_probability=config.elastic_probability)
    class_weights = _class_weights(targets, model.num_classes) if weighted else torch.ones(model.num_classes)
    return sampler, keep, class_weights


def _correct_class_prior(model: SemSegModel, init_model: SemSegModel | None, images: np.ndarray, labels: np.ndarray,
                         corrections: np.ndarray | None, weighted: bool, seen_pixels: np.ndarray,
                         config: TrainConfig, device: torch.device) -> None:
    """Set `model.log_prior_shift`: a round carries its start's, a first (or a weighted) training estimates one."""
    if init_model is not None:
        if corrections is not None:
            model.history[-1]["corrected_class_pixels"] = [int(v) for v in corrected_class_pixels(
                init_model, images, labels, corrections, device, config.mixed_precision)]
        # A weighted (dense) round's loss saw its own labels' mix times the weights, not the strokes' sampling
        # that the carried correction models: it is estimated afresh from that mix, as a first training's is.
        # Accepted and corrected predictions of dsb2018-fluo's 3 painted images, 4 seeds: T2 +0.0028 against
        # carried (4 of 4 up), T1 level (bench/RESULTS.md, session 58).
        if not weighted:
            model.log_prior_shift = carried_log_prior_shift(init_model, model.history)
    if model.log_prior_shift is None:
        mix = seen_pixels if weighted else learned_class_mix(model.history)
        model.log_prior_shift = estimate_log_prior_shift(model, images, labels, config.prior_correction_images,
                                                         device, training_mix=mix,
                                                         mixed_precision=config.mixed_precision)
        model.network.cpu()  # as before the estimate: a returned model does not hold GPU memory


def earlier_rounds(model: SemSegModel, init_model: SemSegModel | None,
                   config: TrainConfig) -> tuple[list[RoundMember], float]:
    """A round's `SemSegModel.earlier_rounds` (its start's network first, then the start's own earlier rounds, at most
    `config.round_networks` - 1) and `first_network_share`; none and 0 for a first training. `model` is the deep
    copy of `init_model` the round trains, so its earlier rounds are already its own copies."""
    if init_model is None or config.round_networks <= 1:
        return [], 0.0
    share = model.first_network_share
    if not init_model.earlier_rounds and _began_from_a_starting_point(init_model):
        share = config.start_network_share
    start = RoundMember(copy.deepcopy(init_model.network).cpu().eval(), init_model.log_prior_shift)
    earlier = [start, *model.earlier_rounds]
    keep = config.round_networks - 1
    # A first network with a share of its own stays however many rounds follow; the cap drops the next oldest.
    earlier = earlier[:keep - 1] + earlier[-1:] if share > 0 and len(earlier) > keep else earlier[:keep]
    return earlier, share


def _began_from_a_starting_point(model: SemSegModel) -> bool:
    """Whether the model's first training began from a shipped starting point (its history says so)."""
    return bool(model.history) and model.history[0].get("starting_point") is not None


def attach_forest(model: SemSegModel, images: np.ndarray, labels: np.ndarray, config: TrainConfig,
                  device: torch.device | None = None, start: SemSegModel | None = None) -> None:
    """Fit the model's random forest on all of `labels` (strokes and corrections alike, unweighted: the
    forest that gained in session 42's correction rounds) and on the pixels the model's networks are sure of
    (forest_teacher.py), or remove it when `config.forest_weight` is 0. After a retraining, `start` (the model
    it started from) teaches too, where the model's own networks are not sure."""
    model.forest, model.forest_weight = None, 0.0
    taught = 0
    if config.forest_weight > 0 and labels.any():
        confident = None
        if config.forest_teacher_images > 0:
            teach = (images, labels, config.seed, device, config.mixed_precision, config.forest_teacher_images)
            confident = confident_labels(model, *teach)
            if start is not None:
                # A retrained model's networks, averaged with their start's, are sure of less of the stack; the
                # start's sure pixels fill in. With the smoothed forest, `sparse.py`'s round on isbi2012-em went
                # from T2 -0.0011 (seeds 0-5) to +0.0028 (6 of 8 seeds up), dsb2018-fluo's is +0.0010 (5 of 8);
                # without it the round lost T2 on 16 of 16 seeds (bench/RESULTS.md, sessions 49-50).
                for i, sure in confident_labels(start, *teach).items():
                    confident[i] = np.where(confident[i] > 0, confident[i], sure) if i in confident else sure
            for member, _ in [*model.round_members(), *(start.round_members() if start else [])]:
                member.network.cpu()  # a returned model, or the one given, does not hold GPU memory
            taught = sum(int((sure > 0).sum()) for sure in confident.values())
        model.forest = PixelForest.fit(images, labels, model.num_classes, model.normalization, config.seed,
                                       confident=confident)
        model.forest_weight = config.forest_weight if model.forest is not None else 0.0
    if model.history:
        model.history[-1]["forest_samples"] = 0 if model.forest is None else len(model.forest.targets)
        model.history[-1]["forest_taught_pixels"] = taught  # offered by the networks, before the cap


def _few_steps_warning(iterations: int, seconds: float, cap: int | None, config: TrainConfig,
                       cancelled: bool) -> str:
    """A message when the clock, not the person or a cap, ended the training after too few steps."""
    if config.iterations is not None or cancelled or (cap and iterations >= cap) or iterations >= FEW_ITERATIONS:
        return ""
    return (f"only {iterations} training steps in {seconds:.0f} s (a few hundred are needed): this machine was slow "
            f"or busy. Train again with more seconds, with other work stopped, or on a GPU.")
