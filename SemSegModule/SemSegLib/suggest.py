"""Where to paint next: images ranked by mean uncertainty, and their most uncertain regions.

A region is a connected area of high normalized entropy (smoothed first so it is a place a brush can go,
not salt noise); regions are ranked by the uncertainty they hold, area times mean (`REGION_ORDER`), a stand-in
for how many pixels the model may have wrong there. Ranked by their mean alone (sessions 14-52), the first regions
were spots of ~25 px along a membrane where the line's exact position is in doubt: on isbi2012-em 2-3 of 30
suggested strokes met an error a brush can fix; the regions holding the most uncertainty hold most of the
errors (21-22 of 30; bench/RESULTS.md, session 53).

No region lies where the person has painted: the prediction shown after a retraining averages in earlier
networks that never saw the newest strokes, so a place just corrected could look unsure again. On the
benchmark that is rare: paired, a simulated person's T2 after rounds 1 / 2 / 3 moved by
+0.0002 / +0.0009 / -0.0010 with the rule (bench/RESULTS.md, session 37). The rule is for the person, who
should never be sent back to their own strokes.

An image's uncertainty counts as 0 within `PAINTED_REACH` px of the person's labels (`image_uncertainty`): a
retraining learns what a stroke shows there, so what is left to learn in an image lies away from its strokes.
Without it the same slices came up round after round; with it the suggestions on isbi2012-em spread over 8-9
slices in 3 rounds. Paired on the same first models (7 seeds), a simulated person's T2 after the third round was
-0.0001 on isbi2012-em and +0.0009 on dsb2018-fluo: level (bench/RESULTS.md, session 38). The rule is for the
person, who should not be sent back to a slice they just corrected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist

from .filters import FilterBank
from .model_file import SemSegModel
from .normalization import NormalizationConfig, normalize_image
from .prediction import PredictConfig, predict_stack


@dataclass
class UncertainRegion:
    row: int  # centroid
    column: int
    bbox: tuple[int, int, int, int]  # row0, col0, row1, col1 (exclusive)
    area: int
    mean_uncertainty: float


# Pixels this close to a painted one count as painted: a brush stroke's width on either side.
PAINTED_MARGIN = 3
# How regions are ranked (`uncertain_regions`): "total" (area x mean uncertainty) or "mean". A simulated person
# who corrected the "total" regions gained 0.003 more T2 in 3 rounds than with "mean" on isbi2012-em (12 seeds),
# 0.0007 less on dsb2018-fluo (8 seeds; behind in the first round; bench/RESULTS.md, session 53). Against strokes at
# random spots it gained 0.0038 (isbi2012-em) and 0.0041 (dsb2018-fluo) more after 3 rounds, 12 seeds each (session 54).
REGION_ORDER = "total"
# A region is a place to paint. A weak model (a short training) is unsure of most of an image, and its one region
# at the threshold covered nearly all of it: the person was sent to the slice's centre. A region larger than this
# share of its image is taken apart at higher thresholds (REGION_THRESHOLD_STEP at a time, to at most
# MAX_REGION_THRESHOLD), down to the cores it is least sure of. The benchmark's 750-step first models have no
# such region (the largest: 5.5 / 1.4 / 2.2% of an isbi2012-em slice, seeds 0-2; 0.1% of a dsb2018-fluo image,
# seed 0; bench/RESULTS.md, session 65), so where-to-paint's measured rounds are as they were.
MAX_REGION_SHARE = 0.1
REGION_THRESHOLD_STEP = 0.1
MAX_REGION_THRESHOLD = 0.9
# An image's uncertainty leaves out what lies this close to a painted pixel, the surroundings a stroke settles;
# a guess of a bit over half a stroke's length (25 px), not tuned.
PAINTED_REACH = 16


def image_uncertainty(uncertainty: np.ndarray, painted: np.ndarray | None = None,
                      reach: int = PAINTED_REACH) -> float:
    """An image's mean uncertainty, counting it as 0 within `reach` px of the person's labels (`painted`)."""
    if painted is None or not painted.any():
        return float(uncertainty.mean())
    near = ndi.distance_transform_edt(~painted) <= reach
    return float(np.where(near, 0.0, uncertainty).mean())


def uncertain_regions(uncertainty: np.ndarray, threshold: float = 0.5, top: int = 5, min_area: int = 16,
                      smoothing: float = 2.0, painted: np.ndarray | None = None,
                      painted_margin: int = PAINTED_MARGIN, order: str = REGION_ORDER) -> list[UncertainRegion]:
    """The `top` most uncertain regions of one image, in `order`: "total" ranks them by the uncertainty they hold
    (area x mean), "mean" by their mean uncertainty (of two equally unsure on average, the larger first).

    `painted` (H, W bool): the person's labels. Where they painted (and `painted_margin` px around it) is no
    region (the module docstring says why). A region over MAX_REGION_SHARE of the image is split into the parts
    above higher thresholds (`_regions_of_a_size`).
    """
    if order not in ("mean", "total"):
        raise ValueError(f'uncertain_regions: order must be "mean" or "total", not {order!r}')
    uncertainty = uncertainty.astype(np.float32)
    if painted is not None and painted.any():
        # Not iterations=0: scipy then dilates until nothing changes, i.e. over the whole image.
        near = ndi.binary_dilation(painted, iterations=painted_margin) if painted_margin else painted
        uncertainty = np.where(near, np.float32(0), uncertainty)
    smooth = ndi.gaussian_filter(uncertainty, smoothing) if smoothing else uncertainty
    components, n = _regions_of_a_size(smooth, threshold, int(MAX_REGION_SHARE * smooth.size))
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    areas = ndi.sum_labels(np.ones_like(smooth), components, index)
    means = ndi.sum_labels(uncertainty, components, index) / areas
    centroids = ndi.center_of_mass(uncertainty, components, index)
    slices = ndi.find_objects(components)
    regions = []
    ranking = np.lexsort((-areas, -means)) if order == "mean" else np.argsort(-areas * means, kind="stable")
    for j in ranking:
        if areas[j] < min_area:
            continue
        sl = slices[j]
        regions.append(UncertainRegion(int(round(centroids[j][0])), int(round(centroids[j][1])),
                                       (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), int(areas[j]),
                                       round(float(means[j]), 4)))
        if len(regions) >= top:
            break
    return regions


def _regions_of_a_size(smooth: np.ndarray, threshold: float, max_area: int) -> tuple[np.ndarray, int]:
    """Connected areas of `smooth` >= `threshold` (as `ndi.label` numbers them), each one larger than `max_area`
    replaced by its own areas above the next threshold, until none is larger or MAX_REGION_THRESHOLD is reached."""
    out = np.zeros(smooth.shape, np.int32)
    count = 0
    pending = smooth >= threshold
    while pending.any():
        components, n = ndi.label(pending)
        areas = np.bincount(components.ravel(), minlength=n + 1)[1:]
        last = threshold >= MAX_REGION_THRESHOLD - 1e-6
        keep = np.flatnonzero((areas <= max_area) | last) + 1
        if len(keep):
            renumbered = np.zeros(n + 1, np.int32)
            renumbered[keep] = np.arange(count + 1, count + 1 + len(keep))
            kept = np.isin(components, keep)
            out[kept] = renumbered[components[kept]]
            count += len(keep)
        threshold += REGION_THRESHOLD_STEP
        pending = (components > 0) & ~np.isin(components, keep) & (smooth >= threshold)
    return out, count


def image_descriptors(images: np.ndarray, indices: list[int] | None = None,
                      normalization: NormalizationConfig | None = None, max_side: int = 1024) -> dict[int, np.ndarray]:
    """What each image looks like: the mean and spread of each filter-bank response (filters.py: intensity,
    gradient, Laplacian and Hessian at 1, 2 and 4 px) of the normalized image, for grouping look-alikes.

    Normalized, so brightness alone does not set two images apart; the responses' statistics tell crowded
    small objects from sparse large ones, as a person sorting the images by eye would. Of a large image, its
    central `max_side` square: plenty of pixels for the statistics, in bounded time and memory.
    """
    indices = list(range(len(images))) if indices is None else list(indices)
    bank = FilterBank(images.shape[1])
    out = {}
    with torch.inference_mode():
        for i in indices:
            image = images[i]  # images of a folder may differ in size (`open_stack(..., one_size=False)`)
            top, left = (max(0, (n - max_side) // 2) for n in image.shape[-2:])
            image = normalize_image(image[:, top:top + max_side, left:left + max_side],
                                    normalization or NormalizationConfig())
            responses = bank(torch.from_numpy(image)[None])[0].flatten(1)
            out[i] = torch.cat([responses.mean(1), responses.std(1)]).numpy().astype(np.float64)
    return out


def _standardized(descriptors: dict[int, np.ndarray]) -> tuple[list[int], np.ndarray]:
    images = sorted(descriptors)
    d = np.stack([descriptors[i] for i in images])
    return images, (d - d.mean(0)) / np.where(d.std(0) > 0, d.std(0), 1.0)


def look_alike_groups(descriptors: dict[int, np.ndarray], count: int) -> dict[int, int]:
    """Image -> group (0..count-1): Ward clustering of the standardized descriptors (deterministic)."""
    images, d = _standardized(descriptors)
    if count <= 1 or len(images) <= count:
        return {i: (g if count > 1 else 0) for g, i in enumerate(images)}
    groups = fcluster(linkage(d, "ward"), count, "maxclust")
    return {i: int(g) - 1 for i, g in zip(images, groups)}


# Neighbours in stack order at most this far apart, relative to two images in general: an ordered stack.
# isbi2012-em's serial sections: 0.62; dsb2018-fluo's unrelated fields: 1.04-1.15; a shuffled stack of either
# 0.85-1.14 in 90% of 200 shuffles (bench/RESULTS.md, session 23).
ORDERED_NEIGHBOUR_RATIO = 0.8


def stack_is_ordered(descriptors: dict[int, np.ndarray]) -> bool:
    """Do neighbours in stack order look more alike than the images in general (a volume, serial sections, a
    time series), or is the order arbitrary (a collection of fields)? Fewer than 4 images: ordered."""
    images, d = _standardized(descriptors)
    n = len(images)
    if n < 4:
        return True
    neighbours = float(np.linalg.norm(d[1:] - d[:-1], axis=1).mean())
    # Every pair's distance, a block of rows at a time: all at once took N x N x descriptors floats, 240 MB for
    # 1000 images and 6 GB for 5000. Each pair is counted twice and the diagonal is 0.
    total = sum(float(cdist(d[start:start + 256], d).sum()) for start in range(0, n, 256))
    overall = total / (n * (n - 1))
    return overall == 0 or neighbours < ORDERED_NEIGHBOUR_RATIO * overall


def spread_groups(descriptors: dict[int, np.ndarray], count: int) -> dict[int, int]:
    """Image -> group, one suggestion per group (`rank_by_uncertainty`): `count` consecutive parts of an ordered
    stack, `count` look-alike groups of a collection whose order means nothing (`stack_is_ordered`)."""
    if not descriptors:
        return {}
    if stack_is_ordered(descriptors):
        parts = np.array_split(np.array(sorted(descriptors)), max(1, min(count, len(descriptors))))
        return {int(i): g for g, part in enumerate(parts) for i in part}
    return look_alike_groups(descriptors, count)


def rank_by_uncertainty(mean_uncertainty: dict[int, float], top: int,
                        groups: dict[int, int] | None = None) -> list[int]:
    """`top` images by mean uncertainty, most uncertain first; with `groups` (image -> group, `spread_groups`),
    only the most uncertain image of each group.

    Why groups: the most uncertain images of a stack look alike, and corrections on them alone fix that kind of
    image at the cost of the rest.
    - In an ordered stack they are neighbours: on isbi2012-em the suggestions went to slices 4, 5, 7 in every
      round, and spread over 3 parts of the stack the third round's T2 was higher in 4 of 4 runs (session 21).
      Look-alike groups put slices 4 and 5 in different groups: after three rounds 0.009 lower (6 seeds).
    - In a collection they are one kind of image: on dsb2018-fluo the suggestions went to three bright,
      crowded fields in every round, one of the ten test images' kind. With the most uncertain image of each
      of 3 look-alike groups, T2 after rounds 1 / 2 / 3 was +0.003 / +0.007 / +0.003 higher than with parts
      of the stack, and +0.004 / +0.005 / +0.001 higher than with strokes at random spots (10 seeds; parts of
      the stack ended 0.003 behind random; bench/RESULTS.md, session 23); with the line-position loss of
      session 24, +0.003 / +0.003 / +0.003 higher than at random spots (10 seeds).
    Without `groups`: the most uncertain images wherever they are.
    """
    images = list(mean_uncertainty)
    if groups:
        best: dict[int, int] = {}
        for i in images:
            g = groups[i]
            if g not in best or mean_uncertainty[i] > mean_uncertainty[best[g]]:
                best[g] = i
        images = list(best.values())
    return sorted(images, key=lambda i: -mean_uncertainty[i])[:top]


def suggest_slices(model: SemSegModel, images: np.ndarray, names: list[str], top: int = 5,
                   regions_per_image: int = 3, config: PredictConfig | None = None, spread: bool = True,
                   labels: np.ndarray | None = None) -> dict:
    """Predict the stack and return `top` images to paint next with their most uncertain regions: with `spread`,
    the most uncertain image of each of `top` groups (`spread_groups`, `rank_by_uncertainty`). With `labels`
    (N, H, W, 0 = unlabeled), an image's "mean_uncertainty" leaves out what lies near the person's labels
    (`image_uncertainty`) and no region lies where they painted (`uncertain_regions`)."""
    ranking = SuggestionRanking.of(model, images, names, top, regions_per_image, spread, labels)
    for i, pred in predict_stack(model, images, config):
        ranking.add(i, pred.uncertainty)
    return ranking.result()


class SuggestionRanking:
    """`suggest_slices`' answer gathered one prediction at a time, so that a prediction made for its maps (`semseg
    predict --suggest`) gives it too, without a second pass over the stack."""

    def __init__(self, names: list[str], top: int, groups: dict[int, int] | None, labels: np.ndarray | None = None,
                 regions_per_image: int = 3):
        self.names, self.top, self.groups, self.labels = names, top, groups, labels
        self.regions_per_image = regions_per_image
        self.means: dict[int, float] = {}
        self.maps: dict[int, np.ndarray] = {}

    @staticmethod
    def of(model: SemSegModel, images: np.ndarray, names: list[str], top: int = 5, regions_per_image: int = 3,
           spread: bool = True, labels: np.ndarray | None = None) -> SuggestionRanking:
        # The groups first, so that while the stack is predicted only the maps that can still be suggested are held
        # (at most `top`): all of them took 4 GB for 1000 images of 1024 x 1024.
        groups = spread_groups(image_descriptors(images, None, model.normalization), top) if spread else None
        return SuggestionRanking(names, top, groups, labels, regions_per_image)

    def _painted(self, i: int) -> np.ndarray | None:
        return None if self.labels is None else self.labels[i] > 0

    def add(self, i: int, uncertainty: np.ndarray) -> None:
        """Image `i`'s uncertainty map (H, W), as predicted. An image out of the ranking stays out: a group's best and
        the best groups' means only grow as images come, so its map is let go."""
        self.means[i] = image_uncertainty(uncertainty, self._painted(i))
        self.maps[i] = uncertainty
        still = set(rank_by_uncertainty(self.means, self.top, self.groups))
        self.maps = {j: m for j, m in self.maps.items() if j in still}

    def result(self) -> dict:
        """The JSON-able answer: the ranked images with their regions, and the mean uncertainty of all added."""
        ranked = rank_by_uncertainty(self.means, self.top, self.groups)
        return {
            "images": [
                {"index": i, "number": i + 1, "name": self.names[i], "mean_uncertainty": round(self.means[i], 4),
                 "regions": [asdict(r) for r in uncertain_regions(self.maps[i], top=self.regions_per_image,
                                                                  painted=self._painted(i))]}
                for i in ranked
            ],
            "stack_mean_uncertainty": round(float(np.mean(list(self.means.values()))), 4),
        }
