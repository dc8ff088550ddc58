"""SemSegLogic against Slicer's real data model (slicer-core): trainings: the slice shown while one runs, cancel and
continue, undo, what an error says.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

from painted_scene import FAST, sample_scene  # noqa: E402
from SemSegLib import kept_strokes  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegMRML import logic_training, model_node, stack_nodes  # noqa: E402

MODULE = Path(__file__).resolve().parents[1] / "SemSegModule"


def test_cancel_keeps_a_model_and_continue_training_uses_it(tmp_path, logic):
    _, volume, seg, labels, _ = sample_scene(tmp_path, logic)
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

    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    monkeypatch.setattr(training, "PREVIEW_TIME_SHARE", float("inf"))  # a preview after every step
    previews = []

    def on_event(event):
        if event.kind == "preview":
            node = logic.previewSegmentation(volume, create=False)
            shown = logic.labelsFromSegmentation(node, volume)
            previews.append(event.data.iteration)
            assert np.array_equal(shown[1], event.data.labels) and not shown[[0, 2, 3]].any()
            assert event.message == (f"slice 2 shows the network after {event.data.iteration} iterations"
                                     if event.data.iteration else
                                     "slice 2 shows a random forest of the strokes while the network starts")

    logic.train(volume, seg, iterations=6, previewSlice=1, previewSeconds=0, eventCallback=on_event, **FAST)
    assert previews == [0, 1, 2, 3, 4, 5, 6]  # 0: a first training's forest of the strokes, before any step
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

    _, volume, seg, _, _ = sample_scene(tmp_path / "first", logic)
    close_while_running(lambda: logic.train(volume, seg, iterations=4, previewSlice=1, previewSeconds=0,
                                            waitForCompletion=False, **FAST))
    assert logic.model is not None  # the trained model is kept (and autosaved); only the scene's nodes are gone
    _, volume, seg, _, _ = sample_scene(tmp_path / "second", logic)
    close_while_running(lambda: logic.predict(volume, "all", labelSegmentation=seg, showSeconds=0,
                                              waitForCompletion=False))
    _, volume, seg, labels, _ = sample_scene(tmp_path / "third", logic)
    close_while_running(lambda: logic.export(volume, seg, str(tmp_path / "results"), waitForCompletion=False))
    assert np.array_equal(tifffile.imread(tmp_path / "results" / "strokes" / f"{logic.imageNames(volume)[0]}.tif"),
                          labels[0])  # the files are written all the same: they were asked for
    assert logic.getParameterNode().GetParameter("OutputPath") == ""  # the next scene's panel is not told of it
    loading = logic.startLoadingStack(str(tmp_path / "third" / "sample" / "images"))
    logic.scene.Clear(0)
    assert loading.wait() is None and logic.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == 0


def test_undo_training_goes_back_through_the_models_the_trainings_replaced(tmp_path, logic, monkeypatch):
    from SemSegLib.model_file import SemSegModel

    monkeypatch.setattr(logic_training, "TRAININGS_KEPT", 2)
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
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


def test_a_training_goes_on_when_its_strokes_and_model_cannot_be_kept(tmp_path, logic, monkeypatch):
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    (tmp_path / "a file").write_text("not a folder")
    monkeypatch.setattr(kept_strokes, "autosave_folder", lambda: tmp_path / "a file")
    task = logic.train(volume, seg, iterations=2, **FAST)
    assert task.finished and logic.model is not None
    assert logic.lastTrainNote.startswith(f"the strokes could not be kept in {tmp_path / 'a file'}")
    assert f"the model could not be kept in {tmp_path / 'a file'}" in logic.lastTrainNote
    assert logic.getParameterNode().GetParameter("ModelPath") == ""  # names no file that is not there
    assert model_node.stored(logic.getParameterNode()) == logic.model.to_bytes()  # the scene has it all the same
    assert logic.trainingSummary(task.result).endswith(logic.lastTrainNote)  # the status line says so


def test_training_errors_are_actionable(tmp_path, logic):
    _, volume, seg, labels, _ = sample_scene(tmp_path, logic, painted=())
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
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    assert logic.getParameterNode().GetParameter("StartingPoint") == "auto"
    logic.train(volume, seg, iterations=2, patch_size=64, starting_point="auto")
    assert logic.model.history[-1]["starting_point"] is None
    logic.train(volume, seg, iterations=2, patch_size=64, continueTraining=False,
                starting_point="fluorescent-nuclei")
    assert logic.model.history[-1]["starting_point"]["name"] == "fluorescent-nuclei"
    with pytest.raises(InputError, match="starting point 'none'"):
        logic.train(volume, seg, iterations=2, continueTraining=False, starting_point="fluorescent-nuclei", **FAST)


@pytest.mark.parametrize("warm_up", [True, False])
def test_the_first_training_imports_torch_off_the_gui_thread(tmp_path, warm_up):
    # The first training of a Slicer session imports torch and the engine: on Slicer's GUI thread that held it
    # about 2 s (longer with a CUDA build). This process has torch already, so a fresh one shows which thread
    # imports it first: the warm-up a stack's loading starts (SemSegLib.warm_up), or, without it, the worker.
    script = f"""
import sys, threading
sys.path[:0] = {[str(MODULE), str(Path(__file__).parent)]!r}
first = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not first:
            first.append(threading.current_thread().name)

sys.meta_path.insert(0, Watch())
from pathlib import Path
import SemSeg
from painted_scene import FAST, sample_scene
from slicer_scene import make_scene
from SemSegLib import warm_up

if not {warm_up!r}:
    warm_up.start = lambda: False
logic = SemSeg.SemSegLogic(make_scene()[0])
_, volume, seg, _, _ = sample_scene(Path({str(tmp_path)!r}), logic)
task = logic.train(volume, seg, iterations=2, waitForCompletion=False, **FAST)
task.wait()
print("first import of torch:", first[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = "SemSeg warm-up" if warm_up else "SemSegWorker"
    assert done.stdout.splitlines()[-1] == f"first import of torch: {expected}"
