"""SemSegLogic against Slicer's real data model (slicer-core): where to paint next."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import vtk

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

import SemSeg  # noqa: E402
from painted_scene import FAST, sample_scene  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegLib.suggest import image_descriptors, rank_by_uncertainty, spread_groups  # noqa: E402


def test_where_to_paint_ranks_slices_and_marks_their_regions(tmp_path, logic, scene):
    _, volume, seg, _, _ = sample_scene(tmp_path, logic, painted=(1,))
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
    # The slices predicted before a scene was opened again (a new Logic knows no descriptors): the next prediction
    # describes its own, where to paint next (on the worker, test below) the others.
    again = SemSeg.SemSegLogic(scene)
    again.model = logic.model
    again.predict(volume, [1], labelSegmentation=seg)
    assert sorted(again._cachedSliceDescriptors(volume)) == [1]
    again.suggestSlices(volume)
    assert sorted(again._cachedSliceDescriptors(volume)) == [0, 1, 2, 3]
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

    _, volume, seg, _, _ = sample_scene(tmp_path, logic, painted=(1,))
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
