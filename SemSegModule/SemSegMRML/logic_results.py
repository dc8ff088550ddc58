"""What the person takes away: the prediction scored against reference maps, labels and model exported, a
folder of images segmented on disk.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import slicer
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError
from SemSegLib.shared_slices import SharedSlices
from SemSegLib.stack_io import label_dtype
from SemSegLib.task import SemSegEvent, SemSegTask
from SemSegLib.worker import Job

from SemSegMRML import arrays, results, segment_labels, stack_nodes
from SemSegMRML.arrays import SOURCE_ATTRIBUTE
from SemSegMRML.logic_labels import shapeOnly
from SemSegMRML.logic_prediction import slicesText


class ResultLogic:
    """What the person takes away (a part of SemSegLogic)."""

    def evaluate(self, volume, referencePath: str, tableNode=None, labelSegmentation=None):
        """The prediction against reference label maps (a folder of files named as the images, or a label stack
        file) on the predicted slices that have one: per-class IoU / Dice into a table; returns the metrics. Waits
        for `startEvaluating`."""
        return self.startEvaluating(volume, referencePath, tableNode, labelSegmentation).wait()

    def startEvaluating(self, volume, referencePath: str, tableNode=None, labelSegmentation=None) -> SemSegTask:
        """`evaluate` with the reference read and scored on the worker: poll the task; its result is the metrics
        (None if cancelled or the scene closed meanwhile). Why: 200 slices of 1024 x 1024 held Slicer's GUI 22 s.
        With `labelSegmentation` (the person's strokes) the slices without strokes are also scored apart from the
        painted ones (`lastEvaluationByStrokes`, and the note): a painted slice's score says how well the model
        gives back what it was shown, the others' what the rest of the stack gets."""
        from SemSegLib.metrics import Metrics, evaluate

        names = self.imageNames(volume)
        predicted = self.predictedSlices(volume)
        if not predicted:
            raise InputError("no prediction yet: predict, then evaluate.")
        classes = self.classes()
        shape = arrays.slice_shape(volume)[1:]
        prediction = self._predictedLabels(volume, copy=False, lent=True)
        earlier = set(self.unlabeledByCurrentModel(volume)[1])
        painted = set()
        if labelSegmentation is not None:
            strokes = self.labelsFromSegmentation(labelSegmentation, volume)
            painted = {int(k) for k in segment_labels.painted_slices(strokes)}
            del strokes  # a whole stack's copy: not kept while the worker reads
        classNames = [c.name for c in classes]

        def readAndScore(onImage):  # worker
            reference, note = referenceLabels(referencePath, names, shape, classes, predicted, onImage)
            have = [j for j in range(len(predicted)) if reference[j].any()]
            if not have:
                raise InputError(f"{referencePath}: no reference label file matches a predicted slice "
                                 f"(expected names like {names[predicted[0]]}.tif).")
            scored = [predicted[j] for j in have]
            if labelSegmentation is None:
                metrics = evaluate([prediction[k] for k in scored], [reference[j] for j in have], classNames)
                return metrics, scored, note, {}
            byStrokes = {}
            for key, inGroup in (("without_strokes", False), ("with_strokes", True)):
                group = [j for j in have if (predicted[j] in painted) == inGroup]
                if group:
                    byStrokes[key] = evaluate([prediction[predicted[j]] for j in group],
                                              [reference[j] for j in group], classNames)
            # The slices scored are the two groups': their counts add up (each slice counted once).
            metrics = Metrics(sum(m.confusion for m in byStrokes.values()), classNames)
            return metrics, scored, note, byStrokes

        def finish(out):
            metrics, scored, note, byStrokes = out
            self.metricsToTable(metrics, tableNode)
            self.lastEvaluationByStrokes = byStrokes
            byEarlier = [k for k in scored if k in earlier]
            self.lastEvaluationNote = "; ".join(text for text in [
                _strokesNote(scored, painted, byStrokes) if labelSegmentation is not None else "",
                f"{len(byEarlier)} of the {len(scored)} slices scored were predicted by an earlier model "
                f"({slicesText(byEarlier)})" if byEarlier else "", note] if text)
            return metrics

        return self._startReading("evaluate", readAndScore, "reference map(s)", finish)

    def metricsToTable(self, metrics, tableNode=None):
        """Per-class IoU / Dice into a table node ('SemSeg metrics' unless given) with a bar chart over it."""
        return results.metrics_to_table(self.scene, metrics, tableNode)

    def finalLabels(self, volume, labelSegmentation) -> np.ndarray:
        """Prediction where predicted, painted labels win everywhere they exist."""
        return _paintedWin(self.labelsFromSegmentation(labelSegmentation, volume), self._predictedLabels(volume))

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
            # Both are of that type already: no stack-sized copies (300 slices of 1024 x 1024: peak 1.28 -> 0.97 GB).
            final = _paintedWin(strokes, predicted).astype(dtype, copy=False)
            return write_results(folder, names, final, strokes.astype(dtype, copy=False), classes, model, spacing,
                                 protected, uncertainty)

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
        task's result: {"folder" (or the file), "images" (how many were written), "seconds_per_image", "note" (image
        series the files hold that were left out, `ImageStack.note`; '' if none)}; a cancelled one keeps the maps it
        wrote into a folder, and writes no file."""
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
                    "seconds_per_image": float(np.mean(seconds)) if seconds else 0.0, "note": plan.stack.note}

        def describe(p) -> SemSegEvent:
            done, total, seconds = p
            return SemSegEvent("progress", f"image {done} of {total} ({seconds:.2f} s)", done / total, p)

        return self._start("predict folder", run, describe, lambda result: result, waitForCompletion, eventCallback)


def _strokesNote(scored: list[int], painted: set[int], byStrokes: dict) -> str:
    """What the scores are of, when some scored slices hold the person's strokes ('' when none does)."""
    shown = [k for k in scored if k in painted]
    if not shown:
        return ""
    if "without_strokes" not in byStrokes:
        return (f"every slice scored holds strokes ({slicesText(shown)}), so these scores include what the model was "
                "shown: score slices you did not paint to see what the rest of the stack gets")
    unpainted = len(scored) - len(shown)
    return (f"mean IoU {byStrokes['without_strokes'].mean_iou:.3f} on the {unpainted} "
            f"slice{'s' if unpainted > 1 else ''} without strokes, {byStrokes['with_strokes'].mean_iou:.3f} on the "
            f"{len(shown)} with ({slicesText(shown)})")


def _paintedWin(painted: np.ndarray, predicted: np.ndarray | None) -> np.ndarray:
    """The labels a person gets: the prediction where there is one, what they painted wherever they painted."""
    return painted if predicted is None else np.where(painted > 0, painted, predicted)


def referenceLabels(path: str, names: list[str], shape: tuple[int, int], classes: list[ClassInfo],
                    indices: list[int] | None = None, onImage: Callable[[int, int], None] | None = None
                    ) -> tuple[np.ndarray, str]:
    """Reference label maps for the volume's images `indices` (default: all), in their order, matched by file name;
    missing files are all-zero; and the series left out of files that hold several (`LabelSet.note`). A value
    beyond `classes` (the panel's) is refused: it would drop out of every score unseen. Of a folder only the files
    of `indices` are read. No MRML: safe on the worker thread."""
    from SemSegLib.stack_io import read_labels

    indices = list(range(len(names))) if indices is None else list(indices)
    byFile = Path(path).is_dir()  # a label stack file has a page per image: read whole, then picked from
    read = read_labels(path, shapeOnly([names[k] for k in indices] if byFile else names, shape, "the loaded images"),
                       classes=classes, classes_from="the classes in the panel",
                       advice="Use reference maps with the panel's class values, or edit the classes.",
                       on_image=onImage)
    return (read.labels if byFile else read.labels[indices]), read.note
