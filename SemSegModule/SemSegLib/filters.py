"""A fixed multiscale filter bank in front of the U-Net: the features ilastik's pixel classifier uses.

Gaussian smoothing, gradient magnitude, Laplacian of Gaussian and the two Hessian eigenvalues at a few
scales, computed with separable Gaussian-derivative convolutions. With only a few strokes, a network that
starts from these well-behaved, scale-aware responses generalizes better than one that must learn them from
scratch. The bank has no trainable weights and lives inside the network, so prediction gets it for free.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_SIGMAS = (1.0, 2.0, 4.0)
FEATURES_PER_SCALE = 5  # smoothed, gradient magnitude, LoG, Hessian eigenvalue 1, eigenvalue 2


def _gaussian_kernels(sigma: float) -> torch.Tensor:
    """(3, 2r+1) kernels: Gaussian, first and second derivative."""
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    d1 = -x / sigma**2 * g
    d2 = (x**2 / sigma**4 - 1 / sigma**2) * g
    d2 = d2 - d2.mean()  # zero response to a constant image
    return torch.stack([g, d1, d2])


class FilterBank(nn.Module):
    def __init__(self, in_channels: int, sigmas: tuple[float, ...] = DEFAULT_SIGMAS):
        super().__init__()
        self.in_channels = in_channels
        self.sigmas = tuple(sigmas)
        for i, s in enumerate(self.sigmas):
            self.register_buffer(f"k{i}", _gaussian_kernels(s), persistent=False)

    @property
    def out_channels(self) -> int:
        return self.in_channels * (1 + FEATURES_PER_SCALE * len(self.sigmas))

    def _responses(self, x: torch.Tensor, kernels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The six Gaussian-derivative responses at one scale: smooth, d/dx, d2/dx2, d/dy, d2/dxdy, d2/dy2.

        Why not one separable pair per response: the three vertical passes (smoothing, first and second
        derivative) are shared, so one padding, one 3-kernel vertical pass and one 6-kernel horizontal pass
        give the same numbers (bit for bit) in less time: 1.2x training iterations per second on the CPU,
        where the bank was a sixth of a step (bench/RESULTS.md, session 14).
        """
        b, c = x.shape[:2]
        size = kernels.shape[1]
        r = size // 2
        x = F.pad(x, (r, r, r, r), mode="reflect" if min(x.shape[-2:]) > r else "replicate")
        vertical = F.conv2d(x, kernels.view(3, 1, size, 1).repeat(c, 1, 1, 1), groups=c)
        vertical = vertical.view(b, c, 3, *vertical.shape[-2:])
        g, d1, d2 = kernels
        # Horizontal kernels per vertical response: smooth -> (g, d1, d2), d/dy -> (g, d1), d2/dy2 -> (g).
        sources = vertical[:, :, [0, 0, 0, 1, 1, 2]].reshape(b, 6 * c, *vertical.shape[-2:])
        horizontal = torch.stack([g, d1, d2, g, d1, g]).view(6, 1, 1, size).repeat(c, 1, 1, 1)
        out = F.conv2d(sources, horizontal, groups=6 * c)
        return out.view(b, c, 6, *out.shape[-2:]).unbind(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Always in float32, whatever precision the network runs in: the Hessian's eigenvalues are differences
        # of nearly equal responses, which a 16-bit float rounds coarsely. (bfloat16 predictions were measured
        # with the bank in float32: bench/RESULTS.md, session 27.)
        with torch.autocast(x.device.type, enabled=False):
            return self._features(x.float())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, s in enumerate(self.sigmas):
            smooth, gx, hxx, gy, hxy, hyy = self._responses(x, getattr(self, f"k{i}"))
            # Scale-normalized (sigma, sigma^2) so responses are comparable across scales.
            grad = torch.sqrt(gy**2 + gx**2 + 1e-12) * s
            hyy, hxx, hxy = hyy * s * s, hxx * s * s, hxy * s * s
            trace = hyy + hxx
            root = torch.sqrt((hyy - hxx) ** 2 + 4 * hxy**2 + 1e-12)
            feats += [smooth, grad, trace, (trace + root) / 2, (trace - root) / 2]
        return torch.cat(feats, dim=1)
