"""The moving average of a training's weights, which is the network a training hands back."""

from __future__ import annotations

import copy

import torch


class WeightAverage:
    """Exponential moving average of weights and normalization statistics, with a warm-up.

    The decay ramps up as (1 + t) / (10 + t) so that a short run is not dominated by the random initial
    weights (with a fixed 0.99, 22% of the average after 150 steps would still be the initialization).
    The ramp reaches 0.99 only after 890 steps, so in most CPU runs it alone sets the decay: the average
    covers about the last tenth of the run (a longer window measured no better, bench/RESULTS.md session 8).
    """

    def __init__(self, net: torch.nn.Module, decay: float):
        self.decay = decay
        self.steps = 0
        self.module = copy.deepcopy(net)
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        self.steps += 1
        for avg, new in zip(self.module.state_dict().values(), net.state_dict().values()):
            if avg.dtype.is_floating_point:
                avg.mul_(d).add_(new.detach(), alpha=1 - d)
            else:
                avg.copy_(new)
