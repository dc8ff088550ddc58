"""Shared fixtures: small synthetic stacks written to temporary folders (never real data)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "SemSegModule"))


def disk_task(n: int = 4, size: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A tiny 2-class task: bright textured disks (2) on a noisy background (1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, refs = [], []
    for _ in range(n):
        ref = np.ones((size, size), np.uint8)
        for _ in range(4):
            cy, cx, r = rng.uniform(15, size - 15, 2).tolist() + [rng.uniform(7, 13)]
            ref[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 2
        img = 60 + 90 * (ref == 2) + rng.normal(0, 18, (size, size))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        refs.append(ref)
    return np.stack(images), np.stack(refs)


@pytest.fixture
def disk_stack(tmp_path: Path):
    """Folder layout: images/, reference/ with img_1..img_4 (uint8)."""
    import tifffile

    images, refs = disk_task()
    (tmp_path / "images").mkdir()
    (tmp_path / "reference").mkdir()
    for i in range(len(images)):
        tifffile.imwrite(tmp_path / "images" / f"img_{i + 1}.tif", images[i])
        tifffile.imwrite(tmp_path / "reference" / f"img_{i + 1}.tif", refs[i])
    return tmp_path


@pytest.fixture(autouse=True)
def own_temporary_folder(tmp_path_factory, monkeypatch):
    """What the module keeps in the temporary folder (the autosaved model, the strokes a training used, a scene's
    cache folder) goes to the test's own, not the machine's; TMPDIR too, for the tests' fresh interpreters."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    monkeypatch.setattr(tempfile, "tempdir", folder)
    monkeypatch.setenv("TMPDIR", folder)


@pytest.fixture
def scene():
    """A real MRML scene set up as the Slicer application sets it up (slicer_scene.py); cleared afterwards."""
    pytest.importorskip("slicer", reason="slicer-core wheel not installed")
    from slicer_scene import make_scene

    scene, app, logics = make_scene()
    yield scene
    scene.Clear(1)


@pytest.fixture
def logic(scene):
    """SemSegLogic on that scene, as the module's panel makes it (SemSeg.SemSegLogic)."""
    import SemSeg

    return SemSeg.SemSegLogic(scene)
