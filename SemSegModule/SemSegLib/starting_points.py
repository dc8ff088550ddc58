"""Starting points: networks the project pretrained, shipped in the package, that a first training starts from.

Why: from a few strokes the network has to learn both which structure is which and where their edges run, and
the strokes say little about the edges. A network that has seen many fully labeled images of the same kind of
structure already knows the second. Both shipped networks were trained by `bench/make_starting_point.py` on
generated images, never on the benchmark's or any held-out images:
- "fluorescent-nuclei" (synthetic_nuclei.py; background / nucleus / nucleus border): on dsb2018-fluo the first
  models gain T2 +0.008 (11 of 12 seeds up, one level; T1 +0.002; bench/RESULTS.md, session 55);
- "em-membranes" (synthetic_membranes.py; membrane / cell): on isbi2012-em T2 +0.011, T1 +0.011 (11 and 10 of 12
  seeds up; one seed lost 0.02-0.03; session 68).

A start is used when its classes can be matched to the person's: the same number of classes, and on the
painted pixels the start's own prediction, with its classes put in the best order for the person's, agrees
with the strokes (balanced accuracy at least MIN_AGREEMENT). The order comes from the strokes, not from the
class names, so a person who calls the border "rim" or lists the classes in another order gets the same start.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .atomic import write_bytes_atomic
from .calibration import labeled_window, spread_indices
from .classes import ClassInfo
from .errors import InputError
from .model_file import SemSegModel
from .network import NetworkConfig, build_network
from .normalization import NormalizationConfig
from .prediction import predict_probabilities

log = logging.getLogger(__name__)

FORMAT_NAME = "semseg-starting-point"
FORMAT_VERSION = 1
AUTO, NONE = "auto", "none"
FOLDER = Path(__file__).with_name("starting_points")
SHIPPED = {"fluorescent-nuclei": "fluorescent_nuclei.pt", "em-membranes": "em_membranes.pt"}
# The start's prediction must agree with the strokes on at least this share of each class's painted pixels
# (averaged over the classes). On dsb2018-fluo's benchmark strokes the shipped start agrees on 0.79-0.80 of them
# (seed 0 by class: background 0.999, nucleus 0.88, the traced border 0.48, and about half of the border pixels
# it misses lie next to a border it draws); on the bundled sample stack (background / cell / nucleus,
# sample_data.py) its best order agrees on 0.41, and a start that explains nothing agrees on about 1 / 3 of
# them. Midway. The em-membranes start agrees on 0.77-0.86 of isbi2012-em's strokes (seeds 0-11) and on 0.52-0.57
# of dsb2018-fluo's with the border merged into the nucleus (two classes, seeds 0-2), which starts from random
# weights.
MIN_AGREEMENT = 0.6
# The agreement is measured on at most this many painted images (one prediction each).
MAX_IMAGES = 4


@dataclass
class StartingPoint:
    name: str
    class_names: list[str]
    network_config: NetworkConfig
    normalization: NormalizationConfig
    state_dict: dict[str, torch.Tensor]
    made_with: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        # Half precision: half the package size; a start is a beginning, not a prediction (float32 at load).
        buf = io.BytesIO()
        torch.save({"format": FORMAT_NAME, "version": FORMAT_VERSION, "name": self.name,
                    "class_names": list(self.class_names), "network_config": self.network_config.to_dict(),
                    "normalization": self.normalization.to_dict(), "made_with": self.made_with,
                    "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in self.state_dict.items()}},
                   buf)
        return buf.getvalue()

    def save(self, path: str | Path) -> None:
        write_bytes_atomic(Path(path), self.to_bytes())

    @staticmethod
    def load(path: str | Path) -> StartingPoint:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(d, dict) or d.get("format") != FORMAT_NAME:
            raise InputError(f"{path}: not a SemSeg starting point.")
        if d.get("version", 0) > FORMAT_VERSION:
            raise InputError(f"{path}: starting point format {d['version']} is newer than this SemSeg reads "
                             f"({FORMAT_VERSION}); update SemSeg.")
        return StartingPoint(d["name"], list(d["class_names"]), NetworkConfig.from_dict(d["network_config"]),
                             NormalizationConfig.from_dict(d["normalization"]),
                             {k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()},
                             d.get("made_with", {}))

    @staticmethod
    def shipped(name: str) -> StartingPoint:
        if name not in SHIPPED:
            raise InputError(f"unknown starting point {name!r}; choose one of {', '.join([AUTO, NONE, *SHIPPED])}.")
        path = FOLDER / SHIPPED[name]
        if not path.is_file():
            raise InputError(f"the shipped starting point {name!r} is missing ({path}): reinstall SemSeg, or train "
                             "with starting point 'none'.")
        return StartingPoint.load(path)

    def network(self, class_order: list[int] | None = None) -> torch.nn.Module:
        """The pretrained network; with `class_order`, output channel c is the start's class class_order[c]."""
        net = build_network(self.network_config)
        net.load_state_dict(self.state_dict if class_order is None else
                            reorder_classes(self.state_dict, self.network_config, class_order))
        return net.eval()

    def fits(self, network_config: NetworkConfig) -> bool:
        """Whether a network of `network_config` can start from this one (same architecture and classes)."""
        return replace(network_config, dropout=0.0) == replace(self.network_config, dropout=0.0)


@dataclass
class StartChoice:
    """The start a training used; class_order[c] = the start's class for the person's class c."""

    name: str
    class_order: list[int]
    agreement: float
    point: StartingPoint = field(repr=False)  # loaded once, for the choice and for the network

    def network(self) -> torch.nn.Module:
        return self.point.network(self.class_order)

    def to_dict(self) -> dict:
        return {"name": self.name, "class_order": list(self.class_order), "agreement": round(self.agreement, 4)}


def reorder_classes(state_dict: dict[str, torch.Tensor], config: NetworkConfig,
                    class_order: list[int]) -> dict[str, torch.Tensor]:
    """`state_dict` with its class channels put in `class_order` (output channel c <- class_order[c])."""
    # Which dimensions of which tensors are class channels: those that change size with the number of classes.
    # (A kernel or a layer width may equal the number of classes; the sizes alone cannot tell them apart.)
    own = build_network(config).state_dict()
    more = build_network(replace(config, num_classes=config.num_classes + 1)).state_dict()
    index = torch.as_tensor(class_order, dtype=torch.long)
    out = {}
    for key, value in state_dict.items():
        for dim, (a, b) in enumerate(zip(own[key].shape, more[key].shape)):
            if a != b:
                value = value.index_select(dim, index)
        out[key] = value
    return out


def class_order_from_strokes(probabilities: list[np.ndarray], labels: list[np.ndarray]) -> tuple[list[int], float]:
    """The order of a start's classes that best explains the strokes, and how well it agrees with them.

    `probabilities`: (K, H, W) of the start per painted image; `labels`: (H, W), 0 unlabeled, 1..K the person's
    classes. The order maximizes the summed mean probability each person's class gets from its start class; the
    agreement is the balanced accuracy of the start's reordered argmax on the painted pixels (0 for a class
    nobody painted).
    """
    k = probabilities[0].shape[0]
    mean_probability = np.zeros((k, k))  # [person's class, start's class]
    hits = np.zeros((k, k))
    counts = np.zeros(k)
    for prob, lab in zip(probabilities, labels):
        painted = lab > 0
        target = lab[painted].astype(int) - 1
        p = prob[:, painted]
        winner = p.argmax(0)
        for c in range(k):
            mine = target == c
            counts[c] += mine.sum()
            mean_probability[c] += p[:, mine].sum(1)
            hits[c] += np.bincount(winner[mine], minlength=k)
    mean_probability /= np.maximum(counts, 1)[:, None]
    rows, cols = linear_sum_assignment(-mean_probability)
    order = [int(cols[list(rows).index(c)]) for c in range(k)]
    agreement = float(np.mean([hits[c, order[c]] / counts[c] if counts[c] else 0.0 for c in range(k)]))
    return order, agreement


def choose_starting_point(requested: str, images: np.ndarray, labels: np.ndarray, classes: list[ClassInfo],
                          network_config: NetworkConfig, device: torch.device | None = None,
                          report: Callable[[str], None] | None = None) -> StartChoice | None:
    """The shipped start a first training of `network_config` on these strokes begins from, or None.

    `requested`: AUTO (the first shipped start that fits and agrees with the strokes), NONE, or a shipped name
    (used whenever it fits, whatever the agreement; an error naming the reason when it does not fit).
    `report(message)` is called before a start's predictions on the painted images (a few seconds).
    """
    if requested == NONE:
        return None
    names = list(SHIPPED) if requested == AUTO else [requested]
    for name in names:
        if requested == AUTO and not (FOLDER / SHIPPED[name]).is_file():
            # A broken install should cost the head start, not the training.
            log.warning("the shipped starting point %s is missing (%s): training from random weights", name, FOLDER)
            continue
        point = StartingPoint.shipped(name)
        if not point.fits(network_config):
            if requested == AUTO:
                continue
            raise InputError(
                f"starting point {name!r} has {len(point.class_names)} classes ({', '.join(point.class_names)}) "
                f"and a network for {point.network_config.in_channels}-channel images; these labels define "
                f"{network_config.num_classes} classes on {network_config.in_channels}-channel images (or the "
                f"network settings differ). Train with starting point 'none'.")
        if report is not None:
            report(f"checking the pretrained {name} network against the strokes")
        painted = [i for i in range(len(labels)) if labels[i].any()]
        painted = [painted[j] for j in spread_indices(len(painted), MAX_IMAGES)]
        start = SemSegModel(point.network(), point.network_config, list(classes), point.normalization)
        # Of a large image, only around its strokes: 4 predictions of 2048 x 2048 would hold up the training's
        # start by about 20 s on 2 CPU cores.
        windows = [labeled_window(labels[i]) for i in painted]
        probabilities = [predict_probabilities(start, images[i], device=device, prior_shift=False, window=w).numpy()
                         for i, w in zip(painted, windows)]
        order, agreement = class_order_from_strokes(
            probabilities, [labels[i] if w is None else labels[i][w] for i, w in zip(painted, windows)])
        if requested != AUTO or agreement >= MIN_AGREEMENT:
            return StartChoice(name, order, agreement, point)
    return None
