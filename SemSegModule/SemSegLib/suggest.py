"""Where to paint next: images ranked by mean uncertainty, and their most uncertain regions.

A region is a connected area of high normalized entropy (smoothed first so it is a place a brush can go,
not salt noise); regions are ranked by how unsure the model is there on average, not by size times that:
the biggest uncertain areas are the long bands along class borders, where a stroke fixes little, while a
compact area the model is very unsure of is an object it does not know yet. A simulated person who
corrected the regions in this order gained more T2 than one who followed the size-times-uncertainty order
in 12 of 15 rounds (bench/RESULTS.md, session 14).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from .model_file import SemSegModel
from .prediction import PredictConfig, predict_stack


@dataclass
class UncertainRegion:
    row: int  # centroid
    column: int
    bbox: tuple[int, int, int, int]  # row0, col0, row1, col1 (exclusive)
    area: int
    mean_uncertainty: float


def uncertain_regions(uncertainty: np.ndarray, threshold: float = 0.5, top: int = 5, min_area: int = 16,
                      smoothing: float = 2.0) -> list[UncertainRegion]:
    smooth = ndi.gaussian_filter(uncertainty.astype(np.float32), smoothing) if smoothing else uncertainty
    components, n = ndi.label(smooth >= threshold)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    areas = ndi.sum_labels(np.ones_like(smooth), components, index)
    means = ndi.sum_labels(uncertainty, components, index) / areas
    centroids = ndi.center_of_mass(uncertainty, components, index)
    slices = ndi.find_objects(components)
    regions = []
    for j in np.lexsort((-areas, -means)):  # most uncertain first; of equally uncertain ones, the larger
        if areas[j] < min_area:
            continue
        sl = slices[j]
        regions.append(UncertainRegion(int(round(centroids[j][0])), int(round(centroids[j][1])),
                                       (sl[0].start, sl[1].start, sl[0].stop, sl[1].stop), int(areas[j]),
                                       round(float(means[j]), 4)))
        if len(regions) >= top:
            break
    return regions


def rank_by_uncertainty(mean_uncertainty: dict[int, float], top: int, spread: bool = True) -> list[int]:
    """`top` images by mean uncertainty, most uncertain first.

    With `spread` (the default) the images, in stack order, are cut into `top` consecutive parts and each part
    gives its most uncertain image. Why: the most uncertain images of a stack are neighbours that look alike,
    and corrections on them alone fix that part of the stack at the cost of the rest. On isbi2012-em the
    suggestions went to slices 4, 5, 7 in every round; the first-half slices' membranes got thinner, and so did
    those of the second half, which had been right. Spread over the stack, the third round's T2 was higher in
    4 of 4 runs (bench/RESULTS.md, session 21). `spread=False`: the most uncertain images wherever they are.
    """
    images = list(mean_uncertainty)
    if spread and top > 0 and images:
        parts = np.array_split(np.array(sorted(images)), min(top, len(images)))
        images = [max(part.tolist(), key=mean_uncertainty.get) for part in parts]
    return sorted(images, key=lambda i: -mean_uncertainty[i])[:top]


def suggest_slices(model: SemSegModel, images: np.ndarray, names: list[str], top: int = 5,
                   regions_per_image: int = 3, config: PredictConfig | None = None, spread: bool = True) -> dict:
    """Predict the stack and return `top` images to paint next (`rank_by_uncertainty`) with their most
    uncertain regions."""
    maps: dict[int, np.ndarray] = {}
    means: dict[int, float] = {}
    for i, pred in predict_stack(model, images, config):
        maps[i] = pred.uncertainty
        means[i] = float(pred.uncertainty.mean())
    ranked = rank_by_uncertainty(means, top, spread)
    return {
        "images": [
            {"index": i, "number": i + 1, "name": names[i], "mean_uncertainty": round(means[i], 4),
             "regions": [asdict(r) for r in uncertain_regions(maps[i], top=regions_per_image)]}
            for i in ranked
        ],
        "stack_mean_uncertainty": round(float(np.mean(list(means.values()))), 4),
    }

