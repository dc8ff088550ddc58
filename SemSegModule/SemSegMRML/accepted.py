"""Accepting a slice's prediction into the person's labels, and taking accepts back (the panel's *Undo accept*).

An accept labels only what the person has not painted, and becomes the correction baseline: whatever is painted
afterwards counts as a correction. What each accept added is kept in memory, per volume, so that it can be taken
back without touching the strokes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import slicer
from SemSegLib.classes import ClassInfo
from SemSegLib.errors import InputError

from . import segment_labels, stack_nodes

ACCEPTS_KEPT = 10  # accepted predictions per volume that can be taken back


@dataclass
class AcceptedSlice:
    """One accepted prediction."""

    segmentation_id: str
    slice_index: int
    added: np.ndarray  # (H, W) bool: the pixels the accept labeled
    values: np.ndarray  # (H, W) the classes it gave them
    baseline_before: np.ndarray | None  # (H, W) the correction baseline's slice before the accept


class AcceptedPredictions:
    """The accepts that can be taken back, per volume ID, the last one last. A new scene gives its nodes the IDs of
    the closed one's, so `clear` them when a scene closes."""

    def __init__(self) -> None:
        self._by_volume: dict[str, list[AcceptedSlice]] = {}

    def clear(self) -> None:
        self._by_volume.clear()

    def can_undo(self, volume) -> bool:
        return volume is not None and bool(self._by_volume.get(volume.GetID()))

    def accept(self, scene, volume, segmentation, slice_index: int, predicted: np.ndarray,
               classes: list[ClassInfo], labels: np.ndarray) -> int:
        """`predicted` (H, W) into slice `slice_index` of `labels` (the segmentation's, a copy) where nothing is
        painted; they become the accepted labels. Returns the pixels added."""
        painted = labels[slice_index] > 0
        added = ~painted & (predicted > 0)
        baseline = stack_nodes.baseline(scene, volume)
        before = None if baseline is None else np.array(slicer.util.arrayFromVolume(baseline)[slice_index])
        labels[slice_index] = np.where(painted, labels[slice_index], predicted)
        segment_labels.set_slice_labels(scene, labels[[slice_index]], [slice_index], segmentation, volume, classes)
        stack_nodes.set_baseline(scene, volume, labels)
        kept = self._by_volume.setdefault(volume.GetID(), [])
        kept.append(AcceptedSlice(segmentation.GetID(), slice_index, added, predicted, before))
        del kept[:-ACCEPTS_KEPT]
        return int(added.sum())

    def undo(self, scene, volume, segmentation, classes: list[ClassInfo],
             read_labels: Callable[[], np.ndarray]) -> tuple[int, int]:
        """Take back the last accept on `volume`: the pixels it added that still hold the class it gave them become
        unlabeled again. Returns (slice index, pixels taken back). `read_labels()`: the segmentation's labels (a
        copy), read once the undo is known to be possible."""
        kept = self._by_volume.get(volume.GetID())
        if not kept:
            raise InputError(f"no accepted prediction to undo on '{volume.GetName()}' (accepts are remembered until "
                             "Slicer closes).")
        last = kept[-1]
        if last.segmentation_id != segmentation.GetID():
            went = scene.GetNodeByID(last.segmentation_id)
            raise InputError(f"the last prediction accepted on '{volume.GetName()}' went into "
                             f"'{went.GetName() if went is not None else 'a removed segmentation'}', not "
                             f"'{segmentation.GetName()}': select those labels to undo it.")
        k = last.slice_index
        labels = read_labels()
        taken_back = last.added & (labels[k] == last.values)
        labels[k][taken_back] = 0
        segment_labels.set_slice_labels(scene, labels[[k]], [k], segmentation, volume, classes)
        baseline = stack_nodes.baseline(scene, volume)
        if baseline is not None and last.baseline_before is not None:
            # Pixels painted on them later count as corrections again, as they would have without the accept.
            array = slicer.util.arrayFromVolume(baseline)
            if array.shape[1:] == last.baseline_before.shape:
                array[k][taken_back] = last.baseline_before[taken_back]
                slicer.util.arrayFromVolumeModified(baseline)
        kept.pop()
        return k, int(taken_back.sum())
