"""SemSegLogic against Slicer's real data model (slicer-core): predictions: the whole loop, slices written as they
come, held labels, cancelled predictions.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from painted_scene import FAST, paint_square, sample_scene  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack  # noqa: E402
from SemSegMRML import arrays, segment_labels, stack_nodes  # noqa: E402


def test_a_prediction_s_first_voxels_are_made_by_the_job_that_predicts_into_them(tmp_path, logic, monkeypatch):
    """Filling the uncertainty volume of 1000 slices of 1024 x 1024 (4 GB of floats) took 3-11 s, the prediction
    segments' labelmap 0.7-4 s: the training that predicts its slice, or the first prediction, makes the first on
    the worker; a prediction of slices its segments do not hold makes the second there; later jobs make none."""
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    made = []
    realZeros = arrays.zero_image_data
    monkeypatch.setattr(arrays, "zero_image_data",
                        lambda shape, dtype: made.append((threading.current_thread().name, np.dtype(dtype).name))
                        or realZeros(shape, dtype))
    logic.train(volume, seg, iterations=2, **FAST)  # no slice predicted: no uncertainty volume
    assert made == [] and volume.GetNodeReference("SemSegUncertainty") is None
    logic.train(volume, seg, iterations=2, previewSlice=2, **FAST)
    assert made == [("SemSegWorker", "float32")]
    uncertainty = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))
    assert uncertainty[2].any() and not uncertainty[[0, 1, 3]].any()
    # Its slice went into the prediction's segments alone; the next prediction's slices, with it, into all of them.
    segments = logic.predictionSegmentation(volume).GetSegmentation()
    assert segments.GetLayerDataObject(0).GetDimensions() == (96, 96, 1)
    logic.predict(volume, [0, 1])
    assert made[1:] == [("SemSegWorker", "uint8")] and not uncertainty[3].any()
    assert uncertainty[[0, 1]].any(axis=(1, 2)).all()
    layer = segments.GetLayerDataObject(0)
    assert layer.GetDimensions() == (96, 96, 4) and logic.predictedSlices(volume) == [0, 1, 2]
    logic.predict(volume, [3, 1])  # into the labelmap the segments hold
    assert made[2:] == [] and segments.GetLayerDataObject(0) is layer
    logic.scene.RemoveNode(logic.uncertaintyVolume(volume))  # the person deleted it: the next prediction makes one
    logic.predict(volume, 3)
    assert made[2:] == [("SemSegWorker", "float32")]
    again = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))
    assert again[3].any() and not again[:3].any()


def test_train_predict_accept_evaluate_export(tmp_path, logic, scene):
    folder, volume, seg, labels, reference = sample_scene(tmp_path, logic)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), labels)
    events = []
    task = logic.train(volume, seg, iterations=60, eventCallback=events.append, **FAST)
    assert task.finished and task.result.iterations == 60
    assert any(e.kind == "progress" for e in events) and events[-1].kind == "done"
    assert logic.model.history[-1]["labeled_pixels"] == {
        logic.imageNames(volume)[k]: int((labels[k] > 0).sum()) for k in (0, 2)}
    assert Path(logic.getParameterNode().GetParameter("ModelPath")).is_file()  # autosaved
    assert logic.trainingSummary(task.result).startswith(f"Trained 60 iterations in {task.result.seconds:.0f} s on ")

    logic.predict(volume, "all", labelSegmentation=seg)
    prediction = logic.predictionSegmentation(volume, create=False)
    assert prediction.GetName() == "SemSeg prediction"
    ps = prediction.GetSegmentation()
    assert [ps.GetNthSegment(i).GetName() for i in range(3)] == [c.name for c in SAMPLE_CLASSES]
    predicted = logic.labelsFromSegmentation(prediction, volume)
    assert predicted.shape == (4, 96, 96) and predicted.min() >= 1  # every pixel of every slice labeled
    uncertainty = logic.uncertaintyVolume(volume)
    assert slicer.util.arrayFromVolume(uncertainty).shape == (4, 96, 96)
    for node in (uncertainty,):
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(a)
        node.GetIJKToRASMatrix(b)
        assert all(a.GetElement(i, j) == b.GetElement(i, j) for i in range(4) for j in range(4))
    u = slicer.util.arrayFromVolume(uncertainty)
    assert 0 <= u.min() and u.max() <= 1 and u.max() > 0

    # Accept on slice 0: prediction fills the unpainted pixels, every stroke stays as painted.
    added = logic.acceptPrediction(volume, seg, 0)
    after = logic.labelsFromSegmentation(seg, volume)
    assert added == int((labels[0] == 0).sum())
    assert np.array_equal(after[0][labels[0] > 0], labels[0][labels[0] > 0])
    assert np.array_equal(after[0][labels[0] == 0], predicted[0][labels[0] == 0])
    assert np.array_equal(after[1:], labels[1:])

    # A correction painted after accepting is tracked for the next round.
    corrected = after.copy()
    corrected[0, 10:14, 10:14] = 3 if corrected[0, 10, 10] != 3 else 1
    logic.setLabelsToSegmentation(corrected, seg, volume)
    mask = logic.correctionMask(volume, corrected)
    assert mask.sum() == int((corrected != after).sum()) > 0
    # The accepted slice is fully labeled: the next round's loss weighs the classes, the strokes' did not.
    assert logic.model.history[-1]["class_weights"] is None
    logic.train(volume, seg, iterations=2, **FAST)
    assert len(logic.model.history) == 2 and logic.model.history[-1]["class_weights"] is not None

    metrics = logic.evaluate(volume, str(folder / "reference"))
    table = scene.GetFirstNodeByName("SemSeg metrics")
    assert table.GetNumberOfRows() == 4 and table.GetCellText(1, 0) == "cell"
    assert float(table.GetCellText(3, 1)) == pytest.approx(metrics.mean_iou, abs=1e-6)
    chart = scene.GetFirstNodeByName("SemSeg IoU chart")
    assert chart is not None and chart.GetNumberOfPlotSeriesNodes() == 2
    # A reference value beyond the panel's classes would drop out of every score unseen: refused, named.
    (tmp_path / "reference4").mkdir()
    names = logic.imageNames(volume)
    for k, name in enumerate(names):
        tifffile.imwrite(tmp_path / "reference4" / f"{name}.tif", (reference[k] + (k == 1)).astype(np.uint8))
    with pytest.raises(InputError, match=f"label value 4 found in {names[1]}, but there are only 3 classes "
                                         r"\(the classes in the panel\)"):
        logic.evaluate(volume, str(tmp_path / "reference4"))

    written = logic.export(volume, seg, str(tmp_path / "results")).result
    final = logic.finalLabels(volume, seg)
    names = logic.imageNames(volume)
    for k, name in enumerate(names):
        assert np.array_equal(tifffile.imread(Path(written["labels"]) / f"{name}.tif"), final[k])
    import nrrd

    data, header = nrrd.read(written["nrrd"], index_order="C")
    assert np.array_equal(data, final)
    assert sorted(p.name for p in Path(written["strokes"]).iterdir()) == sorted(
        f"{names[k]}.tif" for k in range(4) if corrected[k].any())
    from SemSegLib.model_file import SemSegModel

    assert SemSegModel.load(written["model"]).classes == SAMPLE_CLASSES
    shown = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))
    for k, name in enumerate(names):  # every slice was predicted: each has its uncertainty map as shown
        saved = tifffile.imread(Path(written["uncertainty"]) / f"{name}.tif")
        assert saved.dtype == np.float32 and np.array_equal(saved, shown[k])
    with pytest.raises(InputError, match="input folder"):
        logic.export(volume, seg, str(folder / "images"))
    # Exporting again replaces the export's own files; a slice no longer painted loses its old strokes file.
    unpainted = corrected.copy()
    unpainted[2] = 0
    logic.setLabelsToSegmentation(unpainted, seg, volume)
    logic.export(volume, seg, str(tmp_path / "results"))
    assert not (Path(written["strokes"]) / f"{names[2]}.tif").exists()
    assert (Path(written["strokes"]) / f"{names[0]}.tif").exists()
    # A folder holding the person's own label maps under the images' names is refused, and they stay.
    (tmp_path / "mine" / "labels").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "mine" / "labels" / f"{names[1]}.tif", reference[1])
    with pytest.raises(InputError, match=rf"labels: {names[1]}.tif already exist\(s\) and SemSeg export did not "
                                         "write them.*Choose another results folder"):
        logic.export(volume, seg, str(tmp_path / "mine"))
    assert np.array_equal(tifffile.imread(tmp_path / "mine" / "labels" / f"{names[1]}.tif"), reference[1])
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "model.pt").write_bytes(b"a model of the person's")
    with pytest.raises(InputError, match="models: model.pt already exist\\(s\\) and no SemSeg export wrote them"):
        logic.export(volume, seg, str(tmp_path / "models"))
    assert (tmp_path / "models" / "model.pt").read_bytes() == b"a model of the person's"


def test_a_prediction_starts_at_the_slice_in_view_and_shows_slices_as_they_come(tmp_path, logic):
    from SemSegLib.prediction import predict_image

    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    seen = []

    def watch(event):
        if event.kind == "progress":  # what the nodes hold when the panel hears of each slice
            seen.append((event.data.done, event.data.shown, logic.predictedSlices(volume)))

    task = logic.predict(volume, "all", labelSegmentation=seg, firstSlice=2, showSeconds=0, eventCallback=watch)
    assert seen[0] == (1, 1, [2])  # the slice in view first, written before the next one is predicted
    assert [done for done, _, _ in seen] == [1, 2, 3, 4]
    assert all(len(predicted) == shown for _, shown, predicted in seen)
    assert list(task.result) == [2, 0, 1, 3]
    # Written in batches, the maps are those of the model, slice by slice.
    labels = logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume)
    uncertainty = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))
    images = logic.imagesFromVolume(volume)
    for k in range(4):
        expected = predict_image(logic.model, images[k])
        assert np.array_equal(labels[k], expected.labels) and np.allclose(uncertainty[k], expected.uncertainty)
    # Without showSeconds nothing is written before the end; a first slice outside the scope changes nothing.
    seen.clear()
    task = logic.predict(volume, [0, 3], firstSlice=2, eventCallback=watch)
    assert list(task.result) == [0, 3] and [shown for _, shown, _ in seen] == [0, 0]
    # What changes the prediction's segments while slices are written stays: the next write does not put back what
    # the segmentation held before. Here slice 4 is emptied by an import after the first slice is written, then 25
    # of its pixels are painted as a Segment Editor effect paints after the second.
    def editTheLastSlice(event):
        prediction = logic.predictionSegmentation(volume)
        if event.kind == "progress" and event.data.done == 1:
            edited = logic.labelsFromSegmentation(prediction, volume)
            edited[3] = 0
            logic.setLabelsToSegmentation(edited, prediction, volume)
        if event.kind == "progress" and event.data.done == 2:
            paint_square(volume, prediction, "cell", 3)

    logic.predict(volume, [0, 1, 2], showSeconds=0, eventCallback=editTheLastSlice)
    prediction = logic.predictionSegmentation(volume)
    final = logic.labelsFromSegmentation(prediction, volume)
    assert (final[3] > 0).sum() == 25 and final[3, :5, :5].all()
    # Read again as Slicer gives them, a copy each time; with two classes' segments renamed, read anew.
    read = segment_labels.labels_from_segmentation(logic.scene, prediction, volume, logic.classes())
    assert np.array_equal(final, read)
    final[:] = 0
    again = logic.labelsFromSegmentation(prediction, volume)
    assert again[3, :5, :5].all()
    segment_labels.rename_segments(prediction, {"cell": "nucleus", "nucleus": "cell"})
    swapped = logic.labelsFromSegmentation(prediction, volume)
    assert np.array_equal(swapped, np.choose(again, [0, 1, 3, 2]).astype(again.dtype))


def test_a_prediction_s_slices_go_into_the_held_labels_unless_a_job_may_read_them(tmp_path, logic):
    """Each batch of a prediction copied the labels held (1 GB for 1000 slices of 1024 x 1024, 0.15-0.2 s of the main
    thread), so that a job reading them would never see them change; now only after a job took them."""
    folder, volume, seg, _, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, [0])
    held = logic._heldPrediction[1]
    logic.predict(volume, [1])
    assert logic._heldPrediction[1] is held and held[1].any()  # written where they are
    for lend in (lambda: logic.evaluate(volume, str(folder / "reference")),
                 lambda: logic.export(volume, seg, str(tmp_path / "results"))):
        lend()
        lent = logic._heldPrediction[1]
        before = lent.copy()
        logic.predict(volume, [3, 2])
        assert logic._heldPrediction[1] is not lent and np.array_equal(lent, before)
        again = logic._heldPrediction[1]
        assert again[[2, 3]].any(axis=(1, 2)).all()
        logic.predict(volume, [0])  # the copy is nobody else's
        assert logic._heldPrediction[1] is again
    assert np.array_equal(logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume),
                          segment_labels.labels_from_segmentation(logic.scene, logic.predictionSegmentation(volume),
                                                                  volume, logic.classes()))


def test_a_cancelled_prediction_keeps_the_slices_it_finished(tmp_path, logic, monkeypatch):
    from SemSegLib import prediction

    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    predictImage, cancelled, secondStarted, started = prediction.predict_image, threading.Event(), threading.Event(), []

    def secondWaitsForTheCancel(model, image, *args, **kwargs):
        # The worker's second slice, once started, waits until the panel has heard of the first and pressed Cancel:
        # then the prediction stops after it, whatever the machine's speed.
        started.append(image)
        if len(started) == 2:
            secondStarted.set()
            assert cancelled.wait(60)
        return predictImage(model, image, *args, **kwargs)

    monkeypatch.setattr(prediction, "predict_image", secondWaitsForTheCancel)
    task = logic.predict(volume, "all", labelSegmentation=seg, firstSlice=2, showSeconds=3, waitForCompletion=False)
    kinds = []

    def cancelAfterTheFirst(event):
        kinds.append(event.kind)
        if event.kind == "progress" and event.data.done == 1:
            # Not before the worker is in the second slice: a Cancel it sees between two slices stops it there.
            assert secondStarted.wait(60)
            task.cancel()
            cancelled.set()

    task.wait(cancelAfterTheFirst)
    assert kinds == ["progress", "progress", "cancelled"] and len(started) == 2
    # Slice 3 was written at once, slice 1 when the prediction ended; both are kept, as the model predicts them.
    assert list(task.result) == [2, 0] and logic.predictedSlices(volume) == [0, 2]
    labels = logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume)
    uncertainty = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))
    images = logic.imagesFromVolume(volume)
    for k in (0, 2):
        expected = predictImage(logic.model, images[k])
        assert np.array_equal(labels[k], expected.labels) and np.allclose(uncertainty[k], expected.uncertainty)
    assert not labels[[1, 3]].any() and not uncertainty[[1, 3]].any()


def test_a_scene_from_before_the_volume_references_keeps_its_prediction(tmp_path, logic, scene):
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, "all")
    # As session 58 saved it: the prediction referenced from the parameter node, not from the volume.
    prediction = logic.predictionSegmentation(volume, create=False)
    volume.SetNodeReferenceID(stack_nodes.ROLE_PREDICTION, None)
    scene.GetSingletonNode("SemSeg", "vtkMRMLScriptedModuleNode").SetNodeReferenceID("PredictionSegmentation",
                                                                                      prediction.GetID())
    logic.loadStack(str(write_sample_stack(tmp_path / "second", num_images=4, size=(96, 96), seed=4) / "images"))
    assert logic.predictionSegmentation(volume, create=False) is prediction  # moved to its volume on first use
    assert logic.getParameterNode().GetNodeReference("PredictionSegmentation") is None
