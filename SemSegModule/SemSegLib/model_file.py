"""One model file: weights plus everything needed to use them.

Stored with `torch.save` as a dict of tensors and plain Python values, loaded with `weights_only=True`
so opening a model file someone sent you cannot run code.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .atomic import write_bytes_atomic
from .classes import ClassInfo
from .errors import InputError
from .network import NetworkConfig, build_network
from .normalization import NormalizationConfig

FORMAT_VERSION = 1
FORMAT_NAME = "semseg-model"


@dataclass
class SemSegModel:
    """A trained (or freshly initialized) network with its classes, input contract and history."""

    network: nn.Module
    network_config: NetworkConfig
    classes: list[ClassInfo]
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    history: list[dict] = field(default_factory=list)
    # Per image name: which pixels were labeled when this model was trained (packed bits), so the next
    # round can tell corrections (newly painted pixels) from old strokes.
    labeled_masks: dict[str, torch.Tensor] = field(default_factory=dict)
    image_shape: tuple[int, int] | None = None
    # Added to the log class probabilities at prediction (calibration.py); None: no correction.
    log_prior_shift: np.ndarray | None = None

    @staticmethod
    def create(in_channels: int, classes: list[ClassInfo], **network_kwargs) -> SemSegModel:
        config = NetworkConfig(in_channels=in_channels, num_classes=len(classes), **network_kwargs)
        return SemSegModel(build_network(config), config, list(classes))

    @property
    def in_channels(self) -> int:
        return self.network_config.in_channels

    @property
    def num_classes(self) -> int:
        return self.network_config.num_classes

    def check_stack(self, channels: int, source: str = "the images") -> None:
        if channels != self.in_channels:
            raise InputError(
                f"{source}: images have {channels} channel(s) but the model was trained on "
                f"{self.in_channels}-channel images. Use a model trained on this kind of image, or train a new one."
            )

    def set_labeled_masks(self, names: list[str], labels: np.ndarray) -> None:
        self.image_shape = tuple(labels.shape[1:])
        self.labeled_masks = {
            name: torch.from_numpy(np.packbits(labels[i] > 0))
            for i, name in enumerate(names) if labels[i].any()
        }

    def previous_labeled_mask(self, name: str, shape: tuple[int, int]) -> np.ndarray | None:
        if not self.labeled_masks or self.image_shape != tuple(shape):
            return None  # the model does not know what was labeled: no pixel counts as a correction
        packed = self.labeled_masks.get(name)
        if packed is None:
            return np.zeros(shape, bool)  # nothing of this image was labeled then: all of it is new
        bits = np.unpackbits(packed.numpy(), count=shape[0] * shape[1])
        return bits.reshape(shape).astype(bool)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "network": self.network_config.to_dict(),
            "classes": [c.to_dict() for c in self.classes],
            "normalization": self.normalization.to_dict(),
            "history": self.history,
            "image_shape": list(self.image_shape) if self.image_shape else None,
            "labeled_masks": dict(self.labeled_masks),
            "log_prior_shift": None if self.log_prior_shift is None else [float(v) for v in self.log_prior_shift],
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
        }

    def save(self, path: str | Path) -> None:
        buf = io.BytesIO()
        torch.save(self.to_dict(), buf)
        write_bytes_atomic(Path(path), buf.getvalue())

    @staticmethod
    def load(path: str | Path, map_location: str | torch.device = "cpu") -> SemSegModel:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such model file.")
        try:
            d = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not a torch file at all
            raise InputError(f"{path}: not a readable SemSeg model file ({type(e).__name__}: {e}).") from e
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise InputError(f"{path}: not a SemSeg model file (no '{FORMAT_NAME}' header).")
        if int(d["format_version"]) > FORMAT_VERSION:
            raise InputError(f"{path}: model format version {d['format_version']} is newer than this SemSeg "
                             f"understands ({FORMAT_VERSION}); update SemSeg.")
        config = NetworkConfig.from_dict(d["network"])
        network = build_network(config)
        network.load_state_dict(d["state_dict"])
        network.eval()
        shape = d.get("image_shape")
        shift = d.get("log_prior_shift")  # absent in files from before session 9
        return SemSegModel(
            network=network,
            network_config=config,
            classes=[ClassInfo.from_dict(c) for c in d["classes"]],
            normalization=NormalizationConfig.from_dict(d["normalization"]),
            history=list(d.get("history", [])),
            labeled_masks=dict(d.get("labeled_masks", {})),
            image_shape=tuple(shape) if shape else None,
            log_prior_shift=None if shift is None else np.asarray(shift, np.float64),
        )
