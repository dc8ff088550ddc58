"""Stacks into volumes and back: a folder of images or a multi-page TIFF read into one volume (on the
caller's thread or on the worker), images and channels read from a volume.

A part of SemSegLogic (SemSegMRML.logic), whose state it shares: the Logic is split by activity so that a
file does one thing.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from SemSegLib import warm_up
from SemSegLib.task import SemSegTask

from SemSegMRML import arrays
from SemSegMRML.parameters import ROLE_LABELS, ROLE_VOLUME


class StackLogic:
    """Stacks into volumes and back (a part of SemSegLogic)."""

    def loadStack(self, path: str, name: str | None = None, channelAxis: int | None = None):
        """Load a folder of ordered images or a multi-page TIFF as one volume (one image per slice); read on this
        thread (a script's, the console's). The panel uses `startLoadingStack`."""
        stack, pixels = _readStack(path, channelAxis)  # raises InputError before anything enters the scene
        return self._stackVolume(stack, pixels, path, name)

    def startLoadingStack(self, path: str, name: str | None = None, channelAxis: int | None = None) -> SemSegTask:
        """`loadStack` with the images read on the worker thread, and made into the voxels the volume takes there:
        poll the task; its result is the volume node (None if cancelled or the scene closed meanwhile: nothing enters
        the scene). Why: 1000 images of 1024 x 1024 took 27-28 s, all of it holding Slicer's GUI; now the GUI shows a
        progress bar with Cancel."""
        return self._startReading("load", lambda onImage: _readStack(path, channelAxis, onImage), "image(s)",
                                  lambda read: self._stackVolume(*read, path, name))

    def loadSampleStack(self):
        """The generated sample stack of the engine; returns (volume node, reference folder)."""
        from SemSegLib.sample_data import SAMPLE_CLASSES, write_sample_stack

        folder = Path(tempfile.mkdtemp(prefix="SemSegSample-"))
        write_sample_stack(folder)
        volume = self.loadStack(str(folder / "images"), name="SemSeg sample")
        self.setClasses(SAMPLE_CLASSES)
        self.getParameterNode().SetParameter("ReferencePath", str(folder / "reference"))
        return volume, str(folder / "reference")

    def volumeFromStack(self, images: np.ndarray, names: list[str], name: str = "SemSeg images",
                        spacing: tuple[float, float] = (1.0, 1.0), source: str = "", rgb: bool | None = None):
        """(N, C, H, W) -> scalar volume (C == 1) or RGB vector volume, slice k = image k; several channels are shown
        three at a time, each stretched to its own range (`showChannels`), unless they are the red, green and blue
        of 8-bit pictures (`rgb`; None: 3 channels of 8 bits are taken for such)."""
        return self._addStackVolume(arrays.stack_pixels(images, rgb), names, name, spacing, source)

    def _stackVolume(self, stack, pixels, path: str, name: str | None):
        from SemSegLib.stack_io import stack_name

        self.lastLoadNote = stack.note  # the series of a stack file left out, say
        if stack.note:
            logging.warning(f"SemSeg: {stack.note}")
        volume = self._addStackVolume(pixels, stack.names, name or stack_name(path), stack.spacing, str(path))
        warm_up.start()  # a training will follow, its strokes painted meanwhile: its imports start now
        return volume

    def _addStackVolume(self, pixels, names: list[str], name: str, spacing: tuple[float, float], source: str):
        # A unique name: messages that tell two stacks apart name them ("images", "images_1").
        volume = arrays.volume_from_pixels(self.scene, pixels, names, self.scene.GenerateUniqueName(name), spacing,
                                           source)
        node = self.getParameterNode()
        node.SetNodeReferenceID(ROLE_VOLUME, volume.GetID())
        node.SetNodeReferenceID(ROLE_LABELS, None)  # the last stack's strokes are not this one's
        return volume

    @staticmethod
    def imagesFromVolume(volume, indices: list[int] | None = None) -> np.ndarray:
        """Volume -> (N, C, H, W) copy of its slices `indices` (default: all; safe to hand to the worker thread);
        NaN or infinite pixels are refused, as when a stack is read from files (a volume may come from elsewhere in
        Slicer)."""
        from SemSegLib.stack_io import check_finite

        images = arrays.images_from_volume(volume, indices)
        names = arrays.image_names(volume)
        indices = range(len(names)) if indices is None else indices
        check_finite(images, [f"slice {k + 1} ({names[k]})" for k in indices], volume.GetName())
        return images

    def _imagesToWorkOn(self, volume, indices: list[int] | None = None) -> tuple[np.ndarray, list[int]]:
        """The images a job reads (slices `indices`, default all) and where each slice is in them: the volume's own
        voxels where they can be (`arrays.voxels_of_stack`), else a copy of those slices (`imagesFromVolume`)."""
        every = list(range(arrays.slice_shape(volume)[0]))
        indices = every if indices is None else list(indices)
        voxels = arrays.voxels_of_stack(volume)
        if voxels is not None:
            return voxels, indices
        return self.imagesFromVolume(volume, None if indices == every else indices), list(range(len(indices)))

    @staticmethod
    def imageNames(volume) -> list[str]:
        return arrays.image_names(volume)

    @staticmethod
    def shownChannels(volume) -> list[int | None] | None:
        """The stack's channels (0-based) the volume shows as red, green and blue, each stretched to its own range;
        None when the volume holds the images as loaded (one channel, an 8-bit RGB picture)."""
        return arrays.shown_channels(volume)

    @staticmethod
    def showChannels(volume, shown: list[int | None]) -> None:
        """Show the stack's channels `shown` (0-based; None for none) as red, green and blue. Only what is drawn
        changes: training and prediction use every channel as loaded."""
        arrays.show_channels(volume, shown)


def _readStack(path: str, channelAxis: int | None, onImage: Callable[[int, int], None] | None = None) -> tuple:
    """(the stack, its volume's voxels): a stack of one channel is read straight into the voxels, so a load holds it
    once. No MRML: safe on the worker thread."""
    from SemSegLib.stack_io import read_stack

    buffer = arrays.VoxelBuffer()
    stack = read_stack(path, channelAxis, onImage, buffer)
    return stack, arrays.stack_pixels(stack.images, stack.rgb, buffer.holding(stack.images))
