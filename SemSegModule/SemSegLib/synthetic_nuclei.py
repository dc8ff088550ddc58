"""Generated fluorescence images of cell nuclei with full labels: what the shipped starting point learned from.

No labeled public microscopy can be reached from where SemSeg is built, and the benchmark's images must not
train anything SemSeg ships, so its starting point (starting_points.py) is trained on images made here:
bright, irregular nuclei on a dark background, isolated or touching, some out of focus, with textured
chromatin, uneven illumination and shot noise. Labels: 1 background, 2 nucleus, 3 nucleus border, the border
being each nucleus's 1-pixel inner boundary (4-connected, so touching nuclei are separated by two lines; no
border along the image frame). That is how nucleus masks are commonly drawn for instance-aware semantic
segmentation (the DSB 2018 reference is drawn that way), and a person tracing borders in Slicer paints the
same 1-pixel lines.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .classes import ClassInfo

NUCLEI_CLASSES = [
    ClassInfo(1, "background", (40, 40, 40)),
    ClassInfo(2, "nucleus", (60, 200, 90)),
    ClassInfo(3, "nucleus border", (230, 60, 60)),
]


def _nucleus(shape: tuple[int, int], center: tuple[float, float], radius: float, rng: np.random.Generator
             ) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """A wobbly, elongated disk: its bounding box in the image and its mask there (None if off the image)."""
    aspect, angle = rng.uniform(1.0, 1.8), rng.uniform(0, np.pi)
    wobble, phase = rng.uniform(0, 0.08, 3), rng.uniform(0, 2 * np.pi, 3)
    reach = int(radius * aspect * 1.5) + 3
    cy, cx = center
    y0, y1 = max(0, int(cy) - reach), min(shape[0], int(cy) + reach + 1)
    x0, x1 = max(0, int(cx) - reach), min(shape[1], int(cx) + reach + 1)
    if y0 >= y1 or x0 >= x1:
        return None
    dy, dx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = dy - cy, dx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / aspect
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v, u)
    edge = radius * (1 + sum(a * np.cos(k * theta + p) for k, (a, p) in enumerate(zip(wobble, phase), start=2)))
    return (slice(y0, y1), slice(x0, x1)), np.hypot(u, v) <= edge


def nucleus_instances(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size) int32: 0 background, 1..n one nucleus each (a later nucleus never covers an earlier one)."""
    instances = np.zeros((size, size), np.int32)
    typical = rng.uniform(5, 22)  # radius in pixels
    wanted = int(rng.uniform(0.05, 0.45) * size * size / (np.pi * typical**2)) + 1
    clumping = rng.uniform(0, 1)  # how often a nucleus is placed against another
    placed: list[tuple[float, float, float]] = []
    for _ in range(3 * wanted):
        if len(placed) >= wanted:
            break
        radius = typical * np.exp(rng.normal(0, 0.25))
        if placed and rng.uniform() < clumping:
            py, px, pr = placed[rng.integers(len(placed))]
            direction, distance = rng.uniform(0, 2 * np.pi), (pr + radius) * rng.uniform(0.75, 1.0)
            center = (py + distance * np.sin(direction), px + distance * np.cos(direction))
        else:
            center = (rng.uniform(-radius, size + radius), rng.uniform(-radius, size + radius))
        got = _nucleus((size, size), center, radius, rng)
        if got is None:
            continue
        box, mask = got
        window = instances[box]
        if mask.sum() < 8 or (window[mask] > 0).mean() > 0.2:  # too small, or mostly under another nucleus
            continue
        placed.append((*center, radius))
        window[mask & (window == 0)] = len(placed)
    return instances


def nuclei_labels(instances: np.ndarray) -> np.ndarray:
    """1 background, 2 nucleus, 3 the 4-connected inner boundary of each nucleus (none along the frame)."""
    labels = np.where(instances > 0, 2, 1).astype(np.uint8)
    h, w = instances.shape
    padded = np.pad(instances, 1, mode="edge")  # beyond the frame: the same nucleus, so no boundary there
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        labels[(instances > 0) & (padded[dy:dy + h, dx:dx + w] != instances)] = 3
    return labels


def render_nuclei(instances: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(1, H, W) float32 fluorescence image of `instances`."""
    h, w = instances.shape
    in_focus = np.zeros((h, w), np.float32)
    out_of_focus = np.zeros((h, w), np.float32)
    brightness, spread, blurred_share = rng.uniform(0.4, 1.0), rng.uniform(0.1, 0.6), rng.uniform(0, 0.4)
    for i in range(1, int(instances.max()) + 1):
        target = out_of_focus if rng.uniform() < blurred_share else in_focus
        target[instances == i] = brightness * np.exp(rng.normal(0, spread))
    chromatin = ndi.gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), rng.uniform(1, 3))
    texture = 1 + rng.uniform(0, 0.35) * chromatin / (chromatin.std() + 1e-6)
    psf = rng.uniform(0.5, 2.0)
    image = ndi.gaussian_filter(in_focus * texture, psf)
    if out_of_focus.any():  # a glow reaching past the nucleus's mask
        image += ndi.gaussian_filter(out_of_focus * texture, psf + rng.uniform(1.5, 4.0))
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    image += rng.uniform(0, 0.15) + rng.uniform(-0.05, 0.05) * yy + rng.uniform(-0.05, 0.05) * xx
    photons = 10 ** rng.uniform(1.3, 3.0)
    image = rng.poisson(np.clip(image, 0, None) * photons).astype(np.float32) / photons
    image += rng.normal(0, rng.uniform(0.002, 0.02), image.shape).astype(np.float32)
    if rng.uniform() < 0.3:  # the camera's own slight blur
        image = ndi.gaussian_filter(image, rng.uniform(0.3, 0.8))
    return image[None].astype(np.float32)


def make_nuclei_image(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One (1, size, size) float32 image and its (size, size) uint8 labels (values of NUCLEI_CLASSES)."""
    instances = nucleus_instances(rng, size)
    return render_nuclei(instances, rng), nuclei_labels(instances)
