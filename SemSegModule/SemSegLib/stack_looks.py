"""How common a place's look is in the stack: where to paint weighs a region's uncertainty by it (suggest.py).

Why: a correction teaches the network what the corrected place looks like. A place whose look is rare in the
stack (a dark nucleolus, a fold in the section) teaches little that carries over to the other images, and the
largest errors are often of that kind (bench/RESULTS.md, sessions 25-26). A place the model is unsure of that
looks like much of the stack is worth a stroke on every image. Looks are the filter-bank responses the network
starts from (filters.py); how common a look is, is the density of the stack's pixels around it there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from scipy.spatial import cKDTree

from .filters import FilterBank
from .normalization import NormalizationConfig, normalize_image


class StackLooks:
    """A sample of the stack's pixels in filter-bank space, to tell common looks from rare ones.

    `pixels_per_image` random pixels of each of `indices` (at most `max_images`, spread over the stack); a
    pixel's typicality is the share of the sample whose `neighbours`-th nearest sample neighbour is farther
    away than its own: 1 for the commonest look of the stack, 0 for one rarer than all of the sample.
    """

    def __init__(self, images: np.ndarray, normalization: NormalizationConfig | None = None,
                 indices: Sequence[int] | None = None, max_images: int = 32, pixels_per_image: int = 1500,
                 neighbours: int = 16, seed: int = 0):
        indices = list(range(len(images))) if indices is None else list(indices)
        if len(indices) > max_images:
            indices = [indices[int(round(v))] for v in np.linspace(0, len(indices) - 1, max_images)]
        self.bank = FilterBank(images.shape[1])
        self.normalization = normalization or NormalizationConfig()
        self.neighbours = neighbours
        rng = np.random.default_rng(seed)
        sample = []
        for i in indices:
            flat = self._responses(images[i]).reshape(self.bank.out_channels, -1)
            sample.append(flat[:, rng.choice(flat.shape[1], min(pixels_per_image, flat.shape[1]), replace=False)].T)
        points = np.concatenate(sample)
        self.mean, self.scale = points.mean(0), points.std(0) + 1e-6
        self.tree = cKDTree((points - self.mean) / self.scale)
        distances, _ = self.tree.query(self.tree.data, neighbours + 1)  # the first neighbour is the point itself
        self.sample_spread = np.sort(distances[:, -1])

    def _responses(self, image: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.bank(torch.from_numpy(normalize_image(image, self.normalization))[None])[0].numpy()

    def of_image(self, image: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """For one (C, H, W) image of the stack: (rows, columns) -> the typicality of those pixels, in [0, 1]."""
        features = self._responses(image)

        def typicality(rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
            points = (features[:, rows, columns].T - self.mean) / self.scale
            distances, _ = self.tree.query(points, self.neighbours)
            return 1.0 - np.searchsorted(self.sample_spread, distances[:, -1]) / len(self.sample_spread)

        return typicality
