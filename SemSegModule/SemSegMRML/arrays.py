"""Arrays in and out of MRML nodes: an image stack <-> a volume (class labels <-> a segmentation: segment_labels.py).

Slice k of a volume is image k of the stack; array rows are the volume's J axis, columns its I axis. Arrays
returned are copies, so they can be handed to the worker thread (MRML is not thread-safe).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk
from SemSegLib.errors import InputError
from vtk.util.numpy_support import get_vtk_array_type, vtk_to_numpy

from . import channels

IMAGE_NAMES_ATTRIBUTE = "SemSeg.ImageNames"  # the stack's file names, in slice order (JSON list)
SOURCE_ATTRIBUTE = "SemSeg.Source"  # where the stack was loaded from (export never writes there)


CHANNELS_ATTRIBUTE = "SemSeg.Channels"  # a stack's channels where the volume does not hold them as loaded
ROLE_ALL_CHANNELS = "SemSegAllChannels"  # the hidden volumes of the channels as loaded, one each (channels.py)
SHOWN_CHANNELS_ATTRIBUTE = "SemSeg.ShownChannels"  # the channels shown as red, green, blue (JSON; null = none)
# Scenes saved before session 70 show a stack's first three channels as loaded and keep the others in a hidden volume.
ROLE_MORE_CHANNELS = "SemSegMoreChannels"
CHANNELS_VOLUME_ATTRIBUTE = "SemSeg.MoreChannels"  # marks a hidden volume of channels, of either layout


@dataclass
class StackPixels:
    """A stack's voxels as its volumes hold them, in plain VTK image data that is in no scene: made on the worker
    thread (`stack_pixels`), they become volumes on the main thread without a copy (`volume_from_pixels`). Why: the
    copy into a volume took 1.2 s of Slicer's main thread for 100 images of 2 x 1024 x 1024, 4-5 s for 1000 of
    1024 x 1024."""

    shown: vtk.vtkImageData  # the volume's voxels: the images as loaded, or three channels stretched to 0-255
    shown_range: tuple[float, float] | None  # drawn black to white; None: Slicer's automatic window/level
    channels: list = field(default_factory=list)  # each channel as loaded (hidden volumes); none when shown as loaded
    shown_channels: list[int | None] | None = None  # the channel that red, green and blue show


def stack_pixels(images: np.ndarray, rgb: bool | None = None, held: vtk.vtkImageData | None = None) -> StackPixels:
    """(N, C, H, W) images -> their volumes' voxels. Numpy and VTK data objects only, never MRML: safe on the
    worker thread (image data in no scene and observed by nothing; VTK counts references atomically, and the main
    thread takes the objects only once the job that made them has ended). `held`: image data whose voxels `images`
    already are (`VoxelBuffer`), taken as it is.

    One channel, or an 8-bit RGB picture (`rgb`: `channels.shown_as_loaded`), goes into the volume as it is. Any
    other stack of channels is shown as three of them, each stretched to its own range (channels.py), and each
    channel as loaded is kept for a hidden scalar volume beside it. Why three at most: Slicer draws a vector volume
    as RGB. Given 2 components its display pipeline fails on every render (RGB to HSI needs 3), given more than 3 it
    hands the views more than RGBA. Why a volume per channel: Slicer's volume writer takes only some numbers of
    components (vtkITKImageWriter refused 5), and one hidden volume of a stack's 5 channels made its scene unsavable.
    """
    c = images.shape[1]
    if c == 1:  # drawn between its percentiles: see `_volume`
        return StackPixels(held or image_data(images[:, 0]), channels.display_range(images[:, 0]))
    if channels.shown_as_loaded(images, rgb):  # a picture: its colors as they are
        return StackPixels(image_data(np.moveaxis(images, 1, -1)), None)
    shown, planes = channels.default_shown(c), images.transpose(1, 0, 2, 3)
    return StackPixels(image_data(channels.shown_rgb(planes, shown)), (0.0, 255.0),  # stretched to 0-255 already
                       [image_data(plane) for plane in planes], shown)


def image_data(array: np.ndarray) -> vtk.vtkImageData:
    """(N, H, W) or (N, H, W, components) -> new image data holding a copy, in a voxel type Slicer draws."""
    array = _volume_type(array)
    image, voxels = _empty_image_data(array.shape[:3], array.dtype, 1 if array.ndim == 3 else array.shape[3])
    voxels.reshape(array.shape)[:] = array
    return image


def zero_image_data(shape: tuple[int, int, int], dtype) -> vtk.vtkImageData:
    """Image data of (N, H, W) zero voxels, filled by VTK: a copy of numpy's zeros (`slicer.util.updateVolumeFromArray`)
    took 12.6 s for 1000 x 1024 x 1024 floats, this 3.2 s."""
    image, _ = _empty_image_data(shape, dtype)
    image.GetPointData().GetScalars().Fill(0)
    return image


def _empty_image_data(shape: tuple[int, int, int], dtype, components: int = 1) -> tuple[vtk.vtkImageData, np.ndarray]:
    """Image data of (N, H, W) voxels of `components` each, and a numpy view of them."""
    image = vtk.vtkImageData()
    image.SetDimensions(shape[2], shape[1], shape[0])
    image.AllocateScalars(get_vtk_array_type(np.dtype(dtype)), components)
    return image, vtk_to_numpy(image.GetPointData().GetScalars())


class VoxelBuffer:
    """`read_stack(..., allocate=VoxelBuffer())`: a stack of one channel is read straight into image data that a
    volume then takes (`held`), so a load holds the stack once, not twice; other stacks get numpy's arrays."""

    def __init__(self) -> None:
        self.image: vtk.vtkImageData | None = None

    def __call__(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        n, c, h, w = shape
        if c != 1 or _volume_type(np.empty(0, dtype)).dtype != np.dtype(dtype):  # 64-bit integers are converted
            return np.empty(shape, dtype)
        self.image, voxels = _empty_image_data((n, h, w), dtype)
        return voxels.reshape(shape)

    def holding(self, images: np.ndarray) -> vtk.vtkImageData | None:
        """The image data whose voxels `images` are, or None (the reader made another array: mixed pixel types)."""
        if self.image is None:
            return None
        voxels = vtk_to_numpy(self.image.GetPointData().GetScalars())
        return self.image if images.size == voxels.size and np.shares_memory(images, voxels) else None


def volume_from_pixels(scene, pixels: StackPixels, names: list[str], name: str,
                       spacing: tuple[float, float] = (1.0, 1.0), source: str = ""):
    """A new volume of a stack's voxels in `scene`, with a hidden scalar volume per channel as loaded when it shows
    three of them (ROLE_ALL_CHANNELS, which `images_from_volume` reads). Main thread: the voxels are taken, not
    copied.

    The IJK-to-RAS directions (-1, -1, 1) are what Slicer uses for 2D image files: the image shows in the Red
    view as in any image viewer (row 0 at the top, column 0 on the left). On any error the node is removed:
    nothing half-loaded stays in the scene."""
    remove_orphaned_channels(scene)
    with new_nodes_removed(scene, only_on_error=True):
        vector = pixels.shown.GetNumberOfScalarComponents() > 1
        volume = _volume(scene, "vtkMRMLVectorVolumeNode" if vector else "vtkMRMLScalarVolumeNode", name,
                         pixels.shown, spacing, pixels.shown_range)
        volume.SetAttribute(IMAGE_NAMES_ATTRIBUTE, json.dumps(list(names)))
        volume.SetAttribute(SOURCE_ATTRIBUTE, source)
        if pixels.shown_channels is not None:
            for k, plane in enumerate(pixels.channels):
                channel = _volume(scene, "vtkMRMLScalarVolumeNode", f"{name} channel {k + 1}", plane, spacing,
                                  hidden=True)
                channel.SetHideFromEditors(True)  # never a choice in a node selector: it is part of `volume`
                channel.SetAttribute(CHANNELS_VOLUME_ATTRIBUTE, "1")
                volume.AddNodeReferenceID(ROLE_ALL_CHANNELS, channel.GetID())
            volume.SetAttribute(CHANNELS_ATTRIBUTE, str(len(pixels.channels)))
            volume.SetAttribute(SHOWN_CHANNELS_ATTRIBUTE, json.dumps(pixels.shown_channels))
    return volume


def show_channels(volume, shown: list[int | None]) -> None:
    """Show the channels `shown` (0-based, or None) as red, green and blue, each stretched to its own range."""
    if shown_channels(volume) is None:
        raise InputError(f"'{volume.GetName()}' shows its channels as they were loaded"
                         + (" (a scene saved by an earlier SemSeg): load the stack again to choose them."
                            if volume.GetNodeReference(ROLE_MORE_CHANNELS) is not None else "."))
    planes = [slicer.util.arrayFromVolume(node) for node in _channel_volumes(volume)]  # views: no copy of the stack
    shown = channels.check_shown(shown, len(planes))
    slicer.util.arrayFromVolume(volume)[:] = channels.shown_rgb(planes, shown)
    slicer.util.arrayFromVolumeModified(volume)
    volume.SetAttribute(SHOWN_CHANNELS_ATTRIBUTE, json.dumps(shown))


def shown_channels(volume) -> list[int | None] | None:
    """The channels the volume shows as red, green and blue, or None when it holds its channels as loaded."""
    text = volume.GetAttribute(SHOWN_CHANNELS_ATTRIBUTE)
    return json.loads(text) if text else None


def _volume(scene, class_name: str, name: str, image: vtk.vtkImageData, spacing: tuple[float, float],
            shown: tuple[float, float] | None = None, hidden: bool = False):
    """A new volume of `image`'s voxels in the geometry of `volume_from_pixels`, drawn with the intensities `shown`
    mapped to black and white (None: Slicer's automatic window/level), or without a display node (`hidden`).

    Why not Slicer's automatic window/level: it makes a histogram of every voxel on this (the GUI's) thread, 1.6 s
    for 200 images of 1024 x 1024, and again whenever the pixels change. The same percentiles of a subsample
    (`channels.display_range`) take a fraction of that. The display node is made before the voxels are set, so its
    automatic window/level never runs."""
    volume = scene.AddNewNodeByClass(class_name, name)
    volume.SetSpacing(float(spacing[1]), float(spacing[0]), 1.0)
    volume.SetOrigin(0.0, 0.0, 0.0)
    volume.SetIJKToRASDirections(-1, 0, 0, 0, -1, 0, 0, 0, 1)
    if not hidden:
        volume.CreateDefaultDisplayNodes()
        display = volume.GetDisplayNode()
        display.SetInterpolate(False)  # show pixels as pixels; these are microscopy images
        if shown is not None:
            display.SetAutoWindowLevel(False)
            display.SetWindowLevelMinMax(*shown)
    volume.SetAndObserveImageData(image)
    volume.StorableModified()  # as slicer.util.updateVolumeFromArray marks new voxels: unsaved
    return volume


def _volume_type(array: np.ndarray) -> np.ndarray:
    """`array` in a type Slicer draws: it refuses 64-bit integer volumes (slicer.util.updateVolumeFromArray), so
    those become 32-bit integers when their values fit, else 64-bit floats."""
    if array.dtype.kind not in "iu" or array.dtype.itemsize < 8:
        return array
    fits = array.size == 0 or (np.iinfo(np.int32).min <= array.min() and array.max() <= np.iinfo(np.int32).max)
    return array.astype(np.int32 if fits else np.float64)


def remove_orphaned_channels(scene) -> None:
    """Remove the hidden volumes of channels whose stack's volume is gone from `scene` (the person deleted it, and
    cannot see these to delete them too). Not a scene observer: one runs on whichever thread collects the scene,
    and a scene being destroyed must not run Python."""
    volumes = [scene.GetNthNodeByClass(i, "vtkMRMLVolumeNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode"))]
    kept = {volume.GetNthNodeReferenceID(role, k) for volume in volumes
            for role in (ROLE_ALL_CHANNELS, ROLE_MORE_CHANNELS) for k in range(volume.GetNumberOfNodeReferences(role))}
    for volume in volumes:
        if volume.GetAttribute(CHANNELS_VOLUME_ATTRIBUTE) and volume.GetID() not in kept:
            scene.RemoveNode(volume)


def images_from_volume(volume, indices: list[int] | None = None) -> np.ndarray:
    """Volume -> (N, C, H, W) copy of its slices `indices` (default: all), with every channel of the stack as it
    was loaded (`stack_pixels`). Only those slices are copied: predicting one slice of a stack of gigabytes
    must not copy it all on the GUI thread first."""
    if volume.GetAttribute(SHOWN_CHANNELS_ATTRIBUTE):  # what the volume holds is for the eye only
        return _all_channels(volume, indices)
    images = _images(volume, indices)
    channels = int(volume.GetAttribute(CHANNELS_ATTRIBUTE) or images.shape[1])
    if channels > images.shape[1]:  # a scene saved before session 70
        more = volume.GetNodeReference(ROLE_MORE_CHANNELS)
        if more is None or more.GetImageData() is None:
            raise InputError(f"{volume.GetName()}: the volume of its channels 4-{channels} is gone from the scene. "
                             "Load the stack again.")
        images = np.concatenate([images, _images(more, indices)], axis=1)
    return np.ascontiguousarray(images[:, :channels])


def voxels_of_stack(volume) -> np.ndarray | None:
    """The volume's own voxels as the stack's (N, 1, H, W) images, read-only, where they are its one channel of
    whole numbers (None otherwise: several channels, or floats, which are checked for NaN slice by slice).

    Why: the worker reads them in place of a copy of the stack, which took up to 6 s of the GUI thread for 1000
    images of 1024 x 1024 and held the stack twice. The view keeps the voxels' array alive, so the volume may be
    deleted or given other voxels meanwhile; SemSeg never writes into a stack's volume."""
    if volume.GetAttribute(SHOWN_CHANNELS_ATTRIBUTE) or int(volume.GetAttribute(CHANNELS_ATTRIBUTE) or 1) != 1:
        return None
    array = slicer.util.arrayFromVolume(volume)
    if array.ndim != 3 or array.dtype.kind not in "iub":
        return None
    view = array[:, None]
    view.flags.writeable = False
    return view


def _all_channels(volume, indices: list[int] | None) -> np.ndarray:
    return np.concatenate([_images(channel, indices) for channel in _channel_volumes(volume)], axis=1)


def _channel_volumes(volume) -> list:
    """The hidden volume of each channel as loaded (`stack_pixels`)."""
    count = int(volume.GetAttribute(CHANNELS_ATTRIBUTE))
    every = [volume.GetNthNodeReference(ROLE_ALL_CHANNELS, k) for k in range(count)]
    if any(channel is None or channel.GetImageData() is None for channel in every):
        raise InputError(f"{volume.GetName()}: the hidden volumes of its {count} channels as loaded are not all in "
                         "the scene any more. Load the stack again.")
    return every


def _images(volume, indices: list[int] | None) -> np.ndarray:
    array = slicer.util.arrayFromVolume(volume)
    array = array if indices is None else array[list(indices)]  # a view, or a copy of those slices only
    return np.array(array[:, None]) if array.ndim == 3 else np.moveaxis(array, -1, 1)


def slice_shape(volume) -> tuple[int, int, int]:
    """(slices, rows, columns) of a volume."""
    return tuple(slicer.util.arrayFromVolume(volume).shape[:3])


def channel_count(volume) -> int:
    """Channels per pixel: 1 for a scalar volume, the components of a vector volume, or the stack's channels when
    the volume shows three of them (no copy of the voxels)."""
    array = slicer.util.arrayFromVolume(volume)
    return int(volume.GetAttribute(CHANNELS_ATTRIBUTE) or (1 if array.ndim == 3 else array.shape[-1]))


def image_names(volume) -> list[str]:
    """The stack's file names, or slice_0001... for a volume that did not come from a stack."""
    n = slice_shape(volume)[0]
    names = volume.GetAttribute(IMAGE_NAMES_ATTRIBUTE)
    if names:
        parsed = json.loads(names)
        if len(parsed) == n:
            return parsed
    return [f"slice_{k + 1:04d}" for k in range(n)]


@contextlib.contextmanager
def new_nodes_removed(scene, only_on_error: bool = False):
    """Remove every node added to the scene inside the block (temporary export nodes and their colors); with
    `only_on_error`, only if the block raises (nothing half-made stays)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    failed = True
    try:
        yield
        failed = False
    finally:
        if failed or not only_on_error:
            for node in [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]:
                if node is not None and node.GetID() not in before:
                    scene.RemoveNode(node)
