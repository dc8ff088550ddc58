"""The random-forest pixel classifier (ilastik's) as a second opinion beside the U-Net.

A forest of 50 trees on multiscale filter responses, fit on the same labeled pixels as the network and on
pixels the networks are sure of (forest_teacher.py). Its probabilities are averaged into the networks' before
the line classes are thinned and before the unsure-piece rules (prediction.py): the two models err in
different places, and the rules act on the average. On the benchmark's first models the forest of the strokes
alone gained T2 and T1 on isbi2012-em in 8 of 8 seeds and T1 on dsb2018-fluo in 11 of 12 (bench/RESULTS.md,
session 43); taught by the networks, with a larger share, more (session 45).

Its probabilities are not corrected to the stack's class mix, although its training set holds about as many
pixels of each class: corrected by Bayes' rule to the networks' mix, it drew less of isbi2012-em's thin
membrane and lost T2 on 6 of 7 seeds (-0.002 on average; session 46).

The model file keeps the forest's training set (features at those pixels and their classes), never a
pickled forest: loading a model file must not be able to run code, and refitting with the stored seed gives
the same trees in a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .normalization import NormalizationConfig, normalize_image

SIGMA_MIN, SIGMA_MAX = 1.0, 16.0
# skimage smooths with Gaussians truncated at 4 sigma, and the edge and Hessian filters add a pixel or two:
# a tile with this margin has the whole image's features in its interior.
TILE_MARGIN = int(4 * SIGMA_MAX) + 8
TILE_SIZE = 1024
# 50 trees scored level with 100 on both sets' first models (8 seeds each, every T1 and T2 within 0.0015) and
# give their probabilities in two thirds of the time; a file keeps its own count (one saved with 100 trees is
# refit with 100).
TREES = 50
# A person who paints whole slices must not make every training take minutes: at most this many labeled
# pixels per class train the forest (a seeded random subset; the benchmark's strokes are far below it), and
# at most as many of the networks' confident pixels (forest_teacher.py).
MAX_SAMPLES_PER_CLASS = 20000
# A class painted as 1-pixel lines gets at most this share of the forest: filters of sigma 1 and more cannot
# place a line to the pixel, and a larger share moved dsb2018-fluo's nucleus border off it (T2 -0.005 at 0.5
# for every class, +0.001 with the border at 0.2; bench/RESULTS.md, session 45).
LINE_CLASS_WEIGHT = 0.2
# The forest decides each pixel alone, so its map is speckled where the network's is smooth. Before the mix, its
# split among the classes that are not line classes is smoothed by a Gaussian of this sigma (px; the smallest
# scale of its features); a line class keeps its probability to the pixel. With a share of 0.65 instead of 0.5,
# on the benchmark's first models (12 seeds): isbi2012-em T2 +0.0048 (12 of 12), T1 +0.0062; dsb2018-fluo T2
# +0.0016, T1 +0.0014; smoothing every class cost dsb2018-fluo's T1 0.002 (bench/RESULTS.md, session 49).
# A file keeps its own (one saved before session 49 has none).
SMOOTHING = 1.0
PREDICT_ROWS = 1 << 18  # pixels per predict_proba call: bounds the forest's working memory


def _tiles(height: int, width: int, tile: int) -> Iterator[tuple[slice, slice, slice, slice]]:
    """Per tile: the rows and columns of the tile padded by the margin, then those of the tile itself."""
    for r0 in range(0, height, tile):
        for c0 in range(0, width, tile):
            r1, c1 = min(r0 + tile, height), min(c0 + tile, width)
            yield (slice(max(r0 - TILE_MARGIN, 0), min(r1 + TILE_MARGIN, height)),
                   slice(max(c0 - TILE_MARGIN, 0), min(c1 + TILE_MARGIN, width)), slice(r0, r1), slice(c0, c1))


def feature_tiles(image: np.ndarray, normalization: NormalizationConfig, tile: int = TILE_SIZE,
                  window: tuple[slice, slice] | None = None) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """(C, H, W) raw image -> (rows, cols, (h, w, F) float32 features) per tile, so a large image never holds
    the whole feature stack at once (20 features per channel). `window`: of that part of the image only (rows
    and columns within it), normalized as the whole image."""
    from skimage.feature import multiscale_basic_features

    norm = normalize_image(image, normalization, window)  # as the network sees it: the same percentiles
    for pad_r, pad_c, rows, cols in _tiles(norm.shape[1], norm.shape[2], tile):
        crop = np.moveaxis(norm[:, pad_r, pad_c], 0, -1)
        feats = multiscale_basic_features(crop, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, channel_axis=-1)
        r, c = rows.start - pad_r.start, cols.start - pad_c.start
        inner = feats[r:r + rows.stop - rows.start, c:c + cols.stop - cols.start]
        yield rows, cols, np.ascontiguousarray(inner, dtype=np.float32)


@dataclass
class PixelForest:
    """The forest's training set and seed; the fitted trees are rebuilt from them when first needed."""

    samples: np.ndarray  # (N, F) float32 features of labeled pixels
    targets: np.ndarray  # (N,) class values 1..K
    num_classes: int
    seed: int = 0
    trees: int = TREES
    smoothing: float = SMOOTHING
    _fitted: object | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def fit(images: np.ndarray, labels: np.ndarray, num_classes: int, normalization: NormalizationConfig,
            seed: int = 0, max_per_class: int = MAX_SAMPLES_PER_CLASS,
            confident: dict[int, np.ndarray] | None = None) -> PixelForest | None:
        """From (N, C, H, W) images and (N, H, W) labels (0 = unlabeled); None when nothing is labeled.
        `confident`: (H, W) classes the networks are sure of, by image index (forest_teacher.py), taken where
        nothing is labeled, at most `max_per_class` of each class beside as many labeled pixels."""
        painted = np.flatnonzero(labels.reshape(len(labels), -1).any(1))
        if not len(painted):
            return None
        sets = [{int(i): labels[i] for i in painted}]
        if confident is not None:
            sets.append({i: np.where(labels[i] > 0, 0, sure) for i, sure in confident.items()})
        samples, targets = [], []
        for x, y in _kept_samples(images, sets, normalization, max_per_class, seed):
            if len(y):
                samples.append(x)
                targets.append(y)
        forest = PixelForest(np.concatenate(samples), np.concatenate(targets), num_classes, seed)
        forest.estimator()
        return forest

    def estimator(self):
        if self._fitted is None:
            from sklearn.ensemble import RandomForestClassifier

            self._fitted = RandomForestClassifier(n_estimators=self.trees, n_jobs=-1, random_state=self.seed)
            self._fitted.fit(self.samples, self.targets)
        return self._fitted

    def probabilities(self, image: np.ndarray, normalization: NormalizationConfig,
                      window: tuple[slice, slice] | None = None) -> torch.Tensor:
        """(C, H, W) raw image -> (K, H, W) float32 class probabilities (0 for a class it never saw); of its
        `window` only, if given (`feature_tiles`)."""
        forest = self.estimator()
        columns = [int(c) - 1 for c in forest.classes_]
        shape = image.shape[1:] if window is None else image[0, window[0], window[1]].shape
        out = np.zeros((self.num_classes, *shape), np.float32)
        for rows, cols, feats in feature_tiles(image, normalization, window=window):
            flat = feats.reshape(-1, feats.shape[-1])
            prob = np.concatenate([forest.predict_proba(flat[s:s + PREDICT_ROWS])
                                   for s in range(0, len(flat), PREDICT_ROWS)])
            out[columns, rows, cols] = prob.T.reshape(len(columns), *feats.shape[:2])
        return torch.from_numpy(out)

    def mixed_into(self, networks: torch.Tensor, image: np.ndarray, normalization: NormalizationConfig,
                   weight: float, line_classes: list[int], window: tuple[slice, slice] | None = None,
                   probabilities: torch.Tensor | None = None) -> torch.Tensor:
        """(K, H, W) probabilities of the networks (of `window` of the image, if given) with this forest's share:
        `weight`, at most LINE_CLASS_WEIGHT for a line class (0-based), the classes' sum normalized to 1 again.
        The forest's probabilities (`probabilities`, when the caller has them already) are `smoothed` first."""
        shares = torch.full((self.num_classes, 1, 1), float(weight))
        for c in line_classes:
            shares[c] = min(float(weight), LINE_CLASS_WEIGHT)
        if probabilities is None:
            probabilities = self.probabilities(image, normalization, window)
        forest = smoothed(probabilities, line_classes, self.smoothing)
        prob = (1 - shares) * networks + shares * forest
        return prob / prob.sum(0, keepdim=True).clamp_min(1e-8)

    def to_dict(self) -> dict:
        return {"samples": torch.from_numpy(np.ascontiguousarray(self.samples, np.float32)),
                "targets": torch.from_numpy(self.targets.astype(np.uint8 if self.num_classes < 256 else np.int64)),
                "num_classes": int(self.num_classes), "seed": int(self.seed), "trees": int(self.trees),
                "smoothing": float(self.smoothing)}

    @staticmethod
    def from_dict(d: dict) -> PixelForest:
        # Files of session 43 do not say: their forests had 100 trees; files before session 49 were not smoothed.
        return PixelForest(d["samples"].numpy(), d["targets"].numpy().astype(np.int64), int(d["num_classes"]),
                           int(d["seed"]), int(d.get("trees", 100)), float(d.get("smoothing", 0.0)))


def smoothed(prob: torch.Tensor, line_classes: list[int], sigma: float) -> torch.Tensor:
    """(K, H, W) probabilities with the split among the classes that are not line classes (0-based) smoothed by
    a Gaussian of `sigma` px; each line class's probability, and so the others' total, stay as they were."""
    from scipy.ndimage import gaussian_filter

    wide = [c for c in range(prob.shape[0]) if c not in line_classes]
    if sigma <= 0 or len(wide) < 2:
        return prob
    total = prob[wide].sum(0, keepdim=True)
    split = (prob[wide] / total.clamp_min(1e-8)).numpy()
    split = torch.from_numpy(gaussian_filter(split, sigma=(0, sigma, sigma)))
    out = prob.clone()
    out[wide] = split / split.sum(0, keepdim=True).clamp_min(1e-8) * total
    return out


def _kept_samples(images: np.ndarray, sets: list[dict[int, np.ndarray]], normalization: NormalizationConfig,
                  max_per_class: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per set of `sets` ((H, W) classes by image index, 0 = none): the features (N, F) and classes (N,) of at most
    `max_per_class` labeled pixels of each class, a seeded subset of them in image, tile and row order.

    The subset is drawn from the classes alone, before any feature is computed: then only the kept pixels' features
    are held, and images without a kept pixel are not filtered at all. Holding every labeled pixel's features first
    took 84 MB for each fully labeled image of 1024 x 1024 (a slice whose prediction the person accepted), 8 GB for
    100 of them, to keep 20,000 pixels of each class (bench/RESULTS.md, session 67). An image in several sets (a
    painted image's strokes, and the pixels the networks are sure of around them) is filtered once for all of them:
    its filters took a second at 1024 x 1024 on 2 CPU cores each time (session 76)."""
    tiles = list(_tiles(*images.shape[2:], TILE_SIZE))  # feature_tiles' order
    plans = [_SamplePlan.of(pixels, tiles, max_per_class, seed) for pixels in sets]
    x: list[list[np.ndarray]] = [[] for _ in sets]
    for i in sorted(set().union(*(plan.filtered for plan in plans))):
        for t, (_, _, feats) in enumerate(feature_tiles(images[i], normalization, TILE_SIZE)):
            flat = feats.reshape(-1, feats.shape[-1])
            for plan, kept in zip(plans, x):
                if i in plan.filtered:
                    kept.append(flat[plan.kept_pixels(i, t)])
    return [(np.concatenate(kept) if kept else np.zeros((0, 0), np.float32), plan.classes[plan.keep].astype(np.int64))
            for plan, kept in zip(plans, x)]


@dataclass
class _SamplePlan:
    """Which labeled pixels of one set the forest keeps, found from the classes alone (`_kept_samples`)."""

    labels: dict[int, list[np.ndarray]]  # per image: its classes per tile, in feature_tiles' order
    offsets: dict[int, list[int]]  # per image: the first of each tile's labeled pixels among `classes`
    classes: np.ndarray  # every labeled pixel's class, in image, tile and row order
    keep: np.ndarray  # the kept ones among them, ascending
    filtered: set[int]  # the images with a kept pixel

    @staticmethod
    def of(pixels: dict[int, np.ndarray], tiles: list, max_per_class: int, seed: int) -> _SamplePlan:
        order = sorted(i for i, image_pixels in pixels.items() if image_pixels.any())
        labels = {i: [pixels[i][rows, cols] for _, _, rows, cols in tiles] for i in order}
        counts = [np.count_nonzero(lab) for i in order for lab in labels[i]]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        offsets = {i: starts[k * len(tiles):(k + 1) * len(tiles) + 1].tolist() for k, i in enumerate(order)}
        classes = (np.concatenate([lab[lab > 0] for i in order for lab in labels[i]]) if order
                   else np.zeros(0, np.uint16))  # the labels' type: 1 byte, not 8
        keep = _subset_per_class(classes, max_per_class, seed)
        filtered = {i for i in order
                    if np.searchsorted(keep, offsets[i][0]) < np.searchsorted(keep, offsets[i][-1])}
        return _SamplePlan(labels, offsets, classes, keep, filtered)

    def kept_pixels(self, image: int, tile: int) -> np.ndarray:
        """The flat indices, within tile `tile` of `image`, of its kept labeled pixels."""
        where = np.flatnonzero(self.labels[image][tile] > 0)
        offset = self.offsets[image][tile]
        return where[self.keep[np.searchsorted(self.keep, offset):np.searchsorted(self.keep, offset + len(where))]
                     - offset]


def _subset_per_class(targets: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        keep.append(idx if len(idx) <= max_per_class else np.sort(rng.choice(idx, max_per_class, replace=False)))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
