"""The ilastik-style baseline: a random forest on multiscale filter features (benchmark only)."""

from __future__ import annotations

import numpy as np


def features(image: np.ndarray) -> np.ndarray:
    from skimage.feature import multiscale_basic_features

    img = image.astype(np.float32)
    lo, hi = np.percentile(img, [1, 99.8])
    img = (img - lo) / max(hi - lo, 1e-6)
    return multiscale_basic_features(img, intensity=True, edges=True, texture=True, sigma_min=1, sigma_max=16)


def train_and_predict(images: np.ndarray, labels: np.ndarray, predict_indices: list[int], seed: int = 0
                      ) -> dict[int, np.ndarray]:
    """images (N, H, W), sparse labels (N, H, W); returns label maps (1..K) for `predict_indices`."""
    from sklearn.ensemble import RandomForestClassifier

    x, y = [], []
    cache = {}
    for i in range(len(images)):
        if labels[i].any():
            cache[i] = features(images[i])
            m = labels[i] > 0
            x.append(cache[i][m])
            y.append(labels[i][m])
    rf = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed, max_depth=None)
    rf.fit(np.concatenate(x), np.concatenate(y))
    out = {}
    for i in predict_indices:
        f = cache[i] if i in cache else features(images[i])
        out[i] = rf.predict(f.reshape(-1, f.shape[-1])).reshape(images[i].shape).astype(np.uint8)
    return out
