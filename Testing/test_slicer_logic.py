"""SemSegLogic against Slicer's real data model (slicer-core): volumes, segmentations, tables, storage."""

from __future__ import annotations

import json
import logging
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

import SemSeg  # noqa: E402
from SemSegLib import kept_strokes  # noqa: E402
from SemSegLib.classes import ClassInfo, default_classes, read_classes_csv, write_classes_csv  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack  # noqa: E402
from SemSegLib.simulate import simulate_strokes  # noqa: E402
from SemSegLib.stack_io import read_stack  # noqa: E402
from SemSegLib.suggest import image_descriptors, rank_by_uncertainty, spread_groups  # noqa: E402
from SemSegMRML import arrays, logic_training, model_node, parameters, segment_labels, stack_nodes  # noqa: E402
from SemSegMRML import channels as channels_module  # noqa: E402
from slicer_scene import make_scene  # noqa: E402

FAST = dict(patch_size=64, batch_size=4, base_width=8, levels=3)
THREE_CLASSES = [ClassInfo(1, "background", (10, 20, 30)), ClassInfo(2, "cells", (0, 255, 0)),
                 ClassInfo(3, "collagen", (255, 0, 0))]


@pytest.fixture
def scene():
    scene, app, logics = make_scene()
    yield scene
    scene.Clear(1)


@pytest.fixture
def logic(scene):
    return SemSeg.SemSegLogic(scene)


def write_numbered(folder: Path, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        tifffile.imwrite(folder / f"img_{i + 1}.tif", im)  # img_10 sorts after img_2


def test_stack_to_volume_ordering_geometry_and_rgb(tmp_path, logic, scene):
    images = [np.full((6, 9), i, np.uint8) for i in range(12)]
    images[3][1, 7] = 200
    write_numbered(tmp_path / "gray", images)
    volume = logic.loadStack(str(tmp_path / "gray"))
    array = slicer.util.arrayFromVolume(volume)
    assert volume.IsA("vtkMRMLScalarVolumeNode") and array.shape == (12, 6, 9)
    assert [int(array[k, 0, 0]) for k in range(12)] == list(range(12))  # natural order: img_2 before img_10
    assert array[3, 1, 7] == 200  # slice k, row r, column c
    assert logic.imageNames(volume)[9] == "img_10"
    assert volume.GetSpacing() == (1.0, 1.0, 1.0)
    assert not volume.GetDisplayNode().GetInterpolate()

    rgb = np.random.default_rng(0).integers(0, 255, (2, 6, 9, 3), dtype=np.uint8)
    write_numbered(tmp_path / "rgb", rgb)
    vector = logic.loadStack(str(tmp_path / "rgb"))
    assert vector.IsA("vtkMRMLVectorVolumeNode")
    assert np.array_equal(slicer.util.arrayFromVolume(vector), rgb)
    assert np.array_equal(logic.imagesFromVolume(vector)[1, 2], rgb[1, :, :, 2])
    assert logic.shownChannels(vector) is None  # a picture's colours, as any viewer shows them
    # 32/64-bit integers (label-like images from numpy) and 16-bit floats (read as 32-bit) become volumes too.
    for dtype in (np.int64, np.uint32, np.float16):
        write_numbered(tmp_path / np.dtype(dtype).name, [np.full((6, 9), i, dtype) for i in range(3)])
        wide = logic.loadStack(str(tmp_path / np.dtype(dtype).name))
        assert [float(v) for v in slicer.util.arrayFromVolume(wide)[:, 2, 2]] == [0.0, 1.0, 2.0]


def test_a_stack_is_drawn_between_its_percentiles_set_before_its_pixels_arrive(tmp_path, logic, scene):
    """Slicer's automatic window/level (a histogram of every voxel, on the GUI's thread, again at every change of the
    pixels) is replaced by the same 0.1-99.9 percentiles of a subsample; the uncertainty volume's is fixed at 0-1."""
    rng = np.random.default_rng(0)
    images = rng.integers(1000, 3000, (4, 50, 60)).astype(np.uint16)
    images[0, 0, :6] = 65000  # 6 bright pixels of 12000: past the 99.9th percentile
    write_numbered(tmp_path / "gray", images)
    volume = logic.loadStack(str(tmp_path / "gray"))
    display = volume.GetDisplayNode()
    low, high = np.percentile(images, [0.1, 99.9])
    assert not display.GetAutoWindowLevel() and not display.GetInterpolate()
    assert display.GetWindowLevelMin() == pytest.approx(low) and display.GetWindowLevelMax() == pytest.approx(high)
    assert high < 3000
    uncertainty = logic.uncertaintyVolume(volume).GetDisplayNode()
    assert not uncertainty.GetAutoWindowLevel()
    assert (uncertainty.GetWindowLevelMin(), uncertainty.GetWindowLevelMax()) == (0, 1)
    voxels = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))  # filled by VTK: nothing predicted yet
    assert voxels.shape == images.shape and voxels.dtype == np.float32 and not voxels.any()
    assert logic.uncertaintyVolume(volume).GetModifiedSinceRead()


def test_the_panel_s_load_reads_the_images_on_the_worker_and_a_cancel_leaves_the_scene_as_it_was(tmp_path, logic,
                                                                                                  scene, monkeypatch):
    from SemSegLib import stack_io

    rng = np.random.default_rng(0)
    images = rng.integers(0, 4000, (5, 6, 9)).astype(np.uint16)
    write_numbered(tmp_path / "stack", images)
    readers = []
    realRead = stack_io._read_image_and_layout
    monkeypatch.setattr(stack_io, "_read_image_and_layout",
                        lambda *args: readers.append(threading.current_thread().name) or realRead(*args))
    task = logic.startLoadingStack(str(tmp_path / "stack"))
    events = []
    volume = task.wait(events.append)
    assert set(readers) == {"SemSegWorker"}  # not this (Slicer's main) thread
    assert [e.fraction for e in events] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0] and events[-1].kind == "done"
    assert events[2].message == "3 of 5 image(s) read"
    assert np.array_equal(slicer.util.arrayFromVolume(volume), images) and volume.GetName() == "stack"
    assert logic.getParameterNode().GetNodeReference(parameters.ROLE_VOLUME) is volume
    assert logic.imageNames(volume) == [f"img_{k}" for k in range(1, 6)]

    # Cancelled while image 2 is read: nothing enters the scene, and the stack loaded before stays the panel's.
    nodes = scene.GetNumberOfNodes()
    secondRead, cancelled = threading.Event(), threading.Event()

    def waitForTheCancelAtTheSecond(*args):
        readers.append(args[0].name)
        if len(readers) == 2:
            secondRead.set()
            assert cancelled.wait(60)
        return realRead(*args)

    monkeypatch.setattr(stack_io, "_read_image_and_layout", waitForTheCancelAtTheSecond)
    readers.clear()
    task = logic.startLoadingStack(str(tmp_path / "stack"))
    assert secondRead.wait(60)
    task.cancel()
    cancelled.set()
    assert task.wait() is None and task.finished
    assert readers == ["img_1.tif", "img_2.tif"] and scene.GetNumberOfNodes() == nodes
    assert logic.getParameterNode().GetNodeReference(parameters.ROLE_VOLUME) is volume
    # A file that cannot be read: the worker's error is the reader's, naming the file.
    (tmp_path / "stack" / "img_3.tif").write_bytes(b"not a tiff")
    monkeypatch.setattr(stack_io, "_read_image_and_layout", realRead)
    with pytest.raises(InputError, match=r"img_3.tif: cannot read"):
        logic.startLoadingStack(str(tmp_path / "stack")).wait()
    assert scene.GetNumberOfNodes() == nodes


def _displayed_components(volume) -> int:
    """Components the volume's display pipeline hands the slice views (Slicer blends RGBA)."""
    display = volume.GetDisplayNode()
    display.SetInputImageDataConnection(volume.GetImageDataConnection())
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    return producer.GetOutputDataObject(0).GetNumberOfScalarComponents()


def _displayed_rgb(volume) -> np.ndarray:
    """(pixels, 3) the red, green and blue the volume's display pipeline hands the slice views."""
    from vtk.util.numpy_support import vtk_to_numpy

    display = volume.GetDisplayNode()
    display.SetInputImageDataConnection(volume.GetImageDataConnection())
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    return vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars())[:, :3]


@pytest.mark.parametrize("channels, dtype", [(2, np.uint16), (3, np.uint16), (3, np.uint8), (5, np.uint16)])
def test_a_stack_of_channels_shows_each_in_its_own_range_and_trains_on_every_channel(tmp_path, logic, scene,
                                                                                      channels, dtype):
    """Slicer draws a vector volume as RGB through one window/level: a dim channel beside a bright one was drawn
    nearly black. 2 components break its display pipeline, 5 give the views 6. The volume shows 3 channels, each
    stretched to its own range (a zero blue for 2), every channel is kept beside it as loaded, and the stack's images
    come back whole, from the scene and from a saved .mrb. 3 channels of 8 bits from a channel axis (C) are a
    microscope's, not a picture's red, green and blue (S): stretched too."""
    highs = ([4000, 200, 50000, 10, 1000] if dtype == np.uint16 else [250, 30, 120])[:channels]
    rng = np.random.default_rng(0)
    images = np.stack([rng.integers(0, high, (3, 32, 40)) for high in highs]).astype(dtype)
    tifffile.imwrite(tmp_path / "cells.ome.tif", images, metadata={"axes": "CZYX"})
    volume = logic.loadStack(str(tmp_path / "cells.ome.tif"))
    assert volume.GetName() == "cells" and logic.imageNames(volume)[0] == "cells_0001"
    whole = np.moveaxis(images, 0, 1)  # (Z, C, Y, X): 3 images of `channels` channels
    assert slicer.util.arrayFromVolume(volume).shape == (3, 32, 40, 3) and _displayed_components(volume) == 4
    drawn = _displayed_rgb(volume)
    assert (drawn[:, :min(channels, 3)].max(0) >= 250).all() and (drawn[:, :min(channels, 3)].min(0) <= 5).all()
    assert channels > 2 or not drawn[:, 2].any()
    assert logic.shownChannels(volume) == [0, 1, 2 if channels > 2 else None]
    assert np.array_equal(logic.imagesFromVolume(volume), whole) and logic.imagesFromVolume(volume).dtype == dtype
    assert np.array_equal(logic.imagesFromVolume(volume, [2, 0]), whole[[2, 0]])
    assert arrays.channel_count(volume) == channels
    logic.setClasses(THREE_CLASSES[:2])
    seg = logic.createLabelSegmentation(volume)
    labels = np.zeros((3, 32, 40), np.uint8)
    labels[0, 2:6, 2:30], labels[0, 20:24, 2:30] = 1, 2
    logic.setLabelsToSegmentation(labels, seg, volume)
    assert logic.train(volume, seg, iterations=2, **FAST).finished and logic.model.in_channels == channels
    # Other channels shown: only what is drawn changes.
    logic.showChannels(volume, [channels - 1, None, 0])
    shown = slicer.util.arrayFromVolume(volume)
    assert np.array_equal(shown[..., 0], channels_module.shown_rgb(images, [channels - 1, None, None])[..., 0])
    assert not shown[..., 1].any() and shown[..., 2].max() == 255 and logic.shownChannels(volume) == [channels - 1,
                                                                                                         None, 0]
    assert np.array_equal(logic.imagesFromVolume(volume), whole)
    with pytest.raises(InputError, match=f"channel {channels + 1} does not exist: the stack has channels 1-{channels}"):
        logic.showChannels(volume, [0, channels, None])
    with pytest.raises(InputError, match="choose a channel for at least one of red, green and blue"):
        logic.showChannels(volume, [None, None, None])
    with pytest.raises(InputError, match=r"give three channels, for red, green and blue .*; got \[0, 1\]"):
        logic.showChannels(volume, [0, 1])
    assert scene.WriteToMRB(str(tmp_path / "cells.mrb"))
    scene.Clear(0)
    assert scene.ReadFromMRB(str(tmp_path / "cells.mrb"))
    volume = scene.GetFirstNodeByName(volume.GetName())
    assert np.array_equal(logic.imagesFromVolume(volume), whole)
    assert np.array_equal(slicer.util.arrayFromVolume(volume), shown) and logic.shownChannels(volume)[0] == channels - 1
    scene.RemoveNode(volume.GetNthNodeReference(arrays.ROLE_ALL_CHANNELS, 1))
    with pytest.raises(InputError, match=f"the hidden volumes of its {channels} channels as loaded are not all in the "
                                         "scene any more. Load the stack again"):
        logic.imagesFromVolume(volume)
    volume = logic.loadStack(str(tmp_path / "cells.ome.tif"))
    hidden = [volume.GetNthNodeReference(arrays.ROLE_ALL_CHANNELS, k) for k in range(channels)]
    assert all(node.GetHideFromEditors() for node in hidden)
    scene.RemoveNode(volume)  # the person deletes the stack: its hidden channels go at the next load
    volume = logic.loadStack(str(tmp_path / "cells.ome.tif"))
    assert all(node.GetScene() is None for node in hidden)
    assert volume.GetNthNodeReference(arrays.ROLE_ALL_CHANNELS, channels - 1).GetScene() is scene


def test_a_channel_s_display_range_leaves_out_what_is_not_finite_and_survives_a_constant_channel():
    plane = np.zeros((2, 8, 8), np.float32)
    plane[0, 0, 0], plane[1, :4] = np.nan, 10.0
    assert channels_module.display_range(plane) == (0.0, 10.0)
    shown = channels_module.shown_rgb([plane, np.full((2, 8, 8), 7, np.uint16)], [0, 1, None])
    assert shown[1, :4, :, 0].min() == 255 and shown[0, 0, 0, 0] == 0 and not shown[..., 1:].any()


def test_a_stack_saved_by_an_earlier_semseg_keeps_its_channels(logic, scene):
    """Scenes saved before session 70 hold a stack's first three channels as loaded in the volume and the others
    in a hidden volume beside it."""
    images = np.random.default_rng(0).integers(0, 4000, (2, 5, 16, 16)).astype(np.uint16)
    volume = arrays._volume(scene, "vtkMRMLVectorVolumeNode", "old",
                            arrays.image_data(np.moveaxis(images[:, :3], 1, -1)), (1.0, 1.0))
    more = arrays._volume(scene, "vtkMRMLVectorVolumeNode", "old channels 4-5",
                          arrays.image_data(np.moveaxis(images[:, 3:], 1, -1)), (1.0, 1.0))
    more.SetAttribute(arrays.CHANNELS_VOLUME_ATTRIBUTE, "1")
    volume.SetNodeReferenceID(arrays.ROLE_MORE_CHANNELS, more.GetID())
    volume.SetAttribute(arrays.CHANNELS_ATTRIBUTE, "5")
    assert np.array_equal(logic.imagesFromVolume(volume), images) and arrays.channel_count(volume) == 5
    assert logic.shownChannels(volume) is None
    with pytest.raises(InputError, match=r"earlier SemSeg\): load the stack again to choose them"):
        logic.showChannels(volume, [0, 1, 2])
    arrays.remove_orphaned_channels(scene)
    assert more.GetScene() is scene
    scene.RemoveNode(more)
    with pytest.raises(InputError, match="the volume of its channels 4-5 is gone from the scene"):
        logic.imagesFromVolume(volume)


def test_a_volume_with_nan_pixels_is_refused_before_training(tmp_path, logic):
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    # A float volume from elsewhere in Slicer (not read by SemSeg) with a NaN pixel on slice 2.
    array = slicer.util.arrayFromVolume(volume).astype(np.float32)
    array[1, 5, 5] = np.nan
    slicer.util.updateVolumeFromArray(volume, array)
    name = logic.imageNames(volume)[1]
    with pytest.raises(InputError, match=rf"NaN or infinite pixel values in slice 2 \({name}\) \(1 pixels\)"):
        logic.train(volume, seg, iterations=1, **FAST)
    assert logic.model is None
    # A prediction takes (and checks) only the slices it predicts: slice 4 goes, slice 2 is refused by name.
    slicer.util.updateVolumeFromArray(volume, np.nan_to_num(array))
    logic.train(volume, seg, iterations=1, **FAST)
    slicer.util.updateVolumeFromArray(volume, array)
    logic.predict(volume, [3])
    assert logic.predictedSlices(volume) == [3]
    with pytest.raises(InputError, match=rf"NaN or infinite pixel values in slice 2 \({name}\) \(1 pixels\)"):
        logic.predict(volume, [1, 3])


def test_bad_stack_leaves_nothing_in_the_scene(tmp_path, logic, scene):
    write_numbered(tmp_path, [np.zeros((6, 9), np.uint8), np.zeros((7, 9), np.uint8)])
    before = scene.GetNumberOfNodes()
    with pytest.raises(InputError, match="img_2.tif"):
        logic.loadStack(str(tmp_path))
    assert scene.GetNumberOfNodes() == before


def _three_class_stack(folder: Path, logic, shape: tuple[int, int], n: int):
    write_numbered(folder, [np.zeros(shape, np.uint8)] * n)
    volume = logic.loadStack(str(folder))
    logic.setClasses(THREE_CLASSES)
    return volume, logic.createLabelSegmentation(volume)


def test_segments_have_class_names_colors_and_order(tmp_path, logic):
    volume, seg = _three_class_stack(tmp_path, logic, (8, 8), 2)
    s = seg.GetSegmentation()
    assert [s.GetNthSegment(i).GetName() for i in range(3)] == ["background", "cells", "collagen"]
    assert np.allclose(s.GetNthSegment(0).GetColor(), (10 / 255, 20 / 255, 30 / 255))
    again = logic.createLabelSegmentation(volume, segmentation=seg)  # reused, not duplicated
    assert again is seg and s.GetNumberOfSegments() == 3
    with pytest.raises(InputError, match="unique"):
        logic.setClasses([ClassInfo(1, "a", (0, 0, 0)), ClassInfo(2, "a", (0, 0, 0))])


def test_labels_go_into_and_out_of_the_class_segments_whole(tmp_path, logic):
    volume, seg = _three_class_stack(tmp_path, logic, (24, 32), 3)
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
    volume, seg = _three_class_stack(tmp_path, logic, (20, 30), 4)
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
    _paintSquare(volume, seg, "collagen", 1, (-3, 4), (25, 33))  # partly above and right of the volume
    _paintSquare(volume, seg, "background", 1, (0, 10), (0, 29))  # under collagen: the later class wins, as exported
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
    volume, seg = _three_class_stack(tmp_path, logic, (20, 30), 5)
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
    from SemSegMRML import stack_nodes

    volume, _ = _three_class_stack(tmp_path, logic, (6, 7), 5)
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
    volume, seg = _three_class_stack(tmp_path, logic, (24, 32), 2)
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


def _sample_scene(tmp_path, logic, painted=(0, 2), strokes=8):
    folder = write_sample_stack(tmp_path / "sample", num_images=4, size=(96, 96), seed=3)
    volume = logic.loadStack(str(folder / "images"))
    logic.setClasses(SAMPLE_CLASSES)
    seg = logic.createLabelSegmentation(volume)
    reference = read_stack(folder / "reference").images[:, 0]
    labels = np.zeros(reference.shape, np.uint16)
    rng = np.random.default_rng(0)
    for k in painted:
        labels[k] = simulate_strokes(reference[k], 3, strokes, rng=rng)
    logic.setLabelsToSegmentation(labels, seg, volume)
    return folder, volume, seg, labels, reference


def test_an_evaluation_reads_and_scores_the_predicted_slices_references_on_the_worker(tmp_path, logic, scene,
                                                                                      monkeypatch):
    """The panel's Evaluate held Slicer's GUI 22 s for 200 slices of 1024 x 1024: the reference maps are read (of a
    folder, only the predicted slices' files) and scored on the worker, and the table written when it ends."""
    from SemSegLib import stack_io
    from SemSegLib.metrics import evaluate

    folder, volume, seg, _, reference = _sample_scene(tmp_path, logic)
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


def test_a_prediction_s_first_voxels_are_made_by_the_job_that_predicts_into_them(tmp_path, logic, monkeypatch):
    """Filling the uncertainty volume of 1000 slices of 1024 x 1024 (4 GB of floats) took 3-11 s, the prediction
    segments' labelmap 0.7-4 s: the training that predicts its slice, or the first prediction, makes the first on
    the worker; a prediction of slices its segments do not hold makes the second there; later jobs make none."""
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
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


def test_jobs_read_a_gray_stack_s_own_voxels_and_a_copy_of_other_stacks(tmp_path, logic, monkeypatch):
    """A stack of one channel of whole numbers is not copied for a training or a prediction (that took up to 6 s of
    the GUI thread for 1000 images of 1024 x 1024, and held the stack twice): the worker reads the volume's voxels,
    which it cannot write. Several channels and floats are copied as before."""
    from SemSegLib import prediction, training

    _, volume, seg, labels, _ = _sample_scene(tmp_path, logic)
    seen = []
    realTrain, realPredictStack = training.train, prediction.predict_stack
    monkeypatch.setattr(training, "train", lambda images, *a, **k: seen.append(images) or realTrain(images, *a, **k))
    monkeypatch.setattr(prediction, "predict_stack",
                        lambda model, images, *a, **k: seen.append(images) or realPredictStack(model, images, *a, **k))
    logic.train(volume, seg, iterations=2, **FAST)
    task = logic.predict(volume, [3, 1], labelSegmentation=seg)
    voxels = slicer.util.arrayFromVolume(volume)
    assert len(seen) == 2 and all(np.shares_memory(images, voxels) and not images.flags.writeable for images in seen)
    predicted = logic.labelsFromSegmentation(logic.predictionSegmentation(volume), volume)
    images = logic.imagesFromVolume(volume)
    for k in (3, 1):  # each slice's labels are its own image's
        assert np.array_equal(predicted[k], prediction.predict_image(logic.model, images[k]).labels)
    assert list(task.result) == [3, 1]

    seen.clear()
    floats = logic.volumeFromStack(images.astype(np.float32), logic.imageNames(volume), "floats")
    logic.predict(floats, [2])
    assert len(seen) == 1 and seen[0].shape == (1, 1, 96, 96) and not np.shares_memory(seen[0], voxels)
    # What a job reads stays whole when the volume goes (deleted, or its scene closed, while the job runs).
    view = arrays.voxels_of_stack(volume)
    logic.scene.RemoveNode(volume)
    logic.scene.Clear(0)
    del voxels
    assert np.array_equal(view, images)


def test_train_predict_accept_evaluate_export(tmp_path, logic, scene):
    folder, volume, seg, labels, reference = _sample_scene(tmp_path, logic)
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

    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
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
            _paintSquare(volume, prediction, "cell", 3)

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
    folder, volume, seg, _, _ = _sample_scene(tmp_path, logic)
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

    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    predictImage, cancelled, started = prediction.predict_image, threading.Event(), []

    def secondWaitsForTheCancel(model, image, *args, **kwargs):
        # The worker's second slice starts only once the panel has heard of the first and pressed Cancel: then the
        # prediction stops after it, whatever the machine's speed.
        if started:
            assert cancelled.wait(60)
        started.append(image)
        return predictImage(model, image, *args, **kwargs)

    monkeypatch.setattr(prediction, "predict_image", secondWaitsForTheCancel)
    task = logic.predict(volume, "all", labelSegmentation=seg, firstSlice=2, showSeconds=3, waitForCompletion=False)
    kinds = []

    def cancelAfterTheFirst(event):
        kinds.append(event.kind)
        if event.kind == "progress" and event.data.done == 1:
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


def _paintSquare(volume, segmentation, className: str, sliceIndex: int, rows=(0, 4), columns=(0, 4)) -> None:
    """Rows and columns of a slice (first and last; default 0-4) into a class's segment, as a Segment Editor effect
    paints."""
    square = slicer.vtkOrientedImageData()
    square.SetExtent(columns[0], columns[1], rows[0], rows[1], sliceIndex, sliceIndex)
    square.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    square.GetPointData().GetScalars().Fill(1)
    toRAS = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(toRAS)
    square.SetImageToWorldMatrix(toRAS)
    segment = segmentation.GetSegmentation().GetSegmentIdBySegmentName(className)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        square, segmentation, segment, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)


def test_the_strokes_are_read_from_the_correction_baseline_while_it_holds_them(tmp_path, logic, monkeypatch):
    from SemSegMRML import stack_nodes

    _, volume, seg, labels, _ = _sample_scene(tmp_path, logic)
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
    _paintSquare(volume, seg, "cell", 3)
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


def test_export_says_which_slices_the_current_model_has_not_labeled(tmp_path, logic, caplog):
    folder, volume, seg, _, _ = _sample_scene(tmp_path, logic)
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
    _, again, againSeg, _, _ = _sample_scene(tmp_path / "again", logic)
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


def test_a_second_stack_has_its_own_labels_and_prediction(tmp_path, logic):
    _, first, labelsOfFirst, labels, _ = _sample_scene(tmp_path, logic)
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


def test_a_scene_from_before_the_volume_references_keeps_its_prediction(tmp_path, logic, scene):
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
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


def test_cancel_keeps_a_model_and_continue_training_uses_it(tmp_path, logic):
    _, volume, seg, labels, _ = _sample_scene(tmp_path, logic)
    seen = []

    def on_event(e):
        seen.append(e)
        if len(seen) == 3:
            task.cancel()

    task = logic.train(volume, seg, iterations=100_000, waitForCompletion=False, **FAST)
    task.wait(on_event)
    assert task.result.cancelled and seen[-1].kind == "cancelled"
    first = logic.model
    logic.train(volume, seg, iterations=3, **FAST)
    assert len(logic.model.history) == 2 and logic.model is not first


def test_a_training_shows_its_slice_while_it_runs_then_predicts_it(tmp_path, logic, monkeypatch):
    from SemSegLib import training

    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    monkeypatch.setattr(training, "PREVIEW_TIME_SHARE", float("inf"))  # a preview after every step
    previews = []

    def on_event(event):
        if event.kind == "preview":
            node = logic.previewSegmentation(volume, create=False)
            shown = logic.labelsFromSegmentation(node, volume)
            previews.append(event.data.iteration)
            assert np.array_equal(shown[1], event.data.labels) and not shown[[0, 2, 3]].any()
            assert event.message == f"slice 2 shows the network after {event.data.iteration} iterations"

    logic.train(volume, seg, iterations=6, previewSlice=1, previewSeconds=0, eventCallback=on_event, **FAST)
    assert previews == [1, 2, 3, 4, 5, 6]
    assert logic.previewSegmentation(volume, create=False) is None
    assert logic.scene.GetNodesByName(stack_nodes.PREVIEW_NAME).GetNumberOfItems() == 0
    # When it ends, the trained model predicts that slice, as Predict would.
    prediction = logic.predictionSegmentation(volume, create=False)
    trained = logic.labelsFromSegmentation(prediction, volume)
    assert trained[1].min() >= 1 and not trained[[0, 2, 3]].any()
    assert logic.unlabeledByCurrentModel(volume) == ([0, 2, 3], [])
    logic.predict(volume, [1])
    assert np.array_equal(logic.labelsFromSegmentation(prediction, volume), trained)
    with pytest.raises(InputError, match="slice index 4 is outside the volume's 4 slices"):
        logic.train(volume, seg, iterations=1, previewSlice=4, **FAST)

    # A cancelled or failed training takes its preview down and predicts nothing.
    def cancel_at_the_second(event):
        if event.kind == "preview" and event.data.iteration == 2:
            task.cancel()

    task = logic.train(volume, seg, iterations=100_000, previewSlice=3, previewSeconds=0, waitForCompletion=False,
                       **FAST)
    task.wait(cancel_at_the_second)
    assert task.result.cancelled and logic.previewSegmentation(volume, create=False) is None
    assert logic.unlabeledByCurrentModel(volume) == ([0, 2, 3], [1])  # slice 3 not predicted; 1 by the last model
    real = training.masked_cross_entropy
    calls = []

    def fails_at_the_third_step(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(training, "masked_cross_entropy", fails_at_the_third_step)
    with pytest.raises(RuntimeError, match="out of memory"):
        logic.train(volume, seg, iterations=10, previewSlice=3, previewSeconds=0, **FAST)
    assert logic.previewSegmentation(volume, create=False) is None


def test_an_accepted_prediction_can_be_taken_back_keeping_what_was_painted_since(tmp_path, logic):
    _, volume, seg, labels, _ = _sample_scene(tmp_path, logic)
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
    _, volume, seg, _, _ = _sample_scene(tmp_path / "again", logic)
    assert volume.GetID() == volumeID and not logic.canUndoAccept(volume)


def test_a_task_that_ends_after_its_scene_closed_writes_nothing_into_the_next(tmp_path, logic, monkeypatch):
    from SemSegLib import training

    monkeypatch.setattr(training, "PREVIEW_TIME_SHARE", float("inf"))

    def close_while_running(start) -> None:
        task = start()
        logic.scene.Clear(0)  # the person closes the scene; the worker finishes the job all the same
        task.wait()
        names = [logic.scene.GetNthNode(i).GetName() for i in range(logic.scene.GetNumberOfNodes())]
        assert not [n for n in names if n.startswith("SemSeg ")], names
        assert logic.scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
        assert logic.scene.GetNumberOfNodesByClass("vtkMRMLLabelMapVolumeNode") == 0

    _, volume, seg, _, _ = _sample_scene(tmp_path / "first", logic)
    close_while_running(lambda: logic.train(volume, seg, iterations=4, previewSlice=1, previewSeconds=0,
                                            waitForCompletion=False, **FAST))
    assert logic.model is not None  # the trained model is kept (and autosaved); only the scene's nodes are gone
    _, volume, seg, _, _ = _sample_scene(tmp_path / "second", logic)
    close_while_running(lambda: logic.predict(volume, "all", labelSegmentation=seg, showSeconds=0,
                                              waitForCompletion=False))
    _, volume, seg, labels, _ = _sample_scene(tmp_path / "third", logic)
    close_while_running(lambda: logic.export(volume, seg, str(tmp_path / "results"), waitForCompletion=False))
    assert np.array_equal(tifffile.imread(tmp_path / "results" / "strokes" / f"{logic.imageNames(volume)[0]}.tif"),
                          labels[0])  # the files are written all the same: they were asked for
    assert logic.getParameterNode().GetParameter("OutputPath") == ""  # the next scene's panel is not told of it
    loading = logic.startLoadingStack(str(tmp_path / "third" / "sample" / "images"))
    logic.scene.Clear(0)
    assert loading.wait() is None and logic.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == 0


def test_training_never_writes_over_a_model_file_the_person_loaded(tmp_path, logic):
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    with pytest.raises(InputError, match="no model yet"):
        logic.modelDescription()
    logic.train(volume, seg, iterations=2, **FAST)
    summary, lines = logic.modelDescription()  # the panel's model line and its tooltip
    names = ", ".join(c.name for c in logic.classes())
    assert summary.startswith(f"{len(logic.classes())} classes ({names}), 1 channel; 1 training, the last ")
    assert ": 2 iterations in " in summary and any(line.startswith("training 1 ") for line in lines)
    logic.saveModel(str(tmp_path / "mine.pt"))
    saved = (tmp_path / "mine.pt").read_bytes()
    logic.loadModel(str(tmp_path / "mine.pt"), volume)
    assert logic.modelDescription() == (summary, lines)  # what the file holds is what was saved
    logic.train(volume, seg, iterations=2, **FAST)
    assert (tmp_path / "mine.pt").read_bytes() == saved
    autosaved = Path(logic.getParameterNode().GetParameter("ModelPath"))
    assert autosaved != tmp_path / "mine.pt" and autosaved.is_file()
    logic.train(volume, seg, iterations=2, **FAST)  # the autosave file itself is kept up to date
    assert Path(logic.getParameterNode().GetParameter("ModelPath")) == autosaved
    from SemSegLib.model_file import SemSegModel

    assert len(SemSegModel.load(autosaved).history) == 3


def test_undo_training_goes_back_through_the_models_the_trainings_replaced(tmp_path, logic, monkeypatch):
    from SemSegLib.model_file import SemSegModel

    monkeypatch.setattr(logic_training, "TRAININGS_KEPT", 2)
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    with pytest.raises(InputError, match="nothing to undo"):
        logic.undoTraining()
    models = [logic.model]
    for k in range(3):
        logic.train(volume, seg, iterations=2, **FAST)
        models.append(logic.model)
        if k == 0:
            logic.predict(volume, [0])  # by models[1]
    assert len(logic.model.history) == 4 and logic.unlabeledByCurrentModel(volume)[1] == [0]
    assert logic.undoTraining() is models[2] and logic.model is models[2]
    assert len(SemSegModel.load(logic.getParameterNode().GetParameter("ModelPath")).history) == 3  # autosaved
    carried = model_node.stored(logic.getParameterNode())  # and what a saved scene carries (`model_node`)
    assert carried == Path(logic.getParameterNode().GetParameter("ModelPath")).read_bytes()
    assert logic.undoTraining() is models[1]  # and on, as far back as TRAININGS_KEPT
    assert logic.unlabeledByCurrentModel(volume)[1] == []  # slice 1 was predicted by the model now current again
    assert not logic.canUndoTraining()
    with pytest.raises(InputError, match="nothing to undo"):
        logic.undoTraining()
    logic.train(volume, seg, iterations=2, **FAST)  # a training after an undo replaces the model undone to
    assert logic.undoTraining() is models[1]
    logic.loadModel(logic.getParameterNode().GetParameter("ModelPath"))  # a loaded model starts afresh
    assert not logic.canUndoTraining()


def test_the_strokes_a_training_used_are_kept_and_come_back_in_a_new_scene(tmp_path, logic, scene):
    folder, volume, seg, labels, _ = _sample_scene(tmp_path, logic)
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


def test_a_training_goes_on_when_its_strokes_and_model_cannot_be_kept(tmp_path, logic, monkeypatch):
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setattr(kept_strokes, "autosave_folder", lambda: tmp_path / "a file")
    task = logic.train(volume, seg, iterations=2, **FAST)
    assert task.finished and logic.model is not None
    assert logic.lastTrainNote.startswith(f"the strokes could not be kept in {tmp_path / 'a file'}")
    assert f"the model could not be kept in {tmp_path / 'a file'}" in logic.lastTrainNote
    assert logic.getParameterNode().GetParameter("ModelPath") == ""  # names no file that is not there
    assert model_node.stored(logic.getParameterNode()) == logic.model.to_bytes()  # the scene has it all the same
    assert logic.trainingSummary(task.result).endswith(logic.lastTrainNote)  # the status line says so


def test_loaded_labels_fill_only_what_is_not_painted_and_wrong_ones_are_refused(tmp_path, logic):
    folder, volume, seg, labels, reference = _sample_scene(tmp_path, logic)
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


def test_training_errors_are_actionable(tmp_path, logic):
    _, volume, seg, labels, _ = _sample_scene(tmp_path, logic, painted=())
    with pytest.raises(InputError, match="nothing is painted"):
        logic.train(volume, seg, iterations=1)
    only_background = np.zeros_like(labels)
    only_background[0, :5, :5] = 1
    logic.setLabelsToSegmentation(only_background, seg, volume)
    with pytest.raises(InputError, match="no strokes for class"):
        logic.train(volume, seg, iterations=1)
    with pytest.raises(InputError, match="no model yet"):
        logic.predict(volume, "all")
    for call in (lambda: logic.train(volume, None, iterations=1),
                 lambda: logic.export(volume, None, str(tmp_path / "results"))):
        with pytest.raises(InputError, match="no label segmentation was given for .* 'Start painting'"):
            call()
    assert not (tmp_path / "results").exists()  # a refused export makes no folder


def test_the_start_chosen_in_the_panel_reaches_the_training(tmp_path, logic):
    # The panel hands its "Start from" choice to Logic.train (the parameter node's StartingPoint). The sample
    # stack's strokes agree too little with the shipped nuclei network for "auto" to use it; named, it is used
    # (the default network); on another network it cannot be, and the error says what to choose instead.
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    assert logic.getParameterNode().GetParameter("StartingPoint") == "auto"
    logic.train(volume, seg, iterations=2, patch_size=64, starting_point="auto")
    assert logic.model.history[-1]["starting_point"] is None
    logic.train(volume, seg, iterations=2, patch_size=64, continueTraining=False,
                starting_point="fluorescent-nuclei")
    assert logic.model.history[-1]["starting_point"]["name"] == "fluorescent-nuclei"
    with pytest.raises(InputError, match="starting point 'none'"):
        logic.train(volume, seg, iterations=2, continueTraining=False, starting_point="fluorescent-nuclei", **FAST)


def test_saved_and_reloaded_scene_keeps_the_labels(tmp_path, logic, scene):
    _, volume, seg, labels, _ = _sample_scene(tmp_path, logic)
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


def test_where_to_paint_ranks_slices_and_marks_their_regions(tmp_path, logic, scene):
    _, volume, seg, _, _ = _sample_scene(tmp_path, logic, painted=(1,))
    with pytest.raises(InputError, match="predict first"):
        logic.suggestSlices(volume)
    logic.train(volume, seg, iterations=30, **FAST)
    # Each prediction's worker describes the slices it predicted, so suggesting does not do it on the GUI thread,
    # and a prediction of one slice does not wait for the whole stack to be described (35 s for 100 slices of
    # 1024 x 1024).
    logic.predict(volume, [3], labelSegmentation=seg)
    assert sorted(logic._cachedSliceDescriptors(volume)) == [3]
    logic.predict(volume, "all", labelSegmentation=seg)
    described = logic._cachedSliceDescriptors(volume)
    assert sorted(described) == [0, 1, 2, 3] and logic.sliceDescriptors(volume).keys() == described.keys()
    # The slices predicted before a scene was opened again (a new Logic knows no descriptors): the next prediction's
    # worker describes them too, after its own slices.
    again = SemSeg.SemSegLogic(scene)
    again.model = logic.model
    events = []
    again.predict(volume, [1], labelSegmentation=seg, eventCallback=events.append)
    assert sorted(again._cachedSliceDescriptors(volume)) == [0, 1, 2, 3]
    assert [e.message for e in events if e.data == (3, 3)] == ["3 of 3 slice(s) predicted before described for "
                                                               "where to paint next"]
    for k in described:
        assert np.array_equal(again._cachedSliceDescriptors(volume)[k], described[k])
    u = slicer.util.arrayFromVolume(logic.uncertaintyVolume(volume))
    # Two planted uncertain spots off the diagonal (row != column) on slice 2, the rest made fairly sure.
    u *= 0.3
    u[2, 60:72, 20:34] = 1.0
    u[2, 10:16, 70:80] = 0.9
    slicer.util.arrayFromVolumeModified(logic.uncertaintyVolume(volume))
    suggestions = logic.suggestSlices(volume, top=4)
    means = [u[k].mean() for k in range(4)]
    assert [s["slice"] for s in suggestions] == sorted(range(4), key=lambda k: -means[k])
    # Two suggestions: one from each of 2 groups (`spread_groups`, test_suggest.py), even if both of the least
    # sure slices are in one group.
    groups = spread_groups(image_descriptors(logic.imagesFromVolume(volume)), 2)
    two = [s["slice"] for s in logic.suggestSlices(volume, top=2)]
    assert two == rank_by_uncertainty(dict(enumerate(means)), 2, groups) and len({groups[k] for k in two}) == 2
    for k in described:
        assert np.allclose(described[k], image_descriptors(logic.imagesFromVolume(volume), [k])[k])
    # Changed images are described again.
    slicer.util.arrayFromVolume(volume)[0] = 0
    slicer.util.arrayFromVolumeModified(volume)
    assert logic._cachedSliceDescriptors(volume) is None
    assert not np.allclose(logic.sliceDescriptors(volume)[0], described[0])
    suggestion = next(s for s in suggestions if s["slice"] == 2)
    assert len(suggestion["regions"]) == 2
    # Where the person painted is no region any more: a stroke over the bigger spot leaves the other one.
    labels = logic.labelsFromSegmentation(seg, volume)
    labels[2, 62:70, 22:32] = 1
    logic.setLabelsToSegmentation(labels, seg, volume)
    painted = next(s for s in logic.suggestSlices(volume, top=4, labelSegmentation=seg) if s["slice"] == 2)
    assert [(r.row // 10, r.column // 10) for r in painted["regions"]] == [(1, 7)]
    # ... and the slice counts as less unsure: what lies near the stroke is settled (`image_uncertainty`).
    assert painted["mean_uncertainty"] < suggestion["mean_uncertainty"]

    # Geometry that is not the identity, so a swapped row / column or a lost offset shows.
    volume.SetSpacing(0.5, 0.25, 2.0)
    volume.SetOrigin(10.0, -5.0, 3.0)
    markers = logic.markSuggestedRegions(volume, suggestion)
    regions = suggestion["regions"]
    assert markers.GetNumberOfControlPoints() == len(regions) and markers.GetLocked()
    rasToIJK = vtk.vtkMatrix4x4()
    volume.GetRASToIJKMatrix(rasToIJK)
    for n, region in enumerate(regions):
        ijk = rasToIJK.MultiplyPoint([*markers.GetNthControlPointPositionWorld(n), 1.0])
        assert np.allclose(ijk[:3], (region.column, region.row, 2), atol=1e-6)
        assert markers.GetNthControlPointLabel(n) == str(n + 1)
        assert f"{region.mean_uncertainty:.2f}" in markers.GetNthControlPointDescription(n)
    assert 60 <= regions[0].row < 72 and 20 <= regions[0].column < 34  # the bigger spot first
    assert 10 <= regions[1].row < 16 and 70 <= regions[1].column < 80

    # The next suggestion reuses the same point list; clearing empties it.
    other = next(s for s in suggestions if s["slice"] != 2)
    again = logic.markSuggestedRegions(volume, other)
    assert again is markers and markers.GetNumberOfControlPoints() == len(other["regions"])
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsFiducialNode") == 1
    logic.markSuggestedRegions(volume, suggestion)
    assert markers.GetNumberOfControlPoints() == 2
    logic.markSuggestedRegions(volume, None)
    assert markers.GetNumberOfControlPoints() == 0


def test_where_to_paint_is_worked_out_on_the_worker(tmp_path, logic, scene, monkeypatch):
    """After a prediction of 1000 slices of 1024 x 1024 the suggestions held Slicer's GUI 1.6-2.7 s: the slices not
    yet described, their mean uncertainty and the regions are worked out on the worker."""
    from SemSegLib import suggest

    _, volume, seg, _, _ = _sample_scene(tmp_path, logic, painted=(1,))
    logic.train(volume, seg, iterations=30, **FAST)
    logic.predict(volume, "all", labelSegmentation=seg)
    expected = logic.suggestSlices(volume, top=2, labelSegmentation=seg)
    threads = []
    started, cancelled = threading.Event(), threading.Event()

    def recorded(function, block=False):
        def run(*args, **kwargs):
            threads.append((threading.current_thread().name, function.__name__))
            if block and not cancelled.is_set():
                started.set()
                assert cancelled.wait(60)
            return function(*args, **kwargs)
        return run

    monkeypatch.setattr(suggest, "image_descriptors", recorded(suggest.image_descriptors, block=True))
    monkeypatch.setattr(suggest, "image_uncertainty", recorded(suggest.image_uncertainty))
    monkeypatch.setattr(suggest, "uncertain_regions", recorded(suggest.uncertain_regions))
    # A scene opened again: a new Logic knows no slice's look. Cancelled while describing: nothing, none kept.
    again = SemSeg.SemSegLogic(scene)
    again.model = logic.model
    task = again.startSuggesting(volume, top=2, labelSegmentation=seg)
    assert started.wait(60)
    task.cancel()
    cancelled.set()
    assert task.wait() is None and again._cachedSliceDescriptors(volume) is None
    threads.clear()
    events = []
    suggestions = again.startSuggesting(volume, top=2, labelSegmentation=seg).wait(events.append)
    assert {name for name, _ in threads} == {"SemSegWorker"}
    assert [f for _, f in threads].count("image_descriptors") == 4 and ("SemSegWorker", "uncertain_regions") in threads
    assert sorted(again._cachedSliceDescriptors(volume)) == [0, 1, 2, 3]
    for k, descriptor in logic._cachedSliceDescriptors(volume).items():
        assert np.allclose(again._cachedSliceDescriptors(volume)[k], descriptor)
    assert events[-1].kind == "done" and events[-2].message == "step 10 of 10"  # 4 described, 4 means, 2 ranked
    assert [(s["slice"], s["mean_uncertainty"], s["regions"]) for s in suggestions] == \
        [(s["slice"], s["mean_uncertainty"], s["regions"]) for s in expected]


def test_a_saved_scene_carries_its_model(tmp_path, logic, scene):
    # A .mrb opened after the temporary folder was emptied (a reboot), or on another computer, has its model still.
    from SemSegLib.model_file import SemSegModel

    _, volume, seg, _, _ = _sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.predict(volume, [1, 2])
    autosaved = Path(logic.getParameterNode().GetParameter("ModelPath"))
    assert scene.WriteToMRB(str(tmp_path / "work.mrb"))
    with zipfile.ZipFile(tmp_path / "work.mrb") as bundle:
        files = {Path(name).name: info.file_size for name, info in zip(bundle.namelist(), bundle.infolist())}
    assert "SemSeg model.txt" in files  # a file of its own, not megabytes of text inside the scene's XML
    assert max(size for name, size in files.items() if name.endswith(".mrml")) < 100_000
    autosaved.unlink()

    scene2, _, _ = make_scene()
    assert scene2.ReadFromMRB(str(tmp_path / "work.mrb"))
    logic2 = SemSeg.SemSegLogic(scene2)
    assert logic2.restoreModelFromParameterNode()
    assert logic2.model.signature == logic.model.signature
    volume2 = logic2.getParameterNode().GetNodeReference(parameters.ROLE_VOLUME)
    assert logic2.unlabeledByCurrentModel(volume2) == ([0, 3], [])  # slices 2-3 are this model's
    restored = Path(logic2.getParameterNode().GetParameter("ModelPath"))
    assert restored.is_file() and restored != autosaved  # SemSeg's own file again, which the next training updates
    seg2 = logic2.getParameterNode().GetNodeReference(parameters.ROLE_LABELS)
    logic2.train(volume2, seg2, iterations=2, **FAST)
    assert Path(logic2.getParameterNode().GetParameter("ModelPath")) == restored
    assert SemSegModel.load(restored).signature == logic2.model.signature != logic.model.signature
    scene2.Clear(1)


def test_a_model_node_whose_text_is_not_a_model_s_is_ignored(logic, scene):
    node = logic.getParameterNode()
    assert model_node.stored(node) is None
    model_node.store(scene, node, b"\x00model bytes\xff")
    assert model_node.stored(node) == b"\x00model bytes\xff"
    text = node.GetNodeReference(model_node.ROLE_MODEL)
    text.SetText("edited by hand: not base64")
    assert model_node.stored(node) is None
    assert not logic.restoreModelFromParameterNode()  # nothing to restore, and no error
    model_node.store(scene, node, b"base64 all right, but no model")
    assert not logic.restoreModelFromParameterNode() and logic.model is None
    assert not list(kept_strokes.autosave_folder().glob("model-*.pt"))  # its decoded bytes are not left behind


def test_an_opened_scene_brings_its_model_in_place_of_one_trained_since(tmp_path, logic, scene):
    # Work on stack A saved; the scene closed, stack B trained; A opened again: A's predictions are A's model's.
    from SemSegLib.model_file import SemSegModel

    _, volume, seg, _, _ = _sample_scene(tmp_path / "a", logic)
    logic.train(volume, seg, iterations=2, **FAST)
    model_a = logic.model.signature
    assert scene.WriteToMRB(str(tmp_path / "a.mrb"))
    scene.Clear(0)
    _, volume, seg, _, _ = _sample_scene(tmp_path / "b", logic, painted=(1, 3))
    logic.train(volume, seg, iterations=2, continueTraining=False, **FAST)
    model_b = logic.model.signature
    assert not logic.restoreModelFromParameterNode()  # the scene carries the model the Logic has
    scene.Clear(0)
    assert scene.ReadFromMRB(str(tmp_path / "a.mrb"))
    assert logic.restoreModelFromParameterNode()
    assert logic.model.signature == model_a != model_b
    kept = logic.lastRestoreNote.rsplit(" ", 1)[-1]
    assert logic.lastRestoreNote.startswith("the model of the opened scene replaced the one you had")
    assert SemSegModel.load(kept).signature == model_b  # nothing is lost: the one it replaced is in its file
    assert not logic.restoreModelFromParameterNode()  # and only once


def test_a_folder_on_disk_is_segmented_with_the_current_model(tmp_path, logic):
    folder, volume, seg, _, _ = _sample_scene(tmp_path, logic)
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


def test_the_first_logic_of_an_application_prunes_the_autosave_folder(scene, monkeypatch):
    import os

    old = kept_strokes.new_model_file()
    old.write_bytes(b"model")
    os.utime(old, (1, 1))  # 1970
    monkeypatch.setattr(kept_strokes, "KEEP_NEWEST", 0)
    monkeypatch.setattr(SemSeg.SemSegLogic, "_autosavePruned", False)
    SemSeg.SemSegLogic(scene)
    assert not old.exists()
    again = kept_strokes.new_model_file()
    again.write_bytes(b"model")
    os.utime(again, (1, 1))
    SemSeg.SemSegLogic(scene)  # once per application: a Logic made later does not look again
    assert again.exists()
