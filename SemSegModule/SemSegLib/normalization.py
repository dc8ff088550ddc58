"""Per-image, per-channel intensity normalization robust to bit depth and outliers.

Percentiles rather than min/max so a few hot pixels in a 16-bit image do not squash the contrast. The
settings live in the model file, so prediction normalizes exactly as training did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class NormalizationConfig:
    low_percentile: float = 1.0
    high_percentile: float = 99.8

    def to_dict(self) -> dict:
        return {"method": "percentile", **asdict(self)}

    @staticmethod
    def from_dict(d: dict) -> NormalizationConfig:
        return NormalizationConfig(float(d["low_percentile"]), float(d["high_percentile"]))


def normalize_image(image: np.ndarray, config: NormalizationConfig = NormalizationConfig(),
                    window: tuple[slice, slice] | None = None) -> np.ndarray:
    """(C, H, W) any dtype -> float32 with the low/high percentiles of each channel mapped to 0/1; with `window`
    (rows, columns) that part of the image only, normalized with the whole image's percentiles (a window's own
    would stretch a window of background into noise)."""
    image = np.asarray(image, dtype=np.float32)
    # Percentiles of a subsample: exact enough, and keeps huge images cheap.
    step = max(1, int(np.sqrt(image.shape[-1] * image.shape[-2] / 262144)))
    part = image if window is None else image[:, window[0], window[1]]
    out = np.empty_like(part)
    for c in range(image.shape[0]):
        lo, hi = np.percentile(image[c, ::step, ::step], [config.low_percentile, config.high_percentile])
        scale = hi - lo if hi > lo else 1.0
        out[c] = (part[c] - lo) / scale
    return out
