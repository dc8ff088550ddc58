"""Line classes: a class the person paints as 1-pixel lines is predicted as 1-pixel lines.

Why: a thin class such as a nucleus border (the reference's 1-pixel inner boundary of each nucleus) is traced
pixel by pixel, while the other classes are painted with a brush. Nothing in such strokes says how far the
class reaches to either side, so the network draws a band about three pixels wide along the line (7% of the
pixels against 2.3% in the reference on dsb2018-fluo), eating into both neighbours; no class-prior correction
thins it, because the network is confident in that band (bench/RESULTS.md, session 18). The band's ridge, the
pixels where the class's probability peaks across the band, is where the line lies; the flanks belong to the
classes next to the band.

A class counts as a line class when its labeled pixels have (almost) no interior, i.e. every one of them
touches a pixel not labeled with it, while another class's strokes are wider: then the person restricted
this class to a line (Slicer's Paint effect in pixel mode, or a brush masked to the structure) rather than
painting everything with a thin brush. Classes painted with a brush, such as isbi2012-em's membranes, are
never thinned.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

# A class is a line class when at most this share of its labeled pixels are interior (all four neighbours
# labeled with it). Traced 1-pixel lines: 0.001 on dsb2018-fluo's border; 3-pixel brush strokes: 0.45-0.49.
MAX_INTERIOR_SHARE = 0.05
# ...and another class's labels have at least this share of interior pixels (a brush wider than a line).
MIN_BRUSH_INTERIOR_SHARE = 0.2
_CROSS = ndi.generate_binary_structure(2, 1)
# A pixel whose (smoothed) probability is at most this far below a neighbour across the line still counts as on
# the ridge: near-ties are kept. The network places a line only to about a pixel, so of two pixels it is almost
# equally sure of, exact suppression keeps one and draws the line thinner than its position is known. With
# 0.03 the line is a little wider where it is unsure: on dsb2018-fluo 3.1% of the test pixels instead of 2.5%
# (reference 2.3%), and T2 +0.003 / T1 +0.005 on the first models of 10 of 10 seeds. Joining the exact ridge's
# broken pieces instead gained nothing (+0.000): the gain is the width (bench/RESULTS.md, session 25).
RIDGE_TOLERANCE = 0.03


def interior_share(labels: np.ndarray, value: int) -> float:
    """Share of the pixels labeled `value` in (N, H, W) or (H, W) labels whose 4 neighbours are labeled
    `value` too; nan when no pixel is."""
    labels = labels.reshape(-1, *labels.shape[-2:])
    inner = total = 0
    for image in labels:
        hit = image == value
        rows, cols = np.flatnonzero(hit.any(1)), np.flatnonzero(hit.any(0))
        if not len(rows):
            continue
        # Eroded within the class's bounding box and a pixel around it (or the image's edge, which erodes as the
        # outside does): the same count, and a stack of 400 images of 1024 x 1024 with strokes on 3 takes 0.2 s
        # instead of 13 s before its training's first step.
        box = (slice(max(rows[0] - 1, 0), rows[-1] + 2), slice(max(cols[0] - 1, 0), cols[-1] + 2))
        mask = hit[box]
        total += int(mask.sum())
        inner += int(ndi.binary_erosion(mask, _CROSS).sum())
    return inner / total if total else float("nan")


def detect_line_classes(labels: np.ndarray, num_classes: int) -> list[int]:
    """0-based indices of the classes painted as 1-pixel lines in (N, H, W) labels (0 = unlabeled)."""
    shares = [interior_share(labels, c + 1) for c in range(num_classes)]
    if not any(s >= MIN_BRUSH_INTERIOR_SHARE for s in shares if not np.isnan(s)):
        return []  # everything painted thin: the brush, not the classes
    return [c for c, s in enumerate(shares) if not np.isnan(s) and s <= MAX_INTERIOR_SHARE]


def ridge(probability: np.ndarray, where: np.ndarray | None = None, sigma: float = 1.0,
          tolerance: float = RIDGE_TOLERANCE) -> np.ndarray:
    """Pixels where the (H, W) probability is at least its neighbours across the structure, less `tolerance`
    (non-maximum suppression along the Hessian's direction of strongest negative curvature, as Canny thins
    edges).

    Only the pixels of the boolean mask `where` (default: all) are tested; the others are False.
    """
    p = probability.astype(np.float32)
    where = np.ones(p.shape, bool) if where is None else where
    smooth = ndi.gaussian_filter(p, sigma)
    ys, xs = np.nonzero(where)
    hyy = ndi.gaussian_filter(p, sigma, order=(2, 0))[ys, xs]
    hxx = ndi.gaussian_filter(p, sigma, order=(0, 2))[ys, xs]
    hxy = ndi.gaussian_filter(p, sigma, order=(1, 1))[ys, xs]
    lowest = 0.5 * (hxx + hyy - np.sqrt((hxx - hyy) ** 2 + 4 * hxy**2))
    vx, vy = hxy, lowest - hxx  # eigenvector of the lowest eigenvalue: across the line
    norm = np.hypot(vx, vy)
    flat = norm < 1e-12
    vx = np.where(flat, 1.0, vx / np.where(flat, 1.0, norm))
    vy = np.where(flat, 0.0, vy / np.where(flat, 1.0, norm))
    ahead = ndi.map_coordinates(smooth, [ys + vy, xs + vx], order=1, mode="nearest")
    behind = ndi.map_coordinates(smooth, [ys - vy, xs - vx], order=1, mode="nearest")
    out = np.zeros(p.shape, bool)
    out[ys, xs] = (smooth[ys, xs] >= ahead - tolerance) & (smooth[ys, xs] >= behind - tolerance)
    return out


def thin_line_classes(prob: torch.Tensor, line_classes: list[int]) -> torch.Tensor:
    """(K, H, W) probabilities with each line class thinned to its ridge.

    Where a line class wins off its ridge, its probability goes to the class of the nearest pixel that no
    line class wins, so the flank joins the neighbour it touches: the inner flank of a nucleus border becomes
    nucleus, the outer one background. (Its second most likely class instead measured worse on dsb2018-fluo:
    a flank's runner-up is often the big background class, on the nucleus side too.)
    """
    if not line_classes:
        return prob
    winner = prob.numpy().argmax(0)
    is_line = np.isin(winner, line_classes)
    if not is_line.any() or is_line.all():
        return prob
    out = prob.numpy().copy()
    # The nearest pixel that no line class wins, for every pixel.
    _, (iy, ix) = ndi.distance_transform_edt(is_line, return_indices=True)
    for c in line_classes:
        mine = winner == c
        ys, xs = np.nonzero(mine & ~ridge(out[c], mine))
        neighbour = winner[iy[ys, xs], ix[ys, xs]]
        out[neighbour, ys, xs] += out[c, ys, xs]
        out[c, ys, xs] = 0
    return torch.from_numpy(out)
