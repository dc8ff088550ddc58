"""A stack opened without reading its pixels: each image is read when it is used.

Why: `semseg predict` on a cluster meets folders of thousands of large images, or a time-lapse saved as one
multi-page TIFF, and reading them all first (`read_stack`) needs their whole size in memory (10,000 images of
2048 x 2048 at 16 bits: 80 GB). Opened this way, a prediction holds one image at a time. A folder's sizes are
checked from the files' headers when it is opened, so an image of another size is refused before anything is
predicted, as `read_stack` refuses it; unless the folder is a collection of fields to be segmented image by image
(`one_size=False`: microscopes and plate readers save fields of several sizes), which only needs one channel count.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import numpy as np

from .errors import InputError
from .stack_io import (
    TIFF_SUFFIXES,
    ImageStack,
    _check_dtype,
    _read_spacing,
    check_finite,
    folder_image_shapes,
    left_out_series,
    read_image,
    read_stack,
    unreadable,
)
from .tiff_axes import file_stem, tiff_layout


class LazyImages:
    """The (N, C, H, W) images of `files`, read one at a time by index: what `predict_stack` needs of an array.
    Images of different sizes have H and W None in `shape`; `shapes` holds each one's (C, H, W)."""

    def __init__(self, files: list[Path], shapes: list[tuple[int, int, int]], channel_axis: int | None = None) -> None:
        self.files, self.shapes = list(files), [tuple(s) for s in shapes]
        one_size = all(s == self.shapes[0] for s in self.shapes)
        self.shape = (len(self.files), *(self.shapes[0] if one_size else (self.shapes[0][0], None, None)))
        self.channel_axis = channel_axis

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        path = self.files[index]
        image = read_image(path, self.channel_axis)
        if image.shape != self.shapes[index]:  # the file changed since the folder was opened
            c, h, w = self.shapes[index]
            raise InputError(f"{path}: the image is now {image.shape[1]}x{image.shape[2]}x{image.shape[0]}ch, but it "
                             f"was {h}x{w}x{c}ch when the stack was opened. Was it replaced while SemSeg ran? Run "
                             "again.")
        check_finite(image[None], [path.name], path.parent)
        return image


class LazyPages:
    """The (N, C, H, W) images of a multi-page TIFF, read by index: each from its pages (`pages`: (N, P) page numbers,
    one per image, or one per channel of a C axis), each page gray or of samples (RGB(A), planar or not)."""

    def __init__(self, path: Path, tif, pages: np.ndarray, shape: tuple[int, int, int, int], where: list[str],
                 samples_last: bool, drop_alpha: bool) -> None:
        self.path, self._tif = path, tif  # kept open: the pages' offsets are parsed once
        self.pages, self.shape, self._where = pages, shape, where
        self._samples_last = samples_last  # YXS pages (RGB), else SYX (planar) or YX
        self._drop_alpha = drop_alpha

    def __len__(self) -> int:
        return self.shape[0]

    def _page(self, key: int) -> np.ndarray:
        try:
            page = _check_dtype(self._tif.asarray(key=key, series=0), self.path)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt page, or a codec not installed
            raise unreadable(self.path, f"page {key + 1}", e) from e
        if page.ndim == 2:
            return page[None]
        return np.moveaxis(page, -1, 0) if self._samples_last else page

    def __getitem__(self, index: int) -> np.ndarray:
        image = np.concatenate([self._page(int(key)) for key in self.pages[index]])
        image = image[:3] if self._drop_alpha else image  # an alpha carries no image content
        check_finite(image[None], [self._where[index]], self.path)
        return image

    def __del__(self) -> None:
        self._tif.close()


def _lazy_pages(path: Path) -> tuple[LazyPages, list[str]] | None:
    """`LazyPages` and the images' names when the file's first series stores each 2D plane (gray or RGB) as a page
    and holds more than one image; else None (`read_stack` reads it whole, or names what is wrong)."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001
        return None
    try:
        series = tif.series[0]
        axes, shape, page_axes = series.axes, tuple(series.shape), series.keyframe.axes
        layout = tiff_layout(axes, shape, path)
        outer = shape[:len(shape) - len(page_axes)]
        if page_axes in ("YX", "YXS", "SYX") and axes.endswith(page_axes) and len(series.pages) == prod(outer):
            grid = np.arange(prod(outer)).reshape(outer)
            pages = np.transpose(grid, (*layout.stack, *(p for p in layout.channels if p < len(outer))))
            pages = pages.reshape(prod(shape[p] for p in layout.stack), -1)
            if len(pages) > 1:
                names = layout.names(file_stem(path), axes, shape)
                images = LazyPages(path, tif, pages, layout.image_shape(shape), layout.where(names),
                                   samples_last=page_axes == "YXS", drop_alpha=layout.drop_alpha)
                return images, names
    except Exception:  # noqa: BLE001
        pass
    tif.close()
    return None


def open_stack(source: str | Path, channel_axis: int | None = None, one_size: bool = True) -> ImageStack:
    """A stack whose images are read when used: a folder's (`LazyImages`), a multi-page TIFF's that keeps each plane
    in a page (`LazyPages`: stacks, time-lapses, hyperstacks). Other files, or a given `channel_axis`, are read as
    `read_stack` reads them. `one_size=False`: a folder's images may differ in height and width
    (`ImageStack.one_size`, `image_size`)."""
    source = Path(source)
    if source.is_file():
        lazy = _lazy_pages(source) if channel_axis is None and source.suffix.lower() in TIFF_SUFFIXES else None
        if lazy is None:
            return read_stack(source, channel_axis)
        return ImageStack(lazy[0], lazy[1], str(source), _read_spacing(source), note=left_out_series(source))
    files, shapes, note = folder_image_shapes(source, channel_axis, one_size)
    images = LazyImages(files, shapes, channel_axis)
    return ImageStack(images, [f.stem for f in files], str(source), _read_spacing(files[0]), note=note)
