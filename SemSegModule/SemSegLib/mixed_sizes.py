"""Images of different sizes made one array for a training, which samples its patches from one (N, C, H, W) stack.

Why mirror and not pad with zeros: a training's patches, the pseudo-labels of unlabeled images and the per-image
normalization all see the added pixels. Mirrored, they are the image's own texture at its own intensities (what the
patch sampler already does for an image smaller than a patch, `PatchSource.pad_to`); zeros would be a dark frame the
network learns to segment, and a frame of a tenth of the image shifts its percentiles. The added pixels get label 0
(unlabeled), so no loss is taken on them, and nothing predicted there is kept: a prediction sees each image as it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mirrored_to_one_size(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Images (C, H, W) and their label maps (H, W) of different sizes -> (N, C, H, W) and (N, H, W) of the largest
    height and width: each image mirrored out at its bottom and right, each label map padded there with 0."""
    height = max(image.shape[1] for image in images)
    width = max(image.shape[2] for image in images)
    dtype = np.result_type(*images)
    out = np.empty((len(images), images[0].shape[0], height, width), dtype)
    maps = np.zeros((len(images), height, width), np.result_type(*labels))
    for i, (image, lab) in enumerate(zip(images, labels)):
        h, w = image.shape[1:]
        # numpy reflects again and again where the pad is wider than the image (a field a third of the largest).
        out[i] = np.pad(image, ((0, 0), (0, height - h), (0, width - w)), mode="reflect")
        maps[i, :h, :w] = lab
    return out, maps


def size_range(sizes: Sequence[tuple[int, int]]) -> str:
    """'200x200 to 520x696': the smallest and the largest of (H, W) sizes, by area."""
    by_area = sorted(sizes, key=lambda s: (s[0] * s[1], s))
    return f"{by_area[0][0]}x{by_area[0][1]} to {by_area[-1][0]}x{by_area[-1][1]}"
