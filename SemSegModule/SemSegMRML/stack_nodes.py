"""The nodes SemSeg keeps beside an image stack, found through node references of the stack's volume.

A stack's prediction, uncertainty, correction baseline and (while a training runs) preview belong to its volume,
which refers to them by role: a second stack never shows, accepts or exports the first one's prediction. A label
segmentation SemSeg makes refers back to its volume. References are saved with the scene, as the nodes are.
"""

from __future__ import annotations

import json

import numpy as np
import slicer
import vtk
from SemSegLib.errors import InputError

from . import arrays, segment_labels

PREDICTION_NAME = "SemSeg prediction"
PREVIEW_NAME = "SemSeg training preview"
UNCERTAINTY_NAME = "SemSeg uncertainty"
BASELINE_NAME = "SemSeg labels at last prediction"

ROLE_PREDICTION = "SemSegPrediction"
ROLE_UNCERTAINTY = "SemSegUncertainty"
ROLE_BASELINE = "SemSegCorrectionBaseline"
ROLE_PREVIEW = "SemSegTrainingPreview"  # only while a training runs
ROLE_OF_VOLUME = "SemSegVolume"  # from a label segmentation SemSeg made to its volume

# On the prediction segmentation: per predicted slice, which model predicted it, so that an export can say which
# slices the current model has not labeled.
PREDICTED_BY_ATTRIBUTE = "SemSeg.PredictedBy"


def in_scene(scene, volume) -> bool:
    """Whether `volume` is still in `scene`: a task that ends after the person closed the scene or removed the
    volume writes nothing (its nodes would land in the next scene, whose IDs are the same)."""
    return volume.GetScene() is scene and scene.GetNodeByID(volume.GetID()) is volume


def segmentation_of(scene, volume, role: str, name: str, create: bool):
    """The segmentation `volume` refers to as `role`; a new one on its grid if there is none and `create`."""
    node = volume.GetNodeReference(role)
    if node is None and create:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        volume.SetNodeReferenceID(role, node.GetID())
    return node


def volume_like(scene, volume, role: str, name: str, class_name: str = "vtkMRMLScalarVolumeNode"):
    """The volume `volume` refers to as `role` (made if there is none), on `volume`'s grid."""
    node = volume.GetNodeReference(role)
    if node is None:
        node = scene.AddNewNodeByClass(class_name, name)
        volume.SetNodeReferenceID(role, node.GetID())
    node.CopyOrientation(volume)
    return node


def uncertainty_volume(scene, volume, zeros: vtk.vtkImageData | None = None):
    """The stack's uncertainty volume (0..1, shown in a perceptual color table), all 0 when it is made: of `zeros`
    (`needs_uncertainty_voxels`) if given, else of voxels filled here."""
    node = volume_like(scene, volume, ROLE_UNCERTAINTY, UNCERTAINTY_NAME)
    if node.GetImageData() is None:
        node.CreateDefaultDisplayNodes()  # before the pixels: Slicer's automatic window/level would go over them all
        display = node.GetDisplayNode()
        display.SetAutoWindowLevel(False)
        display.SetWindowLevelMinMax(0.0, 1.0)
        display.SetInterpolate(False)
        color_id = "vtkMRMLColorTableNodeFileInferno.txt"  # Slicer default color table (from file)
        if scene.GetNodeByID(color_id) is None:
            color_id = "vtkMRMLColorTableNodeRainbow"
        display.SetAndObserveColorNodeID(color_id)
        shape = arrays.slice_shape(volume)
        if zeros is None or zeros.GetDimensions() != shape[::-1]:
            zeros = arrays.zero_image_data(shape, np.float32)
        node.SetAndObserveImageData(zeros)
        node.StorableModified()
    return node


def needs_uncertainty_voxels(volume) -> bool:
    """Whether the stack's uncertainty volume is yet to be made. Its voxels are then best made on the worker thread
    (`arrays.zero_image_data`: 4 GB of floats for 1000 slices of 1024 x 1024, 3-11 s to fill on this machine), and
    handed to `uncertainty_volume`."""
    node = volume.GetNodeReference(ROLE_UNCERTAINTY)
    return node is None or node.GetImageData() is None


def baseline(scene, volume, create: bool = False):
    """The labels as they were at the last prediction, training or accept (a hidden label map), or None."""
    node = volume.GetNodeReference(ROLE_BASELINE)
    if node is None and create:
        node = volume_like(scene, volume, ROLE_BASELINE, BASELINE_NAME, "vtkMRMLLabelMapVolumeNode")
        node.SetHideFromEditors(True)
    return node


def set_baseline(scene, volume, labels: np.ndarray) -> None:
    """Remember the labels as they are now; pixels that differ later are the person's corrections. An existing
    baseline of the labels' shape gets only the slices painted in it or in them (a whole one of 1000 slices of
    1024 x 1024 is 1 GB to write)."""
    node = baseline(scene, volume, create=True)
    before = slicer.util.arrayFromVolume(node) if node.GetImageData() is not None else None
    if before is None or before.shape != labels.shape or before.dtype != labels.dtype:
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(labels))
        return
    for k in np.union1d(segment_labels.painted_slices(labels), segment_labels.painted_slices(before)):
        before[k] = labels[k]
    slicer.util.arrayFromVolumeModified(node)


def correction_mask(volume, labels: np.ndarray) -> np.ndarray | None:
    """The labeled pixels that differ from the baseline (None without one of the labels' shape)."""
    node = volume.GetNodeReference(ROLE_BASELINE)
    if node is None or node.GetImageData() is None:
        return None
    before = slicer.util.arrayFromVolume(node)
    if before.shape != labels.shape:
        return None
    mask = np.zeros(labels.shape, bool)
    for k in segment_labels.painted_slices(labels):
        mask[k] = (labels[k] > 0) & (labels[k] != before[k])
    return mask


def predicted_by(segmentation) -> dict[str, str]:
    """Slice index (as text) -> the signature of the model that predicted it."""
    text = segmentation.GetAttribute(PREDICTED_BY_ATTRIBUTE) if segmentation is not None else None
    return json.loads(text) if text else {}


def record_predicted_by(segmentation, slices, signature: str) -> None:
    segmentation.SetAttribute(PREDICTED_BY_ATTRIBUTE,
                              json.dumps({**predicted_by(segmentation), **{str(k): signature for k in slices}}))


def label_segmentation_of(scene, volume):
    """The label segmentation SemSeg made for `volume` (the most recent), or None."""
    kind = "vtkMRMLSegmentationNode"
    nodes = [scene.GetNthNodeByClass(i, kind) for i in range(scene.GetNumberOfNodesByClass(kind))]
    made = [node for node in nodes
            if (owner := node.GetNodeReference(ROLE_OF_VOLUME)) is not None and owner.GetID() == volume.GetID()]
    return made[-1] if made else None


def check_labels_belong_to(volume, segmentation) -> None:
    """A label segmentation SemSeg made for another volume is refused: its strokes would land on this volume's
    slices (a segmentation from elsewhere, with no such record, is taken as given)."""
    owner = segmentation.GetNodeReference(ROLE_OF_VOLUME) if segmentation is not None else None
    if owner is not None and owner.GetID() != volume.GetID():
        raise InputError(f"the label segmentation '{segmentation.GetName()}' holds the strokes painted on "
                         f"'{owner.GetName()}', not on '{volume.GetName()}'. Select this volume's labels, or "
                         "press 'Start painting' for new ones.")
