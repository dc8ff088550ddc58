"""The model's files: autosaved after each training, carried in the scene, saved, loaded, restored when a scene is
opened.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from SemSegLib import kept_strokes
from SemSegLib.atomic import write_bytes_atomic
from SemSegLib.errors import InputError
from SemSegLib.task import SemSegEvent, SemSegTask
from SemSegLib.worker import Job

from SemSegMRML import arrays, model_node


class ModelLogic:
    """The model's files (a part of SemSegLogic)."""

    def _autosaveModel(self, inScene: bool = True) -> str:
        """Keep the current model in the scene (`model_node`; if `inScene`: the training's scene is still open) and
        on disk (parameter ModelPath), so that a reopened scene can continue. Only SemSeg's own autosave file is
        rewritten: a model file the person loaded (ModelPath too) stays as it was saved. Returns what could not be
        done ('' if nothing): a full or read-only temporary folder must not lose the training."""
        node = self.getParameterNode()
        data = self.model.to_bytes()
        if inScene:
            self._carry(data)
        path = node.GetParameter("ModelPath")
        try:
            if not path or Path(path).parent.resolve() != kept_strokes.autosave_folder().resolve():
                path = str(kept_strokes.new_model_file())
            write_bytes_atomic(Path(path), data)
        except OSError as e:
            self._modelFile = None
            return f"the model could not be kept in {kept_strokes.autosave_folder()} ({e}): use 'Save model'"
        node.SetParameter("ModelPath", path)
        self._modelFile = path
        return ""

    def _carry(self, data: bytes) -> None:
        """The current model's file into the scene (`model_node`), so that a saved scene carries it."""
        model_node.store(self.scene, self.getParameterNode(), data)
        self._carriedDigest = hashlib.sha1(data).hexdigest()

    def saveModel(self, path: str) -> None:
        if self.model is None:
            raise InputError("no model to save: train one first.")
        self.model.save(path)

    def loadModel(self, path: str, volume=None):
        """Load a saved model, on this thread (a script's, the console's); its classes become the module's classes.
        The panel uses `startLoadingModel`."""
        return self._adoptModel(*_readModel(path), path, volume)

    def startLoadingModel(self, path: str, volume=None) -> SemSegTask:
        """`loadModel` with the file read and the network built on the worker: poll the task; its result is the model
        (None if cancelled or the scene closed meanwhile). Why: the first load of a Slicer session imports torch and
        MONAI, which held Slicer's GUI 4.5 s on this machine's CPU build of torch, longer with a CUDA build."""

        def run(job: Job):
            read = _readModel(path)
            return None if job.should_stop() else read  # cancelled: the current model stays

        return self._start("load model", run, lambda p: SemSegEvent("progress", str(p)),
                           self._inThisScene(lambda read: self._adoptModel(*read, path, volume)),
                           waitForCompletion=False, eventCallback=None)

    def _adoptModel(self, model, data: bytes, path: str, volume=None):
        """`model`, read from `data` (the file at `path`), becomes the current one; refused if `volume`'s images do
        not fit it."""
        if volume is not None:
            model.check_stack(arrays.channel_count(volume), volume.GetName())
        self.model, self.replacedModels = model, []
        self.setClasses(model.classes)
        self.getParameterNode().SetParameter("ModelPath", str(path))
        self._modelFile = str(path)
        self._carry(data)
        return model

    def modelDescription(self) -> tuple[str, list[str]]:
        """The current model in one line and in full (`semseg info`): its classes, images, network, how it predicts
        and the trainings that made it."""
        from SemSegLib.model_info import info_lines, info_summary, model_info

        if self.model is None:
            raise InputError("no model yet: train one or load a saved model.")
        info = model_info(self.model)
        return info_summary(info), info_lines(info)

    def restoreModelFromParameterNode(self) -> bool:
        """After a scene is opened: load the model it carries (`model_node`), when it is not the one this Logic last
        put into a scene: its predictions are that model's, not those of a model trained since in another scene
        (`lastRestoreNote` says where that one is kept). A scene that carries no model (saved before SemSeg kept
        models in scenes) gets the file it names (ModelPath), when there is no model yet. Read on this thread; the
        panel uses `startRestoringModel`. Returns whether a model was restored."""
        plan = self._planRestore()
        return False if plan is None else self._finishRestore(plan, _readForRestore(plan.path))

    def startRestoringModel(self) -> SemSegTask | None:
        """`restoreModelFromParameterNode` with the model read on the worker: None when there is nothing to restore,
        else a task whose result says whether a model was restored (None if the scene closed meanwhile). Why: the
        first model of a Slicer session imports torch, which held Slicer's GUI 4.5 s after the scene had opened."""
        plan = self._planRestore()
        if plan is None:
            return None

        def ended() -> None:  # the scene closed meanwhile: the file the restore wrote holds no model of a scene
            if not plan.restored and plan.written is not None:
                Path(plan.written).unlink(missing_ok=True)

        return self._start("restore model", lambda job: _readForRestore(plan.path),
                           lambda p: SemSegEvent("progress", str(p)),
                           self._inThisScene(lambda read: self._finishRestore(plan, read)),
                           waitForCompletion=False, eventCallback=None, ended=ended)

    def _planRestore(self) -> _Restore | None:
        """What a restore loads, and what it first writes: the model it replaces into a file, if that has none, and
        the model the scene carries into one, if no file holds it. None: nothing to restore (or it could not be
        written, which is logged)."""
        node = self.getParameterNode()
        path, carried = node.GetParameter("ModelPath"), model_node.stored(node)
        if self.model is not None and (carried is None or hashlib.sha1(carried).hexdigest() == self._carriedDigest):
            return None
        plan = _Restore(path, None, self._modelFile if self.model is not None else None)
        try:
            if self.model is not None and plan.replaced is None:  # the model to replace has no file: it gets one
                plan.replaced = str(kept_strokes.new_model_file())
                self.model.save(plan.replaced)
            if carried is not None and not (path and Path(path).is_file() and Path(path).read_bytes() == carried):
                plan.path = plan.written = str(kept_strokes.new_model_file())
                write_bytes_atomic(Path(plan.path), carried)
        except OSError as e:
            self._restoreFailed(plan, e)
            return None
        return plan if plan.path and Path(plan.path).is_file() else None

    def _finishRestore(self, plan: _Restore, read) -> bool:
        """`read`: what `_readModel` gave for the plan's file, or what went wrong."""
        if isinstance(read, str):
            self._restoreFailed(plan, read)
            return False
        try:
            self._adoptModel(*read, plan.path)
        except InputError as e:  # classes a panel cannot take
            self._restoreFailed(plan, e)
            return False
        self.lastRestoreNote = (f"the model of the opened scene replaced the one you had, which is kept in "
                                f"{plan.replaced}" if plan.replaced else "")
        plan.restored = True
        return True

    @staticmethod
    def _restoreFailed(plan: _Restore, error: Exception | str) -> None:
        logging.warning(f"SemSeg: could not restore the model of this scene: {error}")
        if plan.written is not None:
            Path(plan.written).unlink(missing_ok=True)


# ImportError: PyTorch not installed yet.
RESTORE_ERRORS = (InputError, OSError, ImportError)


@dataclass
class _Restore:
    """What restoring the scene's model loads (`path`), and the files it wrote first."""

    path: str
    written: str | None  # the model the scene carries, written by the restore: removed again if it holds no model
    replaced: str | None  # the file that keeps the model the restore replaces
    restored: bool = False


def _readForRestore(path: str) -> tuple | str:
    """`_readModel`'s result, or what went wrong. Its message, not the error: one held would keep its traceback's
    frames, and the Logic and the scene with them, until the garbage collector frees them, on whichever thread it runs
    (it crashed the tests' process)."""
    try:
        return _readModel(path)
    except RESTORE_ERRORS as e:
        return str(e)


def _readModel(path: str) -> tuple:
    """(the model in the file at `path`, the file's bytes, which the scene keeps). No MRML: safe on the worker."""
    from SemSegLib.model_file import SemSegModel

    return SemSegModel.load(path), Path(path).read_bytes()
