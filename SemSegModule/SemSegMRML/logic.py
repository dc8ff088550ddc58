"""SemSegLogic: the SemSeg loop on MRML nodes, usable from the Python console and from scripts without the GUI.

    logic = SemSegLogic()
    volume = logic.loadStack("/data/heart_tiffs")
    labels = logic.createLabelSegmentation(volume)
    ...paint...
    logic.train(volume, labels, seconds=60, waitForCompletion=True)
    logic.predict(volume, "all", waitForCompletion=True)

Its methods are in one file per activity (logic_stacks, logic_labels, logic_training, logic_models,
logic_prediction, logic_suggestions, logic_results); this file holds the state they share, the parameter node, the
classes, and the worker every long job runs on. It uses only MRML (slicer-core), never Qt or `slicer.app`, so it
runs against a real MRML scene in CI. All torch work runs on one persistent worker thread (SemSegLib.worker); arrays
are copied out of MRML on the calling (main) thread before a job starts, and results are written back on the main
thread when the job is polled, because MRML is not thread-safe.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from pathlib import Path

import slicer
from SemSegLib import kept_strokes, warm_up
from SemSegLib.classes import ClassInfo, read_classes_csv, write_classes_csv
from SemSegLib.errors import InputError
from SemSegLib.task import SemSegEvent, SemSegTask
from SemSegLib.worker import Job, Worker

from SemSegMRML import parameters, segment_labels
from SemSegMRML.accepted import AcceptedPredictions
from SemSegMRML.logic_labels import LabelLogic
from SemSegMRML.logic_models import ModelLogic
from SemSegMRML.logic_prediction import PredictionLogic
from SemSegMRML.logic_results import ResultLogic
from SemSegMRML.logic_stacks import StackLogic
from SemSegMRML.logic_suggestions import SuggestionLogic
from SemSegMRML.logic_training import TrainingLogic
from SemSegMRML.parameters import ROLE_LABELS, ROLE_VOLUME
from SemSegMRML.stack_nodes import ROLE_PREDICTION

try:  # in the Slicer application
    from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
except ImportError:  # slicer-core (MRML without Qt, as in CI): the Logic needs no base
    ScriptedLoadableModuleLogic = object


class SemSegLogic(StackLogic, LabelLogic, TrainingLogic, ModelLogic, PredictionLogic, SuggestionLogic, ResultLogic,
                  ScriptedLoadableModuleLogic):
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
        # The last evaluation's scores of the slices without strokes and of those with ("without_strokes",
        # "with_strokes"; a group with no slice left out), when it was given the label segmentation.
        self.lastEvaluationByStrokes: dict = {}
        self.lastRestoreNote = ""  # what the last restored model replaced (restoreModelFromParameterNode)
        self.lastLoadNote = ""  # what the last loaded stack's file holds that was not loaded (its other series)
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
        # (`heldLabelsKey`): reading them back from Slicer took 1.2-1.5 s for 100 slices of 1024 x 1024 on the main
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
        # Volume ID -> the key (`heldLabelsKey`) of the label segmentation whose labels its correction baseline holds,
        # with that node's ID and its pixels' modified time: while neither changed, the strokes are read from the
        # baseline, which the scene keeps anyway, instead of from the segments (read after a prediction for its
        # baseline and again for the suggestions: 0.016 s against 0.25 s for 100 slices of 1024 x 1024 labeled all
        # over, the same for a few strokes).
        self._baselineOf: dict[str, tuple] = {}
        self._sceneCloses = 0  # a stack whose loading began before the scene closed is not put into the next one
        # A weak reference: a lambda holding the Logic would tie the scene and the Logic in a cycle that only the
        # garbage collector frees, on whichever thread it runs (the training thread too), as the scene dies.
        forget = weakref.WeakMethod(self._forgetScene)
        tag = self.scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent,
                                     lambda caller, event: forget() is not None and forget()())
        # ...and the observer goes with the Logic. A scene freed by the garbage collector together with its Logic (a
        # cycle holding both) called it from its destructor after the collector had cleared it: a segmentation fault.
        weakref.finalize(self, self.scene.RemoveObserver, tag)

    def _forgetScene(self) -> None:
        self._sceneCloses += 1
        self._accepted.clear()
        self._strokesBackups.clear()
        self._hold(None, None)
        self._baselineOf.clear()

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
                           eventCallback=None, imports=False)

    def _inThisScene(self, finish: Callable[[object], object]) -> Callable[[object], object]:
        """`finish` for a task's end that is not run (the result is None) when the job gave None (it stopped) or the
        scene closed since the task began: what was worked out for the old scene's nodes goes into no node."""
        closes = self._sceneCloses
        return lambda result: None if result is None or self._sceneCloses != closes else finish(result)

    @classmethod
    def worker(cls) -> Worker:
        if cls._worker is None or not cls._worker.alive:
            cls._worker = Worker()
        return cls._worker

    def _start(self, name: str, function, describe, finish, waitForCompletion: bool, eventCallback, ended=None,
               imports: bool = True):
        """A task running `function(job)` on the worker. One that `imports` torch and the engine first waits on the
        worker for the imports a stack's loading started (SemSegLib.warm_up); a task that only reads files does not."""

        def run(job: Job):
            warm_up.wait()
            return function(job)

        task = SemSegTask(self.worker().submit(name, run if imports else function), describe, finish, ended)
        if waitForCompletion:
            task.wait(eventCallback)
        return task


class _ReadingStopped(Exception):
    """Raised by a reader's progress callback to stop it when the person cancelled (`SemSegLogic._startReading`)."""
