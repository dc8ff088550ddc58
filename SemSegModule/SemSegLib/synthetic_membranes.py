"""Generated electron-microscopy images of cell membranes with full labels: what the "em-membranes" starting
point learned from (starting_points.py).

As for the nuclei (synthetic_nuclei.py): no labeled public microscopy can be reached from where SemSeg is built,
and the benchmark's images must not train anything SemSeg ships, so the images are made here. Cross-sections of
tightly packed cells of many sizes (a power diagram of random seeds in a smoothly warped plane), dark membranes
of 2-9 pixels between them, faint where they run obliquely, grey granular cytoplasm, and inside the cells dark
things that are not membrane: mitochondria, vesicles, dark cells. Then blur and noise. Labels: 1 membrane, 2
cell (everything inside a cell, its organelles too), the convention of serial-section EM membrane maps such as
the ISBI 2012 challenge's. The ranges were set from what such images show and from the statistics of a few such
membrane maps (membranes about a fifth of the pixels, 3-9 px wide, cross-sections of 4-40 px in radius;
bench/RESULTS.md, session 68), not fitted to any image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .classes import ClassInfo

MEMBRANE_CLASSES = [
    ClassInfo(1, "membrane", (230, 60, 60)),
    ClassInfo(2, "cell", (60, 200, 90)),
]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise smoothed by `sigma` px."""
    field = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return (field - field.mean()) / (field.std() + 1e-6)


def cell_instances(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) int32, 1..n one cell cross-section each, tiling the image (no gaps)."""
    typical = rng.uniform(10, 24)  # equivalent radius in pixels
    count = int(size * size / (np.pi * typical**2) * rng.uniform(0.8, 1.2)) + 2
    margin = 2 * typical
    seeds = rng.uniform(-margin, size + margin, (count, 2)).astype(np.float32)
    # A power diagram: a seed's weight grows its cell, so a few large profiles sit among many small ones.
    weights = (typical * np.exp(rng.normal(0, 0.45, count)).astype(np.float32)) ** 2
    warp = rng.uniform(0.2, 0.6) * typical  # curved, not straight, walls
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    yy += warp * _smooth_field(rng, (size, size), typical)
    xx += warp * _smooth_field(rng, (size, size), typical)
    points = np.stack([yy.ravel(), xx.ravel()], 1)
    instances = np.empty(size * size, np.int32)
    for start in range(0, len(points), 16384):  # bounded memory: pixels x seeds
        chunk = points[start:start + 16384]
        power = ((chunk[:, None, :] - seeds[None]) ** 2).sum(-1) - weights[None]
        instances[start:start + len(chunk)] = power.argmin(1) + 1
    return instances.reshape(size, size)


def membrane_mask(instances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixels within a (varying) half width of a wall between two cells."""
    h, w = instances.shape
    wall = np.zeros((h, w), bool)
    wall[:, 1:] |= instances[:, 1:] != instances[:, :-1]
    wall[1:, :] |= instances[1:, :] != instances[:-1, :]
    half = rng.uniform(1.5, 3.5) * np.exp(0.25 * _smooth_field(rng, (h, w), 15))  # thicker and thinner stretches
    return ndi.distance_transform_edt(~wall) <= half


def render_em(instances: np.ndarray, membrane: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(1, H, W) float32 EM-like image (dark membranes and organelles on grey cytoplasm)."""
    h, w = instances.shape
    n = int(instances.max())
    level = rng.uniform(0.5, 0.7) + rng.normal(0, 0.05, n + 1)
    dark_cells = rng.uniform(size=n + 1) < rng.uniform(0, 0.15)
    level[dark_cells] = rng.uniform(0.3, 0.45, int(dark_cells.sum()))
    image = level[instances].astype(np.float32)
    granules = _smooth_field(rng, (h, w), rng.uniform(0.7, 1.8))
    image *= 1 + rng.uniform(0.05, 0.15) * granules
    inside = ndi.distance_transform_edt(~membrane)  # how far from the nearest membrane
    _add_organelles(image, inside, rng)
    depth = rng.uniform(0.45, 0.75) * np.clip(0.75 + 0.25 * _smooth_field(rng, (h, w), 20), 0.3, 1.0)
    image = image * (1 - depth * ndi.gaussian_filter(membrane.astype(np.float32), rng.uniform(0.5, 1.2)))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image += rng.uniform(-0.05, 0.05) * yy + rng.uniform(-0.05, 0.05) * xx
    image = ndi.gaussian_filter(image, rng.uniform(0.5, 1.3))
    image += rng.normal(0, rng.uniform(0.02, 0.07), image.shape).astype(np.float32)
    return np.clip(image, 0, 1)[None].astype(np.float32)


def _add_organelles(image: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> None:
    """Mitochondria (dark, textured ellipses) and vesicles (small dark rings) away from the membranes, in place."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(rng.integers(0, 10)):  # mitochondria
        a, b = rng.uniform(5, 16), rng.uniform(3, 7)
        cy, cx = _place(inside, b + 2, rng)
        if cy is None:
            continue
        angle = rng.uniform(0, np.pi)
        u = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / a
        v = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)) / b
        body = (u**2 + v**2 <= 1) & (inside > 1)
        image[body] = rng.uniform(0.25, 0.45) * (1 + 0.2 * np.cos(u[body] * rng.uniform(6, 14)))
    for _ in range(rng.integers(0, 4)):  # a cluster of vesicles
        cy, cx = _place(inside, 6, rng)
        if cy is None:
            continue
        spread = rng.uniform(5, 15)
        for _ in range(rng.integers(5, 25)):
            vy, vx, r = cy + rng.normal(0, spread), cx + rng.normal(0, spread), rng.uniform(1.5, 4)
            if not (0 <= vy < h and 0 <= vx < w) or inside[int(vy), int(vx)] < r + 2:
                continue
            ring = np.abs(np.hypot(yy - vy, xx - vx) - r) < 0.9
            image[ring] *= rng.uniform(0.5, 0.75)


def _place(inside: np.ndarray, clearance: float, rng: np.random.Generator) -> tuple[float | None, float | None]:
    """A random point at least `clearance` px from every membrane (None, None if there is none)."""
    room = np.flatnonzero(inside.ravel() >= clearance)
    if not len(room):
        return None, None
    y, x = divmod(int(rng.choice(room)), inside.shape[1])
    return float(y), float(x)


def make_membrane_image(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One (1, size, size) float32 image and its (size, size) uint8 labels (values of MEMBRANE_CLASSES)."""
    instances = cell_instances(rng, size)
    membrane = membrane_mask(instances, rng)
    return render_em(instances, membrane, rng), np.where(membrane, 1, 2).astype(np.uint8)
