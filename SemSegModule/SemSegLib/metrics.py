"""Segmentation metrics over a stack: confusion matrix, per-class IoU and Dice, mean IoU, pixel accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass
class Metrics:
    confusion: np.ndarray  # (K, K), rows = reference class, columns = predicted class
    class_names: list[str]

    @property
    def iou(self) -> np.ndarray:
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1) - tp
        return np.divide(tp, denom, out=np.full_like(tp, np.nan), where=denom > 0)

    @property
    def dice(self) -> np.ndarray:
        tp = np.diag(self.confusion).astype(np.float64)
        denom = self.confusion.sum(0) + self.confusion.sum(1)
        return np.divide(2 * tp, denom, out=np.full_like(tp, np.nan), where=denom > 0)

    @property
    def mean_iou(self) -> float:
        return float(np.nanmean(self.iou))

    @property
    def mean_dice(self) -> float:
        return float(np.nanmean(self.dice))

    @property
    def pixel_accuracy(self) -> float:
        total = self.confusion.sum()
        return float(np.trace(self.confusion) / total) if total else float("nan")

    def to_dict(self) -> dict:
        def clean(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        return {
            "mean_iou": clean(self.mean_iou),
            "mean_dice": clean(self.mean_dice),
            "pixel_accuracy": clean(self.pixel_accuracy),
            "classes": [
                {"value": i + 1, "name": n, "iou": clean(self.iou[i]), "dice": clean(self.dice[i]),
                 "reference_pixels": int(self.confusion[i].sum()), "predicted_pixels": int(self.confusion[:, i].sum())}
                for i, n in enumerate(self.class_names)
            ],
            "confusion_matrix": self.confusion.tolist(),
        }

    def format_table(self) -> str:
        lines = [f"{'class':<20} {'IoU':>7} {'Dice':>7}"]
        for i, n in enumerate(self.class_names):
            lines.append(f"{n[:20]:<20} {self.iou[i]:7.4f} {self.dice[i]:7.4f}")
        lines.append(f"{'mean':<20} {self.mean_iou:7.4f} {self.mean_dice:7.4f}")
        lines.append(f"pixel accuracy {self.pixel_accuracy:.4f}")
        return "\n".join(lines)


def confusion_matrix(pred: np.ndarray, reference: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts over pixels whose reference is a class (reference 0 = unlabeled is skipped). Counted an image at a
    time in the maps' own types: widening a whole stack to 64 bits took 17.6 s and 6.5 GB for 200 images of
    1024 x 1024 (bench/RESULTS.md, session 72)."""
    if pred.shape != reference.shape:
        raise InputError(f"prediction shape {pred.shape} differs from reference shape {reference.shape}.")
    k = num_classes
    counts = np.zeros((k + 1) * (k + 1), np.int64)
    for prd, ref in zip(_images(pred), _images(reference)):
        ref = np.where((ref > 0) & (ref <= k), ref, 0)  # row 0: not counted
        prd = np.clip(prd, 0, k)  # 0 / out-of-range predictions count as class "none"
        counts += np.bincount((ref.astype(np.intp) * (k + 1) + prd).ravel(), minlength=counts.size)
    return counts.reshape(k + 1, k + 1)[1:, 1:]


def _images(maps: np.ndarray):
    """A stack's (H, W) maps one by one; a single map or a 1-D array whole."""
    return [maps] if maps.ndim <= 2 else maps.reshape(-1, *maps.shape[-2:])


def evaluate(pred: np.ndarray | list[np.ndarray], reference: np.ndarray | list[np.ndarray],
             class_names: list[str]) -> Metrics:
    """`pred` and `reference` (N, H, W) or (H, W) label maps with values 1..K, or lists of (H, W) maps (images of
    different sizes), pooled over all pixels."""
    k = len(class_names)
    if isinstance(pred, list) or isinstance(reference, list):
        if len(pred) != len(reference):
            raise InputError(f"{len(pred)} predictions for {len(reference)} reference maps.")
        return Metrics(sum((confusion_matrix(p, r, k) for p, r in zip(pred, reference)), np.zeros((k, k), np.int64)),
                       list(class_names))
    return Metrics(confusion_matrix(pred, reference, k), list(class_names))
