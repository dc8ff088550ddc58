"""Arrays in and out of MRML nodes: an image stack <-> a volume, class labels <-> a segmentation.

Slice k of a volume is image k of the stack; array rows are the volume's J axis, columns its I axis. Arrays
returned are copies, so they can be handed to the worker thread (MRML is not thread-safe).
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import slicer
import vtk
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from vtk.util import numpy_support

IMAGE_NAMES_ATTRIBUTE = "SemSeg.ImageNames"  # the stack's file names, in slice order (JSON list)
SOURCE_ATTRIBUTE = "SemSeg.Source"  # where the stack was loaded from (export never writes there)


def volume_from_stack(scene, images: np.ndarray, names: list[str], name: str,
                      spacing: tuple[float, float] = (1.0, 1.0), source: str = ""):
    """(N, C, H, W) -> a new scalar volume (C == 1) or vector volume (RGB / multi-channel) in `scene`.

    The IJK-to-RAS directions (-1, -1, 1) are what Slicer uses for 2D image files: the image shows in the Red
    view as in any image viewer (row 0 at the top, column 0 on the left). On any error the node is removed:
    nothing half-loaded stays in the scene.
    """
    _, c, _, _ = images.shape
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode" if c == 1 else "vtkMRMLVectorVolumeNode", name)
    try:
        volume.SetSpacing(float(spacing[1]), float(spacing[0]), 1.0)
        volume.SetOrigin(0.0, 0.0, 0.0)
        volume.SetIJKToRASDirections(-1, 0, 0, 0, -1, 0, 0, 0, 1)
        array = images[:, 0] if c == 1 else np.moveaxis(images, 1, -1)
        slicer.util.updateVolumeFromArray(volume, np.ascontiguousarray(array))
        volume.CreateDefaultDisplayNodes()
        display = volume.GetDisplayNode()
        if display is not None:
            display.SetInterpolate(False)  # show pixels as pixels; these are microscopy images
        volume.SetAttribute(IMAGE_NAMES_ATTRIBUTE, json.dumps(list(names)))
        volume.SetAttribute(SOURCE_ATTRIBUTE, source)
    except Exception:
        scene.RemoveNode(volume)
        raise
    return volume


def images_from_volume(volume) -> np.ndarray:
    """Volume -> (N, C, H, W) copy."""
    array = slicer.util.arrayFromVolume(volume)
    if array.ndim == 3:
        return np.array(array[:, None])
    return np.ascontiguousarray(np.moveaxis(array, -1, 1))


def slice_shape(volume) -> tuple[int, int, int]:
    """(slices, rows, columns) of a volume."""
    return tuple(slicer.util.arrayFromVolume(volume).shape[:3])


def channel_count(volume) -> int:
    """Channels per pixel: 1 for a scalar volume, the components of a vector volume (no copy of the voxels)."""
    array = slicer.util.arrayFromVolume(volume)
    return 1 if array.ndim == 3 else array.shape[-1]


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
def new_nodes_removed(scene):
    """Remove every node added to the scene inside the block (temporary export nodes and their colors)."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        yield
    finally:
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in added:
            if node is not None and node.GetID() not in before:
                scene.RemoveNode(node)


def segment_is_empty(segmentation, segment_id: str) -> bool:
    # Read the binary labelmap directly: exporting an empty segment costs a temporary node for nothing.
    segment = segmentation.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if image is None:
        return True
    extent = image.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return True
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        return True
    values = numpy_support.vtk_to_numpy(scalars)
    return not np.any(values == segment.GetLabelValue())


def labels_from_segmentation(scene, segmentation, volume, classes: list[ClassInfo]) -> np.ndarray:
    """Class segments -> (N, H, W) uint16 on the volume's grid, 0 = unlabeled, k = class k (later classes
    win on overlap)."""
    shape = slice_shape(volume)
    labels = np.zeros(shape, np.uint16)
    ids = segment_ids(segmentation, classes)
    with new_nodes_removed(scene):
        for value, segment_id in enumerate(ids, start=1):
            if segment_is_empty(segmentation, segment_id):
                continue
            labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SemSeg temp")
            exported = vtk.vtkStringArray()
            exported.InsertNextValue(segment_id)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation, exported, labelmap, volume, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            if not ok:
                raise RuntimeError(f"could not export segment '{classes[value - 1].name}' of "
                                   f"'{segmentation.GetName()}'")
            mask = slicer.util.arrayFromVolume(labelmap)
            if mask.shape != shape:
                raise RuntimeError(f"exported segment has shape {mask.shape}, volume {shape}")
            labels[mask > 0] = value
    return labels


def set_labels_to_segmentation(scene, labels: np.ndarray, segmentation, volume, classes: list[ClassInfo]) -> None:
    """(N, H, W) class values -> one binary labelmap per class segment (replaces their content)."""
    ids = ensure_segments(segmentation, classes)
    with new_nodes_removed(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SemSeg temp")
        labelmap.CopyOrientation(volume)
        for value, segment_id in enumerate(ids, start=1):
            slicer.util.updateVolumeFromArray(labelmap, (labels == value).astype(np.uint8))
            image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                image, segmentation, segment_id, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
            if not ok:
                raise RuntimeError(f"could not write segment '{classes[value - 1].name}'")


def set_slice_labels_to_segmentation(scene, slice_labels: np.ndarray, k: int, segmentation, volume,
                                     classes: list[ClassInfo]) -> None:
    """(H, W) class values -> slice k of the class segments; the other slices stay as they are.

    Why not read all slices and set_labels_to_segmentation: that reads and rewrites every slice, on the main
    thread (measured on slicer-core with 3 classes: 0.17 s for 30 slices of 512 x 512, 3.9 s for 100 of 1024 x
    1024). Here each segment is erased on slice k, then given its pixels there, with a one-slice labelmap: 0.03-0.11
    s and 0.13-1.6 s into such a prediction, 20 ms and 0.1 s into a segmentation that holds only that slice (a
    training's preview). The erase comes first because a segment on a layer of its own would keep its old pixels.
    """
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    ids = ensure_segments(segmentation, classes)
    with new_nodes_removed(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SemSeg temp")
        labelmap.CopyOrientation(volume)
        ijk_to_ras = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijk_to_ras)
        labelmap.SetOrigin([ijk_to_ras.GetElement(i, 3) + k * ijk_to_ras.GetElement(i, 2) for i in range(3)])
        for mode in (logic.MODE_MERGE_MIN, logic.MODE_MERGE_MASK):
            for value, segment_id in enumerate(ids, start=1):
                mask = slice_labels == value if mode == logic.MODE_MERGE_MASK else np.zeros(slice_labels.shape, bool)
                slicer.util.updateVolumeFromArray(labelmap, mask.astype(np.uint8)[None])
                image = logic.CreateOrientedImageDataFromVolumeNode(labelmap)
                if not logic.SetBinaryLabelmapToSegment(image, segmentation, segment_id, mode, image.GetExtent()):
                    raise RuntimeError(f"could not write slice {k} of segment '{classes[value - 1].name}'")
