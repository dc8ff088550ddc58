"""Small painted stacks in a real scene, shared by the Logic's tests (test_logic_*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import tifffile
import vtk
from SemSegLib.classes import ClassInfo
from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack
from SemSegLib.simulate import simulate_strokes
from SemSegLib.stack_io import read_stack

FAST = dict(patch_size=64, batch_size=4, base_width=8, levels=3)
THREE_CLASSES = [ClassInfo(1, "background", (10, 20, 30)), ClassInfo(2, "cells", (0, 255, 0)),
                 ClassInfo(3, "collagen", (255, 0, 0))]


def write_numbered(folder: Path, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        tifffile.imwrite(folder / f"img_{i + 1}.tif", im)  # img_10 sorts after img_2


def three_class_stack(folder: Path, logic, shape: tuple[int, int], n: int):
    write_numbered(folder, [np.zeros(shape, np.uint8)] * n)
    volume = logic.loadStack(str(folder))
    logic.setClasses(THREE_CLASSES)
    return volume, logic.createLabelSegmentation(volume)


def sample_scene(tmp_path, logic, painted=(0, 2), strokes=8):
    folder = write_sample_stack(tmp_path / "sample", num_images=4, size=(96, 96), seed=3)
    volume = logic.loadStack(str(folder / "images"))
    logic.setClasses(SAMPLE_CLASSES)
    seg = logic.createLabelSegmentation(volume)
    reference = read_stack(folder / "reference").images[:, 0]
    labels = np.zeros(reference.shape, np.uint16)
    rng = np.random.default_rng(0)
    for k in painted:
        labels[k] = simulate_strokes(reference[k], 3, strokes, rng=rng)
    logic.setLabelsToSegmentation(labels, seg, volume)
    return folder, volume, seg, labels, reference


def paint_square(volume, segmentation, className: str, sliceIndex: int, rows=(0, 4), columns=(0, 4)) -> None:
    """Rows and columns of a slice (first and last; default 0-4) into a class's segment, as a Segment Editor effect
    paints."""
    square = slicer.vtkOrientedImageData()
    square.SetExtent(columns[0], columns[1], rows[0], rows[1], sliceIndex, sliceIndex)
    square.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    square.GetPointData().GetScalars().Fill(1)
    toRAS = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(toRAS)
    square.SetImageToWorldMatrix(toRAS)
    segment = segmentation.GetSegmentation().GetSegmentIdBySegmentName(className)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        square, segmentation, segment, slicer.vtkSlicerSegmentationsModuleLogic.MODE_MERGE_MAX)
