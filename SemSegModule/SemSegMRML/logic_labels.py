"""The person's labels: the label segmentation, strokes read and written, label files loaded, the strokes each
training keeps, the correction baseline, predictions accepted into the labels.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from SemSegLib import kept_strokes
from SemSegLib.classes import ClassInfo, read_classes_csv
from SemSegLib.errors import InputError
from SemSegLib.stack_io import label_dtype
from SemSegLib.task import SemSegTask

from SemSegMRML import arrays, segment_labels, stack_nodes
from SemSegMRML.parameters import ROLE_LABELS
from SemSegMRML.stack_nodes import PREDICTION_NAME, ROLE_OF_VOLUME, ROLE_PREDICTION


class LabelLogic:
    """The person's labels (a part of SemSegLogic)."""

    def createLabelSegmentation(self, volume, classes: list[ClassInfo] | None = None, segmentation=None,
                                name: str = "SemSeg labels"):
        """Create (or reuse) the label segmentation with one segment per class, in class order and color."""
        classes = classes or self.classes()
        if segmentation is None:
            segmentation = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            segmentation.CreateDefaultDisplayNodes()
        self.checkLabelsBelongTo(volume, segmentation)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentation.SetNodeReferenceID(ROLE_OF_VOLUME, volume.GetID())
        segment_labels.ensure_segments(segmentation, classes)
        self.getParameterNode().SetNodeReferenceID(ROLE_LABELS, segmentation.GetID())
        return segmentation

    def labelSegmentationOf(self, volume):
        """The label segmentation SemSeg made for `volume` (the most recent), or None."""
        return stack_nodes.label_segmentation_of(self.scene, volume)

    @staticmethod
    def checkLabelsBelongTo(volume, segmentation) -> None:
        """A label segmentation SemSeg made for another volume is refused (`stack_nodes.check_labels_belong_to`)."""
        stack_nodes.check_labels_belong_to(volume, segmentation)

    @staticmethod
    def checkLabels(volume, segmentation) -> None:
        """The volume's label segmentation is given, and is not another volume's."""
        if segmentation is None:
            raise InputError(f"no label segmentation was given for '{volume.GetName()}': make one with "
                             "createLabelSegmentation (the panel's 'Start painting') and paint, or pass "
                             "labelSegmentationOf(volume).")
        stack_nodes.check_labels_belong_to(volume, segmentation)

    def labelsFromSegmentation(self, segmentation, volume, classes: list[ClassInfo] | None = None) -> np.ndarray:
        """Painted segments -> (N, H, W) class values (8-bit for fewer than 256 classes), 0 = unlabeled, k = class k
        (later classes win on overlap)."""
        self.checkLabels(volume, segmentation)
        classes = classes or self.classes()
        key = heldLabelsKey(segmentation, volume, classes)
        held = self._heldPrediction
        if held is not None and held[0] == key:
            return held[1].copy()  # a copy: callers change what they get
        baseline = self._currentBaseline(volume, key)
        if baseline is not None:
            return segment_labels.painted_copy(baseline, label_dtype(len(classes)))  # a copy, as above
        return segment_labels.labels_from_segmentation(self.scene, segmentation, volume, classes)

    def _currentBaseline(self, volume, key: tuple) -> np.ndarray | None:
        """The correction baseline's pixels, if they are the labels of the segmentation whose key is `key`."""
        node = stack_nodes.baseline(self.scene, volume)
        if node is None or node.GetImageData() is None:
            return None
        if self._baselineOf.get(volume.GetID()) != (key, node.GetID(), node.GetImageData().GetMTime()):
            return None
        return slicer.util.arrayFromVolume(node)

    def _setBaseline(self, volume, key: tuple, readLabels: Callable[[], np.ndarray]) -> None:
        """The correction baseline becomes the labels of the segmentation whose key is `key` (`readLabels()`, called
        only when the baseline does not hold them already)."""
        if self._currentBaseline(volume, key) is None:
            stack_nodes.set_baseline(self.scene, volume, readLabels())
        self._baselineHolds(volume, key)

    def _baselineHolds(self, volume, key: tuple) -> None:
        """The correction baseline, as it is now, holds the labels of the segmentation whose key is `key`."""
        node = stack_nodes.baseline(self.scene, volume)
        self._baselineOf[volume.GetID()] = (key, node.GetID(), node.GetImageData().GetMTime())

    def setLabelsToSegmentation(self, labels: np.ndarray, segmentation, volume,
                                classes: list[ClassInfo] | None = None, slices: list[int] | None = None,
                                takeVoxels: Callable[[], vtk.vtkImageData | None] | None = None) -> None:
        """(N, H, W) class values -> the class segments (replaces their content; 0 = in no segment). With `slices`,
        `labels` are those slices' ((len(slices), H, W)) and only they change; `takeVoxels`: zeros for the segments'
        labelmap made off the main thread, taken if the whole stack is imported (`segment_labels.set_slice_labels`)."""
        self.checkLabelsBelongTo(volume, segmentation)
        classes = classes or self.classes()
        if slices is None:
            segment_labels.set_labels_to_segmentation(self.scene, labels, segmentation, volume, classes)
        else:
            segment_labels.set_slice_labels(self.scene, labels, slices, segmentation, volume, classes, takeVoxels)

    def loadLabels(self, volume, folder: str, labelSegmentation=None, adoptClasses: bool = False) -> LoadedLabels:
        """Label maps from a folder (one per image, same file names, 0 = unlabeled: an export's strokes folder, the
        strokes a training kept in `strokesBackupFolder`, or `semseg simulate`'s output), or from a multi-page TIFF
        with a page per image (napari's or Fiji's label stack, its classes.csv beside it) into the label segmentation
        (the volume's, made if there is none), on the pixels nothing is painted on: what is painted stays. A
        classes.csv in the folder, or in the one above it (an export's), must name the panel's classes; with
        `adoptClasses` its classes become the panel's instead, when nothing was painted on the volume yet. Waits for
        `startLoadingLabels`."""
        return self.startLoadingLabels(volume, folder, labelSegmentation, adoptClasses).wait()

    def startLoadingLabels(self, volume, folder: str, labelSegmentation=None,
                           adoptClasses: bool = False) -> SemSegTask:
        """`loadLabels` with the files read on the worker: poll the task; its result is what `loadLabels` returns
        (None if cancelled or the scene closed meanwhile). Only the slices that have a label file are then read from
        the segments and written into them. Why: 3 label files for a stack of 1000 slices of 1024 x 1024 held Slicer's
        GUI 19 s, 1000 files longer."""
        from SemSegLib.stack_io import read_labels

        classes = self.classes()
        if labelSegmentation is None:
            labelSegmentation = self.labelSegmentationOf(volume)  # None: nothing was painted on the volume yet
        else:
            self.checkLabelsBelongTo(volume, labelSegmentation)
        folderPath = Path(folder)
        csv = next((p for p in (folderPath / "classes.csv", folderPath.parent / "classes.csv") if p.is_file()), None)
        theirs = read_classes_csv(csv) if csv is not None else None
        adopt = theirs is not None and [c.name for c in theirs] != [c.name for c in classes]
        if adopt and not (adoptClasses and labelSegmentation is None):
            raise InputError(f"{csv}: these labels are of the classes {', '.join(c.name for c in theirs)}, but "
                             f"the panel has {', '.join(c.name for c in classes)}. Load that classes.csv first "
                             "(or the model trained on them), then load the labels.")
        classes = theirs if adopt else classes
        names = self.imageNames(volume)
        stack = shapeOnly(names, arrays.slice_shape(volume)[1:], volume.GetName())

        def read(onImage) -> tuple[list[int], np.ndarray, str]:  # worker
            loaded = read_labels(folder, stack, classes=classes, classes_from="the classes in the panel",
                                 advice="Load the classes.csv that goes with these labels first.", on_image=onImage)
            position = {name: k for k, name in enumerate(names)}
            indices = [position[name] for name in loaded.labeled_names]
            return indices, loaded.labels[indices].astype(label_dtype(len(classes))), loaded.note

        def finish(read) -> LoadedLabels:
            indices, loaded, note = read
            segmentation = labelSegmentation
            if adopt:
                if self.labelSegmentationOf(volume) is not None:
                    raise InputError(f"{csv}: labels were painted on '{volume.GetName()}' while these were read: "
                                     "load that classes.csv first, then load the labels.")
                self.setClasses(classes)
            segmentation = self.createLabelSegmentation(volume, self.classes(), segmentation=segmentation)
            painted = self.labelsFromSegmentation(segmentation, volume)[indices]
            added = (painted == 0) & (loaded > 0)
            differing = (painted > 0) & (loaded > 0) & (painted != loaded)
            changed = [j for j in range(len(indices)) if added[j].any()]
            if changed:
                self.setLabelsToSegmentation(np.where(added, loaded, painted)[changed], segmentation, volume,
                                             slices=[indices[j] for j in changed])
            return LoadedLabels(indices, int(added.sum()), int(differing.sum()), segmentation, note)

        return self._startReading("load labels", read, "label file(s)", finish)

    def keptStrokesOf(self, volume) -> list[Path]:
        """Folders of strokes kept at earlier trainings of these images (`strokesBackupFolder`, other Slicer sessions
        or scenes included; the same image names and pixels), the newest first: after a crash or a scene closed
        unsaved, the person's strokes are there."""
        return kept_strokes.kept_folders(self._imagesToWorkOn(volume)[0], self.imageNames(volume),
                                         self._strokesBackups.get(volume.GetID()))

    def strokesBackupFolder(self, volume) -> Path:
        """The folder each training of `volume` keeps the strokes it trained on in, with their classes.csv, so that
        a crash or a closed scene does not take them (`loadLabels` brings them back). One per stack and Slicer
        session, under the temporary folder's SemSeg/: a stack of the same name in a later session never writes
        over an earlier one's strokes."""
        if volume.GetID() not in self._strokesBackups:
            self._strokesBackups[volume.GetID()] = kept_strokes.new_folder(volume.GetName())
        return self._strokesBackups[volume.GetID()]

    def predictionSegmentation(self, volume, create: bool = True):
        node = stack_nodes.segmentation_of(self.scene, volume, ROLE_PREDICTION, PREDICTION_NAME, create)
        if node is not None:
            segment_labels.ensure_segments(node, self.classes())
        return node

    def uncertaintyVolume(self, volume):
        return stack_nodes.uncertainty_volume(self.scene, volume)

    def correctionMask(self, volume, labels: np.ndarray) -> np.ndarray | None:
        """The labeled pixels painted since the last prediction, training or accept (None before any)."""
        return stack_nodes.correction_mask(volume, labels)

    def acceptPrediction(self, volume, labelSegmentation, sliceIndex: int) -> int:
        """Copy the prediction of one slice into the label segmentation; painted strokes win.

        Returns the number of pixels that were added. The person's strokes are never overwritten, and the
        result becomes the new correction baseline: whatever is painted afterwards counts as a correction.
        """
        self.sliceIndices(volume, sliceIndex)  # in range, or a clear error
        prediction = self.predictionSegmentation(volume, create=False)
        if prediction is None:
            raise InputError("no prediction yet: predict this slice first.")
        predicted = np.array(self._predictedLabels(volume, copy=False)[sliceIndex])  # one slice copied, not all
        if not predicted.any():
            raise InputError(f"slice {sliceIndex + 1} has no prediction: predict it first.")
        self.checkLabels(volume, labelSegmentation)
        classes = self.classes()
        labels = self.labelsFromSegmentation(labelSegmentation, volume, classes)
        added = self._accepted.accept(self.scene, volume, labelSegmentation, sliceIndex, predicted, classes, labels)
        self._baselineHolds(volume, heldLabelsKey(labelSegmentation, volume, classes))  # accept wrote `labels` to both
        return added

    def canUndoAccept(self, volume) -> bool:
        return self._accepted.can_undo(volume)

    def undoAccept(self, volume, labelSegmentation) -> tuple[int, int]:
        """Take back the last prediction accepted on this volume: the pixels it added that still hold the class it
        gave them become unlabeled again. The person's strokes, and whatever they painted over it since, stay.
        Returns (slice index, pixels taken back); the last `accepted.ACCEPTS_KEPT` accepts can be taken back."""
        self.checkLabels(volume, labelSegmentation)
        classes = self.classes()
        return self._accepted.undo(self.scene, volume, labelSegmentation, classes,
                                   lambda: self.labelsFromSegmentation(labelSegmentation, volume, classes))


@dataclass
class LoadedLabels:
    """What `loadLabels` did."""

    slices: list[int]  # the slices a label file was found for
    added: int  # pixels labeled that were unlabeled
    differing: int  # pixels painted with another class than the file's, which kept what was painted
    segmentation: object  # the label segmentation they went into
    note: str = ""  # the label series left out of files that hold several (`LabelSet.note`)


def heldLabelsKey(segmentation, volume, classes: list[ClassInfo]) -> tuple:
    """What labels read from `segmentation` depend on; it changes whenever they may: the segments' content (an import
    of labels and a Segment Editor effect modify their labelmaps, adding or removing a segment the segmentation;
    slicer-core), which segment each class is (a renamed one), and the volume's grid (not its pixels)."""
    segments = segmentation.GetSegmentation()
    labelmaps = [segments.GetNthSegment(i).GetRepresentation("Binary labelmap")
                 for i in range(segments.GetNumberOfSegments())]
    ids = tuple(segments.GetSegmentIdBySegmentName(c.name) for c in classes)
    grid = vtk.vtkMatrix4x4()  # not the volume's modified time: a node reference set on it (a baseline) moves that
    volume.GetIJKToRASMatrix(grid)
    return (segmentation.GetID(), segments.GetMTime(),
            tuple(None if labelmap is None else labelmap.GetMTime() for labelmap in labelmaps),
            ids, volume.GetID(), arrays.slice_shape(volume),
            tuple(grid.GetElement(i, j) for i in range(4) for j in range(4)))


def shapeOnly(names: list[str], shape: tuple[int, int], source: str):
    """An ImageStack of `names` that has the volume's shape and no pixels, for reading label files against."""
    from SemSegLib.stack_io import ImageStack

    return ImageStack(np.broadcast_to(np.zeros((), np.uint8), (len(names), 1, *shape)), names, source)
