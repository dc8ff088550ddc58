"""Class labels in and out of a segmentation: (N, H, W) class values (0 = unlabeled, k = class k) <-> one segment per
class on a stack's volume, read from and written into the segments' shared labelmaps where that is exact, through
Slicer's export and import elsewhere. Arrays returned are copies."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import slicer
import vtk
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from SemSegLib.stack_io import label_dtype
from vtk.util.numpy_support import get_vtk_array_type, vtk_to_numpy

from .arrays import new_nodes_removed, slice_shape


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


def other_segments(segmentation, classes: list[ClassInfo]) -> list[str]:
    """The names of the segments that are not a class (the labels are read by class name, so these are not)."""
    seg, names = segmentation.GetSegmentation(), {c.name for c in classes}
    return [n for n in (seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())) if n not in names]


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
    if not _layers_are_the_labels(segmentation, volume):
        return None
    seg = segmentation.GetSegmentation()
    labels = np.zeros(shape, dtype)
    for layer in sorted({seg.GetLayerIndex(segment_id) for segment_id in ids}):
        image = seg.GetLayerDataObject(layer)
        if image is None or _is_empty(image.GetExtent()):
            continue  # nothing painted in this layer
        on_grid = _layer_voxels(image, volume)
        if on_grid is None:
            return None
        voxels, start = on_grid
        lut = np.zeros(np.iinfo(voxels.dtype).max + 1, dtype)
        for position, segment_id in enumerate(ids, start=1):
            if seg.GetLayerIndex(segment_id) == layer:
                lut[seg.GetSegment(segment_id).GetLabelValue()] = position
        # The layer's part inside the volume: (k, j, i) of the volume = the layer's + start.
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


def _layers_are_the_labels(segmentation, volume) -> bool:
    """Whether the segments' labelmaps (layers) hold exactly what the segmentation labels on the volume's voxels:
    they are its source representation, and neither it nor the volume is transformed."""
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    return segmentation.GetSegmentation().GetSourceRepresentationName() == binary \
        and segmentation.GetParentTransformNode() is None and volume.GetParentTransformNode() is None


def _is_empty(extent: tuple[int, ...]) -> bool:
    return extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]


def _layer_voxels(image, volume) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """A layer's voxels as (k, j, i), and the volume's (k, j, i) of its first one, where it has any and they are of one
    8- or 16-bit component on the volume's grid (`_grid_offset`); else None."""
    extent = image.GetExtent()
    if _is_empty(extent) or image.GetNumberOfScalarComponents() != 1 \
            or image.GetScalarType() not in (vtk.VTK_UNSIGNED_CHAR, vtk.VTK_UNSIGNED_SHORT):
        return None
    ras_to_ijk = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(ras_to_ijk)
    offset = _grid_offset(image, ras_to_ijk)
    if offset is None:
        return None
    voxels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
        extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)
    return voxels, (extent[4] + offset[2], extent[2] + offset[1], extent[0] + offset[0])


def set_labels_to_segmentation(scene, labels: np.ndarray, segmentation, volume, classes: list[ClassInfo],
                               first: int = 0, voxels: vtk.vtkImageData | None = None) -> None:
    """(M, H, W) class values -> the class segments as slices `first`..`first` + M - 1 of the volume (replaces their
    content; 0 = in no segment; by default M is the stack's). `voxels`: zeros of the labels' shape and label type
    (`arrays.zero_image_data`), made off the main thread, for the labels to be written into.

    One import of a labelmap into all class segments rather than one binary labelmap per class: 0.07-0.3 s instead
    of 1.2-1.5 s for 100 slices of 1024 x 1024 with 3 classes, on the main thread (slicer-core). The segments then
    hold the labelmap's voxels (the import makes no copy of them): what costs is making them."""
    ids = ensure_segments(segmentation, classes)
    updated = vtk.vtkStringArray()
    for segment_id in ids:
        updated.InsertNextValue(segment_id)
    dtype = label_dtype(len(ids))
    with new_nodes_removed(scene):
        labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "SemSeg temp")
        labelmap.CopyOrientation(volume)
        if first:
            ijk_to_ras = vtk.vtkMatrix4x4()
            volume.GetIJKToRASMatrix(ijk_to_ras)
            labelmap.SetOrigin(ijk_to_ras.MultiplyPoint((0, 0, first, 1))[:3])
        if voxels is not None and voxels.GetDimensions() == labels.shape[::-1] \
                and voxels.GetScalarType() == get_vtk_array_type(dtype) and voxels.GetNumberOfScalarComponents() == 1:
            target = vtk_to_numpy(voxels.GetPointData().GetScalars()).reshape(labels.shape)
            for k in painted_slices(labels):
                target[k] = labels[k]
            labelmap.SetAndObserveImageData(voxels)
        else:
            slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(labels, dtype))
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation,
                                                                                        updated):
            raise RuntimeError(f"could not write the class segments of '{segmentation.GetName()}'")


def set_slice_labels(scene, labels: np.ndarray, indices: list[int], segmentation, volume,
                     classes: list[ClassInfo], take_voxels: Callable[[], vtk.vtkImageData | None] | None = None
                     ) -> None:
    """Slices `indices` of the class segments become `labels` ((len(indices), H, W) class values, 0 = in no
    segment); the other slices stay as they are.

    Written into the segments' shared labelmap where it can be exactly (`_write_layer_slices`). Else, into segments
    that hold nothing yet, only the slices from the first to the last of `indices` are imported: a training's
    preview of one slice of 1000 of 1024 x 1024 imported, and held, 1 GB. Else the whole stack is read, changed and
    imported (`set_labels_to_segmentation`; into the voxels `take_voxels()` gives, if any), which held the main
    thread 8 s at each accept and each batch of a prediction's slices when it was done every time."""
    indices = [int(k) for k in indices]
    ids = ensure_segments(segmentation, classes)
    if _write_layer_slices(segmentation, volume, ids, indices, labels):
        return
    voxels = take_voxels() if take_voxels is not None else None
    if voxels is None and _holds_nothing(segmentation, ids):
        first = min(indices)
        slab = np.zeros((max(indices) - first + 1, *labels.shape[1:]), labels.dtype)
        slab[np.array(indices) - first] = labels
        set_labels_to_segmentation(scene, slab, segmentation, volume, classes, first)
        return
    whole = labels_from_segmentation(scene, segmentation, volume, classes)
    whole[indices] = labels
    set_labels_to_segmentation(scene, whole, segmentation, volume, classes, voxels=voxels)


def _holds_nothing(segmentation, ids: list[str]) -> bool:
    """Whether the segments' labelmaps are all empty, as a segment is when added (`ensure_segments`)."""
    seg = segmentation.GetSegmentation()
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    for segment_id in ids:
        labelmap = seg.GetSegment(segment_id).GetRepresentation(binary)
        if labelmap is not None and not _is_empty(labelmap.GetExtent()):
            return False
    return True


def writes_in_place(segmentation, volume, classes: list[ClassInfo], indices: list[int]) -> bool:
    """Whether `set_slice_labels` would write slices `indices` into the segments' labelmap (no import)."""
    seg = segmentation.GetSegmentation()
    ids = [seg.GetSegmentIdBySegmentName(c.name) for c in classes]
    return all(ids) and _layer_for(segmentation, volume, ids, indices) is not None


def _write_layer_slices(segmentation, volume, ids: list[str], indices: list[int], labels: np.ndarray) -> bool:
    """Write `labels` into slices `indices` of the class segments' labelmap, as Slicer's documentation lets scripts
    change a segment's internal labelmap (`slicer.util.arrayFromSegmentInternalBinaryLabelmap`). Only where that
    writes what an import would: labelmaps that are the segmentation's source, no transform, one layer holding the
    class segments and no other, of distinct label values, on the volume's grid and covering those slices whole (an
    import of labels leaves such a layer; a first stroke painted in Slicer does not). Returns whether it wrote."""
    layer = _layer_for(segmentation, volume, ids, indices)
    if layer is None:
        return False
    image, voxels, start, values = layer
    _, h, w = slice_shape(volume)
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


def _layer_for(segmentation, volume, ids: list[str], indices: list[int]) -> tuple | None:
    """(the layer's image data, its voxels, the volume's (k, j, i) of its first one, the segments' label values)
    where `_write_layer_slices` can write slices `indices` of segments `ids`; else None."""
    if not _layers_are_the_labels(segmentation, volume):
        return None
    seg = segmentation.GetSegmentation()
    layers = {seg.GetLayerIndex(segment_id) for segment_id in ids}
    layer = layers.pop() if len(layers) == 1 else -1
    if layer < 0 or set(seg.GetSegmentIDsForLayer(layer)) != set(ids):
        return None
    image = seg.GetLayerDataObject(layer)
    on_grid = _layer_voxels(image, volume) if image is not None else None
    if on_grid is None:
        return None
    voxels, start = on_grid
    values = [seg.GetSegment(segment_id).GetLabelValue() for segment_id in ids]
    if len(set(values)) != len(values) or min(values) < 1 or max(values) > np.iinfo(voxels.dtype).max:
        return None
    _, h, w = slice_shape(volume)
    if start[1] > 0 or start[2] > 0 or start[1] + voxels.shape[1] < h or start[2] + voxels.shape[2] < w \
            or any(not start[0] <= k < start[0] + len(voxels) for k in indices):
        return None
    return image, voxels, start, values
