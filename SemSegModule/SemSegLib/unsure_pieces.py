"""Unsure pieces: a separate piece of a class that the network is unsure of throughout gets the next likeliest class.

Why: from a few strokes, the network calls some look-alikes of a thin class by that class. On isbi2012-em these
are dark structures inside cells (organelles, vesicles) drawn as membrane, more than 3 px from any membrane of
the reference; they are most of what a model trained on dense labels does better (bench/RESULTS.md, session 30).
The network is unsure there (mean normalized entropy 0.84, against 0.42 on the rest of its membrane), but a
pixel's uncertainty alone does not tell them apart: a true membrane's edges are as unsure. What does is the
piece: a connected piece of a class whose pixels are unsure on average is such a look-alike, while a true
membrane's piece holds its sure center line. On the first models of 8 seeds: isbi2012-em T2 +0.005 and T1
+0.007, higher on 8 of 8 (threshold chosen on seeds 0-3); dsb2018-fluo level (4 seeds, -0.0005).

Pieces larger than `MAX_PIECE_SHARE` of the image are kept as they are: a whole region the network is unsure of
is the person's to judge (the uncertainty map shows it), not a look-alike to remove. Line classes (line_classes.py)
are kept too: a 1-pixel line is unsure across its width by nature.

A look-alike joined to a thin class's network is no piece of its own (most of isbi2012-em's far false membrane
is such a bump on a true membrane). `reassign_unsure_off_lines` finds those: a thin class lies along the watershed
lines of its own probability (where two basins of low probability meet: between two cells), while a dark blob
inside a cell is a bump within one basin that no line crosses. So the thin class's pixels more than
`OFF_LINE_DISTANCE` px from those lines form pieces of their own, and the unsure ones take the next likeliest
class. On the first models of 8 seeds: isbi2012-em T2 +0.005 (7 of 8 higher) and T1 +0.007 (8 of 8) on top of
the piece rule; dsb2018-fluo unchanged (its classes are wide or lines). Unlike the piece rule it also helps a
retrained model: T2 +0.007 on average over 26 retrained isbi2012-em models, higher on 24 (the other two -0.001;
session 34 in bench/RESULTS.md), so every model predicts with it. Cost: about 0.25 s more per 512 x 512 image
on 2 CPU cores.

A map with the random forest's share in it (pixel_forest.py) gets the piece rule for thin classes only; without
the forest a first training's map gets it for every class and a retrained model's map not at all. Without the
forest a retrained model has learned from the corrections where the look-alikes are, and the pieces it is still
unsure of are more often true membrane: after `sparse.py`'s correction round the rule cost isbi2012-em T2 0.013
and 0.007 (seeds 0-1, session 30), and 0.0014 over 8 seeds of session 46's round models (session 48), for thin
classes only as well. With the forest's share in the map the same round models gained: isbi2012-em T2 +0.006
(8 of 8 seeds; the round's change -0.001 -> +0.005), +0.004 with the rule on every class; on dsb2018-fluo the
rule on every class cost 0.0015 (4 of 4: its pieces there are of wide classes), on thin classes only it is
level (-0.0001; bench/RESULTS.md, session 48). On first models with the forest, thin classes only against every
class: isbi2012-em T2 +0.0008 (7 of 8 seeds up), dsb2018-fluo +0.0005 (7 of 8; session 49).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# A piece whose mean normalized entropy is above this gets each pixel's next likeliest class. Of 0.5-0.9 on the
# first models of seeds 0-3, 0.6-0.7 gained most on isbi2012-em; 0.5 also removed true membrane on seed 0.
UNSURE_PIECE_UNCERTAINTY = 0.7
# Pieces above this share of the image's pixels stay (1311 px of a 512 x 512 image).
MAX_PIECE_SHARE = 0.005
# A thin class: half of its pixels at most this far (px) from another class. Its pixels farther than this from
# the watershed lines of its probability are off its lines. isbi2012-em's membrane: median 2.0-2.2 px from the
# cells; its cells 6.7-9 px, dsb2018-fluo's nuclei 4 px (8 first models each). 2 px: true membrane went too.
OFF_LINE_DISTANCE = 3.0
# Minima of the (smoothed) probability shallower than this are no basin of their own: a dip inside one cell.
BASIN_DEPTH = 0.02
_EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def reassign_unsure_pieces(labels: np.ndarray, probabilities: np.ndarray, uncertainty: np.ndarray,
                           line_classes: list[int] | tuple[int, ...] = (),
                           threshold: float = UNSURE_PIECE_UNCERTAINTY,
                           max_share: float = MAX_PIECE_SHARE, thin_only: bool = False) -> np.ndarray:
    """(H, W) labels 1..K -> a copy in which every unsure piece of a class has each pixel's next likeliest class.

    `probabilities` (K, H, W) and `uncertainty` (H, W) are the prediction's; `line_classes` are 0-based class
    indices left as they are, and with `thin_only` the wide classes too.
    """
    out = labels.copy()
    for c in range(probabilities.shape[0]):
        mine = labels == c + 1
        if c in line_classes or (thin_only and not _is_thin(mine)):
            continue
        _reassign_unsure(out, mine, c, probabilities, uncertainty, threshold, max_share * labels.size)
    return out


def _is_thin(mask: np.ndarray, distance: float = OFF_LINE_DISTANCE) -> bool:
    """Half of the class's pixels at most `distance` px from another class (see OFF_LINE_DISTANCE)."""
    return bool(mask.any()) and float(np.median(ndi.distance_transform_edt(mask)[mask])) <= distance


def _reassign_unsure(out: np.ndarray, mask: np.ndarray, c: int, probabilities: np.ndarray, uncertainty: np.ndarray,
                     threshold: float, max_size: float = np.inf) -> None:
    """In `out`, each 8-connected piece of `mask` (pixels of 0-based class `c`) whose mean uncertainty is above
    `threshold` and whose size is at most `max_size` gets each pixel's next likeliest class."""
    pieces, count = ndi.label(mask, structure=_EIGHT_NEIGHBOURS)
    if count == 0:
        return
    ids = np.arange(1, count + 1)
    sizes = np.bincount(pieces.ravel(), minlength=count + 1)[1:]
    unsure = ids[(ndi.mean(uncertainty, pieces, ids) > threshold) & (sizes <= max_size)]
    if unsure.size == 0:
        return
    where = np.isin(pieces, unsure)
    others = probabilities[:, where]  # boolean indexing: already a copy
    others[c] = -1.0
    out[where] = (others.argmax(0) + 1).astype(out.dtype)


def watershed_lines(probability: np.ndarray, smoothing: float = 0.5, depth: float = BASIN_DEPTH) -> np.ndarray:
    """(H, W) bool: where the basins of low `probability` meet (one pixel wide, on one side of each meeting).

    A priority-flood watershed from the minima deeper than `depth` (scikit-image); scipy's `watershed_ift`
    put the lines elsewhere and lost the gain (bench/RESULTS.md, session 34).
    """
    from skimage.morphology import h_minima
    from skimage.segmentation import watershed

    p = ndi.gaussian_filter(probability.astype(np.float32), smoothing) if smoothing else probability
    basins = watershed(p, ndi.label(h_minima(p, depth))[0])
    lines = np.zeros(p.shape, bool)
    lines[:-1] |= basins[:-1] != basins[1:]
    lines[:, :-1] |= basins[:, :-1] != basins[:, 1:]
    return lines


def reassign_unsure_off_lines(labels: np.ndarray, probabilities: np.ndarray, uncertainty: np.ndarray,
                              line_classes: list[int] | tuple[int, ...] = (),
                              threshold: float = UNSURE_PIECE_UNCERTAINTY,
                              distance: float = OFF_LINE_DISTANCE) -> np.ndarray:
    """(H, W) labels 1..K -> a copy in which every unsure piece of a thin class off its watershed lines has each
    pixel's next likeliest class (module docstring). Wide classes and `line_classes` (0-based) are left as they are.
    """
    out = labels.copy()
    for c in range(probabilities.shape[0]):
        mine = labels == c + 1
        if c in line_classes or not _is_thin(mine, distance):
            continue  # a wide class (or none here): its pixels are far from any line by nature
        off = mine & (ndi.distance_transform_edt(~watershed_lines(probabilities[c])) > distance)
        _reassign_unsure(out, off, c, probabilities, uncertainty, threshold)
    return out
