"""A folder of images opened without reading its pixels: each image is read when it is used.

Why: `semseg predict` on a cluster meets folders of thousands of large images, and reading them all first
(`read_stack`) needs their whole size in memory (10,000 images of 2048 x 2048 at 16 bits: 80 GB). Opened this way,
a prediction holds one image at a time. The sizes are checked from the files' headers when the folder is opened, so
an image of another size is refused before anything is predicted, as `read_stack` refuses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .stack_io import (
    ImageStack,
    _check_dtype,
    _read_file,
    _read_spacing,
    _to_chw,
    check_finite,
    folder_images,
    header_shape,
    read_stack,
)


class LazyImages:
    """The (N, C, H, W) images of `files`, read one at a time by index: what `predict_stack` needs of an array."""

    def __init__(self, files: list[Path], shape: tuple[int, int, int], channel_axis: int | None = None) -> None:
        self.files = list(files)
        self.shape = (len(self.files), *shape)
        self.channel_axis = channel_axis

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.files[index]
        image = _to_chw(_check_dtype(_read_file(path), path), path, self.channel_axis)
        if image.shape != self.shape[1:]:  # the file changed since the folder was opened
            c, h, w = self.shape[1:]
            raise InputError(f"{path}: the image is now {image.shape[1]}x{image.shape[2]}x{image.shape[0]}ch, but the "
                             f"stack's images are {h}x{w}x{c}ch. Was it replaced while SemSeg ran? Run again.")
        check_finite(image[None], [path.name], path.parent)
        return image


def open_stack(source: str | Path, channel_axis: int | None = None) -> ImageStack:
    """A stack whose images are read when used (`LazyImages`) for a folder; a multi-page TIFF, one file, is read
    as `read_stack` reads it."""
    source = Path(source)
    if source.is_file():
        return read_stack(source, channel_axis)
    files = folder_images(source, channel_axis)
    images = LazyImages(files, header_shape(files[0], channel_axis), channel_axis)
    return ImageStack(images, [f.stem for f in files], str(source), _read_spacing(files[0]))
