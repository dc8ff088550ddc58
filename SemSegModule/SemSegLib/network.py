"""The segmentation network: MONAI's 2D U-Net, sized from a small JSON-able description.

The description is stored in the model file, so a model can be rebuilt without the code that trained it.
Batch normalization (not instance normalization) so a tile's prediction does not depend on what else is in
the tile: tiled and whole-image prediction agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .filters import DEFAULT_SIGMAS, FilterBank


@dataclass(frozen=True)
class NetworkConfig:
    in_channels: int = 1
    num_classes: int = 2
    base_width: int = 16
    levels: int = 4
    residual_units: int = 1
    dropout: float = 0.0
    input_filters: bool = False  # prepend the fixed multiscale filter bank (filters.py)
    filter_sigmas: tuple[float, ...] = DEFAULT_SIGMAS  # its scales (px); older model files: the default

    def __post_init__(self) -> None:
        # JSON and TrainConfig give a list; a frozen (hashable, comparable) config needs a tuple of floats.
        object.__setattr__(self, "filter_sigmas", tuple(float(s) for s in self.filter_sigmas))

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> NetworkConfig:
        return NetworkConfig(**{k: d[k] for k in NetworkConfig.__dataclass_fields__ if k in d})

    @property
    def size_multiple(self) -> int:
        """Input height/width must be a multiple of this for the skip connections to line up."""
        return 2 ** (self.levels - 1)


def build_network(config: NetworkConfig) -> nn.Module:
    from monai.networks.nets import UNet

    channels = tuple(config.base_width * 2**i for i in range(config.levels))
    bank = None
    in_channels = config.in_channels
    if config.input_filters:
        bank = FilterBank(config.in_channels, config.filter_sigmas)
        in_channels = bank.out_channels
    unet = UNet(
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=config.num_classes,
        channels=channels,
        strides=(2,) * (config.levels - 1),
        num_res_units=config.residual_units,
        norm="batch",
        dropout=config.dropout,
    )
    return nn.Sequential(bank, unet) if bank is not None else unet


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def set_torch_seed(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
