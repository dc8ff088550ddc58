"""Predicting slices into the prediction segmentation and the uncertainty volume, and the prediction's labels the
Logic holds between writes.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import slicer
import vtk
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from SemSegLib.stack_io import label_dtype
from SemSegLib.task import PacedWrites, SemSegEvent, SemSegTask
from SemSegLib.worker import Job

from SemSegMRML import arrays, segment_labels, stack_nodes
from SemSegMRML.logic_labels import heldLabelsKey


class PredictionLogic:
    """Predicting slices (a part of SemSegLogic)."""

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
        # Slices predicted before whose look is not known (a scene opened again) are described by the where-to-paint
        # task (`startSuggesting`), which the panel starts when a prediction ends.
        known = self._cachedSliceDescriptors(volume) or {}
        images, positions = self._imagesToWorkOn(volume, indices)  # images[positions[j]]: slice indices[j]
        sliceAt = dict(zip(positions, indices))
        model = self.model
        config = PredictConfig(tta=tta, device=device)
        imagesTime = volume.GetImageData().GetMTime()
        described, seconds = {}, {}
        voxels = PredictionVoxels(volume, self.predictionSegmentation(volume, create=False), self.classes(), indices)

        def run(job: Job):
            voxels.make()
            # Each slice goes to the main thread as soon as it is predicted: the worker keeps none of them. What the
            # slice looks like (for where to paint) is described after it, not after the last slice: 0.3 s per
            # image of 1024 x 1024, which at the end left a prediction of 100 such slices at 100% for 30 s.
            done = []
            for j, pred in predict_stack(model, images, config, positions, should_stop=job.should_stop):
                k = sliceAt[j]
                job.report(_PredictedSlice(k, pred.labels, pred.uncertainty, pred.seconds))
                done.append(k)
                if k not in known:
                    described[k] = image_descriptors(images, [j], model.normalization)[j]
            return done

        def write(batch: dict) -> None:  # main thread
            if stack_nodes.in_scene(self.scene, volume):
                self._writePrediction(volume, batch, model, voxels)

        writes = PacedWrites(write, showSeconds)

        def describe(p: _PredictedSlice) -> SemSegEvent:
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
                self._setBaseline(volume, heldLabelsKey(labelSegmentation, volume, classes),
                                  lambda: self.labelsFromSegmentation(labelSegmentation, volume, classes))
            return result

        return self._start("predict", run, describe, finish, waitForCompletion, eventCallback)

    def _writePrediction(self, volume, result: dict, model, voxels: PredictionVoxels | None = None) -> None:
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
        if held is not None and not self._heldLent and held[0] == heldLabelsKey(segmentation, volume, classes):
            labels = held[1]
        else:
            labels = self.labelsFromSegmentation(segmentation, volume, classes)
        self._hold(None, None)  # until they are the segments' again
        for k, (sliceLabels, _) in result.items():
            labels[k] = sliceLabels
        indices = sorted(result)
        self.setLabelsToSegmentation(labels[indices], segmentation, volume, classes, slices=indices,
                                     takeVoxels=voxels.takeLabels if voxels is not None else None)
        self._hold(heldLabelsKey(segmentation, volume, classes), labels)
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
                         f"({slicesText(unpredicted)}): {'its label map' if one else 'their label maps'} will hold "
                         "only your strokes, 0 (unlabeled) elsewhere.")
        if earlier:
            parts.append(f"{len(earlier)} {'slice was' if len(earlier) == 1 else 'slices were'} predicted by an "
                         f"earlier model ({slicesText(earlier)}).")
        if parts:
            parts.append("Predict all slices first to label every pixel with the current model.")
        return " ".join(parts)

    def predictedSlices(self, volume) -> list[int]:
        labels = self._predictedLabels(volume, copy=False)
        return [] if labels is None else [k for k in range(labels.shape[0]) if labels[k].any()]

    def _predictedLabels(self, volume, copy: bool = True, lent: bool = False) -> np.ndarray | None:
        """The prediction's labels, None if there is none. They are held (`_heldPrediction`) until the segments change,
        so that a scene opened again reads its prediction once (2-3 s for 1000 slices of 1024 x 1024). `copy=False`:
        the held labels themselves, to be read only, on the main thread there and then; `lent`: also on the worker,
        and as long as the job needs them: the next write then replaces them, and does not change them."""
        prediction = self.predictionSegmentation(volume, create=False)
        if prediction is None:
            return None
        classes = self.classes()
        key = heldLabelsKey(prediction, volume, classes)
        if self._heldPrediction is None or self._heldPrediction[0] != key:
            self._hold(key, segment_labels.labels_from_segmentation(self.scene, prediction, volume, classes))
        labels = self._heldPrediction[1]
        self._heldLent = self._heldLent or lent
        return labels.copy() if copy else labels

    def _hold(self, key: tuple | None, labels: np.ndarray | None) -> None:
        self._heldPrediction = None if labels is None else (key, labels)
        self._heldLent = False


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


class PredictionVoxels:
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


def slicesText(indices: list[int], shown: int = 8) -> str:
    """'slices 1, 4, 9' (1-based, as the panel numbers them), at most `shown` of them."""
    listed = ", ".join(str(k + 1) for k in indices[:shown])
    return f"slice{'s' if len(indices) > 1 else ''} {listed}{' ...' if len(indices) > shown else ''}"
