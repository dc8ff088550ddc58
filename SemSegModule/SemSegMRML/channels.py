"""How a stack of several channels is shown: each channel stretched to its own intensity range.

Slicer draws a vector volume as RGB through one window/level for all its components (vtkMRMLVectorVolumeDisplayNode
shifts and scales every component alike). Microscopy channels differ in brightness by orders of magnitude: a
2-channel stack of 16 bits with one channel in 0-4000 and the other in 0-200 showed the second at 0-12 of 255, an
invisible green (slicer-core, session 70). So the volume the person sees holds three channels, each scaled to 0-255
between its own 0.1 and 99.9 percentiles (the percentiles Slicer's automatic window/level uses), and each channel
as it was loaded lives in a hidden volume of its own beside it (`arrays.ROLE_ALL_CHANNELS`), which training and
prediction read. An 8-bit RGB picture (the file's channels are samples of its pixels: axis S, or a short last axis)
is shown as it is, as any image viewer shows it; 3 channels of a microscope (axis C) are stretched like any others.

Pure numpy; arrays.py puts the results into MRML nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from SemSegLib.errors import InputError

DISPLAY_PERCENTILES = (0.1, 99.9)
# The percentiles are taken on a regular grid of at most this many pixels per channel: the whole of 100 images of
# 1024 x 1024 would be copied for it.
RANGE_SAMPLE_PIXELS = 4_000_000


def shown_as_loaded(images: np.ndarray, rgb: bool | None = None) -> bool:
    """Whether (N, C, H, W) images go into the volume as they are: one channel, or an 8-bit RGB picture. `rgb`:
    whether the files said their channels are a picture's red, green and blue (`ImageStack.rgb`); None, unknown
    (images from a script): 3 channels of 8 bits are taken for one."""
    picture = images.shape[1] == 3 and images.dtype == np.uint8 and rgb is not False
    return images.shape[1] == 1 or picture


def default_shown(channels: int) -> list[int | None]:
    """The channels shown as red, green and blue at first: the first three (blue none for 2 channels)."""
    return [k if k < channels else None for k in range(3)]


def display_range(plane: np.ndarray) -> tuple[float, float]:
    """The intensities of one channel's (N, H, W) images mapped to 0 and 255 (finite, low < high)."""
    n, h, w = plane.shape
    step = max(1, int(np.ceil(np.sqrt(n * h * w / RANGE_SAMPLE_PIXELS))))
    sample = plane[:, ::step, ::step]
    with np.errstate(all="ignore"):  # a volume made by a script may hold NaN: its range is then what is finite
        finite = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample
        low, high = (float(v) for v in np.percentile(finite, DISPLAY_PERCENTILES)) if finite.size else (0.0, 1.0)
    return (low, high) if high > low else (low, low + 1.0)


def check_shown(shown: list[int | None], channels: int) -> list[int | None]:
    """`shown` (red, green, blue: a 0-based channel or None each) checked against the stack's channel count."""
    shown = list(shown)
    if len(shown) != 3:
        raise InputError(f"give three channels, for red, green and blue (0-based, or None for none); got {shown}.")
    if all(k is None for k in shown):
        raise InputError("choose a channel for at least one of red, green and blue.")
    outside = [k for k in shown if k is not None and not 0 <= int(k) < channels]
    if outside:
        raise InputError(f"channel {int(outside[0]) + 1} does not exist: the stack has channels 1-{channels}.")
    return [None if k is None else int(k) for k in shown]


def shown_rgb(planes: Sequence[np.ndarray], shown: list[int | None]) -> np.ndarray:
    """The channels' (N, H, W) images (`planes[k]`: channel k; views will do) -> (N, H, W, 3) uint8: channel
    `shown[j]` (or zeros for None) stretched into component j. One image at a time, so that the float copy is one
    image's."""
    out = np.zeros((*planes[0].shape, 3), np.uint8)
    for j, channel in enumerate(shown):
        if channel is None:
            continue
        plane = planes[channel]
        low, high = display_range(plane)
        scale = 255.0 / (high - low)
        for i in range(plane.shape[0]):
            scaled = (plane[i].astype(np.float32) - low) * scale
            out[i, :, :, j] = np.clip(np.nan_to_num(scaled) + 0.5, 0, 255).astype(np.uint8)
    return out
