"""SemSeg: a 3D Slicer module that trains a U-Net on a few painted strokes and segments a whole image stack.

This file holds what Slicer looks for in a scripted module: the module (SemSeg), its panel (SemSegWidget, a thin
panel over the Logic and the parameter node) and its self-test (SemSegTest). The Logic, SemSegLogic, moves arrays
between MRML nodes and the SemSegLib engine (all heavy work lives there); it and its MRML helpers are in SemSegMRML
(`SemSegMRML.logic`), one file per activity, and it is usable from the Python console and from scripts without the
GUI, e.g.

    import SemSeg
    logic = SemSeg.SemSegLogic()
    volume = logic.loadStack("/data/heart_tiffs")

Qt is imported inside the Widget's methods only, so that this file also loads on slicer-core (MRML without Qt, as
in CI).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import slicer
import vtk
from SemSegLib import kept_strokes
from SemSegLib.classes import ClassInfo
from SemSegLib.task import SemSegEvent
from SemSegMRML import arrays
from SemSegMRML.logic import SemSegLogic
from SemSegMRML.logic_prediction import PredictionProgress
from SemSegMRML.parameters import ROLE_LABELS, ROLE_VOLUME
from slicer.util import VTKObservationMixin

try:  # in the Slicer application
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:  # slicer-core (MRML without Qt, as in CI): only the Logic is usable
    import unittest

    class ScriptedLoadableModule:
        pass

    class ScriptedLoadableModuleWidget:
        pass

    ScriptedLoadableModuleTest = unittest.TestCase

__all__ = ["SemSeg", "SemSegLogic", "SemSegTest", "SemSegWidget"]

EDITOR_SINGLETON_TAG = "SemSegSegmentEditor"  # the parameter node of the Segment Editor in the panel
PREDICTION_SHOWN_EVERY = 3.0  # s: the panel's predictions show their slices at most this often while they run

#
# SemSeg module
#


class SemSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SemSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SemSeg developers"]
        self.parent.helpText = (
            "Paint a few strokes per class on a few slices of an image stack; SemSeg trains a U-Net on them, "
            "predicts every pixel, shows where it is unsure, and lets you correct and retrain. "
            '<a href="https://github.com/semseg/SlicerSemSeg#use">Documentation</a>.'
        )
        self.parent.acknowledgementText = (
            "SemSeg uses PyTorch (through the SlicerPyTorch extension), MONAI (its U-Net and sliding-window "
            "inference), scikit-learn (the random forest beside the U-Net), scikit-image and SciPy (filters), "
            "tifffile and pynrrd (files)."
        )


#
# SemSegWidget: a thin panel over SemSegLogic and the parameter node
#


class SemSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._task = None
        self._taskLabel = ""
        self._taskEnded = None  # what shows a task's result when it ends, done or cancelled (_startTask)
        self._predictedNote = ""  # shown again once the prediction's suggestions are worked out
        self._loadingModel = ""  # the file name of the model being loaded
        self._timer = None
        self._suggestions = []
        self._trainedVolume = None
        self._trainedSlice = None  # the slice a training shows while it runs, and predicts when it ends
        self._previewNote = ""
        self._predictionShown = False  # a running prediction's first slices were shown (_onTaskEvent)
        self.editor = None  # the Segment Editor inside the panel (_setupEditor)
        self._editorNode = None

    def setup(self) -> None:
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SemSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SemSegLogic()

        # The main thread polls the worker; the worker never touches Qt or MRML.
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._pollTask)

        ui = self.ui
        ui.browseImagesButton.clicked.connect(self.onBrowseImages)
        ui.browseImageFileButton.clicked.connect(self.onBrowseImageFile)
        ui.loadImagesButton.clicked.connect(self.onLoadImages)
        ui.loadSampleButton.clicked.connect(self.onLoadSample)
        ui.inputVolumeSelector.currentNodeChanged.connect(self.updateParameterNodeFromGUI)
        for combo in self._channelComboBoxes():
            combo.currentIndexChanged.connect(self.onChannelsChosen)
        ui.labelSegmentationSelector.currentNodeChanged.connect(self.updateParameterNodeFromGUI)
        ui.addClassButton.clicked.connect(self.onAddClass)
        ui.removeClassButton.clicked.connect(self.onRemoveClass)
        ui.loadClassesButton.clicked.connect(self.onLoadClasses)
        ui.saveClassesButton.clicked.connect(self.onSaveClasses)
        ui.classesTable.itemChanged.connect(lambda item: self.onClassesEdited())
        ui.classesTable.cellDoubleClicked.connect(self.onClassCellDoubleClicked)
        ui.startPaintingButton.clicked.connect(self.onStartPainting)
        ui.loadLabelsButton.clicked.connect(self.onLoadLabels)
        ui.loadLabelStackButton.clicked.connect(self.onLoadLabelStack)
        ui.budgetSpinBox.valueChanged.connect(self.updateParameterNodeFromGUI)
        ui.budgetUnitComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.continueCheckBox.toggled.connect(self.updateParameterNodeFromGUI)
        ui.correctionWeightSpinBox.valueChanged.connect(self.updateParameterNodeFromGUI)
        ui.deviceComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.startingPointComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.trainButton.clicked.connect(self.onTrain)
        ui.cancelButton.clicked.connect(self.onCancel)
        ui.undoTrainingButton.clicked.connect(self.onUndoTraining)
        ui.predictScopeComboBox.currentIndexChanged.connect(self.updateParameterNodeFromGUI)
        ui.ttaCheckBox.toggled.connect(self.updateParameterNodeFromGUI)
        ui.predictButton.clicked.connect(self.onPredict)
        ui.acceptButton.clicked.connect(self.onAccept)
        ui.undoAcceptButton.clicked.connect(self.onUndoAccept)
        ui.nextSliceButton.clicked.connect(self.onNextSlice)
        ui.browseReferenceButton.clicked.connect(lambda: self._browseFolder(ui.referencePathLineEdit))
        ui.evaluateButton.clicked.connect(self.onEvaluate)
        ui.browseOutputButton.clicked.connect(lambda: self._browseFolder(ui.outputPathLineEdit))
        ui.exportButton.clicked.connect(self.onExport)
        ui.predictFolderButton.clicked.connect(self.onPredictFolder)
        ui.predictStackFileButton.clicked.connect(self.onPredictStackFile)
        ui.saveModelButton.clicked.connect(self.onSaveModel)
        ui.loadModelButton.clicked.connect(self.onLoadModel)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)
        self._setupEditor()
        self.initializeParameterNode()

    def _setupEditor(self) -> None:
        """The Segment Editor inside the panel, under the classes: painting, training and correcting happen in one
        place instead of switching modules each round (set up as Slicer's Segment Editor module sets up its own)."""
        import qSlicerSegmentationsModuleWidgetsPythonQt

        self.editor = qSlicerSegmentationsModuleWidgetsPythonQt.qMRMLSegmentEditorWidget()
        self.editor.setMaximumNumberOfUndoStates(10)
        # Its segmentation and volume are the panel's: painting goes into the labels SemSeg trains on, never into
        # the prediction, which the next prediction replaces.
        self.editor.setSegmentationNodeSelectorVisible(False)
        self.editor.setSourceVolumeNodeSelectorVisible(False)
        self._selectEditorNode()  # before the scene, so that the choices made when it is set are kept there
        self.editor.setMRMLScene(slicer.mrmlScene)
        self.ui.classesCollapsibleButton.layout().addWidget(self.editor)
        # Effects registered after the panel was made (another extension's) still show up.
        self._effectFactory = slicer.qSlicerSegmentEditorEffectFactory.instance()
        self._effectFactory.connect("effectRegistered(QString)", self._onEffectRegistered)

    def _onEffectRegistered(self) -> None:
        self.editor.updateEffectList()

    def _selectEditorNode(self) -> None:
        """The embedded editor's own parameter node: the Segment Editor module's effect and options stay its own."""
        node = slicer.mrmlScene.GetSingletonNode(EDITOR_SINGLETON_TAG, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(EDITOR_SINGLETON_TAG)
            node = slicer.mrmlScene.AddNode(node)
        if self._editorNode is not node:
            self._editorNode = node
            self.editor.setMRMLSegmentEditorNode(node)

    def _showInEditor(self) -> None:
        """The panel's labels and volume in the embedded editor."""
        if self.editor is None or self._editorNode is None:
            return
        labels, volume = self._labels(), self._volume()
        if self.editor.segmentationNodeID() != (labels.GetID() if labels is not None else ""):
            self.editor.setSegmentationNode(labels)
        if labels is not None and volume is not None and self.editor.sourceVolumeNodeID() != volume.GetID():
            self.editor.setSourceVolumeNode(volume)

    def cleanup(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()
        if self.editor is not None:
            self._effectFactory.disconnect("effectRegistered(QString)", self._onEffectRegistered)

    def onReload(self) -> None:
        """Developer mode's Reload. Slicer runs this file again, but the Logic (SemSegMRML) and the engine (SemSegLib)
        would stay as first imported: they are forgotten, so the reloaded module imports their edited code. The old
        Logic's worker thread is stopped (after the job it runs, which the widget's cleanup cancels)."""
        import sys

        if self._task is not None:
            self._task.cancel()
        if SemSegLogic._worker is not None:
            SemSegLogic._worker.shutdown()
        for name in [n for n in sys.modules if n.split(".")[0] in ("SemSegLib", "SemSegMRML")]:
            del sys.modules[name]
        ScriptedLoadableModuleWidget.onReload(self)

    def enter(self) -> None:
        self.editor.installKeyboardShortcuts()
        self._selectEditorNode()
        self.editor.updateWidgetFromMRML()
        self._restoreModel()  # of a scene opened before the panel was made, or while it was left
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        # As the Segment Editor module does when it is left: no effect stays active in the views.
        self.editor.setActiveEffect(None)
        self.editor.uninstallKeyboardShortcuts()
        self.editor.removeViewObservations()

    def _restoreModel(self) -> None:
        """The model the scene carries, read on the worker (`startRestoringModel`; the first model of a session
        imports torch, seconds of a frozen panel). Read here while another task holds the worker: a training must
        not hold the scene's model back."""
        if self._task is None:
            task = self.logic.startRestoringModel()
            if task is not None:
                self._startTask(task, "Loading the scene's model", self._afterRestoringModel)
        elif self._taskLabel != "Loading the scene's model" and self.logic.restoreModelFromParameterNode():
            self._showRestoredModel()

    def _showRestoredModel(self) -> None:
        self.ui.statusLabel.text = ("Loaded the model of this scene"
                                    + (f"; {self.logic.lastRestoreNote}." if self.logic.lastRestoreNote else "."))

    def onSceneStartClose(self, caller, event) -> None:
        if self._task is not None:
            self._task.cancel()
        self.setParameterNode(None)
        self._editorNode = None
        self.editor.setSegmentationNode(None)
        self.editor.removeViewObservations()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self._selectEditorNode()
            self.editor.updateWidgetFromMRML()
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        if self.parent.isEntered:
            self._selectEditorNode()
            self.editor.updateWidgetFromMRML()
        self.initializeParameterNode()
        self._restoreModel()
        self.updateGUIFromParameterNode()

    # ---------------------------------------------------------------- parameter node <-> GUI
    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, node) -> None:
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        import qt

        self._updatingGUI = True
        try:
            ui = self.ui
            ui.inputVolumeSelector.setCurrentNode(node.GetNodeReference(ROLE_VOLUME))
            ui.labelSegmentationSelector.setCurrentNode(node.GetNodeReference(ROLE_LABELS))
            ui.budgetSpinBox.value = int(float(node.GetParameter("BudgetValue")))
            ui.budgetUnitComboBox.currentText = node.GetParameter("BudgetUnit")
            ui.continueCheckBox.checked = node.GetParameter("ContinueTraining") == "true"
            ui.correctionWeightSpinBox.value = float(node.GetParameter("CorrectionWeight"))
            ui.deviceComboBox.currentText = node.GetParameter("Device")
            ui.startingPointComboBox.currentText = node.GetParameter("StartingPoint")
            ui.predictScopeComboBox.setCurrentIndex(
                max(0, ["current", "painted", "all"].index(node.GetParameter("PredictScope"))))
            ui.ttaCheckBox.checked = node.GetParameter("TTA") == "true"
            ui.referencePathLineEdit.text = node.GetParameter("ReferencePath")
            ui.outputPathLineEdit.text = node.GetParameter("OutputPath")
            table = ui.classesTable
            classes = self.logic.classes()
            table.setRowCount(len(classes))
            for row, c in enumerate(classes):
                table.setItem(row, 0, qt.QTableWidgetItem(c.name))
                colorItem = qt.QTableWidgetItem("")
                colorItem.setBackground(qt.QBrush(qt.QColor(*c.color)))
                colorItem.setFlags(qt.Qt.ItemIsEnabled)
                colorItem.setToolTip("Double-click to change the color")
                table.setItem(row, 1, colorItem)
            self._showInEditor()
            self._showChannelChoice()
            self._updateButtons()
        finally:
            self._updatingGUI = False

    def _channelComboBoxes(self) -> list:
        return [self.ui.redChannelComboBox, self.ui.greenChannelComboBox, self.ui.blueChannelComboBox]

    def _showChannelChoice(self) -> None:
        """Red, green and blue's channels, for a stack shown three channels at a time; hidden for other volumes."""
        volume = self._volume()
        shown = self.logic.shownChannels(volume) if volume is not None else None
        self.ui.channelsLabel.visible = shown is not None
        for combo, channel in zip(self._channelComboBoxes(), shown or [None] * 3):
            combo.visible = shown is not None
            combo.clear()
            if shown is not None:
                combo.addItems(["none"] + [str(k + 1) for k in range(arrays.channel_count(volume))])
                combo.setCurrentIndex(0 if channel is None else channel + 1)

    def onChannelsChosen(self, *args) -> None:
        volume = self._volume()
        if self._updatingGUI or volume is None or self.logic.shownChannels(volume) is None:
            return
        shown = [combo.currentIndex - 1 if combo.currentIndex > 0 else None for combo in self._channelComboBoxes()]
        with slicer.util.tryWithErrorDisplay("Could not show those channels.", waitCursor=True):
            self.logic.showChannels(volume, shown)

    def updateParameterNodeFromGUI(self, *args) -> None:
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        ui = self.ui
        wasModifying = node.StartModify()
        volume = ui.inputVolumeSelector.currentNode()
        segmentation = ui.labelSegmentationSelector.currentNode()
        if volume is not None and volume.GetID() != node.GetNodeReferenceID(ROLE_VOLUME):
            segmentation = self.logic.labelSegmentationOf(volume)  # another stack: its own labels, if any
            self._suggestions = []  # the last stack's, and its marked regions with them
            self.logic.markSuggestedRegions(volume, None)
            self.ui.nextSliceButton.text = "Next: (predict first)"
        node.SetNodeReferenceID(ROLE_VOLUME, volume.GetID() if volume else None)
        node.SetNodeReferenceID(ROLE_LABELS, segmentation.GetID() if segmentation else None)
        node.SetParameter("BudgetValue", str(ui.budgetSpinBox.value))
        node.SetParameter("BudgetUnit", ui.budgetUnitComboBox.currentText)
        node.SetParameter("ContinueTraining", "true" if ui.continueCheckBox.checked else "false")
        node.SetParameter("CorrectionWeight", str(ui.correctionWeightSpinBox.value))
        node.SetParameter("Device", ui.deviceComboBox.currentText)
        node.SetParameter("StartingPoint", ui.startingPointComboBox.currentText)
        node.SetParameter("PredictScope", ["current", "painted", "all"][ui.predictScopeComboBox.currentIndex])
        node.SetParameter("TTA", "true" if ui.ttaCheckBox.checked else "false")
        node.SetParameter("ReferencePath", ui.referencePathLineEdit.text)
        node.SetParameter("OutputPath", ui.outputPathLineEdit.text)
        node.EndModify(wasModifying)

    def _updateButtons(self) -> None:
        ui = self.ui
        busy = self._task is not None
        volume = self._volume()
        labels = self._labels()
        ui.loadImagesButton.enabled = ui.loadSampleButton.enabled = not busy  # the worker reads the images
        ui.startPaintingButton.enabled = volume is not None and not busy
        ui.loadLabelsButton.enabled = volume is not None and not busy
        ui.loadLabelStackButton.enabled = volume is not None and not busy
        ui.trainButton.enabled = volume is not None and labels is not None and not busy
        ui.cancelButton.enabled = busy and self._taskLabel != "Export"  # an export is not stopped halfway
        ui.undoTrainingButton.enabled = self.logic.canUndoTraining() and not busy
        hasModel = self.logic.model is not None
        ui.predictButton.enabled = volume is not None and hasModel and not busy
        ui.acceptButton.enabled = volume is not None and labels is not None and not busy
        ui.undoAcceptButton.enabled = labels is not None and self.logic.canUndoAccept(volume) and not busy
        ui.evaluateButton.enabled = volume is not None and not busy
        ui.exportButton.enabled = volume is not None and labels is not None and not busy
        ui.saveModelButton.enabled = hasModel and not busy
        ui.loadModelButton.enabled = not busy  # a model loaded meanwhile would be replaced by the task's end
        ui.predictFolderButton.enabled = ui.predictStackFileButton.enabled = hasModel and not busy
        ui.nextSliceButton.enabled = bool(self._suggestions)
        if hasModel:
            summary, lines = self.logic.modelDescription()
            ui.modelInfoLabel.text, ui.modelInfoLabel.toolTip = summary, "\n".join(lines)
        else:
            ui.modelInfoLabel.toolTip = ""
            ui.modelInfoLabel.text = "no model yet"

    def _volume(self):
        return self._parameterNode.GetNodeReference(ROLE_VOLUME) if self._parameterNode else None

    def _labels(self):
        return self._parameterNode.GetNodeReference(ROLE_LABELS) if self._parameterNode else None

    # ---------------------------------------------------------------- dependencies (asked, never at import)
    def ensureDependencies(self) -> bool:
        from SemSegLib.dependencies import ensure_dependencies

        return ensure_dependencies()

    # ---------------------------------------------------------------- images
    def onBrowseImages(self) -> None:
        import qt

        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of ordered images")
        if path:
            self.ui.imagesPathLineEdit.text = path

    def onBrowseImageFile(self) -> None:
        path = self._chooseTiff("Multi-page TIFF")
        if path:
            self.ui.imagesPathLineEdit.text = path

    @staticmethod
    def _chooseTiff(caption: str) -> str:
        import qt

        return qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), caption, "", "TIFF images (*.tif *.tiff)")

    def _browseFolder(self, lineEdit) -> None:
        import qt

        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Choose a folder")
        if path:
            lineEdit.text = path
            self.updateParameterNodeFromGUI()

    def onLoadImages(self) -> None:
        path = self.ui.imagesPathLineEdit.text.strip()
        if not path or not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Failed to load the images."):
            self._startTask(self.logic.startLoadingStack(path), "Loading", self._afterLoadingStack)  # on the worker

    def _offerKeptStrokes(self, volume) -> None:
        """After a crash the person reloads their images: offer the strokes their last training kept."""
        kept = self.logic.keptStrokesOf(volume)
        if not kept:
            return
        folder = kept[0]
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(folder.stat().st_mtime))
        slices = len(list(folder.glob("*.tif")))
        if not slicer.util.confirmYesNoDisplay(f"SemSeg kept the strokes of an earlier training of these images "
                                               f"({slices} painted slice(s), {when}) in\n{folder}.\n\nLoad them?"):
            return
        with slicer.util.tryWithErrorDisplay("Failed to load the kept strokes."):
            # Read on the worker as Load labels reads, a task started by the loading task's end.
            self._startTask(self.logic.startLoadingLabels(volume, str(folder), adoptClasses=True), "Loading labels",
                            self._afterLoadingLabels)

    def onLoadSample(self) -> None:
        if not self.ensureDependencies():
            return
        with slicer.util.tryWithErrorDisplay("Failed to create the sample stack.", waitCursor=True):
            volume, _ = self.logic.loadSampleStack()
            self._showVolume(volume)

    def _showVolume(self, volume) -> None:
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView)
        slicer.util.setSliceViewerLayers(background=volume, foreground=None, fit=True)
        self.updateGUIFromParameterNode()

    def _currentSlice(self) -> int:
        volume = self._volume()
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        sliceToRAS = sliceNode.GetSliceToRAS()
        ras = [sliceToRAS.GetElement(i, 3) for i in range(3)] + [1.0]
        rasToIJK = vtk.vtkMatrix4x4()
        volume.GetRASToIJKMatrix(rasToIJK)
        k = int(round(rasToIJK.MultiplyPoint(ras)[2]))
        n = arrays.slice_shape(volume)[0]
        return min(max(k, 0), n - 1)

    def _jumpToSlice(self, k: int) -> None:
        volume = self._volume()
        ijkToRAS = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijkToRAS)
        ras = ijkToRAS.MultiplyPoint([0, 0, k, 1])
        slicer.app.layoutManager().sliceWidget("Red").sliceLogic().SetSliceOffset(ras[2])

    # ---------------------------------------------------------------- classes
    def _classesFromTable(self) -> list:
        import qt

        table = self.ui.classesTable
        classes = []
        for row in range(table.rowCount):
            nameItem, colorItem = table.item(row, 0), table.item(row, 1)
            color = colorItem.background().color() if colorItem else qt.QColor(128, 128, 128)
            classes.append(ClassInfo(row + 1, nameItem.text() if nameItem else "",
                                     (color.red(), color.green(), color.blue())))
        return classes

    def onClassesEdited(self) -> None:
        if self._updatingGUI:
            return
        with slicer.util.tryWithErrorDisplay("Invalid classes.", waitCursor=False):
            self.logic.setClasses(self._classesFromTable(), edited=True)  # a cell of the table edited in place

    def onClassCellDoubleClicked(self, row: int, column: int) -> None:
        import qt

        if column != 1:
            return
        classes = self._classesFromTable()
        color = qt.QColorDialog.getColor(qt.QColor(*classes[row].color))
        if color.isValid():
            classes[row] = ClassInfo(classes[row].value, classes[row].name, (color.red(), color.green(), color.blue()))
            self.logic.setClasses(classes, edited=True)

    def onAddClass(self) -> None:
        from SemSegLib.classes import DEFAULT_COLORS

        classes = self.logic.classes()
        n = len(classes) + 1
        classes.append(ClassInfo(n, f"class {n}", DEFAULT_COLORS[(n - 1) % len(DEFAULT_COLORS)]))
        self.logic.setClasses(classes, edited=True)

    def onRemoveClass(self) -> None:
        row = self.ui.classesTable.currentRow()
        classes = self.logic.classes()
        if 0 <= row < len(classes):
            with slicer.util.tryWithErrorDisplay("Cannot remove the class.", waitCursor=False):
                self.logic.setClasses(classes[:row] + classes[row + 1:], edited=True)

    def onLoadClasses(self) -> None:
        import qt

        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "classes.csv", "", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Failed to read the classes file.", waitCursor=False):
                self.logic.loadClassesCsv(path)

    def onSaveClasses(self) -> None:
        import qt

        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "classes.csv", "classes.csv", "CSV (*.csv)")
        if path:
            with slicer.util.tryWithErrorDisplay("Failed to write the classes file.", waitCursor=False):
                self.logic.saveClassesCsv(path)

    def onStartPainting(self) -> None:
        volume = self._volume()
        with slicer.util.tryWithErrorDisplay("Failed to prepare the label segmentation.", waitCursor=True):
            self.logic.createLabelSegmentation(volume, segmentation=self._labels())  # the parameter node's labels
            self._selectEditorNode()
            self._showInEditor()  # setSourceVolumeNode: Slicer >= 5.2's name (formerly master volume)
            self.ui.classesCollapsibleButton.collapsed = False
            self.editor.setActiveEffectByName("Paint")

    def onLoadLabels(self) -> None:
        import qt

        volume = self._volume()
        if not self.ensureDependencies():
            return
        # Start where SemSeg keeps the strokes of each training: after a crash, that is where they are.
        kept = kept_strokes.autosave_folder()
        start = str(kept) if kept.is_dir() else ""
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of label maps", start)
        if folder:
            self._loadLabelsFrom(volume, folder)

    def onLoadLabelStack(self) -> None:
        volume = self._volume()
        if not self.ensureDependencies():
            return
        path = self._chooseTiff("Label stack (a page per image)")
        if path:
            self._loadLabelsFrom(volume, path)

    def _loadLabelsFrom(self, volume, path: str) -> None:
        with slicer.util.tryWithErrorDisplay("Failed to load the labels."):
            self._startTask(self.logic.startLoadingLabels(volume, path, self._labels()), "Loading labels",
                            self._afterLoadingLabels)  # read on the worker

    def _showLoadedLabels(self, loaded) -> None:
        self.ui.statusLabel.text = (
            f"Labels of {len(loaded.slices)} slice(s) loaded: {loaded.added} pixels added"
            + (f"; {loaded.differing} pixels you painted with another class kept yours" if loaded.differing
               else "") + "." + (f" {loaded.note}" if loaded.note else ""))
        self.updateGUIFromParameterNode()
        if loaded.slices and self._currentSlice() not in loaded.slices:
            self._jumpToSlice(loaded.slices[0])  # show what came in

    # ---------------------------------------------------------------- long-running tasks
    def _startTask(self, task, label: str, ended: Callable[[SemSegEvent], None]) -> None:
        """Poll `task` (its `label` leads the status line); `ended(event)` shows its result when it is done or
        cancelled (not when it failed: then the error is shown)."""
        self._task = task
        self._taskLabel = label
        self._taskEnded = ended
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = f"{label}..."
        self._timer.start()
        self._updateButtons()

    def _pollTask(self) -> None:
        if self._task is None:
            self._timer.stop()
            return
        task = self._task
        try:
            finished = task.poll(self._onTaskEvent)
        except Exception as e:  # noqa: BLE001 - writing results back failed; show it, keep the GUI alive
            finished = True
            slicer.util.errorDisplay(f"{self._taskLabel} failed: {e}")
        if finished and self._task is task:  # not when its end started the next one (a prediction's suggestions)
            self._timer.stop()
            self._task = None
            self._updateButtons()

    def _onTaskEvent(self, event: SemSegEvent) -> None:
        if event.kind == "preview":  # kept beside the progress, which comes several times a second
            self._previewNote = event.message
            return
        if event.fraction is not None:
            self.ui.progressBar.value = int(100 * event.fraction)
        if isinstance(event.data, PredictionProgress) and event.data.shown and not self._predictionShown:
            self._showPrediction(self._volume())  # the first slices are in: show them while the others come
            self._predictionShown = True
        note = f"; {self._previewNote}" if self._taskLabel == "Training" and self._previewNote else ""
        self.ui.statusLabel.text = f"{self._taskLabel}: {event.message}{note}"
        if event.kind == "failed":
            slicer.util.errorDisplay(f"{self._taskLabel} failed: {event.message}")
        elif event.kind in ("done", "cancelled"):
            self._taskEnded(event)

    def _afterLoadingStack(self, event: SemSegEvent) -> None:
        volume = event.data
        if volume is None:  # cancelled
            return
        self._showVolume(volume)
        (n, h, w), c = arrays.slice_shape(volume), arrays.channel_count(volume)
        self.ui.statusLabel.text = (f"Loaded {n} image(s) of {w} x {h}" + (f", {c} channels" if c > 1 else "")
                                    + (f"; {self.logic.lastLoadNote}" if self.logic.lastLoadNote else ""))
        self._offerKeptStrokes(volume)

    def _afterTraining(self, event: SemSegEvent) -> None:
        r = event.data
        if r is None:
            return
        self.ui.statusLabel.text = self.logic.trainingSummary(r)
        volume = self._volume()  # the volume trained on, unless the person chose another one meanwhile
        if self._trainedSlice is not None and event.kind == "done" and volume is self._trainedVolume:
            self._showPrediction(volume)
            self.ui.statusLabel.text += f"; slice {self._trainedSlice + 1} predicted"
        if r.warning:  # too few steps for the seconds given: shown where the person looks, not only in the log
            slicer.util.warningDisplay(f"Training: {r.warning}")

    def _afterSegmentingOnDisk(self, event: SemSegEvent) -> None:
        r = event.data
        if not r:
            return
        if self._taskLabel == "Segmenting a stack file" and event.kind == "cancelled":
            self.ui.statusLabel.text = f"Cancelled: {r['folder']} not written (a stack file is written whole)"
        else:
            self.ui.statusLabel.text = (f"{'Cancelled: ' if event.kind == 'cancelled' else ''}{r['images']} label "
                                        f"map(s) written to {r['folder']} ({r['seconds_per_image']:.2f} s per image)"
                                        + (f"; {r['note']}" if r["note"] else ""))

    def _afterRestoringModel(self, event: SemSegEvent) -> None:
        if event.data:
            self._showRestoredModel()

    def _afterLoadingModel(self, event: SemSegEvent) -> None:
        if event.data is not None:
            self.ui.statusLabel.text = f"Loaded the model {self._loadingModel}"

    def _afterLoadingLabels(self, event: SemSegEvent) -> None:
        if event.data is not None:
            self._showLoadedLabels(event.data)

    def _afterEvaluating(self, event: SemSegEvent) -> None:
        if event.data is not None:
            self._showMetrics(event.data)

    def _afterExporting(self, event: SemSegEvent) -> None:
        if event.data:
            self.ui.statusLabel.text = f"Exported to {Path(event.data['labels']).parent}"
            slicer.util.infoDisplay("Written:\n" + "\n".join(f"{k}: {v}" for k, v in event.data.items()))

    def _afterPredicting(self, event: SemSegEvent) -> None:
        if not event.data:
            return
        volume = self._volume()
        self._showPrediction(volume)
        self.logic.markSuggestedRegions(volume, None)  # the regions of the last prediction are stale
        self._suggestions = []
        seconds = self.logic.lastTimings.get("predict_seconds_per_slice", 0)
        self._predictedNote = f"Predicted {len(event.data)} slice(s), {seconds:.2f} s per slice"
        # Worked out on the worker: 1.6-2.7 s of the GUI for 1000 slices of 1024 x 1024 (bench/RESULTS.md).
        self._startTask(self.logic.startSuggesting(volume, top=5, labelSegmentation=self._labels()),
                        "Where to paint next", self._afterSuggesting)

    def _afterSuggesting(self, event: SemSegEvent) -> None:
        self._suggestions = event.data or []
        if self._suggestions:
            s = self._suggestions[0]
            self.ui.nextSliceButton.text = f"Next: slice {s['slice'] + 1} (uncertainty {s['mean_uncertainty']:.2f})"
        else:  # cancelled
            self.ui.nextSliceButton.text = "Next: (predict again for new suggestions)"
        self.ui.statusLabel.text = self._predictedNote

    def _showPrediction(self, volume) -> None:
        self.logic.predictionSegmentation(volume).GetDisplayNode().SetOpacity2DFill(0.4)
        labels = self._labels()
        if labels is not None and labels.GetDisplayNode():
            labels.GetDisplayNode().SetVisibility(True)
        slicer.util.setSliceViewerLayers(background=volume, foreground=self.logic.uncertaintyVolume(volume),
                                         foregroundOpacity=0.3)

    def onTrain(self) -> None:
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        node = self._parameterNode
        value = float(node.GetParameter("BudgetValue"))
        byIterations = node.GetParameter("BudgetUnit") == "iterations"
        with slicer.util.tryWithErrorDisplay("Training could not start.", waitCursor=True):
            # The slice in view is shown as the network learns it, and predicted when the training ends.
            self._trainedVolume, self._trainedSlice, self._previewNote = self._volume(), self._currentSlice(), ""
            task = self.logic.train(
                self._trainedVolume, self._labels(),
                seconds=None if byIterations else value, iterations=int(value) if byIterations else None,
                continueTraining=node.GetParameter("ContinueTraining") == "true",
                correctionWeight=float(node.GetParameter("CorrectionWeight")),
                device=node.GetParameter("Device"), starting_point=node.GetParameter("StartingPoint"),
                previewSlice=self._trainedSlice, waitForCompletion=False)
            self._startTask(task, "Training", self._afterTraining)
            self.ui.deviceLabel.text = self._deviceDescription(node.GetParameter("Device"))

    @staticmethod
    def _deviceDescription(name: str) -> str:
        from SemSegLib.devices import describe_device, resolve_device

        return describe_device(resolve_device(name))

    def onUndoTraining(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not undo the training.", waitCursor=True):
            model = self.logic.undoTraining()
            self.ui.statusLabel.text = (f"Back to the model before the last training ({len(model.history)} "
                                        f"training(s); {len(self.logic.replacedModels)} more undo(s) possible). "
                                        "Predict again to see its result."
                                        + (f" Note: {self.logic.lastTrainNote}." if self.logic.lastTrainNote else ""))
            self._updateButtons()

    def onCancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self.ui.statusLabel.text = f"{self._taskLabel}: cancelling..."

    def onPredict(self) -> None:
        if not self.ensureDependencies():
            return
        self.updateParameterNodeFromGUI()
        node = self._parameterNode
        scope = node.GetParameter("PredictScope")
        with slicer.util.tryWithErrorDisplay("Prediction could not start.", waitCursor=True):
            # The slice in view first, and the slices shown as they come: a stack of hundreds takes minutes.
            current = self._currentSlice()
            task = self.logic.predict(self._volume(), current if scope == "current" else scope,
                                      labelSegmentation=self._labels(), tta=node.GetParameter("TTA") == "true",
                                      device=node.GetParameter("Device"), firstSlice=current,
                                      showSeconds=PREDICTION_SHOWN_EVERY, waitForCompletion=False)
            self._predictionShown = False
            self._startTask(task, "Prediction", self._afterPredicting)

    def onAccept(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not accept the prediction.", waitCursor=True):
            k = self._currentSlice()
            added = self.logic.acceptPrediction(self._volume(), self._labels(), k)
            self.ui.statusLabel.text = (f"Slice {k + 1}: prediction accepted ({added} pixels added, your strokes "
                                        "kept). Paint over its mistakes, then train again.")
            self._updateButtons()

    def onUndoAccept(self) -> None:
        with slicer.util.tryWithErrorDisplay("Could not undo the accept.", waitCursor=True):
            k, takenBack = self.logic.undoAccept(self._volume(), self._labels())
            self.ui.statusLabel.text = (f"Slice {k + 1}: accepted prediction taken back ({takenBack} pixels "
                                        "unlabeled again; your strokes and what you painted since kept).")
            self._jumpToSlice(k)
            self._updateButtons()

    def onNextSlice(self) -> None:
        if self._suggestions:
            s = self._suggestions.pop(0)
            self._jumpToSlice(s["slice"])
            self.logic.markSuggestedRegions(self._volume(), s)
            self.ui.statusLabel.text = (f"Slice {s['slice'] + 1}: the numbered points mark where the model is "
                                        "unsure (1 = the most uncertainty). Paint the right class there, then "
                                        "train again.")
            if self._suggestions:
                n = self._suggestions[0]
                self.ui.nextSliceButton.text = f"Next: slice {n['slice'] + 1} (uncertainty {n['mean_uncertainty']:.2f})"
            else:
                self.ui.nextSliceButton.text = "Next: (predict again for new suggestions)"
            self._updateButtons()

    def onEvaluate(self) -> None:
        self.updateParameterNodeFromGUI()
        with slicer.util.tryWithErrorDisplay("Evaluation failed."):
            # read and scored on the worker; the slices without strokes also apart from the painted ones
            self._startTask(self.logic.startEvaluating(self._volume(), self.ui.referencePathLineEdit.text.strip(),
                                                       labelSegmentation=self._labels()),
                            "Evaluation", self._afterEvaluating)

    def _showMetrics(self, metrics) -> None:
        self.ui.metricsLabel.text = (f"mean IoU {metrics.mean_iou:.3f}, mean Dice {metrics.mean_dice:.3f}, "
                                     f"pixel accuracy {metrics.pixel_accuracy:.3f}"
                                     + (f"; {self.logic.lastEvaluationNote}" if self.logic.lastEvaluationNote else ""))
        self.ui.statusLabel.text = "Evaluated"
        chart = slicer.mrmlScene.GetFirstNodeByName("SemSeg IoU chart")
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onExport(self) -> None:
        self.updateParameterNodeFromGUI()
        folder = self.ui.outputPathLineEdit.text.strip()
        if not folder:
            slicer.util.errorDisplay("Choose a results folder first.")
            return
        warning = self.logic.exportWarning(self._volume())
        if warning and not slicer.util.confirmYesNoDisplay(f"{warning}\n\nExport anyway?"):
            return
        with slicer.util.tryWithErrorDisplay("Export failed.", waitCursor=True):
            self._startTask(self.logic.export(self._volume(), self._labels(), folder, warning,
                                              waitForCompletion=False), "Export", self._afterExporting)

    def onPredictFolder(self) -> None:
        import qt

        if not self.ensureDependencies():
            return
        images = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder of images to segment")
        if not images:
            return
        out = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Folder to write their label maps to")
        if out:
            self._predictOnDisk(images, out, "Segmenting a folder")

    def onPredictStackFile(self) -> None:
        import qt

        if not self.ensureDependencies():
            return
        from SemSegLib.predict_folder import writes_one_file
        from SemSegLib.stack_io import stack_name

        images = self._chooseTiff("Multi-page TIFF to segment")
        if not images:
            return
        suggested = str(Path(images).with_name(f"{stack_name(images)}_labels.tif"))
        out = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Multi-page TIFF to write the label maps to",
                                             suggested, "TIFF images (*.tif *.tiff)")
        if out:
            # A name typed without .tif would make a folder of maps instead (predictFolder goes by the suffix).
            out = out if writes_one_file(out) else f"{out}.tif"
            self._predictOnDisk(images, out, "Segmenting a stack file")

    def _predictOnDisk(self, images: str, out: str, label: str) -> None:
        self.updateParameterNodeFromGUI()
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay("Could not segment the images.", waitCursor=True):
            task = self.logic.predictFolder(images, out, tta=node.GetParameter("TTA") == "true",
                                            device=node.GetParameter("Device"), waitForCompletion=False)
            self._startTask(task, label, self._afterSegmentingOnDisk)

    def onSaveModel(self) -> None:
        import qt

        path = qt.QFileDialog.getSaveFileName(slicer.util.mainWindow(), "Save model", "model.pt", "Model (*.pt)")
        if path:
            with slicer.util.tryWithErrorDisplay("Saving the model failed.", waitCursor=True):
                self.logic.saveModel(path)

    def onLoadModel(self) -> None:
        import qt

        if not self.ensureDependencies():
            return
        path = qt.QFileDialog.getOpenFileName(slicer.util.mainWindow(), "Load model", "", "Model (*.pt)")
        if path:
            with slicer.util.tryWithErrorDisplay("Loading the model failed."):
                # On the worker: the first load of a session imports torch (seconds of a frozen panel otherwise).
                self._loadingModel = Path(path).name
                self._startTask(self.logic.startLoadingModel(path, self._volume()), "Loading the model",
                                self._afterLoadingModel)


#
# SemSegTest: the whole loop inside Slicer (Slicer's test runner; CI runs Testing/ against slicer-core)
#


class SemSegTest(ScriptedLoadableModuleTest):
    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SemSegLoop()

    def test_SemSegLoop(self) -> None:
        import tifffile
        from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack
        from SemSegLib.simulate import simulate_strokes
        from SemSegLib.stack_io import read_stack

        self.delayDisplay("Starting the SemSeg loop test")
        folder = Path(tempfile.mkdtemp(prefix="SemSegTest-"))
        write_sample_stack(folder, num_images=4, size=(128, 128), seed=1)
        # The panel's Load stack reads on the worker while the GUI runs. Pixels of their own (a fresh seed): for a
        # stack SemSeg has kept strokes of, the panel would ask whether to load them, a dialog no test answers.
        widget = slicer.modules.semseg.widgetRepresentation().self()
        fresh = np.random.default_rng().integers(0, 255, (3, 32, 40), dtype=np.uint8)
        (folder / "fresh").mkdir()
        for k, image in enumerate(fresh):
            tifffile.imwrite(folder / "fresh" / f"fresh_{k + 1}.tif", image)
        widget.ui.imagesPathLineEdit.text = str(folder / "fresh")
        widget.onLoadImages()
        self._waitForPanel(widget)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(widget._volume()), fresh))
        self.assertTrue(widget.ui.statusLabel.text.startswith("Loaded 3 image(s) of 40 x 32"))
        logic = SemSegLogic()
        volume = logic.loadStack(str(folder / "images"))
        self.assertEqual(slicer.util.arrayFromVolume(volume).shape, (4, 128, 128))
        logic.setClasses(SAMPLE_CLASSES)
        segmentation = logic.createLabelSegmentation(volume)
        self.assertEqual(segmentation.GetSegmentation().GetNumberOfSegments(), 3)
        # The panel's Segment Editor paints into these labels, on this volume.
        widget.onStartPainting()
        self.assertEqual(widget.editor.segmentationNodeID(), segmentation.GetID())
        self.assertEqual(widget.editor.sourceVolumeNodeID(), volume.GetID())
        self.assertIsNotNone(widget.editor.activeEffect())
        widget.editor.setActiveEffect(None)

        reference = read_stack(folder / "reference").images[:, 0]
        strokes = np.zeros(reference.shape, np.uint16)
        rng = np.random.default_rng(0)
        for k in (0, 2):
            strokes[k] = simulate_strokes(reference[k], 3, 8, rng=rng)
        logic.setLabelsToSegmentation(strokes, segmentation, volume)
        self.assertTrue(np.array_equal(logic.labelsFromSegmentation(segmentation, volume), strokes))

        self.delayDisplay("Training, slice 2 shown as it learns")
        previews = []
        logic.train(volume, segmentation, iterations=200, patch_size=64, previewSlice=1, previewSeconds=0.5,
                    waitForCompletion=True, eventCallback=lambda e: previews.append(e) if e.kind == "preview" else None)
        self.assertIsNone(logic.previewSegmentation(volume, create=False))  # taken down when the training ended
        self.assertEqual(previews[0].data.iteration, 0)  # a first training: the strokes' forest before any step
        self.assertEqual(logic.predictedSlices(volume), [1])  # and predicted by the trained model
        self.delayDisplay(f"Training showed {len(previews)} preview(s); predicting")
        shown = []  # the slices in the prediction node as each slice comes: the one asked for first

        def watch(event):
            if event.kind == "progress":
                shown.append(logic.predictedSlices(volume))

        logic.predict(volume, "all", labelSegmentation=segmentation, firstSlice=3, showSeconds=0,
                      waitForCompletion=True, eventCallback=watch)
        self.assertEqual(shown[0], [1, 3])  # slice 1 from the training's end, slice 3 written before the others
        self.assertEqual(logic.predictedSlices(volume), [0, 1, 2, 3])
        suggestions = logic.suggestSlices(volume, top=2)
        markers = logic.markSuggestedRegions(volume, suggestions[0])
        self.assertEqual(markers.GetNumberOfControlPoints(), len(suggestions[0]["regions"]))
        selection = slicer.app.applicationLogic().GetSelectionNode()
        self.assertNotEqual(selection.GetActivePlaceNodeID(), markers.GetID())  # not where the mouse places points
        added = logic.acceptPrediction(volume, segmentation, 1)
        self.assertGreater(added, 0)
        metrics = logic.evaluate(volume, str(folder / "reference"))
        self.assertGreater(metrics.mean_iou, 0.4)
        widget.ui.referencePathLineEdit.text = str(folder / "reference")  # the panel's: read and scored on the worker
        widget.onEvaluate()
        self._waitForPanel(widget)
        self.assertTrue(widget.ui.metricsLabel.text.startswith(f"mean IoU {metrics.mean_iou:.3f}"))
        self.assertIn("on the 1 slice without strokes", widget.ui.metricsLabel.text)  # slice 4; 1-3 hold strokes
        # The panel's prediction, then where to paint next, each on the worker, the second started by the first's end.
        widget.logic.model = logic.model
        widget.onPredict()
        self._waitForPanel(widget)
        self.assertTrue(widget.ui.nextSliceButton.enabled)
        self.assertTrue(widget.ui.nextSliceButton.text.startswith("Next: slice"), widget.ui.nextSliceButton.text)
        self.assertTrue(widget.ui.statusLabel.text.startswith("Predicted"), widget.ui.statusLabel.text)
        # The panel's Next goes to the least sure slice; its Accept and Undo accept leave the strokes as they were.
        first = widget._suggestions[0]
        widget.onNextSlice()
        self.assertEqual(widget._currentSlice(), first["slice"])
        self.assertTrue(widget.ui.statusLabel.text.startswith(f"Slice {first['slice'] + 1}: the numbered points"))
        painted = logic.labelsFromSegmentation(segmentation, volume)
        widget.onAccept()
        self.assertIn("prediction accepted", widget.ui.statusLabel.text)
        widget.onUndoAccept()
        self.assertIn("accepted prediction taken back", widget.ui.statusLabel.text)
        self.assertTrue(np.array_equal(logic.labelsFromSegmentation(segmentation, volume), painted))
        self.assertEqual(logic.exportWarning(volume), "")  # every slice predicted by the current model
        written = logic.export(volume, segmentation, str(folder / "results")).result
        for key in ("labels", "nrrd", "model", "classes"):
            self.assertTrue(Path(written[key]).exists(), key)
        segmented = logic.predictFolder(str(folder / "images"), str(folder / "maps")).result
        self.assertEqual(segmented["images"], 4)
        # The strokes the training kept, loaded into a new stack's labels, are the strokes painted then.
        again = logic.loadStack(str(folder / "images"))
        loaded = logic.loadLabels(again, str(logic.strokesBackupFolder(volume)))
        self.assertTrue(np.array_equal(logic.labelsFromSegmentation(loaded.segmentation, again), strokes))
        # A stack of 2 channels: the panel offers the channel each color shows; the images stay as loaded.
        channels = np.stack([rng.integers(0, 4000, (2, 32, 32)), rng.integers(0, 200, (2, 32, 32))], 1)
        cells = logic.volumeFromStack(channels.astype(np.uint16), ["a", "b"], "two channels")
        widget.updateGUIFromParameterNode()
        self.assertEqual(widget.ui.greenChannelComboBox.count, 3)  # none, 1, 2
        self.assertEqual(widget.ui.greenChannelComboBox.currentIndex, 2)
        widget.ui.redChannelComboBox.currentIndex = 2
        self.assertEqual(logic.shownChannels(cells), [1, 1, None])
        self.assertTrue(np.array_equal(logic.imagesFromVolume(cells), channels))
        # A scene saved as a .mrb by Slicer's own writer carries the model, the temporary folder's file aside.
        bundle = folder / "loop.mrb"
        self.assertTrue(slicer.util.saveScene(str(bundle)))
        Path(logic.getParameterNode().GetParameter("ModelPath")).unlink()
        slicer.mrmlScene.Clear()
        slicer.util.loadScene(str(bundle))
        reopened = SemSegLogic()
        self.assertTrue(reopened.restoreModelFromParameterNode())
        self.assertEqual(reopened.model.signature, logic.model.signature)
        self._waitForPanel(widget)  # the panel reads the opened scene's model on the worker
        self.assertEqual(widget.logic.model.signature, logic.model.signature)
        # The panel's Train (20 steps on from the scene's model, on the worker), then its Undo training.
        self.delayDisplay("Training from the panel")
        stack = slicer.mrmlScene.GetFirstNodeByName(volume.GetName())  # the sample stack, as the scene reopened it
        widget.ui.inputVolumeSelector.setCurrentNode(stack)
        widget.updateParameterNodeFromGUI()
        self.assertEqual(widget._labels().GetName(), segmentation.GetName())  # its own labels, with the strokes
        widget.ui.budgetUnitComboBox.currentText = "iterations"
        widget.ui.budgetSpinBox.value = 20
        widget.ui.continueCheckBox.checked = True
        widget.onTrain()
        self._waitForPanel(widget)
        self.assertTrue(widget.ui.statusLabel.text.startswith("Trained 20 iterations"), widget.ui.statusLabel.text)
        self.assertEqual(len(widget.logic.model.history), len(logic.model.history) + 1)
        widget.onUndoTraining()
        self.assertEqual(widget.logic.model.signature, logic.model.signature)
        self.delayDisplay("SemSeg loop test passed")

    @staticmethod
    def _waitForPanel(widget) -> None:
        """Until the panel's task ends, its timer polling it as in use."""
        while widget._task is not None:
            slicer.app.processEvents()
            time.sleep(0.02)
