"""A bundled, generated sample stack: microscopy-like cells with nuclei on a textured background.

Deterministic from a seed, no data files. Three classes with full reference labels (1 background, 2 cell,
3 nucleus). Intensities overlap between classes (bright debris in the background, dim nuclei in some cells,
uneven illumination), so a global threshold fails and texture/context matter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .classes import ClassInfo, write_classes_csv
from .stack_io import write_tiff

SAMPLE_CLASSES = [
    ClassInfo(1, "background", (40, 40, 40)),
    ClassInfo(2, "cell", (60, 200, 90)),
    ClassInfo(3, "nucleus", (230, 60, 60)),
]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma)
    return n / (n.std() + 1e-8)


def _blob(rng: np.random.Generator, radius: float, size: int) -> np.ndarray:
    """A wobbly ellipse mask of about `radius`, centered in a size x size box."""
    yy, xx = np.mgrid[:size, :size] - size / 2
    theta = np.arctan2(yy, xx)
    r = np.hypot(yy * rng.uniform(0.8, 1.2), xx * rng.uniform(0.8, 1.2))
    wobble = 1 + sum(rng.uniform(-0.08, 0.08) * np.sin(k * theta + rng.uniform(0, 6.3)) for k in (2, 3, 5))
    return r <= radius * wobble


def make_sample_image(rng: np.random.Generator, size: tuple[int, int] = (256, 256)) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W) uint16 image and its (H, W) uint8 reference (1 background, 2 cell, 3 nucleus)."""
    h, w = size
    ref = np.ones((h, w), np.uint8)
    signal = 0.25 + 0.12 * _smooth_noise(rng, size, 6)  # textured background
    debris = _smooth_noise(rng, size, 2.5) > 2.2  # small bright specks in the background
    signal += 0.45 * ndi.gaussian_filter(debris.astype(float), 1.0)
    n_cells = rng.integers(7, 13)
    centers: list[tuple[float, float]] = []
    for _ in range(200):
        if len(centers) >= n_cells:
            break
        radius = rng.uniform(18, 30)
        cy, cx = rng.uniform(radius, h - radius), rng.uniform(radius, w - radius)
        if any(np.hypot(cy - y, cx - x) < radius + 28 for y, x in centers):
            continue
        centers.append((cy, cx))
        box = int(radius * 2.6) | 1
        y0, x0 = int(cy) - box // 2, int(cx) - box // 2
        ys = slice(max(y0, 0), min(y0 + box, h))
        xs = slice(max(x0, 0), min(x0 + box, w))
        cell = _blob(rng, radius, box)[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        nbox = box
        nuc = np.roll(_blob(rng, radius * rng.uniform(0.35, 0.5), nbox),
                      (rng.integers(-4, 5), rng.integers(-4, 5)), axis=(0, 1))
        nuc = nuc[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] & ndi.binary_erosion(cell, iterations=3)
        cyto_level = rng.uniform(0.35, 0.6)
        nuc_level = cyto_level + rng.uniform(0.15, 0.5)
        texture = 0.08 * _smooth_noise(rng, cell.shape, 1.5)
        region = signal[ys, xs]
        region[cell] = cyto_level + texture[cell]
        region[nuc] = nuc_level + 0.5 * texture[nuc]
        ref[ys, xs][cell] = 2
        ref[ys, xs][nuc] = 3
    illumination = 1 + 0.25 * _smooth_noise(rng, size, 60)
    img = ndi.gaussian_filter(signal * illumination, rng.uniform(0.8, 1.6))
    gain = rng.uniform(900, 2500)
    img = rng.poisson(np.clip(img, 0, None) * gain).astype(np.float64) + rng.normal(300, 20, size)
    return np.clip(img, 0, 65535).astype(np.uint16), ref


def make_sample_stack(num_images: int = 8, size: tuple[int, int] = (256, 256), seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) uint16 images and (N, H, W) uint8 full reference labels."""
    rng = np.random.default_rng(seed)
    pairs = [make_sample_image(rng, size) for _ in range(num_images)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def write_sample_stack(folder: str | Path, num_images: int = 8, size: tuple[int, int] = (256, 256),
                       seed: int = 0) -> Path:
    """Write `images/`, `reference/` and `classes.csv` under `folder`; returns `folder`."""
    folder = Path(folder)
    images, reference = make_sample_stack(num_images, size, seed)
    for i in range(num_images):
        write_tiff(folder / "images" / f"cells_{i + 1}.tif", images[i])
        write_tiff(folder / "reference" / f"cells_{i + 1}.tif", reference[i])
    write_classes_csv(folder / "classes.csv", SAMPLE_CLASSES)
    return folder
