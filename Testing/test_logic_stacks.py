"""SemSegLogic against Slicer's real data model (slicer-core): stacks into volumes: order, geometry, channels, what is
drawn, loading on the worker, bad stacks.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import tifffile

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from painted_scene import FAST, THREE_CLASSES, sample_scene, write_numbered  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegMRML import arrays, parameters  # noqa: E402
from SemSegMRML import channels as channels_module  # noqa: E402


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
    # A stack file of several series (an OME-TIFF's positions): the first is loaded, and the Logic says what was not.
    assert logic.lastLoadNote == ""
    with tifffile.TiffWriter(tmp_path / "plate.ome.tif", ome=True) as tif:
        for position in range(2):
            tif.write(images + position, metadata={"axes": "ZYX"})
    plate = logic.startLoadingStack(str(tmp_path / "plate.ome.tif")).wait()
    assert np.array_equal(slicer.util.arrayFromVolume(plate), images)
    assert logic.lastLoadNote.startswith("plate.ome.tif holds 2 image series; SemSeg read the first (5 x 6 x 9, ZYX)")
    logic.loadStack(str(tmp_path / "plate.ome.tif"))
    assert logic.lastLoadNote.startswith("plate.ome.tif holds 2 image series")
    write_numbered(tmp_path / "again", images)
    logic.loadStack(str(tmp_path / "again"))
    assert logic.lastLoadNote == ""


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
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
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


def test_jobs_read_a_gray_stack_s_own_voxels_and_a_copy_of_other_stacks(tmp_path, logic, monkeypatch):
    """A stack of one channel of whole numbers is not copied for a training or a prediction (that took up to 6 s of
    the GUI thread for 1000 images of 1024 x 1024, and held the stack twice): the worker reads the volume's voxels,
    which it cannot write. Several channels and floats are copied as before."""
    from SemSegLib import prediction, training

    _, volume, seg, labels, _ = sample_scene(tmp_path, logic)
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


def test_a_loaded_stack_starts_the_imports_and_tasks_that_need_them_wait_for_them_on_the_worker(tmp_path, logic,
                                                                                                  monkeypatch):
    from SemSegLib import warm_up

    started, waited = [], []
    monkeypatch.setattr(warm_up, "start", lambda: started.append(True) or True)
    monkeypatch.setattr(warm_up, "wait", lambda: waited.append(threading.current_thread().name))
    folder, volume, seg, _, _ = sample_scene(tmp_path, logic)  # loadStack, on this thread
    assert started == [True] and waited == []
    assert logic.startLoadingStack(str(folder / "images")).wait() is not None  # read on the worker
    assert started == [True, True] and waited == []  # a task that only reads files does not wait
    logic.loadLabels(volume, str(folder / "reference"))
    assert waited == []
    logic.train(volume, seg, iterations=1, **FAST)
    assert waited == ["SemSegWorker"]  # on the worker, not on the main thread: the GUI never waits for it
    logic.predict(volume, [0])
    assert waited == ["SemSegWorker"] * 2
