"""A simulated annotator: brush strokes from full reference labels, and correction strokes.

Strokes are what a careful person paints: short brush paths inside one class, kept away from class borders
where the class is wide enough, never crossing into another class. Corrections go onto the largest wrongly
predicted regions, labeled with the true class.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def _disk(radius: int) -> np.ndarray:
    r = max(0, radius)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy**2 + xx**2) <= r * r + r


def _paint_path(mask: np.ndarray, allowed: np.ndarray, start: tuple[int, int], length: int, radius: int,
                rng: np.random.Generator) -> np.ndarray:
    """A smooth random walk from `start` that stays inside `allowed`; returns painted pixels (brush disk).

    Where no smooth step stays inside (a 1-pixel class such as a nucleus border, whose pixels are only
    8-connected), the walk follows the structure to the unvisited neighbouring pixel closest to its heading,
    as a hand traces a thin line: without that, a stroke in a 1-pixel class ended after about 8 of its
    `length` pixels, and a thin class got a third of the labels a stroke promises (bench/RESULTS.md, session 18).
    """
    h, w = allowed.shape
    path = [start]
    visited = {start}
    y, x = float(start[0]), float(start[1])
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(length - 1):
        for _attempt in range(8):
            a = angle + rng.normal(0, 0.35)
            ny, nx = y + np.sin(a), x + np.cos(a)
            pixel = (int(round(ny)), int(round(nx)))
            # Back onto its own earlier path is no step: in a 1-pixel class that is where a turn leads.
            if 0 <= pixel[0] < h and 0 <= pixel[1] < w and allowed[pixel] and (pixel == path[-1]
                                                                              or pixel not in visited):
                y, x, angle = ny, nx, a
                break
            angle = rng.uniform(0, 2 * np.pi)
        else:
            followed = _follow(allowed, path[-1], angle, visited)
            if followed is None:
                break
            pixel, angle = followed
            y, x = float(pixel[0]), float(pixel[1])
        path.append(pixel)
        visited.add(pixel)
    painted = np.zeros_like(allowed)
    for py, px in path:
        painted[py, px] = True
    if radius > 0:
        painted = ndi.binary_dilation(painted, structure=_disk(radius))
    return painted & mask


_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def _follow(allowed: np.ndarray, at: tuple[int, int], angle: float,
            visited: set[tuple[int, int]]) -> tuple[tuple[int, int], float] | None:
    """The unvisited allowed 8-neighbour of `at` whose direction is closest to `angle`, with that direction."""
    h, w = allowed.shape
    best = None
    for dy, dx in _NEIGHBOURS:
        iy, ix = at[0] + dy, at[1] + dx
        if 0 <= iy < h and 0 <= ix < w and allowed[iy, ix] and (iy, ix) not in visited:
            direction = float(np.arctan2(dy, dx))
            turn = abs((direction - angle + np.pi) % (2 * np.pi) - np.pi)
            if best is None or turn < best[0]:
                best = (turn, (iy, ix), direction)
    return None if best is None else (best[1], best[2])


def _start_region(class_mask: np.ndarray, radius: int) -> np.ndarray:
    """Where a stroke center may go: the class eroded by the brush, or the class itself if that vanishes."""
    for r in range(radius, -1, -1):
        region = ndi.binary_erosion(class_mask, structure=_disk(r), border_value=0) if r else class_mask
        if region.sum() >= 20:
            return region
    return class_mask


def simulate_strokes(reference: np.ndarray, num_classes: int, strokes_per_class: int = 10, brush_radius: int = 1,
                     stroke_length: int = 25, rng: np.random.Generator | None = None) -> np.ndarray:
    """Sparse labels (H, W) for one image: `strokes_per_class` strokes of each class present."""
    rng = rng or np.random.default_rng(0)
    out = np.zeros(reference.shape, np.uint16)
    for c in range(1, num_classes + 1):
        class_mask = reference == c
        if not class_mask.any():
            continue
        allowed = _start_region(class_mask, brush_radius)
        candidates = np.flatnonzero(allowed)
        for _ in range(strokes_per_class):
            start = np.unravel_index(candidates[rng.integers(len(candidates))], reference.shape)
            painted = _paint_path(class_mask, allowed, start, stroke_length, brush_radius, rng)
            out[painted] = c
    return out


def _error_blobs(reference: np.ndarray, prediction: np.ndarray, c: int, brush_radius: int) -> np.ndarray:
    """Pixels of true class `c` predicted wrong that a person would see as errors to paint over."""
    class_mask = reference == c
    class_wrong = (prediction != c) & class_mask
    core = _start_region(class_mask, brush_radius + 1)  # where the brush fits with a pixel to spare
    if core is class_mask:  # a class too thin for that (a 1-pixel border): its wrong pixels are the errors
        return class_wrong
    # A wide class: only blobs count, slivers along its edge are where exactly the edge runs.
    return ndi.binary_opening(class_wrong & core, structure=_disk(brush_radius + 1))


def simulate_corrections(reference: np.ndarray, prediction: np.ndarray, labels: np.ndarray, num_classes: int,
                         strokes_per_class: int = 5, brush_radius: int = 1, stroke_length: int = 25,
                         rng: np.random.Generator | None = None,
                         region_order: str = "largest") -> np.ndarray:
    """New sparse labels: `labels` plus correction strokes on the largest wrong regions of each true class.

    "Largest" is measured on the region's interior, the way a person sees errors: a blob of wrong pixels, not a
    sliver along a boundary that is a matter of where exactly the border runs. The brush stays inside the class
    with a pixel to spare where the class is wide enough: a person does not paint the second pixel from a
    nucleus edge as "nucleus" next to a 1-pixel "border" class (simulated corrections that did so made the
    border class vanish; bench/RESULTS.md). `region_order="random"` picks wrong regions at random instead.
    """
    rng = rng or np.random.default_rng(0)
    out = labels.copy()
    for c in range(1, num_classes + 1):
        class_mask = reference == c
        components, n = ndi.label(_error_blobs(reference, prediction, c, brush_radius))
        if n == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        order = np.argsort(-sizes) if region_order == "largest" else rng.permutation(n)
        # One stroke per region, largest first; with fewer regions than strokes, the largest get more.
        for j in range(strokes_per_class):
            region = components == order[j % n] + 1
            allowed = _start_region(region, brush_radius)
            candidates = np.flatnonzero(allowed)
            start = np.unravel_index(candidates[rng.integers(len(candidates))], reference.shape)
            painted = _paint_path(class_mask, allowed, start, stroke_length, brush_radius, rng)
            out[painted & (labels == 0)] = c  # a correction never repaints what was painted before
    return out


def simulate_strokes_at(reference: np.ndarray, points: list[tuple[int, int]], labels: np.ndarray,
                        brush_radius: int = 1, stroke_length: int = 25,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """`labels` plus one stroke per point, of the reference class found there (a person told where to look)."""
    rng = rng or np.random.default_rng(0)
    out = labels.copy()
    for row, col in points:
        c = int(reference[row, col])
        if c == 0:
            continue
        class_mask = reference == c
        allowed = _start_region(class_mask, brush_radius)
        if not allowed[row, col]:
            # Move the start to the nearest pixel where the brush fits inside the class.
            candidates = np.argwhere(allowed)
            row, col = candidates[np.argmin(np.abs(candidates - (row, col)).sum(1))]
        painted = _paint_path(class_mask, allowed, (int(row), int(col)), stroke_length, brush_radius, rng)
        out[painted & (labels == 0)] = c
    return out


def simulate_corrections_in(reference: np.ndarray, prediction: np.ndarray, labels: np.ndarray, num_classes: int,
                            boxes: list[tuple[int, int, int, int]], brush_radius: int = 1, stroke_length: int = 25,
                            margin: int = 8, rng: np.random.Generator | None = None,
                            stay_in_region: bool = True) -> np.ndarray:
    """`labels` plus one correction stroke per box (row0, col0, row1, col1): a person shown a suggested region.

    The person looks at the box (and `margin` pixels around it), finds the biggest error blob there not yet
    painted and paints its true class over it; where the box shows no error (left), they paint the right class
    at its center (an unsure prediction made sure), as the Slicer panel asks ("paint the right class there").
    `stay_in_region=False`: the person of sessions 3-38, who then corrects the biggest error left anywhere in
    the image instead. On isbi2012-em only 12% of the suggested regions show an error a brush can fix (most
    are spots of ~20 px along a membrane), so that person painted mostly off the suggestions (bench/RESULTS.md,
    session 39).
    """
    rng = rng or np.random.default_rng(0)
    out = labels.copy()
    h, w = reference.shape
    blobs = [ndi.label(_error_blobs(reference, prediction, c, brush_radius))[0] for c in range(1, num_classes + 1)]
    sizes = [np.bincount(b.ravel()) for b in blobs]
    for counts in sizes:
        counts[0] = 0  # the labeling's background, not a blob
    for r0, c0, r1, c1 in boxes:
        window = (slice(max(0, r0 - margin), min(h, r1 + margin)), slice(max(0, c0 - margin), min(w, c1 + margin)))
        best = max(((int(sizes[c][j]), c, j) for c in range(num_classes) for j in np.unique(blobs[c][window])),
                   default=(0, 0, 0))
        if best[0] == 0 and not stay_in_region:
            best = max(((int(n.max()), c, int(n.argmax())) for c, n in enumerate(sizes)), default=(0, 0, 0))
        if best[0] == 0:
            out = simulate_strokes_at(reference, [((r0 + r1) // 2, (c0 + c1) // 2)], out, brush_radius,
                                      stroke_length, rng)
            continue
        _, c, j = best
        sizes[c][j] = 0  # painted: the next stroke goes to another error
        region = blobs[c] == j
        allowed = _start_region(region, brush_radius)
        in_window = np.zeros_like(allowed)
        in_window[window] = True
        candidates = np.flatnonzero(allowed & in_window)  # start where the person is looking
        if len(candidates) == 0:
            candidates = np.flatnonzero(allowed)
        start = np.unravel_index(candidates[rng.integers(len(candidates))], reference.shape)
        # The stroke starts on the error and goes on inside the class like any stroke: a brush does not stop
        # where the model's mistake ends.
        class_mask = reference == c + 1
        path_region = allowed | _start_region(class_mask, brush_radius)
        painted = _paint_path(class_mask, path_region, start, stroke_length, brush_radius, rng)
        out[painted & (labels == 0)] = c + 1
    return out
