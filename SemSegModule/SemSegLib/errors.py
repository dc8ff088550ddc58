"""Errors the user can act on.

`InputError` means "the data you gave me is wrong": the CLI maps it to exit code 2 and the Slicer module
shows its message as is, so every message names the file and says what to do.
"""


class InputError(ValueError):
    """Bad user input (files, shapes, label values, model/stack mismatch)."""


class TrainingCancelled(Exception):
    """Raised inside the training loop when cancellation was requested (caught by `train`)."""


class TrainingDiverged(RuntimeError):
    """The training's weights became NaN or infinite: no model comes out of it (the message says what to try)."""
