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
from .pixel_forest import PixelForest

FORMAT_VERSION = 1
FORMAT_NAME = "semseg-model"


@dataclass
class RoundMember:
    """The network of an earlier round, with its prior correction (see SemSegModel.earlier_rounds)."""

    network: nn.Module
    log_prior_shift: np.ndarray | None = None


def round_weights(networks: int, first_share: float = 0.0) -> list[float]:
    """Weights of a prediction's networks, newest first: 1/2, 1/4, ..., the oldest gets the rest.

    That is a round's prediction = the average of its network and the prediction the round started from, so
    each round halves what the earlier ones say instead of replacing it. With `first_share` > 0 the oldest
    network (the first training's) keeps that share and the newer ones halve the rest.
    """
    if first_share <= 0 or networks < 2:
        weights = [0.5 ** (j + 1) for j in range(networks - 1)]
        return weights + [1.0 - sum(weights)]
    newer = round_weights(networks - 1)
    return [(1.0 - first_share) * w for w in newer] + [first_share]


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
    # After correction rounds: the networks of the earlier rounds, newest first (the one this round started
    # from, then the one that started from, ...). A prediction averages every network's corrected
    # probabilities with the weights of `round_weights`: a round's gain on the images nobody painted then no
    # longer hinges on how a few corrections on three images generalize (bench/RESULTS.md, session 10). All
    # rounds, not only the last two networks: when every round's network draws a thin class thicker, two round
    # networks averaged have nothing left to damp it; with halving the third round of the where-to-paint
    # curves gained in 5 of 5 runs for the suggested person and was level for the random one (session 17).
    earlier_rounds: list[RoundMember] = field(default_factory=list)
    # > 0: the oldest of earlier_rounds is the first training's network and keeps this share of every
    # prediction (TrainConfig.start_network_share); 0: it is halved like the others.
    first_network_share: float = 0.0
    # 0-based classes painted as 1-pixel lines: their predictions are thinned to lines (line_classes.py).
    line_classes: list[int] = field(default_factory=list)
    # The random-forest pixel classifier fit on the same labels and the networks' confident pixels
    # (pixel_forest.py), and the share of its probabilities in every prediction (0: the networks alone; a line
    # class at most pixel_forest.LINE_CLASS_WEIGHT).
    forest: PixelForest | None = None
    forest_weight: float = 0.0

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

    def round_members(self) -> list[tuple[RoundMember, float]]:
        """Every network a prediction averages, newest (this model's own) first, with its weight."""
        members = [RoundMember(self.network, self.log_prior_shift), *self.earlier_rounds]
        return list(zip(members, round_weights(len(members), self.first_network_share)))

    @property
    def signature(self) -> str:
        """Which model this is, kept in its file: its number of trainings, and when and how the last one ended
        (a Slicer scene records it per predicted slice, to tell the current model's predictions from older ones)."""
        last = self.history[-1] if self.history else {}
        return f"{len(self.history)}:{last.get('finished', '')}:{last.get('seconds', '')}:{last.get('final_loss', '')}"

    def line_class_names(self) -> list[str]:
        return [self.classes[c].name for c in self.line_classes]

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
            "log_prior_shift": _floats(self.log_prior_shift),
            "state_dict": _state_dict(self.network),
            # The newest earlier network under the key a SemSeg from before session 17 reads (it averages
            # this model's network with that one alone), the older ones after it.
            "previous_round": _member_dict(self.earlier_rounds[0]) if self.earlier_rounds else None,
            "older_rounds": [_member_dict(m) for m in self.earlier_rounds[1:]],
            "line_classes": [int(c) for c in self.line_classes],
            "forest": self.forest.to_dict() if self.forest is not None else None,
            "forest_weight": float(self.forest_weight),
            "first_network_share": float(self.first_network_share),
        }

    def to_bytes(self) -> bytes:
        """What `save` writes (the Slicer module also keeps it in the scene)."""
        buf = io.BytesIO()
        torch.save(self.to_dict(), buf)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        write_bytes_atomic(Path(path), self.to_bytes())

    @staticmethod
    def load(path: str | Path, map_location: str | torch.device = "cpu") -> SemSegModel:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such model file.")
        try:
            d = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - corrupt, truncated, or not a torch file at all
            raise InputError(f"{path}: not a readable SemSeg model file: {_why_unreadable(path, e)} Use a file "
                             "that SemSeg wrote (Save model, semseg train).") from e
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
        # "previous_round" is absent in files from before session 10 (like the shift before 9), "older_rounds"
        # before session 17, "line_classes" before session 19 (nothing was thinned then), "forest" before 43,
        # "first_network_share" before 57 (every network was halved).
        previous = d.get("previous_round")
        forest = d.get("forest")
        stored = ([previous] if previous is not None else []) + list(d.get("older_rounds", []))
        earlier = []
        for member in stored:
            member_network = build_network(config)
            member_network.load_state_dict(member["state_dict"])
            earlier.append(RoundMember(member_network.eval(), _array(member.get("log_prior_shift"))))
        return SemSegModel(
            network=network,
            network_config=config,
            classes=[ClassInfo.from_dict(c) for c in d["classes"]],
            normalization=NormalizationConfig.from_dict(d["normalization"]),
            history=list(d.get("history", [])),
            labeled_masks=dict(d.get("labeled_masks", {})),
            image_shape=tuple(shape) if shape else None,
            log_prior_shift=_array(d.get("log_prior_shift")),
            earlier_rounds=earlier,
            line_classes=[int(c) for c in d.get("line_classes", [])],
            forest=PixelForest.from_dict(forest) if forest is not None else None,
            forest_weight=float(d.get("forest_weight", 0.0)),
            first_network_share=float(d.get("first_network_share", 0.0)),
        )


def _why_unreadable(path: Path, error: Exception) -> str:
    """What torch.load's error means for a person. Not its own words: they advise loading with weights_only=False,
    which would let the file run code on this computer."""
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as e:
        return f"it cannot be read ({e.strerror})."
    if not start:
        return "it is empty (0 bytes)."
    zipped = start == b"PK\x03\x04"  # torch.save's container
    if "Weights only load failed" in str(error):
        if zipped:
            return ("it holds Python objects (a whole network, say), and SemSeg reads only weights and numbers, so "
                    "that opening a file can never run code from it.")
        return "it is not a PyTorch file."
    if zipped:
        return "it is damaged or incomplete (a copy or download that stopped part way?)."
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}{': ' + first[:200] if first else ''}."


def _state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in network.state_dict().items()}


def _member_dict(member: RoundMember) -> dict:
    return {"state_dict": _state_dict(member.network), "log_prior_shift": _floats(member.log_prior_shift)}


def _floats(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


def _array(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, np.float64)
