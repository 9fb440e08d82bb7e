"""Model families: decode an architecture JSON into a torch module for a given input shape."""

from typing import Any

from torch import nn

from kubenas.api.vocabulary import CHAIN_FAMILY, NB201_FAMILY
from kubenas_trainer.config import ConfigError
from kubenas_trainer.models.chain import build_chain
from kubenas_trainer.models.layers import Geometry
from kubenas_trainer.models.nb201 import build_nb201

_BUILDERS = {NB201_FAMILY: build_nb201, CHAIN_FAMILY: build_chain}


def build_model(
    family: str, arch: dict[str, Any], sample_shape: tuple[int, ...], num_classes: int
) -> nn.Module:
    """Build ``family``'s network for samples shaped ``(C, L)`` (1-D) or ``(C, H, W)`` (2-D)."""
    if family not in _BUILDERS:
        raise ConfigError(f"unknown family {family!r}; known: {sorted(_BUILDERS)}")
    if len(sample_shape) not in (2, 3):
        raise ConfigError(f"samples must be (C, L) or (C, H, W), got shape {sample_shape}")
    in_channels, *spatial = sample_shape
    return _BUILDERS[family](arch, in_channels, Geometry(tuple(spatial)), num_classes)
