"""SemSeg: a 3D Slicer module that trains a U-Net on a few painted strokes and segments a whole image stack.

SemSegLogic moves arrays between MRML nodes and the SemSegLib engine (all heavy work lives there); the
node <-> array conversions, the parameter node, the nodes kept beside each stack, accepts and what it shows
(tables, charts, points) are in SemSegMRML.

Usable from the Python console and from scripts without the GUI, e.g.

    logic = SemSegLogic()
    volume = logic.loadStack("/data/heart_tiffs")
    labels = logic.createLabelSegmentation(volume)
    ...paint...
    logic.train(volume, labels, seconds=60, waitForCompletion=True)
    logic.predict(volume, "all", waitForCompletion=True)

The Logic uses only MRML (slicer-core), never Qt or `slicer.app`, so it runs against a real MRML scene in
CI; Qt is imported inside the Widget's methods only. All torch work runs on one persistent worker thread
(SemSegLib.worker); arrays are copied out of MRML on the calling (main) thread before a job starts, and
results are written back on the main thread when the job is polled, because MRML is not thread-safe.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import slicer
import vtk
from SemSegLib import kept_strokes
from SemSegLib.atomic import write_bytes_atomic
from SemSegLib.classes import ClassInfo, read_classes_csv, write_classes_csv
from SemSegLib.errors import InputError
from SemSegLib.shared_slices import SharedSlices
from SemSegLib.stack_io import label_dtype
from SemSegLib.task import PacedWrites, SemSegEvent, SemSegTask
from SemSegLib.worker import Job, Worker
from SemSegMRML import arrays, model_node, parameters, results, segment_labels, stack_nodes
from SemSegMRML.accepted import AcceptedPredictions
from SemSegMRML.arrays import SOURCE_ATTRIBUTE
from SemSegMRML.parameters import ROLE_LABELS, ROLE_SUGGESTION_MARKERS, ROLE_VOLUME
from SemSegMRML.stack_nodes import PREDICTION_NAME, PREVIEW_NAME, ROLE_OF_VOLUME, ROLE_PREDICTION, ROLE_PREVIEW
from slicer.util import VTKObservationMixin

try:  # in the Slicer application
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:  # slicer-core (MRML without Qt, as in CI): only the Logic is usable, and it needs no base
    import unittest

    class ScriptedLoadableModule:
        pass

    class ScriptedLoadableModuleWidget:
        pass

    ScriptedLoadableModuleLogic = object

    ScriptedLoadableModuleTest = unittest.TestCase

SUGGESTION_MARKERS_NAME = "SemSeg where to paint"
EDITOR_SINGLETON_TAG = "SemSegSegmentEditor"  # the parameter node of the Segment Editor in the panel
TRAININGS_KEPT = 5  # models replaced by trainings that undoTraining can go back to
PREDICTION_SHOWN_EVERY = 3.0  # s: the panel's predictions show their slices at most this often while they run

#
# SemSegLogic
#


class SemSegLogic(ScriptedLoadableModuleLogic):
    """The SemSeg loop on MRML nodes: load stack, classes, train, predict, accept, evaluate, export."""

    _worker: Worker | None = None  # shared by all logic instances: one torch thread per application
    _autosavePruned = False  # `kept_strokes.prune` runs once per application

    def __init__(self, scene=None):
        if ScriptedLoadableModuleLogic is not object:
            ScriptedLoadableModuleLogic.__init__(self)
        self.scene = scene if scene is not None else slicer.mrmlScene
        if not SemSegLogic._autosavePruned:
            SemSegLogic._autosavePruned = True
            for path in kept_strokes.prune():
                logging.info(f"SemSeg: removed {path}, unused for {kept_strokes.KEEP_DAYS} days")
        self.model = None  # SemSegLib.model_file.SemSegModel, once trained or loaded
        self.replacedModels: list = []  # the models trainings replaced, the last last: `undoTraining` goes back
        self.lastTrainResult = None
        self.lastTrainNote = ""  # what the last training did other than asked (shown after it in the panel)
        self.lastEvaluationNote = ""  # what the last evaluation's scores include that the person may not expect
        self.lastRestoreNote = ""  # what the last restored model replaced (restoreModelFromParameterNode)
        self._modelFile = None  # a file that holds the current model (its autosave, or the file it was loaded from)
        self._carriedDigest = None  # SHA-1 of the model file this Logic last put into a scene (`model_node`)
        self.lastTimings: dict[str, float] = {}
        # Volume ID -> (its image data's modified time, what each predicted slice looks like): where-to-paint groups
        # look-alike slices among the predicted ones, and describing a slice takes long enough (0.35 s for 1024 x
        # 1024) that the GUI thread should not, so each prediction's worker describes the slices it predicted.
        self._sliceDescriptors: dict[str, tuple[int, dict]] = {}
        self._accepted = AcceptedPredictions()  # what `undoAccept` can take back (in memory)
        # Volume ID -> the folder its trainings keep their strokes in (`strokesBackupFolder`). Forgotten when a scene
        # closes, as the accepts are: a new scene gives its nodes the IDs of the closed one's.
        self._strokesBackups: dict[str, Path] = {}
        # The labels of the prediction segmentation SemSeg last wrote or read, with what they were read or written as
        # (`_heldLabelsKey`): reading them back from Slicer took 1.2-1.5 s for 100 slices of 1024 x 1024 on the main
        # thread (session 69; 0.25 s since the segments' labelmaps are read directly, session 71; 0.02 s from here),
        # and every prediction, suggestion, accept and export does. One segmentation only, so that this holds one
        # label stack at most.
        self._heldPrediction: tuple | None = None
        # Whether a job on the worker may be reading the held labels (an export, an evaluation): a write then replaces
        # them with a changed copy. Else it changes them where they are: the copy took 0.15-0.2 s of the main thread
        # at each batch of a prediction of 1000 slices of 1024 x 1024.
        self._heldLent = False
        # Held while the main thread writes the uncertainty volumes' slices and while an export on the worker copies
        # one (SharedSlices), instead of a copy of them all before the export: 13 s for 1000 slices of 1024 x 1024.
        self._uncertaintyLock = threading.Lock()
        # Volume ID -> the key (`_heldLabelsKey`) of the label segmentation whose labels its correction baseline holds,
        # with that node's ID and its pixels' modified time: while neither changed, the strokes are read from the
        # baseline, which the scene keeps anyway, instead of from the segments (read after a prediction for its
        # baseline and again for the suggestions: 0.016 s against 0.25 s for 100 slices of 1024 x 1024 labeled all
        # over, the same for a few strokes).
        self._baselineOf: dict[str, tuple] = {}
        self._sceneCloses = 0  # a stack whose loading began before the scene closed is not put into the next one
        # A weak reference: a lambda holding the Logic would tie the scene and the Logic in a cycle that only the
        # garbage collector frees, on whichever thread it runs (the training thread too), as the scene dies.
        forget = weakref.WeakMethod(self._forgetScene)
        self.scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent,
                               lambda caller, event: forget() is not None and forget()())

    def _forgetScene(self) -> None:
        self._sceneCloses += 1
        self._accepted.clear()
        self._strokesBackups.clear()
        self._hold(None, None)
        self._baselineOf.clear()

    # ---------------------------------------------------------------- parameter node
    def getParameterNode(self):
        return parameters.parameter_node(self.scene)

    def classes(self) -> list[ClassInfo]:
        return parameters.classes(self.getParameterNode())

    def setClasses(self, classes: list[ClassInfo], edited: bool = False) -> None:
        """`edited`: the panel's table was edited (a class added, removed, renamed in its row or recolored). The
        current stack's label segmentation follows at once, so the Segment Editor shows what to paint: a segment
        per class, in class order and color; and a segment (of the labels and of the prediction) that holds a
        renamed class's old name takes the new one, so what was painted under it stays that class's (the labels are
        read by segment name). Classes from elsewhere (a model, a classes.csv) change no segment."""
        names = [c.name for c in classes]
        if len(set(names)) != len(names) or any(not n.strip() for n in names):
            raise InputError(f"class names must be unique and not empty: {names}")
        if len(classes) < 2:
            raise InputError("define at least two classes (for example the object and the background).")
        before = self.classes()
        classes = [ClassInfo(i + 1, c.name, c.color) for i, c in enumerate(classes)]
        node = self.getParameterNode()
        parameters.set_classes(node, classes)
        if not edited:
            return
        volume, labels = node.GetNodeReference(ROLE_VOLUME), node.GetNodeReference(ROLE_LABELS)
        renames = {old.name: new.name for old, new in zip(before, classes) if old.name != new.name}
        if len(before) == len(classes) and renames:
            for segmentation in (labels, volume.GetNodeReference(ROLE_PREDICTION) if volume is not None else None):
                if segmentation is not None:
                    segment_labels.rename_segments(segmentation, renames)
        if labels is not None:
            segment_labels.ensure_segments(labels, classes)

    def loadClassesCsv(self, path: str) -> list[ClassInfo]:
        classes = read_classes_csv(path)
        self.setClasses(classes)
        return classes

    def saveClassesCsv(self, path: str) -> None:
        write_classes_csv(path, self.classes())

    # ---------------------------------------------------------------- images <-> volume
    def loadStack(self, path: str, name: str | None = None, channelAxis: int | None = None):
        """Load a folder of ordered images or a multi-page TIFF as one volume (one image per slice); read on this
        thread (a script's, the console's). The panel uses `startLoadingStack`."""
        stack, pixels = _readStack(path, channelAxis)  # raises InputError before anything enters the scene
        return self._stackVolume(stack, pixels, path, name)

    def startLoadingStack(self, path: str, name: str | None = None, channelAxis: int | None = None) -> SemSegTask:
        """`loadStack` with the images read on the worker thread, and made into the voxels the volume takes there:
        poll the task; its result is the volume node (None if cancelled or the scene closed meanwhile: nothing enters
        the scene). Why: 1000 images of 1024 x 1024 took 27-28 s, all of it holding Slicer's GUI; now the GUI shows a
        progress bar with Cancel."""
        return self._startReading("load", lambda onImage: _readStack(path, channelAxis, onImage), "image(s)",
                                  lambda read: self._stackVolume(*read, path, name))

    def _startReading(self, name: str, read: Callable[[Callable[[int, int], None]], object], what: str,
                      finish: Callable[[object], object]) -> SemSegTask:
        """A task that reads files on the worker (`read(onImage)`; "12 of 200 {what} read") and puts what it read
        into the scene on the main thread (`finish`). A cancel stops the reading; after a cancel, or when the scene
        closed meanwhile, nothing is finished and the task's result is None."""

        def run(job: Job):
            def onImage(done: int, total: int) -> None:
                job.report((done, total))
                if job.should_stop():
                    raise _ReadingStopped

            try:
                result = read(onImage)
            except _ReadingStopped:
                return None
            return None if job.should_stop() else result

        def describe(p: tuple[int, int]) -> SemSegEvent:
            return SemSegEvent("progress", f"{p[0]} of {p[1]} {what} read", p[0] / p[1] if p[1] else None, p)

        return self._start(name, run, describe, self._inThisScene(finish), waitForCompletion=False,
                           eventCallback=None)

    def _inThisScene(self, finish: Callable[[object], object]) -> Callable[[object], object]:
        """`finish` for a task's end that is not run (the result is None) when the job gave None (it stopped) or the
        scene closed since the task began: what was worked out for the old scene's nodes goes into no node."""
        closes = self._sceneCloses
        return lambda result: None if result is None or self._sceneCloses != closes else finish(result)

    def loadSampleStack(self):
        """The generated sample stack of the engine; returns (volume node, reference folder)."""
        from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack

        folder = Path(tempfile.mkdtemp(prefix="SemSegSample-"))
        write_sample_stack(folder)
        volume = self.loadStack(str(folder / "images"), name="SemSeg sample")
        self.setClasses(SAMPLE_CLASSES)
        self.getParameterNode().SetParameter("ReferencePath", str(folder / "reference"))
        return volume, str(folder / "reference")

    def volumeFromStack(self, images: np.ndarray, names: list[str], name: str = "SemSeg images",
                        spacing: tuple[float, float] = (1.0, 1.0), source: str = "", rgb: bool | None = None):
        """(N, C, H, W) -> scalar volume (C == 1) or RGB vector volume, slice k = image k; several channels are shown
        three at a time, each stretched to its own range (`showChannels`), unless they are the red, green and blue
        of 8-bit pictures (`rgb`; None: 3 channels of 8 bits are taken for such)."""
        return self._addStackVolume(arrays.stack_pixels(images, rgb), names, name, spacing, source)

    def _stackVolume(self, stack, pixels, path: str, name: str | None):
        from SemSegLib.stack_io import stack_name

        return self._addStackVolume(pixels, stack.names, name or stack_name(path), stack.spacing, str(path))

    def _addStackVolume(self, pixels, names: list[str], name: str, spacing: tuple[float, float], source: str):
        # A unique name: messages that tell two stacks apart name them ("images", "images_1").
        volume = arrays.volume_from_pixels(self.scene, pixels, names, self.scene.GenerateUniqueName(name), spacing,
                                           source)
        node = self.getParameterNode()
        node.SetNodeReferenceID(ROLE_VOLUME, volume.GetID())
        node.SetNodeReferenceID(ROLE_LABELS, None)  # the last stack's strokes are not this one's
        return volume

    @staticmethod
    def imagesFromVolume(volume, indices: list[int] | None = None) -> np.ndarray:
        """Volume -> (N, C, H, W) copy of its slices `indices` (default: all; safe to hand to the worker thread);
        NaN or infinite pixels are refused, as when a stack is read from files (a volume may come from elsewhere in
        Slicer)."""
        from SemSegLib.stack_io import check_finite

        images = arrays.images_from_volume(volume, indices)
        names = arrays.image_names(volume)
        indices = range(len(names)) if indices is None else indices
        check_finite(images, [f"slice {k + 1} ({names[k]})" for k in indices], volume.GetName())
        return images

    def _imagesToWorkOn(self, volume, indices: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
        """The images a job reads (slices `indices`, default all) and where each slice is in them: the volume's own
        voxels where they can be (`arrays.voxels_of_stack`), else a copy of those slices (`imagesFromVolume`)."""
        every = list(range(arrays.slice_shape(volume)[0]))
        indices = every if indices is None else list(indices)
        voxels = arrays.voxels_of_stack(volume)
        if voxels is not None:
            return voxels, indices
        return self.imagesFromVolume(volume, None if indices == every else indices), list(range(len(indices)))

    @staticmethod
    def imageNames(volume) -> list[str]:
        return arrays.image_names(volume)

    @staticmethod
    def shownChannels(volume) -> list[int | None] | None:
        """The stack's channels (0-based) the volume shows as red, green and blue, each stretched to its own range;
        None when the volume holds the images as loaded (one channel, an 8-bit RGB picture)."""
        return arrays.shown_channels(volume)

    @staticmethod
    def showChannels(volume, shown: list[int | None]) -> None:
        """Show the stack's channels `shown` (0-based; None for none) as red, green and blue. Only what is drawn
        changes: training and prediction use every channel as loaded."""
        arrays.show_channels(volume, shown)

    # ---------------------------------------------------------------- segmentations
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
        key = _heldLabelsKey(segmentation, volume, classes)
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
        stack = _shapeOnly(names, arrays.slice_shape(volume)[1:], volume.GetName())

        def read(onImage) -> tuple[list[int], np.ndarray]:  # worker
            loaded = read_labels(folder, stack, classes=classes, classes_from="the classes in the panel",
                                 advice="Load the classes.csv that goes with these labels first.", on_image=onImage)
            position = {name: k for k, name in enumerate(names)}
            indices = [position[name] for name in loaded.labeled_names]
            return indices, loaded.labels[indices].astype(label_dtype(len(classes)))

        def finish(read) -> LoadedLabels:
            indices, loaded = read
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
            return LoadedLabels(indices, int(added.sum()), int(differing.sum()), segmentation)

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

    # ---------------------------------------------------------------- worker
    @classmethod
    def worker(cls) -> Worker:
        if cls._worker is None or not cls._worker.alive:
            cls._worker = Worker()
        return cls._worker

    def _start(self, name: str, function, describe, finish, waitForCompletion: bool, eventCallback, ended=None):
        task = SemSegTask(self.worker().submit(name, function), describe, finish, ended)
        if waitForCompletion:
            task.wait(eventCallback)
        return task

    # ---------------------------------------------------------------- train
    def train(self, volume, labelSegmentation, seconds: float | None = None, iterations: int | None = None,
              continueTraining: bool = True, correctionWeight: float = 1.0, device: str = "auto",
              seed: int = 0, previewSlice: int | None = None, previewSeconds: float = 10.0,
              waitForCompletion: bool = True, eventCallback: Callable[[SemSegEvent], None] | None = None,
              **trainOptions) -> SemSegTask:
        """Train on the painted strokes of all slices that have any. Returns the task (finished if waiting).

        `previewSlice`: a slice shown while the training runs, in the 'SemSeg training preview' segmentation
        (the network so far, every `previewSeconds`; a "preview" event each time), and predicted with the
        trained model when the training ends (as `predict` would). The preview is removed when it ends.
        """
        from SemSegLib.prediction import PredictConfig, predict_image
        from SemSegLib.training import TrainConfig, TrainPreview, train

        classes = self.classes()
        images = self._imagesToWorkOn(volume)[0]
        labels = self.labelsFromSegmentation(labelSegmentation, volume, classes)
        labelsKey = _heldLabelsKey(labelSegmentation, volume, classes)
        painted = segment_labels.painted_slices(labels)
        if not len(painted):
            raise InputError("nothing is painted yet: paint a few strokes of every class, then train.")
        present = set(np.unique(labels[painted]).tolist())
        missing = [c.name for c in classes if c.value not in present]
        if missing:
            raise InputError(f"no strokes for class(es) {', '.join(missing)}: paint at least one stroke of each "
                             "class so the model knows what they look like.")
        names = self.imageNames(volume)
        if previewSlice is not None:
            previewSlice = self.sliceIndices(volume, previewSlice)[0]
        init = self.model if continueTraining and self._modelFits(images.shape[1], classes) else None
        corrections = self.correctionMask(volume, labels) if init is not None else None
        note = ""
        if continueTraining and init is None and self.model is not None:  # say so: the person asked to continue
            was = (f"{self.model.in_channels}-channel images" if self.model.in_channels != images.shape[1]
                   else f"the classes {', '.join(c.name for c in self.model.classes)}")
            note = f"a new model, since the current one was trained on {was}"
        config = TrainConfig(seed=seed, device=device, correction_weight=correctionWeight, **trainOptions)
        if iterations is not None:  # 0 or less is refused by the engine, not replaced by the default
            config.iterations, config.seconds = int(iterations), None
        elif seconds is not None:
            config.seconds = float(seconds)

        predicted = {}
        backup, backupError = self.strokesBackupFolder(volume), []
        voxels = _PredictionVoxels(volume if previewSlice is not None else None)

        def run(job: Job):
            try:  # first, so that the strokes are safe whatever happens to the training
                kept_strokes.keep_strokes(backup, images, names, labels, classes)
            except OSError as e:  # a full or read-only temporary folder must not stop the training
                backupError.append(f"the strokes could not be kept in {backup} ({e})")
            preview = None
            if previewSlice is not None:
                preview = TrainPreview(images[[previewSlice]],
                                       lambda it, shown: job.report(_PreviewLabels(it, shown[0])), previewSeconds)
            result = train(images, labels, classes, config, init_model=init, names=names, progress=job.report,
                           should_stop=job.should_stop, correction_mask=corrections, preview=preview)
            if previewSlice is not None and not job.should_stop():
                pred = predict_image(result.model, images[previewSlice], PredictConfig(device=device))
                predicted[previewSlice] = (pred.labels, pred.uncertainty)
                voxels.make()
            return result

        def describe(p) -> SemSegEvent:
            if isinstance(p, _PreviewLabels):
                if stack_nodes.in_scene(self.scene, volume):
                    self.setLabelsToSegmentation(p.labels[None], self.previewSegmentation(volume), volume, classes,
                                                 slices=[previewSlice])
                return SemSegEvent("preview", f"slice {previewSlice + 1} shows the network after {p.iteration} "
                                   "iterations", None, p)
            fraction = p.iteration / p.total_iterations if p.total_iterations else None
            message = p.message or (f"iteration {p.iteration}, loss {p.loss:.3f}, "
                                    f"{p.remaining_seconds:.0f} s left")
            return SemSegEvent("progress", message, fraction, p)

        def finish(result):
            if result is None:
                return None
            if self.model is not None:  # a model with its forest is about 5 MB in memory
                self.replacedModels = (self.replacedModels + [self.model])[-TRAININGS_KEPT:]
            self.model = result.model
            self.lastTrainResult = result
            saveError = self._autosaveModel(inScene=stack_nodes.in_scene(self.scene, volume))
            self.lastTrainNote = "; ".join([text for text in [note, *backupError, saveError] if text])
            if not backupError:
                logging.info(f"SemSeg: the strokes this training used are kept in {backup}")
            if stack_nodes.in_scene(self.scene, volume):
                self._setBaseline(volume, labelsKey, lambda: labels)  # the strokes it trained on, as read then
                if predicted:
                    self._writePrediction(volume, predicted, result.model, voxels)
            return result

        return self._start("train", run, describe, finish, waitForCompletion, eventCallback,
                           ended=lambda: self.removePreview(volume))

    def trainingSummary(self, result) -> str:
        """What a training did, for the status line: its steps, time and device, what it started from, how it
        treated the labels and line classes, what it could not do (`lastTrainNote`) and its warning."""
        history = result.model.history[-1]
        start, lines = history.get("starting_point"), result.model.line_class_names()
        parts = [f"Trained {result.iterations} iterations in {result.seconds:.0f} s on {result.device}"
                 + (" (cancelled: best model kept)" if result.cancelled else "")
                 + (f", started from the pretrained {start['name']} network" if start else ""),
                 "classes weighted in the loss (the labels are dense)" if history.get("class_weights") else "",
                 f"predicted as 1-pixel lines: {', '.join(lines)}" if lines else "",
                 self.lastTrainNote if result is self.lastTrainResult else "",
                 result.warning or ""]
        return "; ".join(part for part in parts if part)

    def previewSegmentation(self, volume, create: bool = True):
        """The segmentation a running training shows its slice in (train's `previewSlice`), or None."""
        node = stack_nodes.segmentation_of(self.scene, volume, ROLE_PREVIEW, PREVIEW_NAME, create)
        if node is not None:
            node.SetHideFromEditors(True)  # not a segmentation to paint in, or to pick as labels
        return node

    def removePreview(self, volume) -> None:
        node = self.previewSegmentation(volume, create=False) if stack_nodes.in_scene(self.scene, volume) else None
        if node is not None:
            volume.SetNodeReferenceID(ROLE_PREVIEW, None)
            self.scene.RemoveNode(node)

    def _modelFits(self, channels: int, classes: list[ClassInfo]) -> bool:
        return (self.model is not None and self.model.in_channels == channels
                and [c.name for c in self.model.classes] == [c.name for c in classes])

    def _autosaveModel(self, inScene: bool = True) -> str:
        """Keep the current model in the scene (`model_node`; if `inScene`: the training's scene is still open) and
        on disk (parameter ModelPath), so that a reopened scene can continue. Only SemSeg's own autosave file is
        rewritten: a model file the person loaded (ModelPath too) stays as it was saved. Returns what could not be
        done ('' if nothing): a full or read-only temporary folder must not lose the training."""
        node = self.getParameterNode()
        data = self.model.to_bytes()
        if inScene:
            self._carry(data)
        path = node.GetParameter("ModelPath")
        try:
            if not path or Path(path).parent.resolve() != kept_strokes.autosave_folder().resolve():
                path = str(kept_strokes.new_model_file())
            write_bytes_atomic(Path(path), data)
        except OSError as e:
            self._modelFile = None
            return f"the model could not be kept in {kept_strokes.autosave_folder()} ({e}): use 'Save model'"
        node.SetParameter("ModelPath", path)
        self._modelFile = path
        return ""

    def _carry(self, data: bytes) -> None:
        """The current model's file into the scene (`model_node`), so that a saved scene carries it."""
        model_node.store(self.scene, self.getParameterNode(), data)
        self._carriedDigest = hashlib.sha1(data).hexdigest()

    # ---------------------------------------------------------------- predict
    def sliceIndices(self, volume, scope: str | int | list[int], labelSegmentation=None) -> list[int]:
        n = arrays.slice_shape(volume)[0]
        if isinstance(scope, (int, np.integer, list, tuple)):
            indices = [int(k) for k in (scope if isinstance(scope, (list, tuple)) else [scope])]
            outside = [k for k in indices if not 0 <= k < n]
            if outside:
                raise InputError(f"slice index {outside[0]} is outside the volume's {n} slices (0..{n - 1}).")
            return indices
        if scope == "all":
            return list(range(n))
        if scope == "painted":
            if labelSegmentation is None:
                raise InputError("'painted slices' needs the label segmentation.")
            labels = self.labelsFromSegmentation(labelSegmentation, volume)
            return [k for k in range(n) if labels[k].any()]
        raise InputError(f"unknown slice scope {scope!r}: use a slice index, 'painted' or 'all'.")

    def predict(self, volume, scope: str | int | list[int] = "all", labelSegmentation=None, tta: bool = False,
                device: str = "auto", firstSlice: int | None = None, showSeconds: float | None = None,
                waitForCompletion: bool = True,
                eventCallback: Callable[[SemSegEvent], None] | None = None) -> SemSegTask:
        """Predict slices into the 'SemSeg prediction' segmentation and the uncertainty volume.

        `firstSlice` (the slice in view) is predicted before the others, if among them. `showSeconds`: the slices
        predicted so far are written into the nodes while the others are predicted, at most that often
        (`PacedWrites`), so that a long prediction shows its slices as they come; None: all when it ends, or whenever
        those held reach 512 MB (`MOST_HELD_BYTES`). A cancelled prediction keeps the slices it finished. The task's
        result: seconds per predicted slice."""
        from SemSegLib.prediction import PredictConfig, predict_stack
        from SemSegLib.suggest import image_descriptors

        if self.model is None:
            raise InputError("no model yet: train one (or load a saved model) before predicting.")
        self.checkLabelsBelongTo(volume, labelSegmentation)  # before the work, not when its result is written
        self.model.check_stack(arrays.channel_count(volume), volume.GetName())
        indices = self.sliceIndices(volume, scope, labelSegmentation)
        if not indices:
            raise InputError("no slices to predict (nothing painted yet?).")
        if firstSlice is not None and int(firstSlice) in indices:
            indices = [int(firstSlice)] + [k for k in indices if k != int(firstSlice)]
        known = self._cachedSliceDescriptors(volume) or {}
        # Slices predicted before whose look is not known (a scene opened again) are described by this job too:
        # where to paint next needs every predicted slice's, and 0.3 s each of 1024 x 1024 held the GUI at the end.
        predicting = set(indices)
        undescribed = [k for k in self.predictedSlices(volume) if k not in known and k not in predicting]
        images, positions = self._imagesToWorkOn(volume, indices + undescribed)  # images[positions[j]]: slice j
        sliceAt = dict(zip(positions, indices + undescribed))
        toPredict, toDescribe = positions[:len(indices)], positions[len(indices):]
        model = self.model
        config = PredictConfig(tta=tta, device=device)
        imagesTime = volume.GetImageData().GetMTime()
        described, seconds = {}, {}
        voxels = _PredictionVoxels(volume, self.predictionSegmentation(volume, create=False), self.classes(), indices)

        def run(job: Job):
            voxels.make()
            # Each slice goes to the main thread as soon as it is predicted: the worker keeps none of them. What the
            # slice looks like (for where to paint) is described after it, not after the last slice: 0.3 s per
            # image of 1024 x 1024, which at the end left a prediction of 100 such slices at 100% for 30 s.
            done = []
            for j, pred in predict_stack(model, images, config, toPredict, should_stop=job.should_stop):
                k = sliceAt[j]
                job.report(_PredictedSlice(k, pred.labels, pred.uncertainty, pred.seconds))
                done.append(k)
                if k not in known:
                    described[k] = image_descriptors(images, [j], model.normalization)[j]
            for count, j in enumerate(toDescribe, start=1):
                if job.should_stop():
                    break
                described[sliceAt[j]] = image_descriptors(images, [j], model.normalization)[j]
                job.report((count, len(toDescribe)))
            return done

        def write(batch: dict) -> None:  # main thread
            if stack_nodes.in_scene(self.scene, volume):
                self._writePrediction(volume, batch, model, voxels)

        writes = PacedWrites(write, showSeconds)

        def describe(p: _PredictedSlice | tuple[int, int]) -> SemSegEvent:
            if isinstance(p, tuple):
                return SemSegEvent("progress", f"{p[0]} of {p[1]} slice(s) predicted before described for where to "
                                   "paint next", p[0] / p[1], p)
            seconds[p.index] = p.seconds
            writes.add(p.index, (p.labels, p.uncertainty))
            progress = PredictionProgress(len(seconds), len(indices), p.seconds, writes.written)
            return SemSegEvent("progress", f"slice {progress.done} of {progress.total} ({p.seconds:.2f} s)",
                               progress.done / progress.total, progress)

        def finish(done):
            writes.flush()
            result = {k: seconds[k] for k in done or []}
            if not result or not stack_nodes.in_scene(self.scene, volume):
                return result
            if described:
                self._cacheSliceDescriptors(volume, described, imagesTime)
            self.lastTimings["predict_seconds_per_slice"] = float(np.mean(list(result.values())))
            if labelSegmentation is not None:
                classes = self.classes()
                self._setBaseline(volume, _heldLabelsKey(labelSegmentation, volume, classes),
                                  lambda: self.labelsFromSegmentation(labelSegmentation, volume, classes))
            return result

        return self._start("predict", run, describe, finish, waitForCompletion, eventCallback)

    def _writePrediction(self, volume, result: dict, model, voxels: _PredictionVoxels | None = None) -> None:
        """`result`: slice index -> (labels, uncertainty) of `model`'s prediction; `voxels`: those its job made for
        the stack's uncertainty volume and the prediction's segments, where they are yet to be made.

        The labels written are held (`_heldPrediction`): the next write, while nothing else changed the segments,
        goes into them instead of reading the whole segmentation back. A slice written into 30 of 1024 x 1024 took
        0.26 s of the main thread with the read, 0.05 s without; on 2 cores a prediction of all 30 written with those
        reads took 131-132 s where it takes 121 s (bench/RESULTS.md, session 69). Into a copy of them only while a job
        may be reading them (`_heldLent`)."""
        segmentation = self.predictionSegmentation(volume)
        classes = self.classes()
        held = self._heldPrediction
        if held is not None and not self._heldLent and held[0] == _heldLabelsKey(segmentation, volume, classes):
            labels = held[1]
        else:
            labels = self.labelsFromSegmentation(segmentation, volume, classes)
        self._hold(None, None)  # until they are the segments' again
        for k, (sliceLabels, _) in result.items():
            labels[k] = sliceLabels
        indices = sorted(result)
        self.setLabelsToSegmentation(labels[indices], segmentation, volume, classes, slices=indices,
                                     takeVoxels=voxels.takeLabels if voxels is not None else None)
        self._hold(_heldLabelsKey(segmentation, volume, classes), labels)
        uncertaintyNode = stack_nodes.uncertainty_volume(self.scene, volume,
                                                         voxels.uncertainty if voxels is not None else None)
        uncertainty = slicer.util.arrayFromVolume(uncertaintyNode)
        with self._uncertaintyLock:  # an export on the worker may be copying a slice of it (SharedSlices)
            for k, (_, sliceUncertainty) in result.items():
                uncertainty[k] = sliceUncertainty
        slicer.util.arrayFromVolumeModified(uncertaintyNode)
        stack_nodes.record_predicted_by(segmentation, result, model.signature)

    def unlabeledByCurrentModel(self, volume) -> tuple[list[int], list[int]]:
        """Slices without a prediction, and slices predicted by another model than the current one (0-based)."""
        segmentation = self.predictionSegmentation(volume, create=False)
        predicted = set(self.predictedSlices(volume))
        n = arrays.slice_shape(volume)[0]
        current = self.model.signature if self.model is not None else None
        predictedBy = stack_nodes.predicted_by(segmentation)
        earlier = [k for k in sorted(predicted) if current is not None and predictedBy.get(str(k)) != current]
        return [k for k in range(n) if k not in predicted], earlier

    def exportWarning(self, volume) -> str:
        """What an export now would leave short of 'a label for every pixel from the current model' ('' if nothing)."""
        unpredicted, earlier = self.unlabeledByCurrentModel(volume)
        n = arrays.slice_shape(volume)[0]
        parts = []
        if unpredicted:
            one = len(unpredicted) == 1
            parts.append(f"{len(unpredicted)} of {n} slices {'has' if one else 'have'} no prediction "
                         f"({_slices(unpredicted)}): {'its label map' if one else 'their label maps'} will hold only "
                         "your strokes, 0 (unlabeled) elsewhere.")
        if earlier:
            parts.append(f"{len(earlier)} {'slice was' if len(earlier) == 1 else 'slices were'} predicted by an "
                         f"earlier model ({_slices(earlier)}).")
        if parts:
            parts.append("Predict all slices first to label every pixel with the current model.")
        return " ".join(parts)

    def predictedSlices(self, volume) -> list[int]:
        labels = self._predictedLabels(volume, copy=False)
        return [] if labels is None else [k for k in range(labels.shape[0]) if labels[k].any()]

    # ---------------------------------------------------------------- accept
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
        self._baselineHolds(volume, _heldLabelsKey(labelSegmentation, volume, classes))  # accept wrote `labels` to both
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

    # ---------------------------------------------------------------- where to paint next
    def suggestSlices(self, volume, top: int = 5, labelSegmentation=None) -> list[dict]:
        """Up to `top` predicted slices to paint next, with their most uncertain regions: the least sure slice of
        each of `top` groups, the least sure first: consecutive parts of an ordered stack, look-alike slices when
        the order means nothing (`spread_groups`, `rank_by_uncertainty`). With `labelSegmentation`, a slice's
        uncertainty leaves out what lies near the person's strokes (`image_uncertainty`) and no region lies where
        they painted (`uncertain_regions`). Waits for `startSuggesting`."""
        return self.startSuggesting(volume, top, labelSegmentation).wait()

    def startSuggesting(self, volume, top: int = 5, labelSegmentation=None) -> SemSegTask:
        """`suggestSlices` worked out on the worker: poll the task; its result is the suggestions (None if cancelled
        or the scene closed meanwhile). Why: for 1000 slices of 1024 x 1024 the mean of 4 GB of uncertainty and the
        regions held Slicer's GUI 1.6-2.7 s after every prediction, and slices not yet described took 0.3 s each."""
        from SemSegLib.normalization import NormalizationConfig
        from SemSegLib.suggest import (
            image_descriptors,
            image_uncertainty,
            rank_by_uncertainty,
            spread_groups,
            uncertain_regions,
        )

        predicted = self.predictedSlices(volume)
        if not predicted:
            raise InputError("no prediction yet: predict first, then ask where to paint next.")
        # Each slice copied under the lock the prediction's writes hold: a script may suggest while they come.
        uncertainty = SharedSlices(slicer.util.arrayFromVolume(self.uncertaintyVolume(volume)), predicted,
                                   self._uncertaintyLock)
        painted = {}  # slice -> its painted pixels, for the predicted slices with strokes only
        if labelSegmentation is not None:
            labels = self.labelsFromSegmentation(labelSegmentation, volume)
            among = set(predicted)
            painted = {int(k): labels[k] > 0 for k in segment_labels.painted_slices(labels) if int(k) in among}
        known = self._cachedSliceDescriptors(volume) or {}
        missing = [k for k in predicted if k not in known]  # e.g. a scene opened with a prediction in it
        images, positions = self._imagesToWorkOn(volume, missing) if missing else (None, [])
        normalization = self.model.normalization if self.model is not None else NormalizationConfig()
        imagesTime = volume.GetImageData().GetMTime()
        steps = len(missing) + len(predicted) + top

        def run(job: Job):
            described = {}
            for count, (k, j) in enumerate(zip(missing, positions), start=1):
                if job.should_stop():
                    return None
                described[k] = image_descriptors(images, [j], normalization)[j]
                job.report((count, steps))
            means = {}
            for count, k in enumerate(predicted, start=len(missing) + 1):
                if job.should_stop():
                    return None
                means[k] = image_uncertainty(uncertainty[k], painted.get(k))
                if count % 50 == 0:
                    job.report((count, steps))
            groups = spread_groups({k: described[k] if k in described else known[k] for k in predicted}, top)
            suggestions = []
            for k in rank_by_uncertainty(means, top, groups):
                if job.should_stop():
                    return None
                suggestions.append({"slice": k, "mean_uncertainty": means[k],
                                    "regions": uncertain_regions(uncertainty[k], top=3, painted=painted.get(k))})
                job.report((len(missing) + len(predicted) + len(suggestions), steps))
            return described, suggestions

        def finish(out):
            described, suggestions = out
            if described and stack_nodes.in_scene(self.scene, volume):
                self._cacheSliceDescriptors(volume, described, imagesTime)
            return suggestions

        def describe(p: tuple[int, int]) -> SemSegEvent:
            return SemSegEvent("progress", f"step {p[0]} of {p[1]}", p[0] / p[1], p)

        return self._start("suggest", run, describe, self._inThisScene(finish), waitForCompletion=False,
                           eventCallback=None)

    def _cachedSliceDescriptors(self, volume) -> dict | None:
        cached = self._sliceDescriptors.get(volume.GetID())
        return cached[1] if cached and cached[0] == volume.GetImageData().GetMTime() else None

    def _cacheSliceDescriptors(self, volume, descriptors: dict, imagesTime: int) -> None:
        """Keep `descriptors` of the images as they were at `imagesTime` (their modified time), if still so."""
        if volume.GetImageData().GetMTime() == imagesTime:
            known = self._cachedSliceDescriptors(volume) or {}
            self._sliceDescriptors[volume.GetID()] = (imagesTime, {**known, **descriptors})

    def sliceDescriptors(self, volume, indices: list[int] | None = None) -> dict:
        """Slice index -> what the slice looks like (`image_descriptors`), for `indices` (default: every slice):
        those the predictions described, the others computed now (e.g. a scene loaded with a prediction in it)."""
        from SemSegLib.normalization import NormalizationConfig
        from SemSegLib.suggest import image_descriptors

        indices = list(range(arrays.slice_shape(volume)[0])) if indices is None else list(indices)
        known = self._cachedSliceDescriptors(volume) or {}
        missing = [k for k in indices if k not in known]
        if missing:
            normalization = self.model.normalization if self.model is not None else NormalizationConfig()
            computed = image_descriptors(self.imagesFromVolume(volume, missing), None, normalization)
            computed = {missing[j]: descriptor for j, descriptor in computed.items()}
            self._cacheSliceDescriptors(volume, computed, volume.GetImageData().GetMTime())
            known = {**known, **computed}
        return {k: known[k] for k in indices}

    def markSuggestedRegions(self, volume, suggestion: dict | None):
        """Numbered, locked points on a suggested slice at its most uncertain regions (most uncertain = 1).

        One point list, reused: it shows the suggestion being looked at, never a stale one. `None` clears it
        (after a new prediction the old regions mean nothing). Returns the point list node.
        """
        node = self.getParameterNode().GetNodeReference(ROLE_SUGGESTION_MARKERS)
        if node is None:
            if suggestion is None:
                return None
            node = results.new_marker_list(self.scene, SUGGESTION_MARKERS_NAME)
            self.getParameterNode().SetNodeReferenceID(ROLE_SUGGESTION_MARKERS, node.GetID())
        if suggestion is None:
            node.RemoveAllControlPoints()
        else:
            results.mark_regions(node, volume, suggestion["slice"], suggestion["regions"])
        return node

    # ---------------------------------------------------------------- evaluate
    def evaluate(self, volume, referencePath: str, tableNode=None):
        """The prediction against reference label maps (a folder of files named as the images, or a label stack
        file) on the predicted slices that have one: per-class IoU / Dice into a table; returns the metrics. Waits
        for `startEvaluating`."""
        return self.startEvaluating(volume, referencePath, tableNode).wait()

    def startEvaluating(self, volume, referencePath: str, tableNode=None) -> SemSegTask:
        """`evaluate` with the reference read and scored on the worker: poll the task; its result is the metrics
        (None if cancelled or the scene closed meanwhile). Why: 200 slices of 1024 x 1024 held Slicer's GUI 22 s."""
        from SemSegLib.metrics import evaluate

        names = self.imageNames(volume)
        predicted = self.predictedSlices(volume)
        if not predicted:
            raise InputError("no prediction yet: predict, then evaluate.")
        classes = self.classes()
        shape = arrays.slice_shape(volume)[1:]
        prediction = self._predictedLabels(volume, copy=False, lent=True)
        earlier = set(self.unlabeledByCurrentModel(volume)[1])

        def readAndScore(onImage):  # worker
            reference = referenceLabels(referencePath, names, shape, classes, predicted, onImage)
            have = [j for j in range(len(predicted)) if reference[j].any()]
            if not have:
                raise InputError(f"{referencePath}: no reference label file matches a predicted slice "
                                 f"(expected names like {names[predicted[0]]}.tif).")
            scored = [predicted[j] for j in have]
            metrics = evaluate([prediction[k] for k in scored], [reference[j] for j in have], [c.name for c in classes])
            return metrics, scored

        def finish(out):
            metrics, scored = out
            self.metricsToTable(metrics, tableNode)
            byEarlier = [k for k in scored if k in earlier]
            self.lastEvaluationNote = (f"{len(byEarlier)} of the {len(scored)} slices scored were predicted by an "
                                       f"earlier model ({_slices(byEarlier)})" if byEarlier else "")
            return metrics

        return self._startReading("evaluate", readAndScore, "reference map(s)", finish)

    def metricsToTable(self, metrics, tableNode=None):
        """Per-class IoU / Dice into a table node ('SemSeg metrics' unless given) with a bar chart over it."""
        return results.metrics_to_table(self.scene, metrics, tableNode)

    # ---------------------------------------------------------------- export / models
    def finalLabels(self, volume, labelSegmentation) -> np.ndarray:
        """Prediction where predicted, painted labels win everywhere they exist."""
        return _paintedWin(self.labelsFromSegmentation(labelSegmentation, volume), self._predictedLabels(volume))

    def _predictedLabels(self, volume, copy: bool = True, lent: bool = False) -> np.ndarray | None:
        """The prediction's labels, None if there is none. They are held (`_heldPrediction`) until the segments change,
        so that a scene opened again reads its prediction once (2-3 s for 1000 slices of 1024 x 1024). `copy=False`:
        the held labels themselves, to be read only, on the main thread there and then; `lent`: also on the worker,
        and as long as the job needs them: the next write then replaces them, and does not change them."""
        prediction = self.predictionSegmentation(volume, create=False)
        if prediction is None:
            return None
        classes = self.classes()
        key = _heldLabelsKey(prediction, volume, classes)
        if self._heldPrediction is None or self._heldPrediction[0] != key:
            self._hold(key, segment_labels.labels_from_segmentation(self.scene, prediction, volume, classes))
        labels = self._heldPrediction[1]
        self._heldLent = self._heldLent or lent
        return labels.copy() if copy else labels

    def _hold(self, key: tuple | None, labels: np.ndarray | None) -> None:
        self._heldPrediction = None if labels is None else (key, labels)
        self._heldLent = False

    def export(self, volume, labelSegmentation, folder: str, warning: str | None = None,
               waitForCompletion: bool = True, eventCallback: Callable[[SemSegEvent], None] | None = None
               ) -> SemSegTask:
        """Write labels/<name>.tif, labels.nrrd, strokes/<name>.tif, uncertainty/<name>.tif (predicted slices),
        model.pt, classes.csv into `folder`
        (SemSegLib.results_folder: nothing there is replaced that an earlier export did not write). The task's
        result says what was written where. `warning`: the `exportWarning` the caller already has (the panel, which
        asked before exporting), not computed again.

        Here the labels are read from MRML and the folder is checked (a refused one raises before anything is
        written); the rest runs on the worker thread: 100 slices of 1024 x 1024 held the main thread for 15 s when they
        were written there (2 s now, 1 s while the correction baseline holds the strokes; bench/RESULTS.md, sessions
        61 and 70)."""
        from SemSegLib.results_folder import check_results_folder, write_results

        warning = self.exportWarning(volume) if warning is None else warning
        if warning:  # the panel asks before exporting; a script is told here
            logging.warning(f"SemSeg export to {folder}: {warning}")
        classes, names, model = self.classes(), self.imageNames(volume), self.model
        protected = [volume.GetAttribute(SOURCE_ATTRIBUTE) or None]
        strokes = self.labelsFromSegmentation(labelSegmentation, volume)
        predicted = self._predictedLabels(volume, copy=False, lent=True)
        uncertainty = {}
        uncertaintyNode = volume.GetNodeReference(stack_nodes.ROLE_UNCERTAINTY)  # none if the person deleted it
        if predicted is not None and uncertaintyNode is not None and uncertaintyNode.GetImageData() is not None:
            # The slices' maps as each was predicted, each copied by the worker when it writes it (see _writePrediction)
            uncertainty = SharedSlices(slicer.util.arrayFromVolume(uncertaintyNode),
                                       [k for k in range(len(predicted)) if predicted[k].any()], self._uncertaintyLock)
        check_results_folder(folder, names, model is not None, protected)  # made here: after the inputs' checks
        spacing = volume.GetSpacing()

        def run(job: Job) -> dict[str, str]:
            job.report(f"writing {len(names)} label maps")
            dtype = label_dtype(len(classes))
            final = _paintedWin(strokes, predicted).astype(dtype)
            return write_results(folder, names, final, strokes.astype(dtype), classes, model, spacing, protected,
                                 uncertainty)

        def finish(written: dict[str, str]) -> dict[str, str]:
            if stack_nodes.in_scene(self.scene, volume):
                self.getParameterNode().SetParameter("OutputPath", str(Path(folder)))
            return written

        return self._start("export", run, lambda message: SemSegEvent("progress", message), finish,
                           waitForCompletion, eventCallback)

    def predictFolder(self, imagesFolder: str, outputFolder: str, tta: bool = False, device: str = "auto",
                      uncertainty: bool = False, waitForCompletion: bool = True,
                      eventCallback: Callable[[SemSegEvent], None] | None = None) -> SemSegTask:
        """Segment a folder of images on disk with the current model, without loading them into the scene: what
        `semseg predict` writes (`<name>.tif` label maps, with `uncertainty` also `<name>_uncertainty.tif`), one
        image in memory at a time, so a folder of any size can follow the few slices trained on; its images may
        differ in size. An `outputFolder`
        ending in .tif gets one multi-page TIFF instead, a page per image. Refused before anything is written: images
        the model cannot take, an output folder that is the images', files there a prediction did not write. The
        task's result: {"folder" (or the file), "images" (how many were written), "seconds_per_image"}; a cancelled
        one keeps the maps it wrote into a folder, and writes no file."""
        from SemSegLib.predict_folder import plan_folder_prediction
        from SemSegLib.prediction import PredictConfig

        if self.model is None:
            raise InputError("no model yet: train one (or load a saved model) before segmenting a folder.")
        plan = plan_folder_prediction(self.model, imagesFolder, outputFolder, PredictConfig(tta=tta, device=device),
                                      uncertainty=uncertainty,
                                      advice="Choose another output folder, or move those files elsewhere.")

        def run(job: Job) -> dict:
            seconds = plan.run(progress=lambda done, total, s: job.report((done, total, s)),
                               should_stop=job.should_stop)
            return {"folder": str(plan.out), "images": len(seconds),
                    "seconds_per_image": float(np.mean(seconds)) if seconds else 0.0}

        def describe(p) -> SemSegEvent:
            done, total, seconds = p
            return SemSegEvent("progress", f"image {done} of {total} ({seconds:.2f} s)", done / total, p)

        return self._start("predict folder", run, describe, lambda result: result, waitForCompletion, eventCallback)

    def canUndoTraining(self) -> bool:
        return bool(self.replacedModels)

    def undoTraining(self):
        """Go back to the model the last training replaced, and on to the one before at the next undo (the last
        TRAININGS_KEPT, in memory): rounds of corrections that made the prediction worse need not be kept. Slices
        the undone models predicted then count as an earlier model's (exportWarning)."""
        if not self.replacedModels:
            raise InputError("nothing to undo: no training has replaced a model since the last load, or the last "
                             f"{TRAININGS_KEPT} have been undone.")
        self.model = self.replacedModels.pop()
        self.lastTrainNote = self._autosaveModel()
        return self.model

    def saveModel(self, path: str) -> None:
        if self.model is None:
            raise InputError("no model to save: train one first.")
        self.model.save(path)

    def loadModel(self, path: str, volume=None):
        """Load a saved model; its classes become the module's classes."""
        from SemSegLib.model_file import SemSegModel

        model = SemSegModel.load(path)
        if volume is not None:
            model.check_stack(arrays.channel_count(volume), volume.GetName())
        self.model, self.replacedModels = model, []
        self.setClasses(model.classes)
        self.getParameterNode().SetParameter("ModelPath", str(path))
        self._modelFile = str(path)
        self._carry(Path(path).read_bytes())
        return model

    def modelDescription(self) -> tuple[str, list[str]]:
        """The current model in one line and in full (`semseg info`): its classes, images, network, how it predicts
        and the trainings that made it."""
        from SemSegLib.model_info import info_lines, info_summary, model_info

        if self.model is None:
            raise InputError("no model yet: train one or load a saved model.")
        info = model_info(self.model)
        return info_summary(info), info_lines(info)

    def restoreModelFromParameterNode(self) -> bool:
        """After a scene is opened: load the model it carries (`model_node`), when it is not the one this Logic last
        put into a scene: its predictions are that model's, not those of a model trained since in another scene
        (`lastRestoreNote` says where that one is kept). A scene that carries no model (saved before SemSeg kept
        models in scenes) gets the file it names (ModelPath), when there is no model yet."""
        node = self.getParameterNode()
        path, carried = node.GetParameter("ModelPath"), model_node.stored(node)
        if self.model is not None and (carried is None or hashlib.sha1(carried).hexdigest() == self._carriedDigest):
            return False
        before = self._modelFile if self.model is not None else None
        decoded = None  # a file this restore wrote: removed again if it holds no model
        try:
            if self.model is not None and before is None:  # the model to replace has no file: it gets one first
                before = str(kept_strokes.new_model_file())
                self.model.save(before)
            if carried is not None and not (path and Path(path).is_file() and Path(path).read_bytes() == carried):
                path = decoded = str(kept_strokes.new_model_file())
                write_bytes_atomic(Path(path), carried)
            if path and Path(path).is_file():
                self.loadModel(path)
                self.lastRestoreNote = (f"the model of the opened scene replaced the one you had, which is kept in "
                                        f"{before}" if before else "")
                return True
        except (InputError, OSError, ImportError) as e:  # ImportError: PyTorch not installed yet
            logging.warning(f"SemSeg: could not restore the model of this scene: {e}")
            if decoded is not None:
                Path(decoded).unlink(missing_ok=True)
        return False


@dataclass
class LoadedLabels:
    """What `loadLabels` did."""

    slices: list[int]  # the slices a label file was found for
    added: int  # pixels labeled that were unlabeled
    differing: int  # pixels painted with another class than the file's, which kept what was painted
    segmentation: object  # the label segmentation they went into


@dataclass
class PredictionProgress:
    """A prediction's progress event data: slices predicted, of how many, the last one's seconds, slices shown."""

    done: int
    total: int
    seconds: float
    shown: int  # written into the nodes so far (`predict`'s showSeconds)


@dataclass
class _PredictedSlice:
    """What the worker reports for each slice it predicted."""

    index: int
    labels: np.ndarray  # (H, W)
    uncertainty: np.ndarray  # (H, W)
    seconds: float


@dataclass
class _PreviewLabels:
    """What the worker reports when a training shows its slice (TrainPreview)."""

    iteration: int
    labels: np.ndarray  # (H, W)


class _PredictionVoxels:
    """The voxels a prediction's first writes need, made on the worker thread by the job whose predictions they take
    (`make()`, before it reports any) when, asked on the main thread, they will be needed: the stack's uncertainty
    volume when it has none yet (filling 4 GB of floats for 1000 slices of 1024 x 1024 took 3-11 s), and the prediction
    segments' labelmap when `indices` will not go into the one they have (`segment_labels.writes_in_place`; 0.7-4 s
    for the same stack). Filled at a write, either held Slicer's GUI there."""

    def __init__(self, volume=None, prediction=None, classes: list[ClassInfo] | None = None,
                 indices: list[int] | None = None) -> None:
        self._shape = arrays.slice_shape(volume) if volume is not None else None
        self._needsUncertainty = volume is not None and stack_nodes.needs_uncertainty_voxels(volume)
        # One slice goes in alone (`set_slice_labels` imports only the slices written into segments that hold none).
        self._labelsType = label_dtype(len(classes)) if volume is not None and indices and len(indices) > 1 and (
            prediction is None or not segment_labels.writes_in_place(prediction, volume, classes, indices)) else None
        self.uncertainty: vtk.vtkImageData | None = None
        self._labels: vtk.vtkImageData | None = None

    def make(self) -> None:
        if self._needsUncertainty and self.uncertainty is None:
            self.uncertainty = arrays.zero_image_data(self._shape, np.float32)
        if self._labelsType is not None and self._labels is None:
            self._labels = arrays.zero_image_data(self._shape, self._labelsType)

    def takeLabels(self) -> vtk.vtkImageData | None:
        """The labelmap's voxels, once: the segments keep them."""
        labels, self._labels, self._labelsType = self._labels, None, None
        return labels


class _ReadingStopped(Exception):
    """Raised by a reader's progress callback to stop it when the person cancelled (`SemSegLogic._startReading`)."""


def _readStack(path: str, channelAxis: int | None, onImage: Callable[[int, int], None] | None = None) -> tuple:
    """(the stack, its volume's voxels): a stack of one channel is read straight into the voxels, so a load holds it
    once. No MRML: safe on the worker thread."""
    from SemSegLib.stack_io import read_stack

    buffer = arrays.VoxelBuffer()
    stack = read_stack(path, channelAxis, onImage, buffer)
    return stack, arrays.stack_pixels(stack.images, stack.rgb, buffer.holding(stack.images))


def _heldLabelsKey(segmentation, volume, classes: list[ClassInfo]) -> tuple:
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


def _paintedWin(painted: np.ndarray, predicted: np.ndarray | None) -> np.ndarray:
    """The labels a person gets: the prediction where there is one, what they painted wherever they painted."""
    return painted if predicted is None else np.where(painted > 0, painted, predicted)


def _shapeOnly(names: list[str], shape: tuple[int, int], source: str):
    """An ImageStack of `names` that has the volume's shape and no pixels, for reading label files against."""
    from SemSegLib.stack_io import ImageStack

    return ImageStack(np.broadcast_to(np.zeros((), np.uint8), (len(names), 1, *shape)), names, source)


def _slices(indices: list[int], shown: int = 8) -> str:
    """'slices 1, 4, 9' (1-based, as the panel numbers them), at most `shown` of them."""
    listed = ", ".join(str(k + 1) for k in indices[:shown])
    return f"slice{'s' if len(indices) > 1 else ''} {listed}{' ...' if len(indices) > shown else ''}"


def referenceLabels(path: str, names: list[str], shape: tuple[int, int], classes: list[ClassInfo],
                    indices: list[int] | None = None, onImage: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Reference label maps for the volume's images `indices` (default: all), in their order, matched by file name;
    missing files are all-zero. A value beyond `classes` (the panel's) is refused: it would drop out of every score
    unseen. Of a folder only the files of `indices` are read. No MRML: safe on the worker thread."""
    from SemSegLib.stack_io import read_labels

    indices = list(range(len(names))) if indices is None else list(indices)
    byFile = Path(path).is_dir()  # a label stack file has a page per image: read whole, then picked from
    labels = read_labels(path, _shapeOnly([names[k] for k in indices] if byFile else names, shape, "the loaded images"),
                         classes=classes, classes_from="the classes in the panel",
                         advice="Use reference maps with the panel's class values, or edit the classes.",
                         on_image=onImage).labels
    return labels if byFile else labels[indices]


#
# SemSeg module
#


class SemSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SemSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SemSeg developers"]
        self.parent.helpText = (
            "Paint a few strokes per class on a few slices of an image stack; SemSeg trains a U-Net on them, "
            "predicts every pixel, shows where it is unsure, and lets you correct and retrain. "
            '<a href="https://github.com/semseg/SlicerSemSeg#use">Documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "SemSeg uses PyTorch (through the SlicerPyTorch extension) and MONAI's sliding-window inference."
        )


#
# SemSegWidget: a thin panel over SemSegLogic and the parameter node
#


class SemSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._task = None
        self._taskLabel = ""
        self._predictedNote = ""  # shown again once the prediction's suggestions are worked out
        self._timer = None
        self._suggestions = []
        self._trainedVolume = None
        self._trainedSlice = None  # the slice a training shows while it runs, and predicts when it ends
        self._previewNote = ""
        self._predictionShown = False  # a running prediction's first slices were shown (_onTaskEvent)
        self.editor = None  # the Segment Editor inside the panel (_setupEditor)
        self._editorNode = None

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SemSegLogic()

        # The main thread polls the worker; the worker never touches Qt or MRML.
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._pollTask)

        ui = self.ui
        ui.browseImagesButton.clicked.connect(self.onBrowseImages)
        ui.browseImageFileButton.clicked.connect(self.onBrowseImageFile)
        ui.loadImagesButton.clicked.connect(self.onLoadImages)
        ui.loadSampleButton.clicked.connect(self.onLoadSample)
        ui.inputVolumeSelector.currentNodeChanged.connect(self.updateParameterNodeFromGUI)
        for combo in self._channelComboBoxes():
            combo.currentIndexChanged.connect(self.onChannelsChosen)
        ui.labelSegmentationSelector.currentNodeChanged.connect(self.updateParameterNodeFromGUI)
        ui.addClassButton.clicked.connect(self.onAddClass)
        ui.removeClassButton.clicked.connect(self.onRemoveClass)
        ui.loadClassesButton.clicked.connect(self.onLoadClasses)
        ui.saveClassesButton.clicked.connect(self.onSaveClasses)
        ui.classesTable.itemChanged.connect(lambda item: self.onClassesEdited())
        ui.classesTable.cellDoubleClicked.connect(self.onClassCellDoubleClicked)
        ui.startPaintingButton.clicked.connect(self.onStartPainting)
        ui.loadLabelsButton.clicked.connect(self.onLoadLabels)
        ui.loadLabelStackButton.clicked.connect(self.onLoadLabelStack)
        ui.budgetSpinBox.valueChanged.connect(self.updateParameterNodeFromGUI)
        ui.budgetUnitComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.continueCheckBox.toggled.connect(self.updateParameterNodeFromGUI)
        ui.correctionWeightSpinBox.valueChanged.connect(self.updateParameterNodeFromGUI)
        ui.deviceComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.startingPointComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.trainButton.clicked.connect(self.onTrain)
        ui.cancelButton.clicked.connect(self.onCancel)
        ui.undoTrainingButton.clicked.connect(self.onUndoTraining)
        ui.predictScopeComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.ttaCheckBox.toggled.connect(self.updateParameterNodeFromGUI)
        ui.predictButton.clicked.connect(self.onPredict)
        ui.acceptButton.clicked.connect(self.onAccept)
        ui.undoAcceptButton.clicked.connect(self.onUndoAccept)
        ui.nextSliceButton.clicked.connect(self.onNextSlice)
        ui.browseReferenceButton.clicked.connect(lambda: self._browseFolder(ui.referencePathLineEdit))
        ui.evaluateButton.clicked.connect(self.onEvaluate)
        ui.browseOutputButton.clicked.connect(lambda: self._browseFolder(ui.outputPathLineEdit))
        ui.exportButton.clicked.connect(self.onExport)
        ui.predictFolderButton.clicked.connect(self.onPredictFolder)
        ui.predictStackFileButton.clicked.connect(self.onPredictStackFile)
        ui.saveModelButton.clicked.connect(self.onSaveModel)
        ui.loadModelButton.clicked.connect(self.onLoadModel)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self._setupEditor()
        self.initializeParameterNode()

    def _setupEditor(self) -> None:
        """The Segment Editor inside the panel, under the classes: painting, training and correcting happen in one
        place instead of switching modules each round (set up as Slicer's Segment Editor module sets up its own)."""
        import qSlicerSegmentationsModuleWidgetsPythonQt

        self.editor = qSlicerSegmentationsModuleWidgetsPythonQt.qMRMLSegmentEditorWidget()
        self.editor.setMaximumNumberOfUndoStates(10)
        # Its segmentation and volume are the panel's: painting goes into the labels SemSeg trains on, never into
        # the prediction, which the next prediction replaces.
        self.editor.setSegmentationNodeSelectorVisible(False)
        self.editor.setSourceVolumeNodeSelectorVisible(False)
        self._selectEditorNode()  # before the scene, so that the choices made when it is set are kept there
        self.editor.setMRMLScene(slicer.mrmlScene)
        self.ui.classesCollapsibleButton.layout().addWidget(self.editor)
        # Effects registered after the panel was made (another extension's) still show up.
        self._effectFactory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        self._effectFactory.connect("effectRegistered(QString)", self._onEffectRegistered)

    def _onEffectRegistered(self) -> None:
        self.editor.updateEffectList()

    def _selectEditorNode(self) -> None:
        """The embedded editor's own parameter node: the Segment Editor module's effect and options stay its own."""
        node = slicer.mrmlScene.GetSingletonNode(EDITOR_SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(EDITOR_SINGLETON_TAG)
            node = slicer.mrmlScene.AddNode(node)
        if self._editorNode is not node:
            self._editorNode = node
            self.editor.setMRMLSegmentEditorNode(node)

    def _showInEditor(self) -> None:
        """The panel's labels and volume in the embedded editor."""
        if self.editor is None or self._editorNode is None:
            return
        labels, volume = self._labels(), self._volume()
        if self.editor.segmentationNodeID() != (labels.GetID() if labels is not None else ""):
            self.editor.setSegmentationNode(labels)
        if labels is not None and volume is not None and self.editor.sourceVolumeNodeID() != volume.GetID():
            self.editor.setSourceVolumeNode(volume)

    def cleanup(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()
        if self.editor is not None:
            self._effectFactory.disconnect("effectRegistered(QString)", self._onEffectRegistered)

    def enter(self) -> None:
        self.editor.installKeyboardShortcuts()
        self._selectEditorNode()
        self.editor.updateWidgetFromMRML()
        self._restoreModel()  # of a scene opened before the panel was made, or while it was left
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        # As the Segment Editor module does when it is left: no effect stays active in the views.
        self.editor.setActiveEffect(None)
        self.editor.uninstallKeyboardShortcuts()
        self.editor.removeViewObservations()

    def _restoreModel(self) -> None:
        """The model the scene carries (`restoreModelFromParameterNode`), said in the status line."""
        if self.logic.restoreModelFromParameterNode():
            self.ui.statusLabel.text = ("Loaded the model of this scene"
                                        + (f"; {self.logic.lastRestoreNote}." if self.logic.lastRestoreNote else "."))

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self._task.cancel()
        self.setParameterNode(None)
        self._editorNode = None
        self.editor.setSegmentationNode(None)
        self.editor.removeViewObservations()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self._selectEditorNode()
            self.editor.updateWidgetFromMRML()
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        if self.parent.isEntered:
            self._selectEditorNode()
            self.editor.updateWidgetFromMRML()
        self.initializeParameterNode()
        self._restoreModel()
        self.updateGUIFromParameterNode()

    # ---------------------------------------------------------------- parameter node <-> GUI
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, node) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        import qt

        self._updatingGUI = True
        try:
            ui = self.ui
            ui.inputVolumeSelector.setCurrentNode(node.GetNodeReference(ROLE_VOLUME))
            ui.labelSegmentationSelector.setCurrentNode(node.GetNodeReference(ROLE_LABELS))
            ui.budgetSpinBox.value = int(float(node.GetParameter("BudgetValue")))
            ui.budgetUnitComboBox.currentText = node.GetParameter("BudgetUnit")
            ui.continueCheckBox.checked = node.GetParameter("ContinueTraining") == "true"
            ui.correctionWeightSpinBox.value = float(node.GetParameter("CorrectionWeight"))
            ui.deviceComboBox.currentText = node.GetParameter("Device")
            ui.startingPointComboBox.currentText = node.GetParameter("StartingPoint")
            ui.predictScopeComboBox.setCurrentIndex(
                max(0, ["current", "painted", "all"].index(node.GetParameter("PredictScope"))))
            ui.ttaCheckBox.checked = node.GetParameter("TTA") == "true"
            ui.referencePathLineEdit.text = node.GetParameter("ReferencePath")
            ui.outputPathLineEdit.text = node.GetParameter("OutputPath")
            table = ui.classesTable
            classes = self.logic.classes()
            table.setRowCount(len(classes))
            for row, c in enumerate(classes):
                table.setItem(row, 0, qt.QTableWidgetItem(c.name))
                colorItem = qt.QTableWidgetItem("")
                colorItem.setBackground(qt.QBrush(qt.QColor(*c.color)))
                colorItem.setFlags(qt.Qt.ItemIsEnabled)
                colorItem.setToolTip("Double-click to change the color")
                table.setItem(row, 1, colorItem)
            self._showInEditor()
            self._showChannelChoice()
            self._updateButtons()
        finally:
            self._updatingGUI = False

    def _channelComboBoxes(self) -> list:
        return [self.ui.redChannelComboBox, self.ui.greenChannelComboBox, self.ui.blueChannelComboBox]

    def _showChannelChoice(self) -> None:
        """Red, green and blue's channels, for a stack shown three channels at a time; hidden for other volumes."""
        volume = self._volume()
        shown = self.logic.shownChannels(volume) if volume is not None else None
        self.ui.channelsLabel.visible = shown is not None
        for combo, channel in zip(self._channelComboBoxes(), shown or [None] * 3):
            combo.visible = shown is not None
            combo.clear()
            if shown is not None:
                combo.addItems(["none"] + [str(k + 1) for k in range(arrays.channel_count(volume))])
                combo.setCurrentIndex(0 if channel is None else channel + 1)

    def onChannelsChosen(self, *args) -> None:
        volume = self._volume()
        if self._updatingGUI or volume is None or self.logic.shownChannels(volume) is None:
            return
        shown = [combo.currentIndex - 1 if combo.currentIndex > 0 else None for combo in self._channelComboBoxes()]
        with slicer.util.tryWithErrorDisplay("Could not show those channels.", waitCursor=True):
            self.logic.showChannels(volume, shown)

    def updateParameterNodeFromGUI(self, *args) -> None:
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        ui = self.ui
        wasModifying = node.StartModify()
        volume = ui.inputVolumeSelector.currentNode()
        segmentation = ui.labelSegmentationSelector.currentNode()
        if volume is not None and volume.GetID() != node.GetNodeReferenceID(ROLE_VOLUME):
            segmentation = self.logic.labelSegmentationOf(volume)  # another stack: its own labels, if any
            self._suggestions = []  # the last stack's, and its marked regions with them
            self.logic.markSuggestedRegions(volume, None)
            self.ui.nextSliceButton.text = "Next: (predict first)"
        node.SetNodeReferenceID(ROLE_VOLUME, volume.GetID() if volume else None)
        node.SetNodeReferenceID(ROLE_LABELS, segmentation.GetID() if segmentation else None)
        node.SetParameter("BudgetValue", str(ui.budgetSpinBox.value))
        node.SetParameter("BudgetUnit", ui.budgetUnitComboBox.currentText)
        node.SetParameter("ContinueTraining", "true" if ui.continueCheckBox.checked else "false")
        node.SetParameter("CorrectionWeight", str(ui.correctionWeightSpinBox.value))
        node.SetParameter("Device", ui.deviceComboBox.currentText)
        node.SetParameter("StartingPoint", ui.startingPointComboBox.currentText)
        node.SetParameter("PredictScope", ["current", "painted", "all"][ui.predictScopeComboBox.currentIndex])
        node.SetParameter("TTA", "true" if ui.ttaCheckBox.checked else "false")
        node.SetParameter("ReferencePath", ui.referencePathLineEdit.text)
        node.SetParameter("OutputPath", ui.outputPathLineEdit.text)
        node.EndModify(wasModifying)

    def _updateButtons(self) -> None:
        ui = self.ui
        busy = self._task is not None
        volume = self._volume()
        labels = self._labels()
        ui.loadImagesButton.enabled = ui.loadSampleButton.enabled = not busy  # the worker reads the images
        ui.startPaintingButton.enabled = volume is not None and not busy
        ui.loadLabelsButton.enabled = volume is not None and not busy
        ui.loadLabelStackButton.enabled = volume is not None and not busy
        ui.trainButton.enabled = volume is not None and labels is not None and not busy
        ui.cancelButton.enabled = busy and self._taskLabel != "Export"  # an export is not stopped halfway
        ui.undoTrainingButton.enabled = self.logic.canUndoTraining() and not busy
        hasModel = self.logic.model is not None
        ui.predictButton.enabled = volume is not None and hasModel and not busy
        ui.acceptButton.enabled = volume is not None and labels is not None and not busy
        ui.undoAcceptButton.enabled = labels is not None and self.logic.canUndoAccept(volume) and not busy
        ui.evaluateButton.enabled = volume is not None and not busy
        ui.exportButton.enabled = volume is not None and labels is not None and not busy
        ui.saveModelButton.enabled = hasModel and not busy
        ui.predictFolderButton.enabled = ui.predictStackFileButton.enabled = hasModel and not busy
        ui.nextSliceButton.enabled = bool(self._suggestions)
        if hasModel:
            summary, lines = self.logic.modelDescription()
            ui.modelInfoLabel.text, ui.modelInfoLabel.toolTip = summary, "\n".join(lines)
        else:
            ui.modelInfoLabel.toolTip = ""
            ui.modelInfoLabel.text = "no model yet"

    def _volume(self):
        return self._parameterNode.GetNodeReference(ROLE_VOLUME) if self._parameterNode else None

    def _labels(self):
        return self._parameterNode.GetNodeReference(ROLE_LABELS) if self._parameterNode else None

    # ---------------------------------------------------------------- dependencies (asked, never at import)
    def ensureDependencies(self) -> bool:
        from SemSegLib.dependencies import ensure_dependencies

        return ensure_dependencies()

    # ---------------------------------------------------------------- images
    def onBrowseImages(self) -> None:
        import qt

        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of ordered images")
        if path:
            self.ui.imagesPathLineEdit.text = path

    def onBrowseImageFile(self) -> None:
        path = self._chooseTiff("Multi-page TIFF")
        if path:
            self.ui.imagesPathLineEdit.text = path

    @staticmethod
    def _chooseTiff(caption: str) -> str:
        import qt

        return qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), caption, "", "TIFF images (*.tif *.tiff)")

    def _browseFolder(self, lineEdit) -> None:
        import qt

        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Choose a folder")
        if path:
            lineEdit.text = path
            self.updateParameterNodeFromGUI()

    def onLoadImages(self) -> None:
        path = self.ui.imagesPathLineEdit.text.strip()
        if not path or not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Failed to load the images."):
            self._startTask(self.logic.startLoadingStack(path), "Loading")  # read on the worker: see _afterTask

    def _offerKeptStrokes(self, volume) -> None:
        """After a crash the person reloads their images: offer the strokes their last training kept."""
        kept = self.logic.keptStrokesOf(volume)
        if not kept:
            return
        folder = kept[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(folder.stat().st_mtime))
        slices = len(list(folder.glob("*.tif")))
        if not slicer.util.confirmYesNoDisplay(f"SemSeg kept the strokes of an earlier training of these images "
                                               f"({slices} painted slice(s), {when}) in\n{folder}.\n\nLoad them?"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to load the kept strokes."):
            # Read on the worker as Load labels reads (see _afterTask), a task started by the loading task's end.
            self._startTask(self.logic.startLoadingLabels(volume, str(folder), adoptClasses=True), "Loading labels")

    def onLoadSample(self) -> None:
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Failed to create the sample stack.", waitCursor=True):
            volume, _ = self.logic.loadSampleStack()
            self._showVolume(volume)

    def _showVolume(self, volume) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        slicer.util.setSliceViewerLayers(background=volume, foreground=None, fit=True)
        self.updateGUIFromParameterNode()

    def _currentSlice(self) -> int:
        volume = self._volume()
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        sliceToRAS = sliceNode.GetSliceToRAS()
        ras = [sliceToRAS.GetElement(i, 3) for i in range(3)] + [1.0]
        rasToIJK = vtk.vtkMatrix4x4()
        volume.GetRASToIJKMatrix(rasToIJK)
        k = int(round(rasToIJK.MultiplyPoint(ras)[2]))
        n = arrays.slice_shape(volume)[0]
        return min(max(k, 0), n - 1)

    def _jumpToSlice(self, k: int) -> None:
        volume = self._volume()
        ijkToRAS = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijkToRAS)
        ras = ijkToRAS.MultiplyPoint([0, 0, k, 1])
        slicer.app.layoutManager().sliceWidget("Red").sliceLogic().SetSliceOffset(ras[2])

    # ---------------------------------------------------------------- classes
    def _classesFromTable(self) -> list:
        import qt

        table = self.ui.classesTable
        classes = []
        for row in range(table.rowCount):
            nameItem, colorItem = table.item(row, 0), table.item(row, 1)
            color = colorItem.background().color() if colorItem else qt.QColor(128, 128, 128)
            classes.append(ClassInfo(row + 1, nameItem.text() if nameItem else "",
                                     (color.red(), color.green(), color.blue())))
        return classes

    def onClassesEdited(self) -> None:
        if self._updatingGUI:
            return
        with slicer.util.tryWithErrorDisplay("Invalid classes.", waitCursor=False):
            self.logic.setClasses(self._classesFromTable(), edited=True)  # a cell of the table edited in place

    def onClassCellDoubleClicked(self, row: int, column: int) -> None:
        import qt

        if column != 1:
            return
        classes = self._classesFromTable()
        color = qt.QColorDialog.getColor(qt.QColor(*classes[row].color))
        if color.isValid():
            classes[row] = ClassInfo(classes[row].value, classes[row].name, (color.red(), color.green(), color.blue()))
            self.logic.setClasses(classes, edited=True)

    def onAddClass(self) -> None:
        from SemSegLib.classes import DEFAULT_COLORS

        classes = self.logic.classes()
        n = len(classes) + 1
        classes.append(ClassInfo(n, f"class {n}", DEFAULT_COLORS[(n - 1) % len(DEFAULT_COLORS)]))
        self.logic.setClasses(classes, edited=True)

    def onRemoveClass(self) -> None:
        row = self.ui.classesTable.currentRow()
        classes = self.logic.classes()
        if 0 <= row < len(classes):
            with slicer.util.tryWithErrorDisplay("Cannot remove the class.", waitCursor=False):
                self.logic.setClasses(classes[:row] + classes[row + 1:], edited=True)

    def onLoadClasses(self) -> None:
        import qt

        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "classes.csv", "", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Failed to read the classes file.", waitCursor=False):
                self.logic.loadClassesCsv(path)

    def onSaveClasses(self) -> None:
        import qt

        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "classes.csv", "classes.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Failed to write the classes file.", waitCursor=False):
                self.logic.saveClassesCsv(path)

    def onStartPainting(self) -> None:
        volume = self._volume()
        with slicer.util.tryWithErrorDisplay("Failed to prepare the label segmentation.", waitCursor=True):
            self.logic.createLabelSegmentation(volume, segmentation=self._labels())  # the parameter node's labels
            self._selectEditorNode()
            self._showInEditor()  # setSourceVolumeNode: Slicer >= 5.2's name (formerly master volume)
            self.ui.classesCollapsibleButton.collapsed = False
            self.editor.setActiveEffectByName("Paint")

    def onLoadLabels(self) -> None:
        import qt

        volume = self._volume()
        if not self.ensureDependencies():
            return
        # Start where SemSeg keeps the strokes of each training: after a crash, that is where they are.
        kept = kept_strokes.autosave_folder()
        start = str(kept) if kept.is_dir() else ""
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of label maps", start)
        if folder:
            self._loadLabelsFrom(volume, folder)

    def onLoadLabelStack(self) -> None:
        volume = self._volume()
        if not self.ensureDependencies():
            return
        path = self._chooseTiff("Label stack (a page per image)")
        if path:
            self._loadLabelsFrom(volume, path)

    def _loadLabelsFrom(self, volume, path: str) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to load the labels."):
            # read on the worker: see _afterTask
            self._startTask(self.logic.startLoadingLabels(volume, path, self._labels()), "Loading labels")

    def _showLoadedLabels(self, loaded) -> None:
        self.ui.statusLabel.text = (
            f"Labels of {len(loaded.slices)} slice(s) loaded: {loaded.added} pixels added"
            + (f"; {loaded.differing} pixels you painted with another class kept yours" if loaded.differing
               else "") + ".")
        self.updateGUIFromParameterNode()
        if loaded.slices and self._currentSlice() not in loaded.slices:
            self._jumpToSlice(loaded.slices[0])  # show what came in

    # ---------------------------------------------------------------- long-running tasks
    def _startTask(self, task, label) -> None:
        self._task = task
        self._taskLabel = label
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = f"{label}..."
        self._timer.start()
        self._updateButtons()

    def _pollTask(self) -> None:
        if self._task is None:
            self._timer.stop()
            return
        task = self._task
        try:
            finished = task.poll(self._onTaskEvent)
        except Exception as e:  # noqa: BLE001 - writing results back failed; show it, keep the GUI alive
            finished = True
            slicer.util.errorDisplay(f"{self._taskLabel} failed: {e}")
        if finished and self._task is task:  # not when its end started the next one (a prediction's suggestions)
            self._timer.stop()
            self._task = None
            self._updateButtons()

    def _onTaskEvent(self, event: SemSegEvent) -> None:
        if event.kind == "preview":  # kept beside the progress, which comes several times a second
            self._previewNote = event.message
            return
        if event.fraction is not None:
            self.ui.progressBar.value = int(100 * event.fraction)
        if isinstance(event.data, PredictionProgress) and event.data.shown and not self._predictionShown:
            self._showPrediction(self._volume())  # the first slices are in: show them while the others come
            self._predictionShown = True
        note = f"; {self._previewNote}" if self._taskLabel == "Training" and self._previewNote else ""
        self.ui.statusLabel.text = f"{self._taskLabel}: {event.message}{note}"
        if event.kind == "failed":
            slicer.util.errorDisplay(f"{self._taskLabel} failed: {event.message}")
        elif event.kind in ("done", "cancelled"):
            self._afterTask(event)

    def _afterTask(self, event: SemSegEvent) -> None:
        if self._taskLabel == "Loading" and event.data is not None:
            volume = event.data
            self._showVolume(volume)
            (n, h, w), c = arrays.slice_shape(volume), arrays.channel_count(volume)
            self.ui.statusLabel.text = f"Loaded {n} image(s) of {w} x {h}" + (f", {c} channels" if c > 1 else "")
            self._offerKeptStrokes(volume)
        elif self._taskLabel == "Training" and event.data is not None:
            r = event.data
            self.ui.statusLabel.text = self.logic.trainingSummary(r)
            volume = self._volume()  # the volume trained on, unless the person chose another one meanwhile
            if self._trainedSlice is not None and event.kind == "done" and volume is self._trainedVolume:
                self._showPrediction(volume)
                self.ui.statusLabel.text += f"; slice {self._trainedSlice + 1} predicted"
            if r.warning:  # too few steps for the seconds given: shown where the person looks, not only in the log
                slicer.util.warningDisplay(f"Training: {r.warning}")
        elif self._taskLabel in ("Segmenting a folder", "Segmenting a stack file") and event.data:
            r = event.data
            if self._taskLabel == "Segmenting a stack file" and event.kind == "cancelled":
                self.ui.statusLabel.text = f"Cancelled: {r['folder']} not written (a stack file is written whole)"
            else:
                self.ui.statusLabel.text = (f"{'Cancelled: ' if event.kind == 'cancelled' else ''}{r['images']} label "
                                            f"map(s) written to {r['folder']} ({r['seconds_per_image']:.2f} s per "
                                            "image)")
        elif self._taskLabel == "Loading labels" and event.data is not None:
            self._showLoadedLabels(event.data)
        elif self._taskLabel == "Evaluation" and event.data is not None:
            self._showMetrics(event.data)
        elif self._taskLabel == "Export" and event.data:
            self.ui.statusLabel.text = f"Exported to {Path(event.data['labels']).parent}"
            slicer.util.infoDisplay("Written:\n" + "\n".join(f"{k}: {v}" for k, v in event.data.items()))
        elif self._taskLabel == "Prediction" and event.data:
            volume = self._volume()
            self._showPrediction(volume)
            self.logic.markSuggestedRegions(volume, None)  # the regions of the last prediction are stale
            self._suggestions = []
            seconds = self.logic.lastTimings.get("predict_seconds_per_slice", 0)
            self._predictedNote = f"Predicted {len(event.data)} slice(s), {seconds:.2f} s per slice"
            # Worked out on the worker: 1.6-2.7 s of the GUI for 1000 slices of 1024 x 1024 (bench/RESULTS.md).
            self._startTask(self.logic.startSuggesting(volume, top=5, labelSegmentation=self._labels()),
                            "Where to paint next")
        elif self._taskLabel == "Where to paint next":
            self._suggestions = event.data or []
            if self._suggestions:
                s = self._suggestions[0]
                self.ui.nextSliceButton.text = f"Next: slice {s['slice'] + 1} (uncertainty {s['mean_uncertainty']:.2f})"
            else:  # cancelled
                self.ui.nextSliceButton.text = "Next: (predict again for new suggestions)"
            self.ui.statusLabel.text = self._predictedNote

    def _showPrediction(self, volume) -> None:
        self.logic.predictionSegmentation(volume).GetDisplayNode().SetOpacity2DFill(0.4)
        labels = self._labels()
        if labels is not None and labels.GetDisplayNode():
            labels.GetDisplayNode().SetVisibility(True)
        slicer.util.setSliceViewerLayers(background=volume, foreground=self.logic.uncertaintyVolume(volume),
                                         foregroundOpacity=0.3)

    def onTrain(self) -> None:
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        node = self._parameterNode
        value = float(node.GetParameter("BudgetValue"))
        byIterations = node.GetParameter("BudgetUnit") == "iterations"
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            # The slice in view is shown as the network learns it, and predicted when the training ends.
            self._trainedVolume, self._trainedSlice, self._previewNote = self._volume(), self._currentSlice(), ""
            task = self.logic.train(
                self._trainedVolume, self._labels(),
                seconds=None if byIterations else value, iterations=int(value) if byIterations else None,
                continueTraining=node.GetParameter("ContinueTraining") == "true",
                correctionWeight=float(node.GetParameter("CorrectionWeight")),
                device=node.GetParameter("Device"), starting_point=node.GetParameter("StartingPoint"),
                previewSlice=self._trainedSlice, waitForCompletion=False)
            self._startTask(task, "Training")
            self.ui.deviceLabel.text = self._deviceDescription(node.GetParameter("Device"))

    @staticmethod
    def _deviceDescription(name: str) -> str:
        from SemSegLib.devices import describe_device, resolve_device

        return describe_device(resolve_device(name))

    def onUndoTraining(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not undo the training.", waitCursor=True):
            model = self.logic.undoTraining()
            self.ui.statusLabel.text = (f"Back to the model before the last training ({len(model.history)} "
                                        f"training(s); {len(self.logic.replacedModels)} more undo(s) possible). "
                                        "Predict again to see its result."
                                        + (f" Note: {self.logic.lastTrainNote}." if self.logic.lastTrainNote else ""))
            self._updateButtons()

    def onCancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.statusLabel.text = f"{self._taskLabel}: cancelling..."

    def onPredict(self) -> None:
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        node = self._parameterNode
        scope = node.GetParameter("PredictScope")
        with slicer.util.tryWithErrorDisplay("Prediction could not start.", waitCursor=True):
            # The slice in view first, and the slices shown as they come: a stack of hundreds takes minutes.
            current = self._currentSlice()
            task = self.logic.predict(self._volume(), current if scope == "current" else scope,
                                      labelSegmentation=self._labels(), tta=node.GetParameter("TTA") == "true",
                                      device=node.GetParameter("Device"), firstSlice=current,
                                      showSeconds=PREDICTION_SHOWN_EVERY, waitForCompletion=False)
            self._predictionShown = False
            self._startTask(task, "Prediction")

    def onAccept(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not accept the prediction.", waitCursor=True):
            k = self._currentSlice()
            added = self.logic.acceptPrediction(self._volume(), self._labels(), k)
            self.ui.statusLabel.text = (f"Slice {k + 1}: prediction accepted ({added} pixels added, your strokes "
                                        "kept). Paint over its mistakes, then train again.")
            self._updateButtons()

    def onUndoAccept(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not undo the accept.", waitCursor=True):
            k, takenBack = self.logic.undoAccept(self._volume(), self._labels())
            self.ui.statusLabel.text = (f"Slice {k + 1}: accepted prediction taken back ({takenBack} pixels "
                                        "unlabeled again; your strokes and what you painted since kept).")
            self._jumpToSlice(k)
            self._updateButtons()

    def onNextSlice(self) -> None:
        if self._suggestions:
            s = self._suggestions.pop(0)
            self._jumpToSlice(s["slice"])
            self.logic.markSuggestedRegions(self._volume(), s)
            self.ui.statusLabel.text = (f"Slice {s['slice'] + 1}: the numbered points mark where the model is "
                                        "unsure (1 = the most uncertainty). Paint the right class there, then "
                                        "train again.")
            if self._suggestions:
                n = self._suggestions[0]
                self.ui.nextSliceButton.text = f"Next: slice {n['slice'] + 1} (uncertainty {n['mean_uncertainty']:.2f})"
            else:
                self.ui.nextSliceButton.text = "Next: (predict again for new suggestions)"
            self._updateButtons()

    def onEvaluate(self) -> None:
        self.updateParameterNodeFromGUI()
        with slicer.util.tryWithErrorDisplay("Evaluation failed."):
            # read and scored on the worker: see _afterTask
            self._startTask(self.logic.startEvaluating(self._volume(), self.ui.referencePathLineEdit.text.strip()),
                            "Evaluation")

    def _showMetrics(self, metrics) -> None:
        self.ui.metricsLabel.text = (f"mean IoU {metrics.mean_iou:.3f}, mean Dice {metrics.mean_dice:.3f}, "
                                     f"pixel accuracy {metrics.pixel_accuracy:.3f}"
                                     + (f"; {self.logic.lastEvaluationNote}" if self.logic.lastEvaluationNote else ""))
        self.ui.statusLabel.text = "Evaluated"
        chart = slicer.mrmlScene.GetFirstNodeByName("SemSeg IoU chart")
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onExport(self) -> None:
        self.updateParameterNodeFromGUI()
        folder = self.ui.outputPathLineEdit.text.strip()
        if not folder:
            slicer.util.errorDisplay("Choose a results folder first.")
            return
        warning = self.logic.exportWarning(self._volume())
        if warning and not slicer.util.confirmYesNoDisplay(f"{warning}\n\nExport anyway?"):
            return
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            self._startTask(self.logic.export(self._volume(), self._labels(), folder, warning,
                                              waitForCompletion=False), "Export")

    def onPredictFolder(self) -> None:
        import qt

        if not self.ensureDependencies():
            return
        images = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of images to segment")
        if not images:
            return
        out = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder to write their label maps to")
        if out:
            self._predictOnDisk(images, out, "Segmenting a folder")

    def onPredictStackFile(self) -> None:
        import qt

        if not self.ensureDependencies():
            return
        from SemSegLib.predict_folder import writes_one_file
        from SemSegLib.stack_io import stack_name

        images = self._chooseTiff("Multi-page TIFF to segment")
        if not images:
            return
        suggested = str(Path(images).with_name(f"{stack_name(images)}_labels.tif"))
        out = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Multi-page TIFF to write the label maps to",
                                             suggested, "TIFF images (*.tif *.tiff)")
        if out:
            # A name typed without .tif would make a folder of maps instead (predictFolder goes by the suffix).
            out = out if writes_one_file(out) else f"{out}.tif"
            self._predictOnDisk(images, out, "Segmenting a stack file")

    def _predictOnDisk(self, images: str, out: str, label: str) -> None:
        self.updateParameterNodeFromGUI()
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not segment the images.", waitCursor=True):
            task = self.logic.predictFolder(images, out, tta=node.GetParameter("TTA") == "true",
                                            device=node.GetParameter("Device"), waitForCompletion=False)
            self._startTask(task, label)

    def onSaveModel(self) -> None:
        import qt

        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Save model", "model.pt", "Model (*.pt)")
        if path:
            with slicer.util.tryWithErrorDisplay("Saving the model failed.", waitCursor=True):
                self.logic.saveModel(path)

    def onLoadModel(self) -> None:
        import qt

        if not self.ensureDependencies():
            return
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Load model", "", "Model (*.pt)")
        if path:
            with slicer.util.tryWithErrorDisplay("Loading the model failed.", waitCursor=True):
                self.logic.loadModel(path, self._volume())
                self._updateButtons()
                self.ui.statusLabel.text = f"Loaded the model {Path(path).name}"


#
# SemSegTest: the whole loop inside Slicer (Slicer's test runner; CI runs Testing/ against slicer-core)
#


class SemSegTest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SemSegLoop()

    def test_SemSegLoop(self) -> None:
        import tifffile
        from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack
        from SemSegLib.simulate import simulate_strokes
        from SemSegLib.stack_io import read_stack

        self.delayDisplay("Starting the SemSeg loop test")
        folder = Path(tempfile.mkdtemp(prefix="SemSegTest-"))
        write_sample_stack(folder, num_images=4, size=(128, 128), seed=1)
        # The panel's Load stack reads on the worker while the GUI runs. Pixels of their own (a fresh seed): for a
        # stack SemSeg has kept strokes of, the panel would ask whether to load them, a dialog no test answers.
        widget = slicer.modules.semseg.widgetRepresentation().self()
        fresh = np.random.default_rng().integers(0, 255, (3, 32, 40), dtype=np.uint8)
        (folder / "fresh").mkdir()
        for k, image in enumerate(fresh):
            tifffile.imwrite(folder / "fresh" / f"fresh_{k + 1}.tif", image)
        widget.ui.imagesPathLineEdit.text = str(folder / "fresh")
        widget.onLoadImages()
        self._waitForPanel(widget)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(widget._volume()), fresh))
        self.assertTrue(widget.ui.statusLabel.text.startswith("Loaded 3 image(s) of 40 x 32"))
        logic = SemSegLogic()
        volume = logic.loadStack(str(folder / "images"))
        self.assertEqual(slicer.util.arrayFromVolume(volume).shape, (4, 128, 128))
        logic.setClasses(SAMPLE_CLASSES)
        segmentation = logic.createLabelSegmentation(volume)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 3)
        # The panel's Segment Editor paints into these labels, on this volume.
        widget.onStartPainting()
        self.assertEqual(widget.editor.segmentationNodeID(), segmentation.GetID())
        self.assertEqual(widget.editor.sourceVolumeNodeID(), volume.GetID())
        self.assertIsNotNone(widget.editor.activeEffect())
        widget.editor.setActiveEffect(None)

        reference = read_stack(folder / "reference").images[:, 0]
        strokes = np.zeros(reference.shape, np.uint16)
        rng = np.random.default_rng(0)
        for k in (0, 2):
            strokes[k] = simulate_strokes(reference[k], 3, 8, rng=rng)
        logic.setLabelsToSegmentation(strokes, segmentation, volume)
        self.assertTrue(np.array_equal(logic.labelsFromSegmentation(segmentation, volume), strokes))

        self.delayDisplay("Training, slice 2 shown as it learns")
        previews = []
        logic.train(volume, segmentation, iterations=200, patch_size=64, previewSlice=1, previewSeconds=0.5,
                    waitForCompletion=True, eventCallback=lambda e: previews.append(e) if e.kind == "preview" else None)
        self.assertIsNone(logic.previewSegmentation(volume, create=False))  # taken down when the training ended
        self.assertEqual(logic.predictedSlices(volume), [1])  # and predicted by the trained model
        self.delayDisplay(f"Training showed {len(previews)} preview(s); predicting")
        shown = []  # the slices in the prediction node as each slice comes: the one asked for first

        def watch(event):
            if event.kind == "progress":
                shown.append(logic.predictedSlices(volume))

        logic.predict(volume, "all", labelSegmentation=segmentation, firstSlice=3, showSeconds=0,
                      waitForCompletion=True, eventCallback=watch)
        self.assertEqual(shown[0], [1, 3])  # slice 1 from the training's end, slice 3 written before the others
        self.assertEqual(logic.predictedSlices(volume), [0, 1, 2, 3])
        suggestions = logic.suggestSlices(volume, top=2)
        markers = logic.markSuggestedRegions(volume, suggestions[0])
        self.assertEqual(markers.GetNumberOfControlPoints(), len(suggestions[0]["regions"]))
        selection = slicer.app.applicationLogic().GetSelectionNode()
        self.assertNotEqual(selection.GetActivePlaceNodeID(), markers.GetID())  # not where the mouse places points
        added = logic.acceptPrediction(volume, segmentation, 1)
        self.assertGreater(added, 0)
        metrics = logic.evaluate(volume, str(folder / "reference"))
        self.assertGreater(metrics.mean_iou, 0.4)
        widget.ui.referencePathLineEdit.text = str(folder / "reference")  # the panel's: read and scored on the worker
        widget.onEvaluate()
        self._waitForPanel(widget)
        self.assertTrue(widget.ui.metricsLabel.text.startswith(f"mean IoU {metrics.mean_iou:.3f}"))
        # The panel's prediction, then where to paint next, each on the worker, the second started by the first's end.
        widget.logic.model = logic.model
        widget.onPredict()
        self._waitForPanel(widget)
        self.assertTrue(widget.ui.nextSliceButton.enabled)
        self.assertTrue(widget.ui.nextSliceButton.text.startswith("Next: slice"), widget.ui.nextSliceButton.text)
        self.assertTrue(widget.ui.statusLabel.text.startswith("Predicted"), widget.ui.statusLabel.text)
        self.assertEqual(logic.exportWarning(volume), "")  # every slice predicted by the current model
        written = logic.export(volume, segmentation, str(folder / "results")).result
        for key in ("labels", "nrrd", "model", "classes"):
            self.assertTrue(Path(written[key]).exists(), key)
        segmented = logic.predictFolder(str(folder / "images"), str(folder / "maps")).result
        self.assertEqual(segmented["images"], 4)
        # The strokes the training kept, loaded into a new stack's labels, are the strokes painted then.
        again = logic.loadStack(str(folder / "images"))
        loaded = logic.loadLabels(again, str(logic.strokesBackupFolder(volume)))
        self.assertTrue(np.array_equal(logic.labelsFromSegmentation(loaded.segmentation, again), strokes))
        # A stack of 2 channels: the panel offers the channel each color shows; the images stay as loaded.
        channels = np.stack([rng.integers(0, 4000, (2, 32, 32)), rng.integers(0, 200, (2, 32, 32))], 1)
        cells = logic.volumeFromStack(channels.astype(np.uint16), ["a", "b"], "two channels")
        widget.updateGUIFromParameterNode()
        self.assertEqual(widget.ui.greenChannelComboBox.count, 3)  # none, 1, 2
        self.assertEqual(widget.ui.greenChannelComboBox.currentIndex, 2)
        widget.ui.redChannelComboBox.currentIndex = 2
        self.assertEqual(logic.shownChannels(cells), [1, 1, None])
        self.assertTrue(np.array_equal(logic.imagesFromVolume(cells), channels))
        # A scene saved as a .mrb by Slicer's own writer carries the model, the temporary folder's file aside.
        bundle = folder / "loop.mrb"
        self.assertTrue(slicer.util.saveScene(str(bundle)))
        Path(logic.getParameterNode().GetParameter("ModelPath")).unlink()
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(str(bundle))
        reopened = SemSegLogic()
        self.assertTrue(reopened.restoreModelFromParameterNode())
        self.assertEqual(reopened.model.signature, logic.model.signature)
        self.delayDisplay("SemSeg loop test passed")

    @staticmethod
    def _waitForPanel(widget) -> None:
        """Until the panel's task ends, its timer polling it as in use."""
        while widget._task is not None:
            slicer.app.processEvents()
            time.sleep(0.02)
