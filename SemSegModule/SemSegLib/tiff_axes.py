"""Which axes of a TIFF number its images and which make their channels, from the axes tifffile reads.

Why: a file's shape alone does not say it. An OME-TIFF z-stack of 2 channels is CZYX (2, 40, H, W), a Fiji
hyperstack is TZCYX, a planar RGB image is SYX (3, H, W); taken by shape, the first would be 2 images of 40
channels and the last 3 gray images. The letters say it (C: channel, S: a sample of RGB(A), Y X: the image; any
other letter numbers images: T time, Z depth, I pages ...), except Q, tifffile's "unknown": a file with two or
more axes of unknown meaning keeps the shape rules SemSeg has always used.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from .errors import InputError

CHANNEL_LETTERS = "CS"
UNKNOWN_LETTER = "Q"
CHANNEL_AXIS_ADVICE = ("If it is one with its channels on an unusual axis, give that axis (semseg --channel-axis; in "
                       "Slicer's Python console, loadStack(path, channelAxis=...)).")


def file_stem(path) -> str:
    """A stack file's name without its suffixes: cells for cells.ome.tif as for cells.tif."""
    stem = path.stem
    return stem[:-4] if stem.lower().endswith(".ome") and len(stem) > 4 else stem


@dataclass(frozen=True)
class TiffLayout:
    """Positions in a series' axes: those that number the images (outer first), those that make the channels, Y
    and X. `drop_alpha`: the channels are RGBA samples, whose alpha carries no image content. `page_each`: each
    image is one page of the file (its channels are samples of the page, if any), so an error can name the page.
    `rgb`: the channels are the red, green and blue samples of a picture (axis S, or a short last axis taken by
    shape), not channels of a microscope (axis C), which a viewer shows each in its own range."""

    stack: tuple[int, ...]
    channels: tuple[int, ...]
    yx: tuple[int, int]
    drop_alpha: bool = False
    page_each: bool = True
    rgb: bool = False

    def images(self, array: np.ndarray) -> np.ndarray:
        """The series' array as (N, C, H, W)."""
        moved = np.transpose(array, (*self.stack, *self.channels, *self.yx))
        n = prod(array.shape[p] for p in self.stack)
        images = moved.reshape(n, -1, *moved.shape[-2:])
        return images[:, :3] if self.drop_alpha else images

    def image_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
        """The (N, C, H, W) that `images` makes of an array of `shape` (from a header: no pixels needed)."""
        c = 3 if self.drop_alpha else prod(shape[p] for p in self.channels)
        return prod(shape[p] for p in self.stack), c, shape[self.yx[0]], shape[self.yx[1]]

    def names(self, stem: str, axes: str, shape: tuple[int, ...]) -> list[str]:
        """`stem_0001` ... along one numbering axis (or for a single image); `stem_t0001_z0003` along several."""
        if len(self.stack) <= 1:
            return [f"{stem}_{i + 1:04d}" for i in range(prod(shape[p] for p in self.stack))]
        grid = np.indices([shape[p] for p in self.stack]).reshape(len(self.stack), -1).T
        return [stem + "".join(f"_{axes[p].lower()}{i + 1:04d}" for p, i in zip(self.stack, index))
                for index in grid]

    def where(self, names: list[str]) -> list[str]:
        """What a message calls each image: its page, or its name when an image spans pages."""
        return [f"page {i + 1}" for i in range(len(names))] if self.page_each else names


def tiff_layout(axes: str, shape: tuple[int, ...], path, channel_axis: int | None = None) -> TiffLayout:
    """How a series of these `axes` and `shape` becomes (N, C, H, W): as `channel_axis` says (the person's word for
    an unusual file: that axis makes the channels, the last two others are the image), else as the letters or
    the shape say; an InputError naming `path` when none says it."""
    if channel_axis is not None:
        if len(shape) < 3 or not -len(shape) <= channel_axis < len(shape):
            raise InputError(f"{path}: the TIFF's axes are {axes}, shape {shape}: channel axis {channel_axis} is not "
                             f"one of them{' besides its image' if len(shape) >= 3 else ''}. Give one of "
                             f"0..{len(shape) - 1}, or leave the channel axis out.")
        c = channel_axis % len(shape)
        rest = [p for p in range(len(shape)) if p != c]
        return TiffLayout(tuple(rest[:-2]), (c,), (rest[-2], rest[-1]), page_each=False)
    if "Y" in axes and "X" in axes and axes.index("X") == axes.index("Y") + 1:
        others = [p for p, a in enumerate(axes) if a not in "YX"]
        channels = tuple(p for p in others if axes[p] in CHANNEL_LETTERS)
        unknown = [p for p in others if axes[p] == UNKNOWN_LETTER]
        if channels or len(others) <= 1 or not unknown:
            rgba = axes.endswith("S") and channels == (len(axes) - 1,) and shape[-1] == 4
            y, stack = axes.index("Y"), tuple(p for p in others if p not in channels)
            page_each = len(stack) <= 1 and "C" not in axes  # C is an axis of pages, S of samples in a page
            rgb = len(channels) == 1 and axes[channels[0]] == "S" and shape[channels[0]] in (3, 4)
            return TiffLayout(stack, channels, (y, y + 1), rgba, page_each, rgb)
    return _layout_by_shape(axes, shape, path)


def _layout_by_shape(axes: str, shape: tuple[int, ...], path) -> TiffLayout:
    """The rules for axes whose letters do not tell: pages of gray images, or of channels-last images when the last
    axis is short, else (N, C, H, W)."""
    if len(shape) == 3:
        return TiffLayout((0,), (), (1, 2))
    if len(shape) == 4:
        if shape[-1] <= 4:
            return TiffLayout((0,), (3,), (1, 2), rgb=shape[-1] in (3, 4))
        return TiffLayout((0,), (1,), (2, 3), page_each=False)
    raise InputError(f"{path}: TIFF has shape {shape} (axes {axes}), and SemSeg cannot tell which axes number the "
                     "images and which are channels. Save it from Fiji as a hyperstack (axes TZCYX), or as one "
                     "image per file.")


def image_file_layout(axes: str, shape: tuple[int, ...], path, channel_axis: int | None = None) -> TiffLayout:
    """How one file of a stack folder is one image (gray, RGB(A) or multi-channel). `axes`: its letters, '' when
    the format has none. Letters that say more than one image is in the file (Z, T ...) are refused with what to
    do: taken by shape, a z-stack of 5 planes would be one image of 5 channels. Without such letters (Q, I: pages
    of unknown meaning, as numpy arrays saved without metadata have), the shape decides: YXS when the last axis is
    short, CYX when the first is."""
    if channel_axis is not None:
        if len(shape) != 3 or not -3 <= channel_axis < 3:
            none = "it has none besides the image's: leave it out" if len(shape) == 2 else "give one of 0..2"
            raise InputError(f"{path}: image has shape {shape}: channel axis {channel_axis} is not one of its axes "
                             f"({none}).")
        return tiff_layout(axes or "Q" * len(shape), shape, path, channel_axis)
    if len(shape) == 2:
        return TiffLayout((), (), (0, 1))
    others = set(axes) - set("YX")
    if axes and others and not others & set("QI"):
        layout = tiff_layout(axes, shape, path)
        n = layout.image_shape(shape)[0]
        if n != 1:
            raise InputError(f"{path}: the file holds {n} images (axes {axes}, shape {shape}), but each file of a "
                             "stack folder is one image. Give this file alone as the stack, or save one image per "
                             "file.")
        return layout
    if len(shape) == 3:
        if shape[-1] <= 4 and shape[0] > 4:  # YXS: RGB / RGBA, channels last
            return TiffLayout((), (2,), (0, 1), drop_alpha=shape[-1] == 4, rgb=shape[-1] in (3, 4))
        if shape[0] <= 8 and shape[-1] > 8:  # CYX
            return TiffLayout((), (0,), (1, 2))
    raise InputError(f"{path}: image has shape {shape}; expected a 2D gray image, RGB(A), or a multi-channel image. "
                     + CHANNEL_AXIS_ADVICE)
