"""Reading image stacks and sparse label folders; writing label maps and float maps.

An image stack is a folder of 2D images (TIFF or PNG) in natural number order, or one multi-page TIFF.
Arrays are returned channel-first, `(N, C, H, W)`, in their original dtype; nothing is ever written to the
input locations.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from .atomic import write_atomic
from .classes import ClassInfo, default_classes, read_classes_csv
from .errors import InputError
from .tiff_axes import TiffLayout, file_stem, image_file_layout, tiff_layout

TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (*TIFF_SUFFIXES, ".png")
# Pixel types read as images: any whole or real number (label maps made with numpy or scikit-image are int32/int64).
SUPPORTED_KINDS = "biuf"  # bool, signed and unsigned integers, floats; not complex numbers or strings
# Label maps: (N, H, W), or a list of N (H, W) maps for images of different sizes (`ImageStack.one_size`).
LabelMaps = Union[np.ndarray, list[np.ndarray]]  # a runtime alias: Python 3.9 has no X | Y here


def natural_key(name: str) -> list:
    """Sort key that puts img_2 before img_10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_image_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not p.name.startswith(".")]
    return sorted(files, key=lambda p: natural_key(p.name))


@dataclass
class ImageStack:
    """Images `(N, C, H, W)` with their names (file stems, or `page_0001` for a multi-page TIFF)."""

    images: np.ndarray
    names: list[str]
    source: str = ""
    spacing: tuple[float, float] = (1.0, 1.0)  # (row, column) pixel size if the files carry one
    rgb: bool = False  # the channels are the red, green and blue of pictures (`TiffLayout.rgb`), as read_stack says
    note: str = ""  # what the person should know about how the source was read: image series left out

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self.images.shape

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def one_size(self) -> bool:
        """Whether the images have one height and width: always, but for a folder opened to be predicted image by
        image (`open_stack(..., one_size=False)`), whose images may differ in size."""
        return None not in self.images.shape[2:]

    def image_size(self, index: int) -> tuple[int, int]:
        """(H, W) of image `index`."""
        shapes = getattr(self.images, "shapes", None)  # `LazyImages`' own, when its images differ in size
        return tuple(shapes[index][1:]) if shapes is not None else tuple(self.images.shape[2:])

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class LabelSet:
    """Sparse labels `(N, H, W)` uint16 aligned with a stack (0 = unlabeled) and the class table; for a stack whose
    images differ in size (`ImageStack.one_size`), a list of N (H, W) maps."""

    labels: LabelMaps
    classes: list[ClassInfo]
    labeled_names: list[str] = field(default_factory=list)
    note: str = ""  # as `ImageStack.note`: the label series left out of files that hold several


def _read_file(path: Path) -> tuple[np.ndarray, str, int]:
    """A file's pixels (of its first series) and, for a TIFF, its axes as tifffile names them ('' for a PNG), and
    how many series it holds."""
    series = 1
    if path.suffix.lower() != ".png":
        arr, axes, series = _read_tiff(path, "this image")
    else:
        try:
            from PIL import Image

            with Image.open(path) as im:
                # Gray + alpha: the alpha carries no image content (an RGBA image's is dropped by its layout).
                arr, axes = np.asarray(im.getchannel("L") if im.mode in ("LA", "La") else im), ""
        except Exception as e:  # noqa: BLE001 - any decoder failure means "this file is unreadable"
            raise unreadable(path, "this image", e) from e
    if arr.size == 0:
        raise InputError(f"{path}: cannot read this image (no pixel data: the file is empty or corrupt).")
    return arr, axes, series


def _read_tiff(path: Path, what: str) -> tuple[np.ndarray, str, int]:
    """The first series of a TIFF, its axes, and how many series the file holds; an InputError saying what is
    wrong (`unreadable`)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.series[0].asarray(), tif.series[0].axes, len(tif.series)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "this file is unreadable"
        raise unreadable(path, what, e) from e


# What to do about image series SemSeg left out (it reads a file's first): the end of every note that names them.
SERIES_ADVICE = "Save each series as a file of its own (Fiji: Bio-Formats import, then save) to segment it."
LABEL_SERIES_ADVICE = "If the labels are in another series, save that series as the label file."


def left_out_series(path: Path) -> str:
    """What a stack file holds beyond its first series, which is all SemSeg reads ('' if nothing): an OME-TIFF of
    several positions, or pages of different sizes, keeps each as a series of its own."""
    import tifffile

    if path.suffix.lower() not in TIFF_SUFFIXES:
        return ""
    try:
        with tifffile.TiffFile(path) as tif:
            series = [(tuple(s.shape), s.axes) for s in tif.series]
    except Exception:  # noqa: BLE001 - the reading itself says what is wrong with the file
        return ""
    if len(series) < 2:
        return ""
    others = "; ".join(f"{' x '.join(map(str, shape))} ({axes})" for shape, axes in series[1:6])
    return (f"{path.name} holds {len(series)} image series; SemSeg read the first ({' x '.join(map(str, series[0][0]))}"
            f", {series[0][1]}) and left out {len(series) - 1}: {others}{' ...' if len(series) > 6 else ''}. "
            + SERIES_ADVICE)


def unreadable(path: Path, what: str, error: Exception) -> InputError:
    """What to tell a person whose image file fails to decode: the compression codecs a TIFF needs (tifffile reads
    LZW, JPEG, zstd ... only with imagecodecs, a declared dependency that a hand-made environment may lack), else
    that the file may be truncated."""
    if "imagecodecs" in str(error) or isinstance(error, ImportError):  # zstd's fallback imports a module of 3.14
        return InputError(f"{path}: {what} is compressed ({error}), and reading it needs the imagecodecs package, "
                          "which is not installed. Install it (pip install imagecodecs; in Slicer, "
                          "slicer.util.pip_install('imagecodecs')), or save the images uncompressed.")
    return InputError(f"{path}: cannot read {what} ({type(error).__name__}: {error}). Is the file complete and a "
                      "valid TIFF/PNG?")


def read_image(path: Path, channel_axis: int | None = None) -> np.ndarray:
    """One file of a stack folder, one 2D image (gray, RGB(A), or multi-channel), as (C, H, W)."""
    return _read_image_and_layout(path, channel_axis)[0]


def _read_image_and_layout(path: Path, channel_axis: int | None = None) -> tuple[np.ndarray, TiffLayout]:
    arr, axes, _ = _read_file(path)  # its series were counted from the headers (`folder_image_shapes`)
    layout = image_file_layout(axes, arr.shape, path, channel_axis)
    return layout.images(_check_dtype(arr, path))[0], layout


def _check_dtype(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:  # VTK, and so a Slicer volume, has no 16-bit float
        return arr.astype(np.float32)
    if arr.dtype.kind not in SUPPORTED_KINDS:
        raise InputError(f"{path}: pixel type {arr.dtype} is not supported; save the image as uint8, uint16 or "
                         "float32.")
    return arr


def read_stack(source: str | Path, channel_axis: int | None = None,
               on_image: Callable[[int, int], None] | None = None,
               allocate: Callable[[tuple[int, ...], np.dtype], np.ndarray] | None = None) -> ImageStack:
    """Read a folder of images or a multi-page TIFF. Images of different sizes are refused from the files' headers,
    before any pixels are read.

    `on_image(read, total)` is called after each image of a folder (after the whole file for a multi-page TIFF,
    which is read in one go): a progress bar's, and a caller may stop the reading by raising from it.
    A folder's images go straight into the stack, so reading needs the stack's size in memory, not twice that;
    `allocate(shape, dtype)` gives that (N, C, H, W) array (default: numpy's), e.g. inside a volume's voxels."""
    source = Path(source)
    if source.is_file():
        stack = _read_multipage(source, channel_axis)
        stack.note = left_out_series(source)
        if on_image is not None:
            on_image(len(stack), len(stack))
        return stack
    files, shapes, note = folder_image_shapes(source, channel_axis)
    images, rgb = None, True
    for k, path in enumerate(files):
        image, layout = _read_image_and_layout(path, channel_axis)
        if image.shape != shapes[0]:  # the headers agreed, so the file changed since they were read
            refuse_other_sizes(source, [files[0], path], [shapes[0], image.shape])
        if images is None:
            images = (allocate or np.empty)((len(files), *image.shape), image.dtype)
        elif np.result_type(images.dtype, image.dtype) != images.dtype:  # files of mixed pixel types: rare
            images = images.astype(np.result_type(images.dtype, image.dtype))
        images[k] = image
        rgb = rgb and layout.rgb
        if on_image is not None:
            on_image(k + 1, len(files))
    check_finite(images, [f.name for f in files], source)
    return ImageStack(images, [f.stem for f in files], str(source), _read_spacing(files[0]), rgb=rgb, note=note)


def stack_name(source: str | Path) -> str:
    """What a stack is called: its folder's name, or its file's without suffixes (cells for cells.ome.tif)."""
    source = Path(source)
    return source.name if source.is_dir() else file_stem(source)


def folder_images(source: Path, channel_axis: int | None = None) -> list[Path]:
    """The image files of a stack folder, in natural order, all of one size (checked from their headers)."""
    return folder_image_shapes(source, channel_axis)[0]


def folder_image_shapes(source: Path, channel_axis: int | None = None,
                        one_size: bool = True) -> tuple[list[Path], list[tuple[int, int, int]], str]:
    """The image files of a stack folder, in natural order, and their (C, H, W) from their headers: all of one size,
    or with `one_size=False` all of one channel count (a collection of fields segmented image by image); and what
    the person should know about how they are read (`ImageStack.note`: files of several series)."""
    if not source.exists():
        raise InputError(f"{source}: no such file or folder. Give a folder of TIFF/PNG images or a multi-page TIFF.")
    files = list_image_files(source)
    if not files:
        raise InputError(f"{source}: no .tif/.tiff/.png images in this folder.")
    headers = [_header(f, channel_axis) for f in files]
    shapes = [shape for shape, _ in headers]
    refuse_other_sizes(source, files, shapes, channels_only=not one_size)
    return files, shapes, several_series_note(source, [(f.name, series) for f, (_, series) in zip(files, headers)])


def several_series_note(folder: Path, series: list[tuple[str, int]], what: str = "image",
                        advice: str = SERIES_ADVICE) -> str:
    """What to tell about the files of `folder` (name, how many series each holds) that hold several series, of
    which SemSeg read the first ('' if none does)."""
    several = [(name, count) for name, count in series if count > 1]
    if not several:
        return ""
    listed = ", ".join(f"{name} ({count} series)" for name, count in several[:5])
    return (f"{len(several)} file(s) of {folder.name} hold several {what} series, and SemSeg read the first of each: "
            f"{listed}{' ...' if len(several) > 5 else ''}. " + advice)


def _header(path: Path, channel_axis: int | None = None) -> tuple[tuple[int, int, int], int]:
    """(C, H, W) of an image file as `read_stack` reads it, from the file's header alone, and how many image series
    the file holds (SemSeg reads the first)."""
    series = 1
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as im:
                bands = 1 if im.mode in ("LA", "La") else len(im.getbands())  # as `_read_file` reads it
                shape = (im.height, im.width) if bands == 1 else (im.height, im.width, bands)
                axes = ""
        else:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape, axes, series = tif.series[0].shape, tif.series[0].axes, len(tif.series)
    except Exception as e:  # noqa: BLE001 - any decoder failure means "this file is unreadable"
        raise unreadable(path, "this image", e) from e
    if 0 in shape:
        raise InputError(f"{path}: cannot read this image (no pixel data: the file is empty or corrupt).")
    return image_file_layout(axes, tuple(shape), path, channel_axis).image_shape(tuple(shape))[1:], series


def refuse_other_sizes(source: Path, files: list[Path], shapes: list[tuple[int, int, int]],
                       channels_only: bool = False) -> None:
    """InputError naming the files whose (C, H, W) differ from the first file's (only C with `channels_only`)."""
    ref = shapes[0]
    bad = [(f, s) for f, s in zip(files, shapes) if (s[0] != ref[0] if channels_only else s != ref)]
    if bad:
        listing = "; ".join(f"{f.name}: {s[1]}x{s[2]}x{s[0]}ch" for f, s in bad[:10])
        what = "number of channels" if channels_only else "height, width and channels"
        raise InputError(
            f"{source}: all images of a stack must have the same {what}. "
            f"{files[0].name} is {ref[1]}x{ref[2]}x{ref[0]}ch but {listing}"
            f"{' ...' if len(bad) > 10 else ''}. Crop/pad or convert those files, or move them elsewhere."
            + ("" if channels_only else " (A folder of images of different sizes trains with `semseg train`, and "
               "a trained model segments one: `semseg predict`, or the panel's *Segment a folder of images...*.)")
        )


def check_finite(images: np.ndarray, names: list[str], source: str | Path) -> None:
    """InputError naming the images of an (N, C, H, W) stack with NaN or infinite pixels.

    Why refuse rather than train: one NaN pixel in a training patch makes the loss NaN and every weight after
    it, and the model file is written all the same; a NaN in a predicted image turns its whole tile into one
    class."""
    if not np.issubdtype(images.dtype, np.floating):
        return
    counts = [int((~np.isfinite(im)).sum()) for im in images]
    bad = [f"{name} ({n} pixels)" for name, n in zip(names, counts) if n]
    if bad:
        raise InputError(f"{source}: NaN or infinite pixel values in {', '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}. Replace them with a real value (e.g. the background's) "
                         "in the image files before loading them.")


def _read_spacing(path: Path) -> tuple[float, float]:
    if path.suffix.lower() not in TIFF_SUFFIXES:
        return (1.0, 1.0)
    try:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            tags = tif.pages[0].tags
            xr, yr = tags.get("XResolution"), tags.get("YResolution")
            if xr is None or yr is None:
                return (1.0, 1.0)
            x = xr.value[1] / xr.value[0] if xr.value[0] else 1.0
            y = yr.value[1] / yr.value[0] if yr.value[0] else 1.0
            return (float(y), float(x)) if x > 0 and y > 0 else (1.0, 1.0)
    except Exception:  # noqa: BLE001 - spacing is a nicety; never fail a load over it
        return (1.0, 1.0)


def _read_multipage(path: Path, channel_axis: int | None) -> ImageStack:
    arr, axes, _ = _read_tiff(path, "this TIFF")  # its series are named by `left_out_series`
    arr = _check_dtype(arr, path)
    layout = tiff_layout(axes, arr.shape, path, channel_axis)
    names = layout.names(file_stem(path), axes, arr.shape)
    arr, where = layout.images(arr), layout.where(names)
    check_finite(arr, where, path)
    return ImageStack(np.ascontiguousarray(arr), names, str(path), _read_spacing(path), rgb=layout.rgb)


def find_label_file(folder: Path, name: str) -> Path | None:
    """The label file of image `name` in `folder` (any image suffix), or None."""
    for suffix in IMAGE_SUFFIXES:
        p = folder / f"{name}{suffix}"
        if p.exists():
            return p
    return None


def read_labels(folder: str | Path, stack: ImageStack, classes_csv: str | Path | None = None,
                classes: list[ClassInfo] | None = None, classes_from: str = "", advice: str = "",
                on_image: Callable[[int, int], None] | None = None) -> LabelSet:
    """Sparse labels for `stack`: one 2D integer image per image name in `folder` (missing files mean unlabeled),
    or one multi-page TIFF with a page per image, in the images' order (napari and Fiji save a label stack so).
    `on_image(done, total)` is called after each image's file is looked for (after the whole file for a TIFF).

    The classes are `classes` when given (`classes_from` says whose, `advice` what to do about a value beyond
    them), else those of `classes_csv` (default: the classes.csv in the folder, or beside the file), else 1..the
    largest value (`implicit_classes`)."""
    folder = Path(folder)
    if folder.is_dir():
        labels, found, note = _label_files(folder, stack, on_image)
        default_csv = folder / "classes.csv"
    elif folder.is_file() and folder.suffix.lower() in TIFF_SUFFIXES:
        labels, found, note = _label_pages(folder, stack)
        default_csv = folder.parent / "classes.csv"
        if on_image is not None:
            on_image(len(stack), len(stack))
    else:
        raise InputError(f"{folder}: labels must be a folder with one label image per image (same file names), or "
                         "a multi-page TIFF with one page per image.")
    classes_csv = Path(classes_csv) if classes_csv else default_csv
    if classes is None and classes_csv.exists():
        classes, classes_from = read_classes_csv(classes_csv), str(classes_csv)
        advice = "Fix the label files or add the class to classes.csv."
    elif classes is None:
        if not any(lab.any() for lab in labels):
            raise InputError(f"{folder}: the labels contain only 0 (unlabeled). Paint at least one class.")
        classes = implicit_classes(labels, stack.names, folder)
    check_class_values(labels, len(classes), stack.names, folder, classes_from or "the given classes", advice)
    return LabelSet(labels, classes, found, note)


def _label_files(folder: Path, stack: ImageStack,
                 on_image: Callable[[int, int], None] | None = None) -> tuple[LabelMaps, list[str], str]:
    """(N, H, W) labels from the files of `folder` named as the images (a list of (H, W) maps when the images
    differ in size), the names of the images that have one, and the files of several series (`LabelSet.note`)."""
    n = len(stack)
    if stack.one_size:
        labels = np.zeros((n, *stack.image_size(0)), np.uint16)
    else:
        labels = [np.zeros(stack.image_size(i), np.uint16) for i in range(n)]
    found, series = [], []
    for i, name in enumerate(stack.names):
        p = find_label_file(folder, name)
        if p is not None:
            values, count = _label_file(p, name, stack.image_size(i))
            labels[i][...] = values
            found.append(name)
            series.append((p.name, count))
        if on_image is not None:
            on_image(i + 1, n)
    if not found:
        raise InputError(f"{folder}: no label file matches an image name of {stack.source} "
                         f"(e.g. {stack.names[0]}.tif). Label files must have the same names as the images.")
    return labels, found, several_series_note(folder, series, "label", LABEL_SERIES_ADVICE)


def _label_file(p: Path, name: str, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The class values of label file `p` for image `name` of `size` (H, W), and how many series the file holds."""
    h, w = size
    lab, _, series = _read_file(p)
    if lab.ndim == 3 and _gray_saved_as_rgb(np.moveaxis(lab, -1, 0)):
        lab = lab[..., 0]
    if lab.ndim == 3 and lab.shape[:2] == (h, w) and lab.shape[-1] in (3, 4):
        raise InputError(f"{p}: this label file is a colour (RGB) image, not class values. Save each pixel's "
                         "class as a number, 1..K (0 = unlabeled), in a gray 8- or 16-bit image; a classes.csv "
                         "beside the labels names the classes and their colours.")
    if lab.shape != (h, w):
        raise InputError(f"{p}: label image is {lab.shape} but its image {name} is {h}x{w}. "
                         "A label file must be a 2D image of the same size as its image.")
    return _label_values(lab, p), series


def _label_pages(path: Path, stack: ImageStack) -> tuple[np.ndarray, list[str], str]:
    """(N, H, W) labels from the pages of a multi-page TIFF, the names of the images whose page holds a label, and
    what the file holds beyond its first series (`LabelSet.note`)."""
    if not stack.one_size:
        raise InputError(f"{path}: a label stack file holds maps of one size, but the images of {stack.source} "
                         "differ in size. Give a folder of label files named as the images instead.")
    pages, _, series = _read_tiff(path, "this TIFF")
    n, _, h, w = stack.shape
    pages = pages[None] if pages.ndim == 2 else pages
    if pages.shape != (n, h, w):
        raise InputError(f"{path}: the label stack has shape {pages.shape}, but there are {n} images of {h}x{w} "
                         f"({stack.source}): a label stack holds one 2D page per image, in the images' order.")
    labels = _label_values(pages, path).astype(np.uint16)
    note = "" if series < 2 else (f"{path.name} holds {series} label series; SemSeg read the first, a page per image, "
                                  f"and left out {series - 1}. " + LABEL_SERIES_ADVICE)
    return labels, [name for name, lab in zip(stack.names, labels) if lab.any()], note


LABEL_MAX = 65535  # what a uint16 label map holds


def reference_maps(stack: ImageStack) -> LabelMaps:
    """The reference label maps of a stack opened as images (`evaluate`, `simulate`): one channel each, of the class
    values a label file may hold (`_label_values`: a map saved as int64 or float32 holds its classes); (N, H, W), or a
    list of (H, W) maps when they differ in size. Errors name the file (and the image of a stack file)."""
    files = getattr(stack.images, "files", None)  # a folder's, read one at a time
    maps = []
    for i, name in enumerate(stack.names):
        where = files[i] if files is not None else f"{stack.source} (image {name})"
        image = stack.images[i]
        if _gray_saved_as_rgb(image):
            image = image[:1]
        if image.shape[0] != 1:
            raise InputError(f"{where}: a reference label map must be a 2D image of class values, but this one has "
                             f"{image.shape[0]} channels. Save each pixel's class as a number in a gray image.")
        maps.append(_label_values(image[0], where))
    return np.stack(maps) if stack.one_size else maps


def _gray_saved_as_rgb(channels: np.ndarray) -> bool:
    """Whether (C, H, W) `channels` are a gray label map saved as RGB(A): red, green and blue alike."""
    return channels.shape[0] in (3, 4) and bool(np.all(channels[:1] == channels[1:3]))


def _label_values(labels: np.ndarray, path: Path | str) -> np.ndarray:
    """Class values of a label file as uint8/uint16: any integer or bool type, or floats of whole numbers (a map
    saved from numpy as int64 or float32 holds the same classes), from 0 (unlabeled) to LABEL_MAX."""
    if labels.dtype in (np.uint8, np.uint16):
        return labels
    what = "class values 0..65535 (0 = unlabeled)"
    if labels.dtype.kind not in "biuf":
        raise InputError(f"{path}: label pixels must be {what}, got {labels.dtype}. Save the labels as uint8/uint16.")
    if labels.dtype.kind == "f":
        fractional = labels[~np.isfinite(labels) | (labels != np.round(labels))]
        if fractional.size:
            raise InputError(f"{path}: label pixels must be {what}, but this {labels.dtype} map holds "
                             f"{fractional[0]:g} (not a whole number). Is it an image or a probability map rather than "
                             "labels?")
    low, high = (labels.min(), labels.max()) if labels.size else (0, 0)
    if low < 0 or high > LABEL_MAX:
        raise InputError(f"{path}: label pixels must be {what}, but this {labels.dtype} map holds "
                         f"{low if low < 0 else high:g}.")
    return labels.astype(np.uint8 if high <= 255 else np.uint16)


# Without a classes.csv the classes are 1..the largest label value. A map holding more than this is a mask or an
# image rather than classes a person painted: a 0/255 mask would otherwise train a network of 255 classes, 254
# of them never painted, at seconds per step.
IMPLICIT_CLASSES_MAX = 64


def implicit_classes(labels: LabelMaps, names: list[str], source: str | Path) -> list[ClassInfo]:
    """Classes 1..the largest value of (N, H, W) label maps that come without a classes.csv."""
    top, listed = _values_above(labels, IMPLICIT_CLASSES_MAX, names)
    if top == 0:
        raise InputError(f"{source}: the label maps hold only 0 (unlabeled), so they define no class.")
    if listed:
        raise InputError(f"{source}: label value {top} found in {listed}. Without a classes.csv the classes are "
                         f"1..the largest value, and more than {IMPLICIT_CLASSES_MAX} classes means these are masks "
                         "or images, not class values (0 = unlabeled). Convert 0/255 masks to class values, e.g. "
                         f"1 = background, 2 = foreground; for more than {IMPLICIT_CLASSES_MAX} classes add a "
                         "classes.csv.")
    return default_classes(top)


def check_class_values(labels: LabelMaps, num_classes: int, names: list[str], source: str | Path,
                       classes_from: str, advice: str = "") -> None:
    """InputError naming the files of (N, H, W) label maps that hold a value above `num_classes`."""
    top, listed = _values_above(labels, num_classes, names)
    if listed:
        raise InputError(f"{source}: label value {top} found in {listed}, but there are only {num_classes} "
                         f"classes ({classes_from}). Label maps hold class values 1..{num_classes} (0 = unlabeled)."
                         + (f" {advice}" if advice else ""))


def _values_above(labels: LabelMaps, num_classes: int, names: list[str]) -> tuple[int, str]:
    """The largest value, and the names of the maps above `num_classes` ("" when none)."""
    bad = [name for name, lab in zip(names, labels) if lab.max(initial=0) > num_classes]
    return int(max((lab.max(initial=0) for lab in labels), default=0)), _listed(bad)


def _listed(names: list[str], shown: int = 5) -> str:
    """'a, b, c, d, e and 3 more': the names an error message lists."""
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_output_dir(out: str | Path, protected: list[str | Path | None]) -> Path:
    """Refuse to write results into a folder that holds the user's inputs (labels, images)."""
    out = Path(out)
    for p in protected:
        if p is None:
            continue
        p = Path(p)
        if p.exists() and out.exists() and out.resolve() == (p if p.is_dir() else p.parent).resolve():
            raise InputError(f"{out}: this is an input folder ({p}); choose another output folder so your "
                             "files are not overwritten.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_tiff(path: str | Path, array: np.ndarray, written_by: str | None = None) -> None:
    """Write one TIFF atomically (compressed when the array is a label map). `written_by` goes into its
    ImageDescription, so that a later run can tell its own earlier output from a person's files
    (`check_overwrite`)."""
    import tifffile

    array = np.ascontiguousarray(array)
    write_atomic(Path(path), lambda tmp: tifffile.imwrite(tmp, array, description=written_by, **tiff_options(array)))


def tiff_options(array: np.ndarray) -> dict:
    """Label maps are written compressed (a few percent of their size); floats are not (they hardly compress), and
    (K, H, W) probabilities are K gray planes, never RGB."""
    return {"compression": "zlib"} if np.issubdtype(array.dtype, np.integer) else {"photometric": "minisblack"}


def write_label_folder(folder: str | Path, names: list[str], labels: np.ndarray, written_by: str) -> None:
    """<name>.tif of each (H, W) map of (N, H, W) `labels` that holds a labeled pixel, as `read_labels` reads them
    back; the file of an image now without labels is removed (the caller has checked that it wrote it)."""
    for name, lab in zip(names, labels):
        path = Path(folder) / f"{name}.tif"
        if lab.any():
            write_tiff(path, lab, written_by)
        elif path.exists():
            path.unlink()


OVERWRITE_ADVICE = "Choose another output folder, or add --overwrite to replace them."  # the command line's


def check_overwrite(paths: list[Path], written_by: str, overwrite: bool = False,
                    advice: str = OVERWRITE_ADVICE) -> None:
    """Refuse to replace existing files that `written_by` did not write, unless `overwrite`.

    Why: an output folder given by mistake may hold the labels a person painted under the very names a prediction
    is written to; rerunning a command into its own output folder stays allowed."""
    if overwrite:
        return
    foreign = [p for p in paths if p.exists() and _written_by(p) != written_by]
    if foreign:
        raise InputError(f"{foreign[0].parent}: {_listed([p.name for p in foreign])} already exist(s) and "
                         f"{written_by} did not write them: they may be labels you painted. {advice}")


def _written_by(path: Path) -> str | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return tif.pages[0].description
    except Exception:  # noqa: BLE001 - unreadable or not a TIFF: not ours
        return None


def label_dtype(num_classes: int) -> type:
    return np.uint8 if num_classes < 256 else np.uint16
