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
    low, scale = percentile_range(image, config)
    return normalized(image if window is None else image[:, window[0], window[1]], low, scale)


def percentile_range(image: np.ndarray, config: NormalizationConfig = NormalizationConfig()
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per channel of a (C, H, W) image: its low percentile and its scale (high - low percentile; 1 where they are
    equal), which `normalized` maps to 0 and 1."""
    # Percentiles of a subsample: exact enough, and keeps huge images cheap.
    step = max(1, int(np.sqrt(image.shape[-1] * image.shape[-2] / 262144)))
    low, scale = np.empty(image.shape[0]), np.empty(image.shape[0])
    for c in range(image.shape[0]):
        lo, hi = np.percentile(np.asarray(image[c, ::step, ::step], np.float32),
                               [config.low_percentile, config.high_percentile])
        low[c], scale[c] = lo, (hi - lo if hi > lo else 1.0)
    return low, scale


def normalized(part: np.ndarray, low: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(C, h, w) part of an image, any dtype -> float32, with its whole image's `percentile_range`: a patch cut
    from the raw image and normalized here is the same patch cut from the normalized image, to the bit."""
    part = np.asarray(part, dtype=np.float32)
    out = np.empty_like(part)
    for c in range(part.shape[0]):
        out[c] = (part[c] - low[c]) / scale[c]
    return out
