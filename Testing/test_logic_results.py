"""SemSegLogic against Slicer's real data model (slicer-core): evaluation, export and a folder segmented on disk."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import tifffile

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from painted_scene import FAST, paint_square, sample_scene  # noqa: E402
from SemSegLib.classes import ClassInfo, read_classes_csv, write_classes_csv  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegLib.sample_data import SAMPLE_CLASSES  # noqa: E402
from SemSegLib.stack_io import read_stack  # noqa: E402


def test_an_evaluation_reads_and_scores_the_predicted_slices_references_on_the_worker(tmp_path, logic, scene,
                                                                                      monkeypatch):
    """The panel's Evaluate held Slicer's GUI 22 s for 200 slices of 1024 x 1024: the reference maps are read (of a
    folder, only the predicted slices' files) and scored on the worker, and the table written when it ends."""
    from SemSegLib import stack_io
    from SemSegLib.metrics import evaluate

    folder, volume, seg, _, reference = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, [3, 1])
    names = logic.imageNames(volume)
    reads = []
    realRead = stack_io._read_file
    started, cancelled = threading.Event(), threading.Event()

    def recordRead(path):
        reads.append((threading.current_thread().name, path.stem))
        if not cancelled.is_set():
            started.set()
            assert cancelled.wait(60)
        return realRead(path)

    monkeypatch.setattr(stack_io, "_read_file", recordRead)
    # Cancelled while the first map is read: no table, no note.
    task = logic.startEvaluating(volume, str(folder / "reference"))
    assert started.wait(60)
    task.cancel()
    cancelled.set()
    assert task.wait() is None and scene.GetFirstNodeByName("SemSeg metrics") is None
    reads.clear()
    events = []
    metrics = logic.startEvaluating(volume, str(folder / "reference")).wait(events.append)
    assert reads == [("SemSegWorker", names[1]), ("SemSegWorker", names[3])]
    assert [e.message for e in events] == ["1 of 2 reference map(s) read", "2 of 2 reference map(s) read", "done"]
    predicted = logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume)
    expected = evaluate(predicted[[1, 3]], reference[[1, 3]], [c.name for c in SAMPLE_CLASSES])
    assert metrics.confusion.tolist() == expected.confusion.tolist() and metrics.confusion.sum() == 2 * 96 * 96
    table = scene.GetFirstNodeByName("SemSeg metrics")
    assert float(table.GetCellText(3, 1)) == pytest.approx(metrics.mean_iou, abs=1e-6)
    # A label stack file (a page per image) scores the same slices.
    tifffile.imwrite(tmp_path / "reference.tif", reference.astype(np.uint8), photometric="minisblack")
    assert logic.evaluate(volume, str(tmp_path / "reference.tif")).confusion.tolist() == metrics.confusion.tolist()
    assert logic.lastEvaluationNote == ""
    # One of several series: the first is scored, and the note names the others.
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(reference.astype(np.uint8), photometric="minisblack")
        tif.write(reference[0, :8].astype(np.uint8), photometric="minisblack")
    assert logic.evaluate(volume, str(tmp_path / "two.tif")).confusion.tolist() == metrics.confusion.tolist()
    assert logic.lastEvaluationNote.startswith("two.tif holds 2 label series; SemSeg read the first")


def test_an_evaluation_given_the_strokes_scores_the_unpainted_slices_apart(tmp_path, logic, scene):
    """With the label segmentation, the slices without strokes (what the rest of the stack gets) are scored apart
    from the painted ones, whose scores include what the model was shown; the table keeps every scored slice."""
    from SemSegLib.metrics import evaluate

    folder, volume, seg, _, reference = sample_scene(tmp_path, logic)  # strokes on slices 1 and 3 (0-based 0, 2)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, "all")
    predicted = logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume)
    classNames = [c.name for c in SAMPLE_CLASSES]
    metrics = logic.evaluate(volume, str(folder / "reference"), labelSegmentation=seg)
    assert metrics.confusion.tolist() == evaluate(predicted, reference, classNames).confusion.tolist()
    split = logic.lastEvaluationByStrokes
    for key, slices in (("without_strokes", [1, 3]), ("with_strokes", [0, 2])):
        assert split[key].confusion.tolist() == evaluate(predicted[slices], reference[slices], classNames
                                                         ).confusion.tolist()
    assert logic.lastEvaluationNote == (f"mean IoU {split['without_strokes'].mean_iou:.3f} on the 2 slices without "
                                        f"strokes, {split['with_strokes'].mean_iou:.3f} on the 2 with (slices 1, 3)")
    # Only painted slices scored: said, as their scores include what the model was shown.
    for k in (1, 3):
        paint_square(volume, seg, SAMPLE_CLASSES[0].name, k)
    logic.evaluate(volume, str(folder / "reference"), labelSegmentation=seg)
    assert list(logic.lastEvaluationByStrokes) == ["with_strokes"]
    assert logic.lastEvaluationNote.startswith("every slice scored holds strokes (slices 1, 2, 3, 4)")
    # Without the strokes: no split, as before.
    logic.evaluate(volume, str(folder / "reference"))
    assert logic.lastEvaluationByStrokes == {} and logic.lastEvaluationNote == ""


def test_export_says_which_slices_the_current_model_has_not_labeled(tmp_path, logic, caplog):
    folder, volume, seg, _, _ = sample_scene(tmp_path, logic)
    for budget in (dict(iterations=0), dict(seconds=-1)):  # refused, not replaced by the default budget
        with pytest.raises(InputError, match="budget must be positive"):
            logic.train(volume, seg, **budget, **FAST)
    logic.train(volume, seg, iterations=2, **FAST)
    assert logic.exportWarning(volume).startswith("4 of 4 slices have no prediction (slices 1, 2, 3, 4)")
    with pytest.raises(InputError, match=r"slice index 4 is outside the volume's 4 slices \(0..3\)"):
        logic.predict(volume, [1, 4])
    logic.predict(volume, [0, 1])
    with pytest.raises(InputError, match="slice index -1 is outside"):
        logic.acceptPrediction(volume, seg, -1)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, 1)
    assert logic.unlabeledByCurrentModel(volume) == ([2, 3], [0])
    logic.evaluate(volume, str(folder / "reference"))
    assert logic.lastEvaluationNote == "1 of the 2 slices scored were predicted by an earlier model (slice 1)"
    warning = logic.exportWarning(volume)
    assert "2 of 4 slices have no prediction (slices 3, 4): their label maps will hold only your strokes" in warning
    assert "1 slice was predicted by an earlier model (slice 1)." in warning
    with caplog.at_level(logging.WARNING):
        logic.export(volume, seg, str(tmp_path / "out"))
    assert "no prediction (slices 3, 4)" in caplog.text
    names = logic.imageNames(volume)
    uncertaintyFiles = lambda: sorted(p.name for p in (tmp_path / "out" / "uncertainty").glob("*.tif"))  # noqa: E731
    assert uncertaintyFiles() == [f"{names[k]}.tif" for k in (0, 1)]  # of the predicted slices only
    logic.predict(volume, "all")
    assert logic.unlabeledByCurrentModel(volume) == ([], []) and logic.exportWarning(volume) == ""
    logic.export(volume, seg, str(tmp_path / "out"))
    assert uncertaintyFiles() == sorted(f"{name}.tif" for name in names)
    # Another stack of the same names, not predicted, exported there: no uncertainty map of the first stays.
    _, again, againSeg, _, _ = sample_scene(tmp_path / "again", logic)
    assert logic.imageNames(again) == names
    logic.export(again, againSeg, str(tmp_path / "out"))
    assert uncertaintyFiles() == []
    # Nor are maps of 0 written for the predicted slices of a stack whose uncertainty volume the person deleted.
    logic.scene.RemoveNode(logic.uncertaintyVolume(volume))
    logic.export(volume, seg, str(tmp_path / "out"))
    assert uncertaintyFiles() == [] and logic.predictedSlices(volume) == [0, 1, 2, 3]
    logic.evaluate(volume, str(folder / "reference"))
    assert logic.lastEvaluationNote == ""
    # Asked to continue, a training on other classes starts a new model, and says so.
    assert logic.lastTrainNote == ""
    segments = seg.GetSegmentation()
    segments.GetSegment(segments.GetSegmentIdBySegmentName("cell")).SetName("cells")
    logic.setClasses([ClassInfo(c.value, "cells" if c.name == "cell" else c.name, c.color) for c in SAMPLE_CLASSES])
    logic.train(volume, seg, iterations=1, **FAST)
    assert logic.lastTrainNote == ("a new model, since the current one was trained on the classes background, cell, "
                                   "nucleus")
    assert len(logic.model.history) == 1
    # A segment added in the Segment Editor is not a class: the training says its strokes were not used.
    segments.AddEmptySegment("", "debris", [0.5, 0.5, 0.5])
    logic.train(volume, seg, iterations=1, **FAST)
    assert logic.lastTrainNote == ("not trained on: debris (not a class: add it to the class table to train on its "
                                   "strokes)")
    assert logic.trainingSummary(logic.lastTrainResult).endswith(logic.lastTrainNote)


def test_a_folder_on_disk_is_segmented_with_the_current_model(tmp_path, logic):
    folder, volume, seg, _, _ = sample_scene(tmp_path, logic)
    images, maps = folder / "images", tmp_path / "maps"
    with pytest.raises(InputError, match="no model yet"):
        logic.predictFolder(str(images), str(maps))
    logic.train(volume, seg, iterations=2, **FAST)
    names = logic.imageNames(volume)
    maps.mkdir()
    tifffile.imwrite(maps / f"{names[1]}.tif", np.ones((96, 96), np.uint8))  # labels a person painted, say
    with pytest.raises(InputError, match=rf"{names[1]}\.tif.*move those files elsewhere"):
        logic.predictFolder(str(images), str(maps))
    assert [p.name for p in maps.iterdir()] == [f"{names[1]}.tif"]  # nothing written, nothing replaced
    with pytest.raises(InputError, match="input folder"):
        logic.predictFolder(str(images), str(images))
    (maps / f"{names[1]}.tif").unlink()
    events = []
    task = logic.predictFolder(str(images), str(maps), eventCallback=events.append)
    assert task.result["images"] == 4 and task.result["folder"] == str(maps)
    assert [e.message for e in events if e.kind == "progress"][-1].startswith("image 4 of 4")
    logic.predict(volume, "all")  # the same model on the same images in the scene: the same maps
    predicted = logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume)
    for k, name in enumerate(names):
        assert np.array_equal(tifffile.imread(maps / f"{name}.tif"), predicted[k])
    assert logic.predictFolder(str(images), str(maps)).result["images"] == 4  # its own maps are replaced
    assert read_classes_csv(maps / "classes.csv") == logic.model.classes  # what the values are, as labels are read
    other = tmp_path / "other"
    write_classes_csv(other / "classes.csv", [ClassInfo(1, "a", (1, 1, 1)), ClassInfo(2, "b", (2, 2, 2))])
    with pytest.raises(InputError, match="the label maps there are of the classes a, b"):
        logic.predictFolder(str(images), str(other))
    assert [p.name for p in other.iterdir()] == ["classes.csv"]
    # The panel's *Segment a stack file...*: a multi-page TIFF in, one multi-page label TIFF out.
    tifffile.imwrite(tmp_path / "stack.tif", read_stack(images).images[:, 0], photometric="minisblack")
    task = logic.predictFolder(str(tmp_path / "stack.tif"), str(tmp_path / "stack_labels.tif"))
    assert task.result["images"] == 4 and task.result["folder"] == str(tmp_path / "stack_labels.tif")
    assert np.array_equal(tifffile.imread(tmp_path / "stack_labels.tif"), predicted)
    assert task.result["note"] == ""
    # A stack file of two series (an OME-TIFF's two positions): the first is segmented, and the result says so.
    with tifffile.TiffWriter(tmp_path / "plate.ome.tif", ome=True) as tif:
        for position in range(2):
            tif.write(read_stack(images).images[:, 0] + position, metadata={"axes": "ZYX"})
    task = logic.predictFolder(str(tmp_path / "plate.ome.tif"), str(tmp_path / "plate_labels.tif"))
    assert task.result["images"] == 4 and task.result["note"].startswith("plate.ome.tif holds 2 image series")
    # Fields of different sizes: refused as a stack to paint on, segmented from disk each at its own size.
    fields = tmp_path / "fields"
    fields.mkdir()
    for k, (h, w) in enumerate([(96, 96), (60, 80), (96, 40)]):
        tifffile.imwrite(fields / f"field_{k}.tif", read_stack(images).images[k, 0, :h, :w])
    with pytest.raises(InputError, match=r"same height, width.*the panel's \*Segment a folder of images"):
        logic.loadStack(str(fields))
    assert logic.predictFolder(str(fields), str(tmp_path / "field_maps")).result["images"] == 3
    assert [tifffile.imread(tmp_path / "field_maps" / f"field_{k}.tif").shape for k in range(3)] == [
        (96, 96), (60, 80), (96, 40)]
