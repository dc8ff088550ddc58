"""The current model kept in the scene, so that a saved scene carries it.

Why: the model file SemSeg writes after each training lives in the temporary folder, which the system empties
(at a reboot, or after some days), and a scene saved as a .mrb and opened on another computer never had it. A text
node holding the model file's bytes (base64) is saved with the scene like any other node: as a .txt file of its own
in a .mrb's Data folder or beside a .mrml. A model is read back with `torch.load(weights_only=True)`
(`SemSegModel.load`), so a scene from elsewhere cannot run code through it.
"""

from __future__ import annotations

import base64
import binascii

NODE_NAME = "SemSeg model"
ROLE_MODEL = "SemSegModel"  # from the parameter node to the text node
FORMAT_ATTRIBUTE = "SemSeg.ModelEncoding"
FORMAT = "base64 of a SemSeg model file (.pt)"


def store(scene, parameter_node, data: bytes) -> None:
    """Keep the model file's bytes in the scene's model node (made if there is none)."""
    node = parameter_node.GetNodeReference(ROLE_MODEL)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTextNode", NODE_NAME)
        # Its own file when the scene is saved, never megabytes of text inside the .mrml.
        node.SetForceCreateStorageNode(node.CreateStorageNodeAlways)
        node.SetAttribute(FORMAT_ATTRIBUTE, FORMAT)
        parameter_node.SetNodeReferenceID(ROLE_MODEL, node.GetID())
    node.SetText(base64.b64encode(data).decode("ascii"))


def stored(parameter_node) -> bytes | None:
    """The model file's bytes kept in the scene, or None (no model node, or one whose text is not a model's)."""
    node = parameter_node.GetNodeReference(ROLE_MODEL)
    if node is None or node.GetAttribute(FORMAT_ATTRIBUTE) != FORMAT or not node.GetText():
        return None
    try:
        return base64.b64decode(node.GetText(), validate=True)
    except (binascii.Error, ValueError):
        return None
