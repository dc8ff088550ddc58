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

    def _sep(self, x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        r = ky.shape[0] // 2
        x = F.pad(x, (r, r, r, r), mode="reflect" if min(x.shape[-2:]) > r else "replicate")
        x = F.conv2d(x, ky.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
        return F.conv2d(x, kx.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, s in enumerate(self.sigmas):
            g, d1, d2 = getattr(self, f"k{i}")
            smooth = self._sep(x, g, g)
            gy, gx = self._sep(x, d1, g), self._sep(x, g, d1)
            hyy, hxx, hxy = self._sep(x, d2, g), self._sep(x, g, d2), self._sep(x, d1, d1)
            # Scale-normalized (sigma, sigma^2) so responses are comparable across scales.
            grad = torch.sqrt(gy**2 + gx**2 + 1e-12) * s
            hyy, hxx, hxy = hyy * s * s, hxx * s * s, hxy * s * s
            trace = hyy + hxx
            root = torch.sqrt((hyy - hxx) ** 2 + 4 * hxy**2 + 1e-12)
            feats += [smooth, grad, trace, (trace + root) / 2, (trace - root) / 2]
        return torch.cat(feats, dim=1)
