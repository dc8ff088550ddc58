"""SemSeg's parameter node: the panel's state, saved with the scene.

Parameters are text, as in every scripted module's parameter node; node references name the stack being worked on,
its label segmentation and the where-to-paint points.
"""

from __future__ import annotations

import json

from SemSegLib.classes import ClassInfo

from .stack_nodes import ROLE_BASELINE, ROLE_PREDICTION, ROLE_UNCERTAINTY

SINGLETON_TAG = "SemSeg"

ROLE_VOLUME = "InputVolume"
ROLE_LABELS = "LabelSegmentation"
ROLE_SUGGESTION_MARKERS = "SuggestionMarkers"

DEFAULT_CLASSES = [
    ClassInfo(1, "background", (128, 128, 128)),
    ClassInfo(2, "cells", (60, 200, 90)),
    ClassInfo(3, "collagen", (230, 60, 60)),
]
DEFAULTS = {
    "Classes": json.dumps([c.to_dict() for c in DEFAULT_CLASSES]),
    # The engine's default (TrainConfig.seconds), which the benchmark measures: it ends after 750 steps, about
    # 100 s on 2 CPU cores. 60 s (426-447 steps there) gave T2 0.005 / 0.002 less (bench/RESULTS.md, session 60).
    "BudgetValue": "180",
    "BudgetUnit": "seconds",
    "ContinueTraining": "true",
    "CorrectionWeight": "1.0",
    "Device": "auto",
    "StartingPoint": "auto",
    "PredictScope": "all",
    "TTA": "false",
    "ModelPath": "",
    "ReferencePath": "",
    "OutputPath": "",
}

# Scenes saved before session 59 referenced the prediction, uncertainty and baseline from the parameter node;
# they belong to the volume then referenced as the input (the only stack SemSeg knew of).
_LEGACY_ROLES = {"PredictionSegmentation": ROLE_PREDICTION, "UncertaintyVolume": ROLE_UNCERTAINTY,
                 "CorrectionBaseline": ROLE_BASELINE}


def parameter_node(scene):
    """The scene's SemSeg parameter node (a singleton, made if there is none), every parameter set."""
    node = scene.GetSingletonNode(SINGLETON_TAG, "vtkMRMLScriptedModuleNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(SINGLETON_TAG)
        node.SetName("SemSeg")
        node.SetAttribute("ModuleName", "SemSeg")
        node = scene.AddNode(node)
    for key, value in DEFAULTS.items():
        if not node.GetParameter(key):
            node.SetParameter(key, value)
    _move_legacy_references(node)
    return node


def classes(node) -> list[ClassInfo]:
    return [ClassInfo.from_dict(d) for d in json.loads(node.GetParameter("Classes"))]


def set_classes(node, classes: list[ClassInfo]) -> None:
    node.SetParameter("Classes", json.dumps([c.to_dict() for c in classes]))


def _move_legacy_references(node) -> None:
    volume = node.GetNodeReference(ROLE_VOLUME)
    for legacy, role in _LEGACY_ROLES.items():
        held = node.GetNodeReference(legacy)
        if held is not None and volume is not None and volume.GetNodeReference(role) is None:
            volume.SetNodeReferenceID(role, held.GetID())
        if node.GetNodeReferenceID(legacy):
            node.SetNodeReferenceID(legacy, None)
