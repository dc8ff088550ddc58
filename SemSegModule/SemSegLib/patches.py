"""Training patches from sparse labels: sampling around strokes, and augmentation on tensors.

Patches are centered on labeled pixels (class chosen uniformly, so a class with few strokes is seen as
often as a big one) or placed at random for context diversity. Augmentation happens on the sampled batch in
torch: flips, 90-degree rotations, mild scale, intensity/contrast jitter and noise, and optionally an elastic
deformation (off by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .normalization import normalized

IGNORE = -1  # target value of unlabeled pixels


@dataclass
class PatchSource:
    """Images (N, C, H, W), targets (N, H, W) with IGNORE for unlabeled, pixel weights (N, H, W).

    The images are normalized floats, or raw (any type) with each image's `percentile_range` in `low` and `scale`
    (N, C), applied to each patch as it is cut: a training then holds no normalized copy of the stack (4 bytes a
    pixel per channel) and its patches are the same to the bit. Targets may be of any integer type and weights of
    any float type; `weights` None: 1 on every labeled pixel. A sampled batch has int64 targets, float32 weights.
    """

    images: torch.Tensor | np.ndarray
    targets: torch.Tensor
    weights: torch.Tensor | None
    num_classes: int
    focus: torch.Tensor | None = None  # (N, H, W) bool: labeled pixels to center extra patches on (corrections)
    low: np.ndarray | None = None  # (N, C) with raw images: each image's low percentile per channel
    scale: np.ndarray | None = None  # (N, C): and its scale

    def __post_init__(self) -> None:
        flat = self.targets.reshape(-1)
        # Positions of labeled pixels per class; sampling picks a class first, then one of its pixels.
        self.class_positions = [torch.nonzero(flat == c).squeeze(1) for c in range(self.num_classes)]
        self.focus_positions = (torch.nonzero(self.focus.reshape(-1)).squeeze(1) if self.focus is not None
                                else torch.zeros(0, dtype=torch.long))
        self.present_classes = [c for c in range(self.num_classes) if len(self.class_positions[c])]
        self.labeled_images = torch.unique(torch.nonzero(flat != IGNORE).squeeze(1) // self.pixels_per_image)

    def image_patch(self, n: int, rows: slice, cols: slice) -> torch.Tensor:
        """(C, h, w) float32 patch of image n."""
        if self.low is None:
            return torch.as_tensor(self.images[n, :, rows, cols])
        return torch.from_numpy(normalized(self.images[n, :, rows, cols], self.low[n], self.scale[n]))

    @property
    def pixels_per_image(self) -> int:
        return self.targets.shape[1] * self.targets.shape[2]

    @staticmethod
    def pad_to(images: np.ndarray, targets: np.ndarray, weights: np.ndarray | None, size: int,
               focus: np.ndarray | None = None):
        """Reflect-pad images (IGNORE-pad targets, zero-pad weights and focus) so a patch of `size` fits."""
        h, w = images.shape[-2:]
        ph, pw = max(0, size - h), max(0, size - w)
        if ph == 0 and pw == 0:
            return images, targets, weights, focus
        pad = ((0, 0), (0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
        mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
        images = np.pad(images, pad, mode=mode)
        targets = np.pad(targets, pad[1:], constant_values=IGNORE)
        if weights is not None:
            weights = np.pad(weights, pad[1:], constant_values=0)
        if focus is not None:
            focus = np.pad(focus, pad[1:], constant_values=False)
        return images, targets, weights, focus


class PatchSampler:
    def __init__(self, source: PatchSource, generator: torch.Generator, labeled_fraction: float = 0.75,
                 max_scale: float = 1.25, augment: bool = True, focus_fraction: float = 0.0,
                 elastic_probability: float = 0.0):
        self.source = source
        self.focus_fraction = focus_fraction if len(source.focus_positions) else 0.0
        self.g = generator
        self.labeled_fraction = labeled_fraction
        self.max_scale = max_scale if augment else 1.0
        self.augment = augment
        self.elastic_probability = elastic_probability if augment else 0.0

    def _rand(self, *size) -> torch.Tensor:
        return torch.rand(*size, generator=self.g)

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (1,), generator=self.g))

    def sample(self, batch_size: int, patch_size: int, anywhere: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A batch of (images, targets, weights); `anywhere` picks random patches of any image, labeled or not."""
        src = self.source
        _, _, h, w = src.images.shape
        scale = 1.0
        if self.augment:
            log_s = (self._rand(1).item() * 2 - 1) * np.log(self.max_scale)
            scale = float(np.exp(log_s))
        crop = int(round(patch_size * scale))
        crop = min(crop, h, w)
        xs, ys, ws = [], [], []
        for _ in range(batch_size):
            if not anywhere and self._rand(1).item() < self.labeled_fraction:
                if self.focus_fraction and self._rand(1).item() < self.focus_fraction:
                    pos = src.focus_positions
                else:
                    c = src.present_classes[self._randint(len(src.present_classes))]
                    pos = src.class_positions[c]
                flat = int(pos[self._randint(len(pos))])
                n, rem = divmod(flat, src.pixels_per_image)
                cy, cx = divmod(rem, w)
                # Jitter so the stroke is not always at the center of the patch.
                cy += int((self._rand(1).item() - 0.5) * crop / 2)
                cx += int((self._rand(1).item() - 0.5) * crop / 2)
            else:
                n = self._randint(len(src.images)) if anywhere else \
                    int(src.labeled_images[self._randint(len(src.labeled_images))])
                cy, cx = self._randint(h), self._randint(w)
            y0 = min(max(cy - crop // 2, 0), h - crop)
            x0 = min(max(cx - crop // 2, 0), w - crop)
            rows, cols = slice(y0, y0 + crop), slice(x0, x0 + crop)
            xs.append(src.image_patch(n, rows, cols))
            ys.append(src.targets[n, rows, cols])
            if src.weights is not None:
                ws.append(src.weights[n, rows, cols])
        x, y = torch.stack(xs), torch.stack(ys).long()
        wt = (y != IGNORE).float() if src.weights is None else torch.stack(ws).float()
        if crop != patch_size:
            # "nearest-exact" samples the labels at the pixel centers bilinear samples the image at. Plain
            # "nearest" sits about half a pixel off: a 1-pixel line's label missed the image's line in 39% of
            # its pixels (0.1% aligned). Aligned is right, and against the offset it measured level: 8 paired
            # seeds, T2 dsb2018-fluo +0.0005, isbi2012-em +0.0004 (bench/RESULTS.md, session 28).
            x = F.interpolate(x, size=(patch_size, patch_size), mode="bilinear", align_corners=False)
            y = F.interpolate(y[:, None].float(), size=(patch_size, patch_size), mode="nearest-exact")[:, 0].long()
            wt = F.interpolate(wt[:, None], size=(patch_size, patch_size), mode="nearest-exact")[:, 0]
        if self.augment:
            x, y, wt = self._augment(x, y, wt)
        if self.elastic_probability > 0:
            x, y, wt = self._warp(x, y, wt)
        return x, y, wt

    def _warp(self, x: torch.Tensor, y: torch.Tensor, wt: torch.Tensor, sigma: float = 3.0, grid: int = 5,
              max_degrees: float = 20.0):
        """Each patch with `elastic_probability`: rotated by up to `max_degrees` and deformed by a smooth random
        field (displacements of `sigma` px at a `grid` x `grid` lattice, bicubic in between), as in the U-Net
        paper. Image bilinear, labels and weights nearest; pixels from outside the patch become unlabeled.

        Why not MONAI's Rand2DElasticd: the draws come from the sampler's generator (a seeded run is
        reproducible), the whole batch is warped in one `grid_sample`, and outside pixels must be IGNORE.
        """
        b, c, h, w = x.shape
        chosen = self._rand(b) < self.elastic_probability
        if not chosen.any():
            return x, y, wt
        angle = (self._rand(b) * 2 - 1) * np.deg2rad(max_degrees)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), -torch.sin(angle)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
        where = F.affine_grid(theta, [b, c, h, w], align_corners=False)
        shift = torch.randn(b, 2, grid, grid, generator=self.g) * sigma
        shift = F.interpolate(shift, size=(h, w), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
        where = where + shift * torch.tensor([2.0 / w, 2.0 / h])  # pixels -> grid_sample's [-1, 1]
        identity = F.affine_grid(torch.eye(2, 3).expand(b, 2, 3), [b, c, h, w], align_corners=False)
        where = torch.where(chosen[:, None, None, None], where, identity)
        x = F.grid_sample(x, where, mode="bilinear", padding_mode="reflection", align_corners=False)
        y = F.grid_sample(y[:, None].float(), where, mode="nearest", align_corners=False)[:, 0].long()
        wt = F.grid_sample(wt[:, None], where, mode="nearest", align_corners=False)[:, 0]
        outside = (where.abs() > 1).any(-1)
        y[outside] = IGNORE
        wt[outside] = 0
        return x.contiguous(), y.contiguous(), wt.contiguous()

    def _augment(self, x: torch.Tensor, y: torch.Tensor, wt: torch.Tensor):
        out_x, out_y, out_w = [], [], []
        for i in range(x.shape[0]):
            xi, yi, wi = x[i], y[i], wt[i]
            k = self._randint(4)
            if k:
                xi, yi, wi = torch.rot90(xi, k, (1, 2)), torch.rot90(yi, k, (0, 1)), torch.rot90(wi, k, (0, 1))
            if self._rand(1).item() < 0.5:
                xi, yi, wi = xi.flip(2), yi.flip(1), wi.flip(1)
            contrast = 0.75 + 0.5 * self._rand(1).item()
            brightness = (self._rand(1).item() - 0.5) * 0.3
            mean = xi.mean()
            xi = (xi - mean) * contrast + mean + brightness
            noise = 0.05 * self._rand(1).item()
            xi = xi + noise * torch.randn(xi.shape, generator=self.g)
            out_x.append(xi)
            out_y.append(yi)
            out_w.append(wi)
        return torch.stack(out_x).contiguous(), torch.stack(out_y).contiguous(), torch.stack(out_w).contiguous()


def strong_view(x: torch.Tensor, generator: torch.Generator, max_blur: float = 1.5,
                contrast_range: tuple[float, float] = (0.6, 1.4)) -> torch.Tensor:
    """A harder view of a (B, C, H, W) batch: each patch blurred by a Gaussian of random sigma in [0, max_blur]
    (none up to 0.3 px) and its contrast about its mean scaled by a random factor in `contrast_range`.

    The student learns from it what the teacher predicted on the plain patch: the prediction must survive a
    slice that is less sharp or dimmer than the painted ones.
    """
    out = []
    for patch in x:
        sigma = max_blur * float(torch.rand(1, generator=generator))
        if sigma > 0.3:
            r = int(3 * sigma + 0.5)
            t = torch.arange(-r, r + 1, dtype=patch.dtype, device=patch.device)
            g = torch.exp(-(t**2) / (2 * sigma**2))
            g = (g / g.sum()).repeat(patch.shape[0], 1, 1, 1)  # (C, 1, 1, 2r+1): one kernel per channel
            p = F.pad(patch[None], (r, r, r, r), mode="reflect" if min(patch.shape[-2:]) > r else "replicate")
            p = F.conv2d(p, g, groups=patch.shape[0])
            patch = F.conv2d(p, g.transpose(2, 3), groups=patch.shape[0])[0]
        low, high = contrast_range
        contrast = low + (high - low) * float(torch.rand(1, generator=generator))
        mean = patch.mean()
        out.append((patch - mean) * contrast + mean)
    return torch.stack(out)
