"""A stack opened without reading its pixels: each image is read when it is used.

Why: `semseg predict` on a cluster meets folders of thousands of large images, or a time-lapse saved as one
multi-page TIFF, and reading them all first (`read_stack`) needs their whole size in memory (10,000 images of
2048 x 2048 at 16 bits: 80 GB). Opened this way, a prediction holds one image at a time. A folder's sizes are
checked from the files' headers when it is opened, so an image of another size is refused before anything is
predicted, as `read_stack` refuses it.
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


class LazyPages:
    """The (N, C, H, W) images of a multi-page TIFF whose pages are its images (gray, or RGB(A)), read by index."""

    def __init__(self, path: Path, tif, rgb: bool) -> None:
        self.path, self._tif, self._rgb = path, tif, rgb  # kept open: the pages' offsets are parsed once
        page = tif.series[0].shape[1:]
        self.shape = (tif.series[0].shape[0], *((3, *page[:2]) if rgb else (1, *page)))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        try:
            page = _check_dtype(self._tif.asarray(key=int(index), series=0), self.path)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt page
            raise InputError(f"{self.path}: cannot read page {index + 1} ({type(e).__name__}: {e}). Is the file "
                             "complete?") from e
        image = np.moveaxis(page, -1, 0)[:3] if self._rgb else page[None]  # an alpha carries no image content
        check_finite(image[None], [f"page {index + 1}"], self.path)
        return image

    def __del__(self) -> None:
        self._tif.close()


def _lazy_pages(path: Path) -> LazyPages | None:
    """`LazyPages` when the file's first series is its pages in order, one image each; else None."""
    import tifffile

    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - `read_stack` reads it, and names what is wrong
        return None
    series = tif.series[0]
    gray = series.ndim == 3 and "S" not in series.axes
    rgb = series.ndim == 4 and series.axes.endswith("S") and series.shape[-1] in (3, 4)
    if (gray or rgb) and len(series.pages) == series.shape[0] > 1:
        return LazyPages(path, tif, rgb)
    tif.close()
    return None


def open_stack(source: str | Path, channel_axis: int | None = None) -> ImageStack:
    """A stack whose images are read when used: a folder's (`LazyImages`), a multi-page TIFF's whose pages are its
    images (`LazyPages`). Other files, or a given `channel_axis`, are read as `read_stack` reads them."""
    source = Path(source)
    if source.is_file():
        pages = _lazy_pages(source) if channel_axis is None and source.suffix.lower() in (".tif", ".tiff") else None
        if pages is None:
            return read_stack(source, channel_axis)
        names = [f"{source.stem}_{i + 1:04d}" for i in range(len(pages))]  # as `read_stack` names pages
        return ImageStack(pages, names, str(source), _read_spacing(source))
    files = folder_images(source, channel_axis)
    images = LazyImages(files, header_shape(files[0], channel_axis), channel_axis)
    return ImageStack(images, [f.stem for f in files], str(source), _read_spacing(files[0]))
