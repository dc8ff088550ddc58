"""SemSegLib: sparse-label semantic segmentation of microscopy image stacks (the SemSeg engine).

Plain Python + PyTorch; importable without Slicer. Heavy modules (torch, MONAI) load on first use of the
submodules that need them, so `import SemSegLib` stays cheap.
"""

__version__ = "0.1.0"
