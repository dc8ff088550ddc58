"""SemSegMRML: the SemSeg Logic (`logic.SemSegLogic`, its methods one file per activity: `logic_*.py`) and its
helpers on MRML nodes (arrays in and out of volumes and segmentations, the parameter node, the nodes kept beside
each stack, accepted predictions, the results it shows).

They need Slicer's data model (the Slicer application, or the slicer-core wheel in the tests) but never Qt,
so they run in CI against a real scene. Kept apart from SemSegLib, the engine, which imports no Slicer.
"""
