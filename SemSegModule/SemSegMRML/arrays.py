"""Arrays in and out of MRML nodes: an image stack <-> a volume, class labels <-> a segmentation.

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
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from SemSegLib.stack_io import label_dtype
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


def ensure_segments(segmentation, classes: list[ClassInfo]) -> list[str]:
    """One segment per class (found by name, else added), in class order and color; returns their IDs."""
    seg = segmentation.GetSegmentation()
    ids = []
    for c in classes:
        color = [v / 255.0 for v in c.color]
        segment_id = seg.GetSegmentIdBySegmentName(c.name)
        if not segment_id:
            segment_id = seg.AddEmptySegment("", c.name, color)
        else:
            seg.GetSegment(segment_id).SetColor(*color)
        ids.append(segment_id)
    # Class order = segment order, so the Segment Editor lists them as the class table does.
    for index, segment_id in enumerate(ids):
        if seg.GetSegmentIndex(segment_id) != index:
            seg.SetSegmentIndex(segment_id, index)
    return ids


def rename_segments(segmentation, names: dict[str, str]) -> None:
    """Segments named like a key of `names` take its value (all at once, so that two classes may swap names); a
    name another segment keeps is not given twice."""
    seg = segmentation.GetSegmentation()
    found = {old: seg.GetSegmentIdBySegmentName(old) for old in names}
    found = {old: segment_id for old, segment_id in found.items() if segment_id}
    kept = {seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())} - set(found)
    for old, segment_id in found.items():
        if names[old] not in kept:
            seg.GetSegment(segment_id).SetName(names[old])


def segment_ids(segmentation, classes: list[ClassInfo]) -> list[str]:
    seg = segmentation.GetSegmentation()
    ids = []
    for c in classes:
        segment_id = seg.GetSegmentIdBySegmentName(c.name)
        if not segment_id:
            raise InputError(f"segmentation '{segmentation.GetName()}' has no segment named '{c.name}'. "
                             "Use 'Start painting' to create the class segments, or rename the segment.")
        ids.append(segment_id)
    return ids


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


def labels_from_segmentation(scene, segmentation, volume, classes: list[ClassInfo]) -> np.ndarray:
    """Class segments -> (N, H, W) class values on the volume's grid, 0 = unlabeled, k = class k (later classes
    win on overlap); 8-bit for fewer than 256 classes (`label_dtype`), as the engine and the files hold them.

    Read from the segments' labelmaps where they are on the volume's grid (`_labels_from_layers`: 0.02-0.03 s for
    strokes on a few of 200 slices of 1024 x 1024, 0.25 s for 100 slices labeled all over); else one export of all
    class segments (label value = position in the list, later segments painted over earlier ones), 1.5-1.9 and 2.1
    s for those, on the main thread (slicer-core; the same labels, overlapping segments included, in the tests).
    """
    shape = slice_shape(volume)
    ids = segment_ids(segmentation, classes)
    labels = _labels_from_layers(segmentation, volume, ids, shape, label_dtype(len(classes)))
    if labels is not None:
        return labels
    exported = vtk.vtkStringArray()
    for segment_id in ids:
        exported.InsertNextValue(segment_id)
    with new_nodes_removed(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SemSeg temp")
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
            segmentation, exported, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
        labels = slicer.util.arrayFromVolume(labelmap) if ok and labelmap.GetImageData() is not None else None
        if labels is None:
            raise RuntimeError(f"could not export the class segments of '{segmentation.GetName()}'")
        if labels.shape != shape:
            raise RuntimeError(f"exported segments have shape {labels.shape}, volume {shape}")
        return labels.astype(label_dtype(len(classes)))  # a copy: the export's node is removed on return


def painted_slices(labels: np.ndarray) -> np.ndarray:
    """Indices of the (N, H, W) labels' slices with anything in them, in one pass: strokes are on few slices of a
    stack, and a max over 1000 slices of 1024 x 1024 takes 0.02-0.06 s where a comparison per class took 2.1 s."""
    return np.flatnonzero(labels.reshape(len(labels), -1).max(axis=1)) if labels.size else np.zeros(0, np.int64)


def painted_copy(labels: np.ndarray, dtype) -> np.ndarray:
    """A copy of (N, H, W) labels in which only the painted slices are written (the others stay untouched zeros)."""
    copy = np.zeros(labels.shape, dtype)
    for k in painted_slices(labels):
        copy[k] = labels[k]
    return copy


def _labels_from_layers(segmentation, volume, ids: list[str], shape: tuple[int, int, int], dtype) -> np.ndarray | None:
    """What `labels_from_segmentation` exports, read straight from the segments' shared labelmaps (the layers), or
    None where that cannot be done exactly: labelmaps that are not the segmentation's source, a transform, a layer
    on another grid or of a wide voxel type. Then Slicer's export does it.

    Why: the export makes a 16-bit labelmap of the whole volume and resamples every segment into it, 1.5 s for 200
    slices of 1024 x 1024 and 13-23 s for 1000, on the GUI thread at every training, accept and export. Read this
    way, each layer is one lookup of its label values (a segment's value in its layer -> its class's position in
    `ids`, 0 for any other segment) into the part of the volume it covers; where segments of two layers overlap,
    the later class wins, as in the export."""
    seg = segmentation.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if seg.GetSourceRepresentationName() != binary or segmentation.GetParentTransformNode() is not None \
            or volume.GetParentTransformNode() is not None:
        return None
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    labels = np.zeros(shape, dtype)
    for layer in sorted({seg.GetLayerIndex(segment_id) for segment_id in ids}):
        image = seg.GetLayerDataObject(layer)
        extent = image.GetExtent() if image is not None else (0, -1, 0, -1, 0, -1)
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            continue  # nothing painted in this layer
        if image.GetNumberOfScalarComponents() != 1 or image.GetScalarType() not in (vtk.VTK_UNSIGNED_CHAR,
                                                                                    vtk.VTK_UNSIGNED_SHORT):
            return None
        offset = _grid_offset(image, ras_to_ijk)
        if offset is None:
            return None
        lut = np.zeros(256 if image.GetScalarType() == vtk.VTK_UNSIGNED_CHAR else 65536, dtype)
        for position, segment_id in enumerate(ids, start=1):
            if seg.GetLayerIndex(segment_id) == layer:
                lut[seg.GetSegment(segment_id).GetLabelValue()] = position
        voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
            extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
        # The layer's part inside the volume: (k, j, i) of the volume = the layer's + its extent start + offset.
        start = [extent[4] + offset[2], extent[2] + offset[1], extent[0] + offset[0]]
        low = [max(0, -a) for a in start]
        high = [min(voxels.shape[d], shape[d] - start[d]) for d in range(3)]
        if any(h <= lo for lo, h in zip(low, high)):
            continue  # all outside the volume
        part = voxels[low[0]:high[0], low[1]:high[1], low[2]:high[2]]
        for k in painted_slices(part):  # strokes are on few slices of a layer that spans the stack
            target = labels[start[0] + low[0] + k, start[1] + low[1]:start[1] + high[1],
                            start[2] + low[2]:start[2] + high[2]]
            np.maximum(target, lut[part[k]], out=target)
    return labels


def _grid_offset(image, ras_to_ijk) -> tuple[int, int, int] | None:
    """(i, j, k) of the volume at the image's voxel (0, 0, 0), when the image's voxels are the volume's (same axes
    and spacing, a whole number of voxels apart); else None."""
    to_world = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(to_world)
    both = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Multiply4x4(ras_to_ijk, to_world, both)
    m = np.array([[both.GetElement(r, c) for c in range(4)] for r in range(4)])
    offset = np.round(m[:3, 3])
    if not np.allclose(m[:3, :3], np.eye(3), atol=1e-4) or not np.allclose(m[:3, 3], offset, atol=1e-3):
        return None
    return tuple(int(v) for v in offset)


def set_labels_to_segmentation(scene, labels: np.ndarray, segmentation, volume, classes: list[ClassInfo]) -> None:
    """(N, H, W) class values -> the class segments (replaces their content; 0 = in no segment).

    One import of a labelmap into all class segments rather than one binary labelmap per class: 0.07-0.3 s instead
    of 1.2-1.5 s for 100 slices of 1024 x 1024 with 3 classes, on the main thread (slicer-core).
    """
    ids = ensure_segments(segmentation, classes)
    updated = vtk.vtkStringArray()
    for segment_id in ids:
        updated.InsertNextValue(segment_id)
    with new_nodes_removed(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SemSeg temp")
        labelmap.CopyOrientation(volume)
        slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels, label_dtype(len(ids))))
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation,
                                                                                        updated):
            raise RuntimeError(f"could not write the class segments of '{segmentation.GetName()}'")



def set_slice_labels(scene, labels: np.ndarray, indices: list[int], segmentation, volume,
                     classes: list[ClassInfo]) -> None:
    """Slices `indices` of the class segments become `labels` ((len(indices), H, W) class values, 0 = in no
    segment); the other slices stay as they are.

    Written into the segments' shared labelmap where it can be exactly (`_write_layer_slices`); else the whole stack
    is read, changed and imported (`set_labels_to_segmentation`), which for 1000 slices of 1024 x 1024 held the main
    thread 8 s at each accept and each batch of a prediction's slices."""
    indices = [int(k) for k in indices]
    ids = ensure_segments(segmentation, classes)
    if _write_layer_slices(segmentation, volume, ids, indices, labels):
        return
    whole = labels_from_segmentation(scene, segmentation, volume, classes)
    whole[indices] = labels
    set_labels_to_segmentation(scene, whole, segmentation, volume, classes)


def _write_layer_slices(segmentation, volume, ids: list[str], indices: list[int], labels: np.ndarray) -> bool:
    """Write `labels` into slices `indices` of the class segments' labelmap, as Slicer's documentation lets scripts
    change a segment's internal labelmap (`slicer.util.arrayFromSegmentInternalBinaryLabelmap`). Only where that
    writes what an import would: labelmaps that are the segmentation's source, no transform, one layer holding the
    class segments and no other, of distinct label values, on the volume's grid and covering those slices whole (an
    import of labels leaves such a layer; a first stroke painted in Slicer does not). Returns whether it wrote."""
    seg = segmentation.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    if seg.GetSourceRepresentationName() != binary or segmentation.GetParentTransformNode() is not None \
            or volume.GetParentTransformNode() is not None:
        return False
    layers = {seg.GetLayerIndex(segment_id) for segment_id in ids}
    layer = layers.pop() if len(layers) == 1 else -1
    if layer < 0 or set(seg.GetSegmentIDsForLayer(layer)) != set(ids):
        return False
    image = seg.GetLayerDataObject(layer)
    types = {vtk.VTK_UNSIGNED_CHAR: 255, vtk.VTK_UNSIGNED_SHORT: 65535}
    if image is None or image.GetNumberOfScalarComponents() != 1 or image.GetScalarType() not in types:
        return False
    values = [seg.GetSegment(segment_id).GetLabelValue() for segment_id in ids]
    if len(set(values)) != len(values) or min(values) < 1 or max(values) > types[image.GetScalarType()]:
        return False
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    offset = _grid_offset(image, ras_to_ijk)
    if offset is None:
        return False
    extent = image.GetExtent()
    dims = (extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    start = (extent[4] + offset[2], extent[2] + offset[1], extent[0] + offset[0])  # the volume's (k, j, i) of voxel 0
    _, h, w = slice_shape(volume)
    if min(dims) < 1 or start[1] > 0 or start[2] > 0 or start[1] + dims[1] < h or start[2] + dims[2] < w \
            or any(not start[0] <= k < start[0] + dims[0] for k in indices):
        return False
    voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims)
    lut = np.array([0, *values], voxels.dtype)
    for k, slice_labels in zip(indices, labels):
        plane = voxels[k - start[0]]
        plane[...] = 0  # beyond the volume too: an import replaces the segments whole
        plane[-start[1]:h - start[1], -start[2]:w - start[2]] = lut[slice_labels]
    image.GetPointData().GetScalars().Modified()
    # The segmentation observes its source labelmaps: it drops their other representations (made again from these
    # labels when shown) and marks itself modified since saved.
    image.Modified()
    return True
