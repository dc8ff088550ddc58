"""The terms of the training loss: cross-entropy on the labeled pixels, the line classes' position hinge, and
the teacher's pseudo-labels on pixels nobody labeled."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .patches import IGNORE


@torch.no_grad()
def pseudo_targets(teacher: torch.nn.Module, x: torch.Tensor, labeled: torch.Tensor, threshold: float,
                   class_quantile: float = 0.0) -> torch.Tensor:
    """Teacher's class where it is sure enough and the person has not labeled; else IGNORE.

    Sure enough: confidence >= `threshold`, or with `class_quantile` > 0 >= the lower of `threshold` and that
    quantile of the confidence over the pixels given the same class in this batch.
    """
    was_training = teacher.training
    teacher.eval()
    prob = torch.softmax(teacher(x).float(), dim=1)
    teacher.train(was_training)
    confidence, target = prob.max(1)
    needed = torch.full_like(confidence, threshold)
    if class_quantile > 0:
        for c in target.unique():
            mine = target == c
            needed[mine] = min(threshold, float(torch.quantile(confidence[mine], class_quantile)))
    target[(confidence < needed) | (labeled != IGNORE)] = IGNORE
    return target


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, pixel_weights: torch.Tensor,
                         class_weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labeled pixels only, weighted per class and per pixel, normalized by total weight."""
    per_pixel = F.cross_entropy(logits, targets.clamp(min=0), reduction="none")
    labeled = targets != IGNORE
    w = pixel_weights * class_weights[targets.clamp(min=0)] * labeled
    total = w.sum()
    if total <= 0:
        return logits.sum() * 0.0  # a batch without labels: keep the graph, add nothing
    return (per_pixel * w).sum() / total


_ALL, _HEAD, _TAIL = slice(None), slice(None, -1), slice(1, None)
# (center, neighbour) slices of a (B, H, W) tensor: the neighbour below, above, right and left.
_NEIGHBOUR_SLICES = (((_ALL, _HEAD), (_ALL, _TAIL)), ((_ALL, _TAIL), (_ALL, _HEAD)),
                     ((_ALL, _ALL, _HEAD), (_ALL, _ALL, _TAIL)), ((_ALL, _ALL, _TAIL), (_ALL, _ALL, _HEAD)))


def line_position_loss(logits: torch.Tensor, targets: torch.Tensor, line_classes: list[int],
                       margin: float) -> torch.Tensor:
    """Hinge loss: a pixel labeled with a line class has that class's log-probability at least `margin` above
    each 4-neighbour not labeled with it (the line's flanks: unpainted, or painted as another class).

    Relative, not "the flank is another class": where the line's position is uncertain by a pixel, as on new
    images, flanks taught as another class make the line lose everywhere (session 19). Here a flank may stay
    the line class, only less surely than the traced pixel, so the ridge (line_classes.ridge) falls on it.
    """
    log_p = F.log_softmax(logits, dim=1)
    terms = []
    for c in line_classes:
        on = targets == c
        score = log_p[:, c]
        for center, neighbour in _NEIGHBOUR_SLICES:
            pairs = on[center] & (targets[neighbour] != c)
            if pairs.any():
                terms.append(F.relu(score[neighbour] - score[center] + margin)[pairs])
    if not terms:
        return logits.sum() * 0.0
    return torch.cat(terms).mean()
