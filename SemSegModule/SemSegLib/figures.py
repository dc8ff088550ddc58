"""An overview figure of one result: image with strokes, prediction, uncertainty (PNG via matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .classes import ClassInfo


def _colorize(labels: np.ndarray, classes: list[ClassInfo]) -> np.ndarray:
    rgba = np.zeros((*labels.shape, 4), np.float32)
    for c in classes:
        rgba[labels == c.value] = (*[v / 255 for v in c.color], 1.0)
    return rgba


def overview_figure(path: str | Path, rows: list[dict], classes: list[ClassInfo], dpi: int = 70) -> None:
    """One row per dict: {"title", "image" (H, W), "strokes" (H, W) or None, "prediction", "uncertainty"}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(13, 4.3 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(row["image"], cmap="gray")
        if row.get("strokes") is not None:
            strokes = _colorize(row["strokes"], classes)
            axes[r, 0].imshow(strokes, interpolation="nearest")
        axes[r, 0].set_title(f"{row['title']}: image" + (" + strokes" if row.get("strokes") is not None else ""))
        axes[r, 1].imshow(row["image"], cmap="gray")
        axes[r, 1].imshow(_colorize(row["prediction"], classes), alpha=0.55, interpolation="nearest")
        axes[r, 1].set_title("prediction (" + ", ".join(c.name for c in classes) + ")")
        im = axes[r, 2].imshow(row["uncertainty"], cmap="magma", vmin=0, vmax=1)
        axes[r, 2].set_title("uncertainty (normalized entropy)")
        fig.colorbar(im, ax=axes[r, 2], fraction=0.046)
        for a in axes[r]:
            a.axis("off")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
