"""SemSegLogic against Slicer's real data model (slicer-core): the person's labels: segments per class, labels in and
out of them, the correction baseline, label files, kept strokes, accepts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

import SemSeg  # noqa: E402
from painted_scene import FAST, THREE_CLASSES, paint_square, sample_scene, three_class_stack, write_numbered  # noqa: E402
from SemSegLib.classes import ClassInfo, default_classes  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack  # noqa: E402
from SemSegMRML import arrays, parameters, segment_labels, stack_nodes  # noqa: E402
from slicer_scene import make_scene  # noqa: E402


def test_segments_have_class_names_colors_and_order(tmp_path, logic):
    volume, seg = three_class_stack(tmp_path, logic, (8, 8), 2)
    s = seg.GetSegmentation()
    assert [s.GetNthSegment(i).GetName() for i in range(3)] == ["background", "cells", "collagen"]
    assert np.allclose(s.GetNthSegment(0).GetColor(), (10 / 255, 20 / 255, 30 / 255))
    again = logic.createLabelSegmentation(volume, segmentation=seg)  # reused, not duplicated
    assert again is seg and s.GetNumberOfSegments() == 3
    with pytest.raises(InputError, match="unique"):
        logic.setClasses([ClassInfo(1, "a", (0, 0, 0)), ClassInfo(2, "a", (0, 0, 0))])


def test_labels_go_into_and_out_of_the_class_segments_whole(tmp_path, logic):
    volume, seg = three_class_stack(tmp_path, logic, (24, 32), 3)
    rng = np.random.default_rng(1)
    first = rng.integers(0, 4, (3, 24, 32)).astype(np.uint16)
    logic.setLabelsToSegmentation(first, seg, volume)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), first)
    assert logic.labelsFromSegmentation(seg, volume).dtype == np.uint8  # as the engine and files hold them
    second = rng.integers(0, 4, (3, 24, 32)).astype(np.uint16)
    second[second == 2] = 0  # a class that empties, and unlabeled pixels where there were labels
    logic.setLabelsToSegmentation(second, seg, volume)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), second)
    s = seg.GetSegmentation()  # the segments themselves stay: names, order, colors
    assert [s.GetNthSegment(i).GetName() for i in range(3)] == ["background", "cells", "collagen"]
    assert np.allclose(s.GetNthSegment(2).GetColor(), (1, 0, 0))
    # Segments on layers of their own may overlap (painted so in the Segment Editor): the later class wins.
    ids = segment_labels.segment_ids(seg, THREE_CLASSES)
    for segment_id in ids:
        s.SeparateSegmentLabelmap(segment_id)
    block = np.zeros((3, 24, 32), np.uint8)
    block[:, 4:12, 4:20] = 1
    with arrays.new_nodes_removed(logic.scene):
        labelmap = logic.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "block")
        labelmap.CopyOrientation(volume)
        slicer.util.updateVolumeFromArray(labelmap, block)
        image = slicer.vtkSlicerSegmentationsModuleLogic.CreateOrientedImageDataFromVolumeNode(labelmap)
        slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            image, seg, ids[0], slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)
    expected = second.copy()
    expected[(block > 0) & (second != 3)] = 1  # background painted over all but collagen
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)


def test_labels_read_from_the_segments_layers_are_what_slicer_s_export_gives(tmp_path, logic, monkeypatch):
    """The strokes are read from the segments' shared labelmaps, not exported through a labelmap of the whole volume
    (13-23 s of the GUI thread for 1000 slices of 1024 x 1024): classes sharing a layer, a segment that is no class's
    in it, classes on layers of their own overlapping, painted in squares of any extent, one partly outside the
    volume. A transform is left to the export."""
    volume, seg = three_class_stack(tmp_path, logic, (20, 30), 4)
    s = seg.GetSegmentation()
    ids = segment_labels.segment_ids(seg, THREE_CLASSES)

    def bothWays():
        direct = logic.labelsFromSegmentation(seg, volume)
        with monkeypatch.context() as m:
            m.setattr(segment_labels, "_labels_from_layers", lambda *args: None)
            exported = logic.labelsFromSegmentation(seg, volume)
        assert np.array_equal(direct, exported)
        return direct

    labels = np.zeros((4, 20, 30), np.uint8)
    labels[0, 2:9, 3:12], labels[0, 5:15, 10:25], labels[2, 15:20, 0:6] = 1, 2, 3
    logic.setLabelsToSegmentation(labels, seg, volume)
    s.AddEmptySegment("notes", "notes")  # the person's own segment, in the classes' layer: no class
    layer = s.GetLayerDataObject(s.GetLayerIndex("notes"))
    assert s.GetLayerIndex("notes") == s.GetLayerIndex(ids[0])
    raw = vtk.util.numpy_support.vtk_to_numpy(layer.GetPointData().GetScalars())
    extent = layer.GetExtent()
    raw.reshape(extent[5] - extent[4] + 1, extent[3] - extent[2] + 1, extent[1] - extent[0] + 1)[-1] = \
        s.GetSegment("notes").GetLabelValue()
    layer.Modified()
    assert np.array_equal(bothWays(), labels)
    assert segment_labels._labels_from_layers(seg, volume, ids, labels.shape, np.uint8) is not None

    for segment_id in ids:  # each class on a layer of its own (label value 1), as overlapping strokes are
        s.SeparateSegmentLabelmap(segment_id)
    paint_square(volume, seg, "collagen", 1, (-3, 4), (25, 33))  # partly above and right of the volume
    paint_square(volume, seg, "background", 1, (0, 10), (0, 29))  # under collagen: the later class wins, as exported
    expected = labels.copy()
    expected[1, 0:11] = 1
    expected[1, 0:5, 25:30] = 3
    assert s.GetNumberOfLayers() >= 3
    assert np.array_equal(bothWays(), expected)

    transform = logic.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    seg.SetAndObserveTransformNodeID(transform.GetID())
    assert segment_labels._labels_from_layers(seg, volume, ids, labels.shape, np.uint8) is None
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)


def test_slices_are_written_into_the_classes_labelmap_and_elsewhere_by_a_whole_import(tmp_path, logic, monkeypatch):
    """An accept, a batch of a prediction's slices or labels loaded from files change a few slices: written into the
    classes' shared labelmap (a whole import held the GUI 8 s for 1000 slices of 1024 x 1024), the rest untouched,
    the other representations made again and the segmentation to be saved again; where that labelmap does not
    cover them (nothing imported yet) or holds another segment, by a whole import. Either way, what reads back is
    what a whole import of the changed stack gives."""
    volume, seg = three_class_stack(tmp_path, logic, (20, 30), 5)
    s = seg.GetSegmentation()
    ids = segment_labels.segment_ids(seg, THREE_CLASSES)
    imports = []
    realImport = segment_labels.set_labels_to_segmentation
    monkeypatch.setattr(segment_labels, "set_labels_to_segmentation",
                        lambda *a, **k: imports.append(a[2:3] + a[5:]) or realImport(*a, **k))
    volume.SetSpacing(0.5, 0.25, 2.0)  # geometry that is not the identity, so a lost slice offset shows
    volume.SetOrigin(10.0, -5.0, 3.0)
    volume.SetIJKToRASDirections([[0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    rng = np.random.default_rng(0)
    expected = np.zeros((5, 20, 30), np.uint8)
    expected[3] = rng.integers(0, 4, (20, 30))
    # Segments that hold nothing yet: only the slices written are imported (a training's preview of one slice
    # imported, and held, the whole stack: 1 GB for 1000 slices of 1024 x 1024).
    logic.setLabelsToSegmentation(expected[[3]], seg, volume, slices=[3])
    layer = s.GetLayerDataObject(s.GetLayerIndex(ids[0]))
    assert imports == [(seg, 3)] and layer.GetDimensions() == (30, 20, 1)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)
    with monkeypatch.context() as m:  # Slicer's export of the segments gives the same
        m.setattr(segment_labels, "_labels_from_layers", lambda *args: None)
        assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)
    expected[3] = rng.integers(0, 4, (20, 30))
    logic.setLabelsToSegmentation(expected[[3]], seg, volume, slices=[3])  # the slice it has: in place
    assert len(imports) == 1 and s.GetLayerDataObject(s.GetLayerIndex(ids[0])) is layer
    expected[1] = rng.integers(0, 4, (20, 30))
    logic.setLabelsToSegmentation(expected[[1]], seg, volume, slices=[1])  # one it has not: the whole stack
    assert imports[1:] == [(seg,)] and s.GetLayerDataObject(s.GetLayerIndex(ids[0])).GetDimensions() == (30, 20, 5)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)

    storage = seg.CreateDefaultStorageNode()
    logic.scene.AddNode(storage)
    seg.SetAndObserveStorageNodeID(storage.GetID())
    storage.SetFileName(str(tmp_path / "labels.seg.nrrd"))
    assert storage.WriteData(seg) and not seg.GetModifiedSinceRead()
    layer = s.GetLayerDataObject(s.GetLayerIndex(ids[0]))
    expected[[1, 3]] = rng.integers(0, 4, (2, 20, 30))
    logic.setLabelsToSegmentation(expected[[3, 1]][::-1], seg, volume, slices=[1, 3])
    assert len(imports) == 2 and s.GetLayerDataObject(s.GetLayerIndex(ids[0])) is layer  # written in place
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)
    with monkeypatch.context() as m:  # Slicer's export of the segments gives the same
        m.setattr(segment_labels, "_labels_from_layers", lambda *args: None)
        assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)
    assert seg.GetModifiedSinceRead()  # a scene saved now writes them
    seg.CreateClosedSurfaceRepresentation()  # Slicer's 3D view: made again from the new labels
    expected[2] = rng.integers(0, 4, (20, 30))
    logic.setLabelsToSegmentation(expected[[2]], seg, volume, slices=[2])
    assert len(imports) == 2 and s.GetSegment(ids[0]).GetRepresentation("Closed surface") is None

    s.AddEmptySegment("notes", "notes")  # the person's own segment, in the classes' layer: the import keeps it
    assert s.GetLayerIndex("notes") == s.GetLayerIndex(ids[0])
    expected[4] = rng.integers(0, 4, (20, 30))
    logic.setLabelsToSegmentation(expected[[4]], seg, volume, slices=[4])
    assert len(imports) == 3 and np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)
    assert s.GetSegmentIdBySegmentName("notes")
    # A whole import into voxels made beforehand (a prediction's job makes them): the segments take them as they are.
    s.AddEmptySegment("more notes", "more notes")  # so that the slice is not written in place
    assert s.GetLayerIndex("more notes") == s.GetLayerIndex(ids[0])
    voxels = arrays.zero_image_data((5, 20, 30), np.uint8)
    taken = []
    expected[0] = rng.integers(0, 4, (20, 30))
    logic.setLabelsToSegmentation(expected[[0]], seg, volume, slices=[0], takeVoxels=lambda: taken.append(1) or voxels)
    assert len(imports) == 4 and taken == [1]
    held = s.GetLayerDataObject(s.GetLayerIndex(ids[0])).GetPointData().GetScalars()
    assert np.shares_memory(vtk.util.numpy_support.vtk_to_numpy(held),
                            vtk.util.numpy_support.vtk_to_numpy(voxels.GetPointData().GetScalars()))
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)
    with monkeypatch.context() as m:
        m.setattr(segment_labels, "_labels_from_layers", lambda *args: None)
        assert np.array_equal(logic.labelsFromSegmentation(seg, volume), expected)


def test_the_baseline_and_corrections_are_written_and_read_on_the_painted_slices(tmp_path, logic):
    """Only slices painted now or before are written into the baseline, and the corrections looked for in them;
    the result is that of whole-stack arrays."""

    volume, _ = three_class_stack(tmp_path, logic, (6, 7), 5)
    rng = np.random.default_rng(0)
    first, second = np.zeros((5, 6, 7), np.uint8), np.zeros((5, 6, 7), np.uint8)
    first[[0, 3]] = rng.integers(0, 4, (2, 6, 7))
    second[[1, 3]] = rng.integers(0, 4, (2, 6, 7))
    stack_nodes.set_baseline(logic.scene, volume, first)
    stack_nodes.set_baseline(logic.scene, volume, second)  # slice 0 emptied, 1 painted, 3 changed
    assert np.array_equal(slicer.util.arrayFromVolume(stack_nodes.baseline(logic.scene, volume)), second)
    third = second.copy()
    third[4, 2, 2], third[1] = 2, np.where(second[1] == 1, 0, second[1])
    assert np.array_equal(stack_nodes.correction_mask(volume, third), (third > 0) & (third != second))


def test_labels_of_256_classes_or_more_come_out_in_16_bits(tmp_path, logic):
    write_numbered(tmp_path, [np.zeros((6, 8), np.uint8)] * 2)
    volume = logic.loadStack(str(tmp_path))
    logic.setClasses(default_classes(300))
    seg = logic.createLabelSegmentation(volume)
    labels = np.zeros((2, 6, 8), np.uint16)
    labels[0, 1, 2], labels[1, 3, 4], labels[1, 0, 0] = 300, 256, 1
    logic.setLabelsToSegmentation(labels, seg, volume)
    back = logic.labelsFromSegmentation(seg, volume)
    assert back.dtype == np.uint16 and np.array_equal(back, labels)


def test_the_labels_follow_the_panel_s_class_edits_and_keep_what_was_painted(tmp_path, logic):
    volume, seg = three_class_stack(tmp_path, logic, (24, 32), 2)
    labels = np.random.default_rng(2).integers(0, 4, (2, 24, 32)).astype(np.uint16)
    logic.setLabelsToSegmentation(labels, seg, volume)
    prediction = logic.predictionSegmentation(volume)
    logic.setLabelsToSegmentation(np.maximum(labels, 1), prediction, volume)
    s = seg.GetSegmentation()

    def segments() -> list[str]:
        return [s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments())]

    renamed = [ClassInfo(1, "background", (10, 20, 30)), ClassInfo(2, "collagen", (0, 255, 0)),
               ClassInfo(3, "cells", (255, 0, 0))]  # two classes swap names, in the table's rows
    logic.setClasses(renamed, edited=True)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), labels)  # class 2 is still what was painted 2
    assert np.array_equal(logic.labelsFromSegmentation(prediction, volume), np.maximum(labels, 1))
    assert segments() == ["background", "collagen", "cells"]
    # A class added or recolored in the table is there to paint at once, in its color.
    logic.setClasses([*renamed[:2], ClassInfo(3, "cells", (0, 0, 255)), ClassInfo(4, "vessel", (9, 9, 9))],
                     edited=True)
    assert segments() == ["background", "collagen", "cells", "vessel"]
    assert np.allclose(s.GetSegment(s.GetSegmentIdBySegmentName("cells")).GetColor(), (0, 0, 1))
    # Classes that come from elsewhere (a model, a classes.csv) change no segment.
    logic.setClasses(THREE_CLASSES)
    assert segments() == ["background", "collagen", "cells", "vessel"]


def test_painted_shape_lands_on_the_right_image_row_and_column(tmp_path, logic):
    write_numbered(tmp_path, [np.zeros((20, 30), np.uint8)] * 5)
    volume = logic.loadStack(str(tmp_path))
    logic.setClasses(SAMPLE_CLASSES)
    seg = logic.createLabelSegmentation(volume)
    # Paint like the Paint effect does: a small oriented labelmap with its own extent, in RAS geometry.
    painted = slicer.vtkOrientedImageData()
    painted.SetExtent(4, 6, 2, 3, 3, 3)  # columns 4-6, rows 2-3, slice 3 (IJK = column, row, slice)
    painted.AllocateScalars(3, 1)  # VTK_UNSIGNED_CHAR
    painted.GetPointData().GetScalars().Fill(1)
    ijkToRas = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(ijkToRas)
    painted.SetImageToWorldMatrix(ijkToRas)
    cells = seg.GetSegmentation().GetSegmentIdBySegmentName("cell")
    assert slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        painted, seg, cells, slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE)
    labels = logic.labelsFromSegmentation(seg, volume)
    expected = np.zeros((5, 20, 30), np.uint16)
    expected[3, 2:4, 4:7] = 2
    assert np.array_equal(labels, expected)


def test_the_strokes_are_read_from_the_correction_baseline_while_it_holds_them(tmp_path, logic, monkeypatch):

    _, volume, seg, labels, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)  # its baseline: the strokes it trained on
    slow = segment_labels.labels_from_segmentation
    reads = []

    def counted(scene, segmentation, *args):
        reads.append(segmentation.GetID())
        return slow(scene, segmentation, *args)

    def strokeReads() -> int:
        return reads.count(seg.GetID())

    monkeypatch.setattr(segment_labels, "labels_from_segmentation", counted)
    baseline = stack_nodes.baseline(logic.scene, volume)
    # A prediction's baseline, its suggestions and an export after a training read no strokes from the segments.
    logic.predict(volume, "all", labelSegmentation=seg, showSeconds=0)
    logic.suggestSlices(volume, labelSegmentation=seg)
    logic.export(volume, seg, str(tmp_path / "results"))
    strokes = logic.labelsFromSegmentation(seg, volume)
    assert strokeReads() == 0
    assert np.array_equal(strokes, slow(logic.scene, seg, volume, logic.classes())) and np.array_equal(strokes, labels)
    assert strokes.dtype == np.uint8
    strokes[:] = 0  # a copy
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), labels)
    # Painted since: read from the segments; the next prediction's baseline is what is painted now, and serves again.
    paint_square(volume, seg, "cell", 3)
    painted = logic.labelsFromSegmentation(seg, volume)
    assert strokeReads() == 1 and painted[3, :5, :5].all() and not labels[3].any()
    logic.predict(volume, 3, labelSegmentation=seg)
    assert strokeReads() == 2 and np.array_equal(slicer.util.arrayFromVolume(baseline), painted)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), painted) and strokeReads() == 2
    # A baseline changed by anything else is not taken for the strokes.
    slicer.util.arrayFromVolume(baseline)[3] = 0
    slicer.util.arrayFromVolumeModified(baseline)
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), painted) and strokeReads() == 3
    # An accept reads the strokes once and leaves the baseline holding what it wrote.
    logic.acceptPrediction(volume, seg, 1)
    accepted = slow(logic.scene, seg, volume, logic.classes())
    assert strokeReads() == 4 and accepted[1].all() and np.array_equal(accepted[[0, 2, 3]], painted[[0, 2, 3]])
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), accepted) and strokeReads() == 4
    assert np.array_equal(slicer.util.arrayFromVolume(baseline), accepted)
    # Its undo reads them from there too, and takes back what the accept added.
    assert logic.undoAccept(volume, seg)[0] == 1 and strokeReads() == 4
    assert np.array_equal(slow(logic.scene, seg, volume, logic.classes()), painted)
    # Another label segmentation of the volume is its own.
    other = logic.createLabelSegmentation(volume, segmentation=None)
    assert not logic.labelsFromSegmentation(other, volume).any()


def test_a_second_stack_has_its_own_labels_and_prediction(tmp_path, logic):
    _, first, labelsOfFirst, labels, _ = sample_scene(tmp_path, logic)
    logic.train(first, labelsOfFirst, iterations=2, **FAST)
    logic.predict(first, "all")
    folder = write_sample_stack(tmp_path / "second", num_images=4, size=(96, 96), seed=4)
    second = logic.loadStack(str(folder / "images"))
    assert (first.GetName(), second.GetName()) == ("images", "images_1")
    # The first stack's strokes are not offered for the second, nor is its prediction shown, accepted or exported.
    assert logic.getParameterNode().GetNodeReference(parameters.ROLE_LABELS) is None
    assert logic.predictionSegmentation(second, create=False) is None and logic.predictedSlices(second) == []
    with pytest.raises(InputError, match="holds the strokes painted on 'images', not on 'images_1'"):
        logic.train(second, labelsOfFirst, iterations=1, **FAST)
    with pytest.raises(InputError, match="holds the strokes painted on 'images'"):
        logic.createLabelSegmentation(second, segmentation=labelsOfFirst)
    with pytest.raises(InputError, match="holds the strokes painted on 'images'"):
        logic.predict(second, [0], labelSegmentation=labelsOfFirst)
    assert logic.predictionSegmentation(second, create=False) is None  # refused before anything was written
    assert logic.labelSegmentationOf(second) is None and logic.labelSegmentationOf(first) is labelsOfFirst
    labelsOfSecond = logic.createLabelSegmentation(second)
    assert logic.labelSegmentationOf(second) is labelsOfSecond  # what the panel selects with the volume
    assert not logic.labelsFromSegmentation(labelsOfSecond, second).any()
    assert not logic.finalLabels(second, labelsOfSecond).any()
    logic.predict(second, [0])
    assert logic.predictedSlices(second) == [0] and logic.predictedSlices(first) == [0, 1, 2, 3]
    assert logic.uncertaintyVolume(second) is not logic.uncertaintyVolume(first)
    assert np.array_equal(logic.labelsFromSegmentation(labelsOfFirst, first), labels)


def test_an_accepted_prediction_can_be_taken_back_keeping_what_was_painted_since(tmp_path, logic):
    _, volume, seg, labels, _ = sample_scene(tmp_path, logic)
    assert not logic.canUndoAccept(volume)
    with pytest.raises(InputError, match="no accepted prediction to undo on 'images'"):
        logic.undoAccept(volume, seg)
    logic.train(volume, seg, iterations=3, **FAST)
    logic.predict(volume, "all", labelSegmentation=seg)
    logic.acceptPrediction(volume, seg, 1)  # an unpainted slice
    added = logic.acceptPrediction(volume, seg, 0)
    accepted = logic.labelsFromSegmentation(seg, volume)
    # The person paints over part of slice 0's accepted pixels, with another class.
    corrected = accepted.copy()
    spot = (labels[0] == 0)
    spot[:, 40:] = False
    corrected[0][spot] = np.where(accepted[0][spot] == 3, 1, 3)
    logic.setLabelsToSegmentation(corrected, seg, volume)
    assert logic.canUndoAccept(volume)
    k, takenBack = logic.undoAccept(volume, seg)
    after = logic.labelsFromSegmentation(seg, volume)
    assert k == 0 and takenBack == added - int(spot.sum()) > 0
    assert np.array_equal(after[0][labels[0] > 0], labels[0][labels[0] > 0])  # the strokes stay
    assert np.array_equal(after[0][spot], corrected[0][spot])  # and what was painted since
    assert not after[0][(labels[0] == 0) & ~spot].any()  # the rest of the accept is gone
    assert np.array_equal(after[1:], corrected[1:])  # slice 1's accept is still there
    # The painted-over pixels still count as corrections; the pixels taken back count as nothing, until the
    # person paints them, even with the class the accept had given them.
    assert np.array_equal(logic.correctionMask(volume, after)[0], spot)
    repainted = after.copy()
    repainted[0, 60:64, 60:64] = accepted[0, 60:64, 60:64]
    assert repainted[0, 60:64, 60:64].all() and not (labels[0, 60:64, 60:64] | spot[60:64, 60:64]).any()
    assert logic.correctionMask(volume, repainted)[0, 60:64, 60:64].all()
    # Then slice 1's accept, the one before; and no more.
    assert logic.undoAccept(volume, seg) == (1, int((accepted[1] > 0).sum()))
    assert np.array_equal(logic.labelsFromSegmentation(seg, volume), np.stack([after[0], labels[1], *labels[2:]]))
    assert not logic.canUndoAccept(volume)
    # An accept into other labels is not taken back from these.
    other = logic.createLabelSegmentation(volume, segmentation=None)
    logic.acceptPrediction(volume, other, 3)
    with pytest.raises(InputError, match=f"went into '{other.GetName()}', not '{seg.GetName()}'"):
        logic.undoAccept(volume, seg)
    # A closed scene's accepts are forgotten: the next scene's nodes get the same IDs.
    volumeID = volume.GetID()
    logic.scene.Clear(0)
    _, volume, seg, _, _ = sample_scene(tmp_path / "again", logic)
    assert volume.GetID() == volumeID and not logic.canUndoAccept(volume)


def test_the_strokes_a_training_used_are_kept_and_come_back_in_a_new_scene(tmp_path, logic, scene):
    folder, volume, seg, labels, _ = sample_scene(tmp_path, logic)
    names = logic.imageNames(volume)
    logic.train(volume, seg, iterations=2, **FAST)
    kept = logic.strokesBackupFolder(volume)
    assert sorted(p.name for p in kept.iterdir()) == sorted(["classes.csv", "images.json", f"{names[0]}.tif",
                                                              f"{names[2]}.tif"])
    assert np.array_equal(tifffile.imread(kept / f"{names[2]}.tif"), labels[2])
    # The person erases slice 3's strokes and trains again: its file goes, so it cannot come back.
    fewer = labels.copy()
    fewer[2] = 0
    logic.setLabelsToSegmentation(fewer, seg, volume)
    logic.train(volume, seg, iterations=2, **FAST)
    assert logic.strokesBackupFolder(volume) == kept and not (kept / f"{names[2]}.tif").exists()
    logic.setLabelsToSegmentation(labels, seg, volume)
    logic.train(volume, seg, iterations=2, **FAST)

    scene.Clear(0)  # the scene is gone (closed, or Slicer crashed), the folder is not
    again = logic.loadStack(str(folder / "images"))  # the same stack, under the same name
    assert logic.keptStrokesOf(again) == [kept]  # found by its images' names
    logic.setClasses(THREE_CLASSES)  # the panel's classes are not yet those painted
    with pytest.raises(InputError, match="Load that classes.csv first"):
        logic.loadLabels(again, str(kept))
    loaded = logic.loadLabels(again, str(kept), adoptClasses=True)  # nothing painted on it yet: its classes come
    assert logic.classes() == SAMPLE_CLASSES
    assert loaded.slices == [0, 2] and loaded.added == int((labels > 0).sum()) and loaded.differing == 0
    assert np.array_equal(logic.labelsFromSegmentation(loaded.segmentation, again), labels)
    assert logic.getParameterNode().GetNodeReference(parameters.ROLE_LABELS) is loaded.segmentation
    # A training of the stack loaded again keeps its strokes in a folder of its own: the first stays as it was.
    logic.train(again, loaded.segmentation, iterations=2, **FAST)
    assert logic.strokesBackupFolder(again) != kept and (kept / f"{names[2]}.tif").exists()
    assert logic.keptStrokesOf(again) == [kept]  # its own folder is not offered back to it
    # Classes are not adopted over labels painted already, and strokes of other images are not offered.
    logic.setClasses(THREE_CLASSES)
    with pytest.raises(InputError, match="Load that classes.csv first"):
        logic.loadLabels(again, str(kept), adoptClasses=True)
    write_numbered(tmp_path / "other", [np.zeros((96, 96), np.uint8)] * 4)
    assert logic.keptStrokesOf(logic.loadStack(str(tmp_path / "other"))) == []


def test_loaded_labels_fill_only_what_is_not_painted_and_wrong_ones_are_refused(tmp_path, logic):
    folder, volume, seg, labels, reference = sample_scene(tmp_path, logic)
    names = logic.imageNames(volume)
    # An export's strokes folder (classes.csv one folder up) of slices 1 and 2, painted otherwise than the person.
    logic.export(volume, seg, str(tmp_path / "results"))
    theirs = labels.copy()
    theirs[1] = reference[1]
    theirs[0][labels[0] > 0] = 1 + labels[0][labels[0] > 0] % 3  # every painted pixel of slice 1 another class
    for k in (0, 1):
        tifffile.imwrite(tmp_path / "results" / "strokes" / f"{names[k]}.tif", theirs[k].astype(np.uint8))
    loaded = logic.loadLabels(volume, str(tmp_path / "results" / "strokes"))
    now = logic.labelsFromSegmentation(seg, volume)
    assert loaded.segmentation is seg and loaded.slices == [0, 1, 2]
    assert np.array_equal(now[labels > 0], labels[labels > 0])  # what was painted stays
    assert np.array_equal(now[1], reference[1]) and np.array_equal(now[0], labels[0])
    assert loaded.added == int(reference[1].size) and loaded.differing == int((labels[0] > 0).sum())

    def refused(files: Path, match: str) -> None:
        with pytest.raises(InputError, match=match):
            logic.loadLabels(volume, str(files))
        assert np.array_equal(logic.labelsFromSegmentation(seg, volume), now)

    (tmp_path / "other").mkdir()
    tifffile.imwrite(tmp_path / "other" / f"{names[3]}.tif", reference[3])
    (tmp_path / "other" / "classes.csv").write_text("value,name,r,g,b\n1,membrane,0,0,0\n2,cell,9,9,9\n")
    refused(tmp_path / "other", r"classes.csv: these labels are of the classes membrane, cell, but the panel has "
                                r"background, cell, nucleus. Load that classes.csv first")
    (tmp_path / "other" / "classes.csv").unlink()
    tifffile.imwrite(tmp_path / "other" / f"{names[3]}.tif", (reference[3] > 1).astype(np.uint8) * 255)
    refused(tmp_path / "other", rf"label value 255 found in {names[3]}, but there are only 3 classes \(the "
                                r"classes in the panel\). Label maps hold class values 1..3")
    (tmp_path / "elsewhere").mkdir()
    tifffile.imwrite(tmp_path / "elsewhere" / "img_1.tif", reference[3])
    refused(tmp_path / "elsewhere", "no label file matches an image name")
    tifffile.imwrite(tmp_path / "elsewhere" / f"{names[3]}.tif", reference[3][:50])
    refused(tmp_path / "elsewhere", rf"{names[3]}.tif: label image is \(50, 96\) but its image")
    # A label stack saved as one multi-page TIFF (napari, Fiji), its classes.csv beside it: slice 4 comes in.
    (tmp_path / "stack").mkdir()
    pages = np.zeros(reference.shape, np.uint8)
    pages[3] = reference[3]
    tifffile.imwrite(tmp_path / "stack" / "labels.tif", pages, photometric="minisblack")
    (tmp_path / "stack" / "classes.csv").write_text("value,name,r,g,b\n1,membrane,0,0,0\n2,cell,9,9,9\n")
    refused(tmp_path / "stack" / "labels.tif", r"classes.csv: these labels are of the classes membrane, cell")
    (tmp_path / "stack" / "classes.csv").unlink()
    loaded = logic.loadLabels(volume, str(tmp_path / "stack" / "labels.tif"))
    assert loaded.slices == [3] and np.array_equal(logic.labelsFromSegmentation(seg, volume)[3], reference[3])
    assert loaded.note == ""
    # A label stack file that holds a second series (pages of another size): the first is read, the rest named.
    with tifffile.TiffWriter(tmp_path / "stack" / "two.tif") as tif:
        tif.write(pages, photometric="minisblack")
        tif.write(pages[0, :8], photometric="minisblack")
    loaded = logic.loadLabels(volume, str(tmp_path / "stack" / "two.tif"))
    assert loaded.slices == [3] and loaded.note.startswith("two.tif holds 2 label series; SemSeg read the first")


def test_saved_and_reloaded_scene_keeps_the_labels(tmp_path, logic, scene):
    _, volume, seg, labels, _ = sample_scene(tmp_path, logic)
    logic.getParameterNode().SetParameter("BudgetValue", "42")
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, [1, 2])
    prediction = logic.predictionSegmentation(volume, create=False)
    for node, suffix in ((volume, ".nrrd"), (seg, ".seg.nrrd"), (prediction, "-prediction.seg.nrrd")):
        storage = node.CreateDefaultStorageNode()
        scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(tmp_path / f"{node.GetName()}{suffix}"))
        assert storage.WriteData(node)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()

    scene2, _, _ = make_scene()
    scene2.SetURL(str(tmp_path / "scene.mrml"))
    assert scene2.Import()
    logic2 = SemSeg.SemSegLogic(scene2)
    node = logic2.getParameterNode()
    assert node.GetParameter("BudgetValue") == "42"
    assert json.loads(node.GetParameter("Classes"))[2]["name"] == "nucleus"
    volume2 = node.GetNodeReference(parameters.ROLE_VOLUME)
    seg2 = node.GetNodeReference(parameters.ROLE_LABELS)
    assert logic2.imageNames(volume2) == logic.imageNames(volume)
    assert np.array_equal(logic2.labelsFromSegmentation(seg2, volume2), labels)
    # The prediction comes back with its volume, and the autosaved model with it: slices 2-3 are the model's.
    assert logic2.predictionSegmentation(volume2, create=False) is not None
    assert logic2.restoreModelFromParameterNode()
    assert logic2.unlabeledByCurrentModel(volume2) == ([0, 3], [])
