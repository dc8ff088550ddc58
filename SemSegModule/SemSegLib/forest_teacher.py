"""The networks teach the random forest: the pixels they are sure of, on the painted images and a few others
spread over the stack, join the labels the forest is fit on (pixel_forest.py).

Why: a forest fit on the strokes alone has seen only the few places the person painted. Fit also on what the
networks are sure of across the stack, it becomes a pixel classifier of the whole stack's look from the
filter responses alone, and with a larger share of the map it evens out the networks' noisy places. On the
benchmark's first models (bench/RESULTS.md, session 45), against the forest of the strokes alone at its
former share of 0.2: isbi2012-em T2 +0.008 (8 of 8 seeds up), T1 +0.005 with a share of 0.5; dsb2018-fluo T2
+0.002, T1 +0.003 (12 of 12), its nucleus border (a line class) at 0.2. The forest of the strokes alone at
0.5 gained only +0.002 on isbi2012-em; taught and at 0.2, nothing: the teaching and the larger share go together.

After a retraining the networks it started from teach too, where the retrained ones are not sure
(training.attach_forest).
"""

from __future__ import annotations

import numpy as np
import torch

from .calibration import estimate_window, spread_indices
from .model_file import SemSegModel
from .prediction import PredictConfig, predict_probabilities
from .stack_io import label_dtype

# The images the networks teach on besides the painted ones: more cost a network prediction each.
UNPAINTED_IMAGES = 6
# Per class and image, at most this many pixels (a seeded random subset), so that no one image's look
# dominates. 500 scored as 3000 did (isbi2012-em, 8 seeds: T2 +0.0080 against +0.0071) with a forest of a
# third of the size: it is refit whenever a model file is loaded, and deeper trees predict slower.
PIXELS_PER_CLASS_AND_IMAGE = 500
# As the pseudo-labels of the networks' own training (training.py).
CONFIDENCE = 0.9


def confident_labels(model: SemSegModel, images: np.ndarray, labels: np.ndarray, seed: int = 0,
                     device: torch.device | None = None, mixed_precision: bool = True,
                     unpainted_images: int = UNPAINTED_IMAGES) -> dict[int, np.ndarray]:
    """Per image taught on (by its index in the stack): an (H, W) map of class values 1..K where the model's
    networks, as shown without the forest (class-prior corrected, earlier rounds averaged in, lines thinned), give
    a class at least CONFIDENCE and nothing is labeled, within the image's `estimate_window`; 0 elsewhere. An image
    whose window is labeled all over has none.

    A map per taught image, not one for the stack: the painted images and a few others are taught on, and a
    stack-sized array (and the stack-sized temporaries of combining two of them) would cost more memory than the
    training's own arrays."""
    painted = [int(i) for i in np.flatnonzero(labels.reshape(len(labels), -1).any(1))]
    unpainted = sorted(set(range(len(images))) - set(painted))
    chosen = painted + [unpainted[j] for j in spread_indices(len(unpainted), unpainted_images)]
    rng = np.random.default_rng(seed)
    out = {}
    config = PredictConfig(mixed_precision=mixed_precision)
    for k, i in enumerate(chosen):
        rows, cols = estimate_window(images.shape, k)
        unlabeled = labels[i][rows, cols] == 0
        if not unlabeled.any():
            # Labeled all over, as a slice whose prediction the person accepted: nothing to teach there, so no
            # prediction (one per such slice, each training, was a few seconds of 1024 x 1024 on a CPU).
            continue
        prob = predict_probabilities(model, images[i], config, device, forest=False, window=(rows, cols))
        conf, best = (t.numpy().ravel() for t in prob.max(0))
        sure = (conf >= CONFIDENCE) & unlabeled.ravel()
        window = np.zeros(prob.shape[1:], label_dtype(model.num_classes))
        flat = window.reshape(-1)
        for c in range(model.num_classes):
            idx = np.flatnonzero(sure & (best == c))
            if len(idx) > PIXELS_PER_CLASS_AND_IMAGE:
                idx = rng.choice(idx, PIXELS_PER_CLASS_AND_IMAGE, replace=False)
            flat[idx] = c + 1
        out[i] = np.zeros(labels.shape[1:], window.dtype)
        out[i][rows, cols] = window
    return out
