"""Where to paint next: the predicted slices ranked by uncertainty, each with its most uncertain regions, and
those regions marked in the views.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

import slicer
from SemSegLib.errors import InputError
from SemSegLib.shared_slices import SharedSlices
from SemSegLib.task import SemSegEvent, SemSegTask
from SemSegLib.worker import Job

from SemSegMRML import arrays, results, segment_labels, stack_nodes
from SemSegMRML.parameters import ROLE_SUGGESTION_MARKERS

SUGGESTION_MARKERS_NAME = "SemSeg where to paint"


class SuggestionLogic:
    """Where to paint next (a part of SemSegLogic)."""

    def suggestSlices(self, volume, top: int = 5, labelSegmentation=None) -> list[dict]:
        """Up to `top` predicted slices to paint next, with their most uncertain regions: the least sure slice of
        each of `top` groups, the least sure first: consecutive parts of an ordered stack, look-alike slices when
        the order means nothing (`spread_groups`, `rank_by_uncertainty`). With `labelSegmentation`, a slice's
        uncertainty leaves out what lies near the person's strokes (`image_uncertainty`) and no region lies where
        they painted (`uncertain_regions`). Waits for `startSuggesting`."""
        return self.startSuggesting(volume, top, labelSegmentation).wait()

    def startSuggesting(self, volume, top: int = 5, labelSegmentation=None) -> SemSegTask:
        """`suggestSlices` worked out on the worker: poll the task; its result is the suggestions (None if cancelled
        or the scene closed meanwhile). Why: for 1000 slices of 1024 x 1024 the mean of 4 GB of uncertainty and the
        regions held Slicer's GUI 1.6-2.7 s after every prediction, and slices not yet described took 0.3 s each."""
        from SemSegLib.normalization import NormalizationConfig
        from SemSegLib.suggest import (
            image_descriptors,
            image_uncertainty,
            rank_by_uncertainty,
            spread_groups,
            uncertain_regions,
        )

        predicted = self.predictedSlices(volume)
        if not predicted:
            raise InputError("no prediction yet: predict first, then ask where to paint next.")
        # Each slice copied under the lock the prediction's writes hold: a script may suggest while they come.
        uncertainty = SharedSlices(slicer.util.arrayFromVolume(self.uncertaintyVolume(volume)), predicted,
                                   self._uncertaintyLock)
        painted = {}  # slice -> its painted pixels, for the predicted slices with strokes only
        if labelSegmentation is not None:
            labels = self.labelsFromSegmentation(labelSegmentation, volume)
            among = set(predicted)
            painted = {int(k): labels[k] > 0 for k in segment_labels.painted_slices(labels) if int(k) in among}
        known = self._cachedSliceDescriptors(volume) or {}
        missing = [k for k in predicted if k not in known]  # e.g. a scene opened with a prediction in it
        images, positions = self._imagesToWorkOn(volume, missing) if missing else (None, [])
        normalization = self.model.normalization if self.model is not None else NormalizationConfig()
        imagesTime = volume.GetImageData().GetMTime()
        steps = len(missing) + len(predicted) + top

        def run(job: Job):
            described = {}
            for count, (k, j) in enumerate(zip(missing, positions), start=1):
                if job.should_stop():
                    return None
                described[k] = image_descriptors(images, [j], normalization)[j]
                job.report((count, steps))
            means = {}
            for count, k in enumerate(predicted, start=len(missing) + 1):
                if job.should_stop():
                    return None
                means[k] = image_uncertainty(uncertainty[k], painted.get(k))
                if count % 50 == 0:
                    job.report((count, steps))
            groups = spread_groups({k: described[k] if k in described else known[k] for k in predicted}, top)
            suggestions = []
            for k in rank_by_uncertainty(means, top, groups):
                if job.should_stop():
                    return None
                suggestions.append({"slice": k, "mean_uncertainty": means[k],
                                    "regions": uncertain_regions(uncertainty[k], top=3, painted=painted.get(k))})
                job.report((len(missing) + len(predicted) + len(suggestions), steps))
            return described, suggestions

        def finish(out):
            described, suggestions = out
            if described and stack_nodes.in_scene(self.scene, volume):
                self._cacheSliceDescriptors(volume, described, imagesTime)
            return suggestions

        def describe(p: tuple[int, int]) -> SemSegEvent:
            return SemSegEvent("progress", f"step {p[0]} of {p[1]}", p[0] / p[1], p)

        return self._start("suggest", run, describe, self._inThisScene(finish), waitForCompletion=False,
                           eventCallback=None)

    def _cachedSliceDescriptors(self, volume) -> dict | None:
        cached = self._sliceDescriptors.get(volume.GetID())
        return cached[1] if cached and cached[0] == volume.GetImageData().GetMTime() else None

    def _cacheSliceDescriptors(self, volume, descriptors: dict, imagesTime: int) -> None:
        """Keep `descriptors` of the images as they were at `imagesTime` (their modified time), if still so."""
        if volume.GetImageData().GetMTime() == imagesTime:
            known = self._cachedSliceDescriptors(volume) or {}
            self._sliceDescriptors[volume.GetID()] = (imagesTime, {**known, **descriptors})

    def sliceDescriptors(self, volume, indices: list[int] | None = None) -> dict:
        """Slice index -> what the slice looks like (`image_descriptors`), for `indices` (default: every slice):
        those the predictions described, the others computed now (e.g. a scene loaded with a prediction in it)."""
        from SemSegLib.normalization import NormalizationConfig
        from SemSegLib.suggest import image_descriptors

        indices = list(range(arrays.slice_shape(volume)[0])) if indices is None else list(indices)
        known = self._cachedSliceDescriptors(volume) or {}
        missing = [k for k in indices if k not in known]
        if missing:
            normalization = self.model.normalization if self.model is not None else NormalizationConfig()
            computed = image_descriptors(self.imagesFromVolume(volume, missing), None, normalization)
            computed = {missing[j]: descriptor for j, descriptor in computed.items()}
            self._cacheSliceDescriptors(volume, computed, volume.GetImageData().GetMTime())
            known = {**known, **computed}
        return {k: known[k] for k in indices}

    def markSuggestedRegions(self, volume, suggestion: dict | None):
        """Numbered, locked points on a suggested slice at its most uncertain regions (most uncertain = 1).

        One point list, reused: it shows the suggestion being looked at, never a stale one. `None` clears it
        (after a new prediction the old regions mean nothing). Returns the point list node.
        """
        node = self.getParameterNode().GetNodeReference(ROLE_SUGGESTION_MARKERS)
        if node is None:
            if suggestion is None:
                return None
            node = results.new_marker_list(self.scene, SUGGESTION_MARKERS_NAME)
            self.getParameterNode().SetNodeReferenceID(ROLE_SUGGESTION_MARKERS, node.GetID())
        if suggestion is None:
            node.RemoveAllControlPoints()
        else:
            results.mark_regions(node, volume, suggestion["slice"], suggestion["regions"])
        return node


