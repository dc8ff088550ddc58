"""Slices of an array that one thread writes while another reads them: a stack's uncertainty volume, which the main
thread writes as a prediction's slices come, read by an export on the worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

import numpy as np


class SharedSlices(Mapping):
    """Slices `indices` of an (N, H, W) array, each copied under `lock` when it is read, so that a reader never gets
    a slice half written by a writer holding the same lock, and no copy of them all is made up front (4 GB for 1000
    slices of 1024 x 1024: 13 s of Slicer's GUI thread before an export, bench/RESULTS.md, session 72)."""

    def __init__(self, array: np.ndarray, indices: list[int], lock: threading.Lock) -> None:
        self._array = array  # holds the voxels alive, whatever becomes of the node they are in
        self._indices = [int(k) for k in indices]
        self._lock = lock

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self._indices:
            raise KeyError(k)
        with self._lock:
            return np.array(self._array[k])

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)
