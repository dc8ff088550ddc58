"""SemSegLogic against Slicer's real data model (slicer-core): model files: autosaves, a scene that carries its model,
the autosave folder's pruning.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core wheel not installed")

import SemSeg  # noqa: E402
from painted_scene import FAST, sample_scene  # noqa: E402
from SemSegLib import kept_strokes  # noqa: E402
from SemSegLib.errors import InputError  # noqa: E402
from SemSegMRML import model_node, parameters  # noqa: E402
from slicer_scene import make_scene  # noqa: E402


def test_training_never_writes_over_a_model_file_the_person_loaded(tmp_path, logic):
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
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


def test_a_saved_scene_carries_its_model(tmp_path, logic, scene):
    # A .mrb opened after the temporary folder was emptied (a reboot), or on another computer, has its model still.
    from SemSegLib.model_file import SemSegModel

    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
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


def _restore(logic, where: str) -> bool:
    """The scene's model restored as a script does (on this thread) or as the panel does (on the worker)."""
    if where == "here":
        return logic.restoreModelFromParameterNode()
    task = logic.startRestoringModel()
    return task is not None and task.wait()


@pytest.mark.parametrize("where", ["here", "on the worker"])
def test_a_model_node_whose_text_is_not_a_model_s_is_ignored(logic, scene, where):
    node = logic.getParameterNode()
    assert model_node.stored(node) is None
    model_node.store(scene, node, b"\x00model bytes\xff")
    assert model_node.stored(node) == b"\x00model bytes\xff"
    text = node.GetNodeReference(model_node.ROLE_MODEL)
    text.SetText("edited by hand: not base64")
    assert model_node.stored(node) is None
    assert not _restore(logic, where)  # nothing to restore, and no error
    model_node.store(scene, node, b"base64 all right, but no model")
    assert not _restore(logic, where) and logic.model is None
    assert not list(kept_strokes.autosave_folder().glob("model-*.pt"))  # its decoded bytes are not left behind


@pytest.mark.parametrize("where", ["here", "on the worker"])
def test_an_opened_scene_brings_its_model_in_place_of_one_trained_since(tmp_path, logic, scene, where, monkeypatch):
    # Work on stack A saved; the scene closed, stack B trained; A opened again: A's predictions are A's model's.
    from SemSegLib.model_file import SemSegModel

    _, volume, seg, _, _ = sample_scene(tmp_path / "a", logic)
    logic.train(volume, seg, iterations=2, **FAST)
    model_a = logic.model.signature
    assert scene.WriteToMRB(str(tmp_path / "a.mrb"))
    scene.Clear(0)
    _, volume, seg, _, _ = sample_scene(tmp_path / "b", logic, painted=(1, 3))
    logic.train(volume, seg, iterations=2, continueTraining=False, **FAST)
    model_b = logic.model.signature
    assert not _restore(logic, where)  # the scene carries the model the Logic has
    scene.Clear(0)
    assert scene.ReadFromMRB(str(tmp_path / "a.mrb"))
    readers = []
    realLoad = SemSegModel.load
    monkeypatch.setattr(SemSegModel, "load",
                        staticmethod(lambda path: readers.append(threading.current_thread().name) or realLoad(path)))
    assert _restore(logic, where)
    assert readers == ["MainThread" if where == "here" else "SemSegWorker"]
    assert logic.model.signature == model_a != model_b
    kept = logic.lastRestoreNote.rsplit(" ", 1)[-1]
    assert logic.lastRestoreNote.startswith("the model of the opened scene replaced the one you had")
    assert SemSegModel.load(kept).signature == model_b  # nothing is lost: the one it replaced is in its file
    assert not _restore(logic, where)  # and only once


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


def test_the_panel_s_load_reads_the_model_on_the_worker_and_refuses_one_the_images_do_not_fit(tmp_path, logic,
                                                                                                scene, monkeypatch):
    from SemSegLib import model_file
    from SemSegLib.classes import ClassInfo

    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    logic.saveModel(str(tmp_path / "mine.pt"))
    trained = logic.modelDescription()
    logic.setClasses([ClassInfo(1, "a", (1, 2, 3)), ClassInfo(2, "b", (4, 5, 6))])
    readers = []
    realLoad = model_file.SemSegModel.load
    monkeypatch.setattr(model_file.SemSegModel, "load",
                        staticmethod(lambda path: readers.append(threading.current_thread().name) or realLoad(path)))
    task = logic.startLoadingModel(str(tmp_path / "mine.pt"), volume)
    model = task.wait()
    assert readers == ["SemSegWorker"] and model is logic.model and logic.modelDescription() == trained
    assert [c.name for c in logic.classes()] == [c.name for c in model.classes]  # the model's classes, as loadModel
    node = logic.getParameterNode()
    assert node.GetParameter("ModelPath") == str(tmp_path / "mine.pt")
    assert model_node.stored(node) == (tmp_path / "mine.pt").read_bytes()  # a saved scene carries it
    cancelled = logic.startLoadingModel(str(tmp_path / "mine.pt"), volume)
    cancelled.cancel()  # before the worker reads the file, or after: either way nothing changes
    assert cancelled.wait() is None and logic.model is model
    # A model the images do not fit is refused when the task ends; the current one stays.
    rgb = logic.volumeFromStack(np.zeros((2, 3, 8, 8), np.uint16), ["x", "y"], rgb=False)
    with pytest.raises(InputError, match="channel"):
        logic.startLoadingModel(str(tmp_path / "mine.pt"), rgb).wait()
    assert logic.model is model


def test_a_scene_collected_together_with_its_logic_does_not_crash_the_process():
    # A cycle that holds a scene and its Logic (an error kept with its traceback did) is freed by the garbage
    # collector; the scene's destructor then called the Logic's observer, which the collector had cleared: a
    # segmentation fault. In a process of its own, which such a crash would end.
    root = Path(__file__).resolve().parent
    script = f"""
import gc, sys
sys.path[:0] = {[str(root.parent / "SemSegModule"), str(root)]!r}
import SemSeg
from slicer_scene import make_scene

def cycle():
    scene = make_scene()[0]
    logic = SemSeg.SemSegLogic(scene)  # made before what holds it: the collector clears its observer first

    class Cycle:
        pass

    held = Cycle()
    held.scene, held.logic, held.me = scene, logic, held

for _ in range(3):
    cycle()
    gc.collect()
print("collected")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "collected", done.stderr[-1500:]


def test_a_restore_on_the_worker_whose_scene_closes_meanwhile_leaves_no_file(tmp_path, logic, scene):
    _, volume, seg, _, _ = sample_scene(tmp_path, logic)
    logic.train(volume, seg, iterations=2, **FAST)
    assert scene.WriteToMRB(str(tmp_path / "work.mrb"))
    Path(logic.getParameterNode().GetParameter("ModelPath")).unlink()  # the restore must write the scene's copy
    scene2, _, _ = make_scene()
    assert scene2.ReadFromMRB(str(tmp_path / "work.mrb"))
    logic2 = SemSeg.SemSegLogic(scene2)
    before = set(kept_strokes.autosave_folder().glob("model-*.pt"))
    task = logic2.startRestoringModel()
    assert len(set(kept_strokes.autosave_folder().glob("model-*.pt")) - before) == 1  # written before the reading
    scene2.Clear(0)
    assert task.wait() is None and logic2.model is None
    assert set(kept_strokes.autosave_folder().glob("model-*.pt")) == before
    scene2.Clear(1)
