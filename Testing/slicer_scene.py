"""A real MRML scene set up the way the Slicer application does it, from the slicer-core wheel (no Qt)."""

from __future__ import annotations

import tempfile


def make_scene():
    """Scene + application logic with the Colors, Volumes, Segmentations, Tables, ... logics registered."""
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    crosshair = slicer.vtkMRMLCrosshairNode()
    crosshair.SetCrosshairName("default")
    scene.AddNode(crosshair)
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(scene)
    app.GetColorLogic().SetMRMLScene(scene)
    app.GetColorLogic().AddDefaultColorNodes()
    app.SetSliceLogics(vtkCollection())
    app.SetViewLogics(vtkCollection())
    logics = {
        "Colors": slicer.vtkSlicerColorLogic(),
        "Volumes": slicer.vtkSlicerVolumesLogic(),
        "Segmentations": slicer.vtkSlicerSegmentationsModuleLogic(),
        "SubjectHierarchy": slicer.vtkSlicerSubjectHierarchyModuleLogic(),
        "Tables": slicer.vtkSlicerTablesLogic(),
        "Plots": slicer.vtkSlicerPlotsLogic(),
    }
    for name, logic in logics.items():
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)
    # As the application does (qSlicerCoreApplication): data I/O with a cache folder, where a .mrb is unpacked.
    remote_io, data_io = slicer.vtkMRMLRemoteIOLogic(), slicer.vtkDataIOManagerLogic()
    remote_io.GetCacheManager().SetRemoteCacheDirectory(tempfile.mkdtemp(prefix="SemSegSceneCache-"))
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    app.SetMRMLSceneDataIO(scene, remote_io, data_io)
    logics["RemoteIO"], logics["DataIOManager"] = remote_io, data_io  # kept alive with the scene
    return scene, app, logics
