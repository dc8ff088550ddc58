"""Training on the painted strokes, the slice a training shows while it learns, and going back to the models
trainings replaced.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from SemSegLib import kept_strokes
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from SemSegLib.task import SemSegEvent, SemSegTask
from SemSegLib.worker import Job

from SemSegMRML import segment_labels, stack_nodes
from SemSegMRML.logic_labels import heldLabelsKey
from SemSegMRML.logic_prediction import PredictionVoxels
from SemSegMRML.stack_nodes import PREVIEW_NAME, ROLE_PREVIEW

TRAININGS_KEPT = 5  # models replaced by trainings that undoTraining can go back to


class TrainingLogic:
    """Training (a part of SemSegLogic)."""

    def train(self, volume, labelSegmentation, seconds: float | None = None, iterations: int | None = None,
              continueTraining: bool = True, correctionWeight: float = 1.0, device: str = "auto",
              seed: int = 0, previewSlice: int | None = None, previewSeconds: float = 10.0,
              waitForCompletion: bool = True, eventCallback: Callable[[SemSegEvent], None] | None = None,
              **trainOptions) -> SemSegTask:
        """Train on the painted strokes of all slices that have any. Returns the task (finished if waiting).

        `previewSlice`: a slice shown while the training runs, in the 'SemSeg training preview' segmentation
        (the model with its network so far, train_preview.PreviewModel, every `previewSeconds`; a "preview" event
        each time), and predicted with the trained model when the training ends (as `predict` would). The preview
        is removed when it ends.
        """
        classes = self.classes()
        images = self._imagesToWorkOn(volume)[0]
        labels = self.labelsFromSegmentation(labelSegmentation, volume, classes)
        labelsKey = heldLabelsKey(labelSegmentation, volume, classes)
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
        others = segment_labels.other_segments(labelSegmentation, classes)
        if others:  # a segment added in the Segment Editor, not in the class table: its strokes are not read
            note = "; ".join(filter(None, [note, f"not trained on: {', '.join(others)} (not a class: add "
                                           f"{'it' if len(others) == 1 else 'them'} to the class table to train "
                                           f"on {'its' if len(others) == 1 else 'their'} strokes)"]))
        predicted = {}
        backup, backupError = self.strokesBackupFolder(volume), []
        voxels = PredictionVoxels(volume if previewSlice is not None else None)

        def run(job: Job):
            try:  # first, so that the strokes are safe whatever happens to the training
                kept_strokes.keep_strokes(backup, images, names, labels, classes)
            except OSError as e:  # a full or read-only temporary folder must not stop the training
                backupError.append(f"the strokes could not be kept in {backup} ({e})")
            # Imported here, on the worker: the first training of a Slicer session imports torch and the engine,
            # which held Slicer's GUI 1.9-2.4 s on this machine's CPU build of torch, longer with a CUDA build
            # (most of it is usually done by then: a stack's loading starts the imports, SemSegLib.warm_up).
            from SemSegLib.prediction import PredictConfig, predict_image
            from SemSegLib.training import TrainConfig, TrainPreview, train

            config = TrainConfig(seed=seed, device=device, correction_weight=correctionWeight, **trainOptions)
            if iterations is not None:  # 0 or less is refused by the engine, not replaced by the default
                config.iterations, config.seconds = int(iterations), None
            elif seconds is not None:
                config.seconds = float(seconds)
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
                # Iteration 0 comes before any step: a first training's forest of the strokes (TrainPreview).
                shows = (f"the network after {p.iteration} iterations" if p.iteration
                         else "a random forest of the strokes while the network starts")
                return SemSegEvent("preview", f"slice {previewSlice + 1} shows {shows}", None, p)
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


@dataclass
class _PreviewLabels:
    """What the worker reports when a training shows its slice (TrainPreview)."""

    iteration: int
    labels: np.ndarray  # (H, W)
