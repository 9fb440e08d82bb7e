"""The ``chain`` family: a stem, then stages of same-width residual blocks, like a MobileNet/ResNet.

Architecture JSON: ``{"stem_channels": C, "stages": [{"width": W, "blocks": [op, ...]}, ...]}``
with block ops ``identity``, ``convKxK``, ``sepconvKxK`` and ``mbconvKxK_eE``.
"""

from typing import Any

from torch import nn

from kubenas.api.vocabulary import parse_chain_operation
from kubenas_trainer.config import ConfigError
from kubenas_trainer.models.decode import positive_int
from kubenas_trainer.models.layers import Classifier, Geometry, Residual


def block(op: str, width: int, geometry: Geometry) -> nn.Module:
    """One block at ``width`` channels; every op but ``identity`` is a residual body."""
    try:
        operation = parse_chain_operation(op)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    if operation.kind == "identity":
        return nn.Identity()
    kernel = operation.kernel
    if operation.kind == "conv":
        body = [nn.ReLU(), *geometry.conv_bn(width, width, kernel)]
    elif operation.kind == "sepconv":
        body = [
            nn.ReLU(),
            geometry.conv(width, width, kernel, groups=width),
            *geometry.conv_bn(width, width, 1),
        ]
    else:
        hidden = width * operation.expansion
        body = [
            *geometry.conv_bn(width, hidden, 1),
            nn.ReLU(),
            *geometry.conv_bn(hidden, hidden, kernel, groups=hidden),
            nn.ReLU(),
            *geometry.conv_bn(hidden, width, 1),
        ]
    return Residual(nn.Sequential(*body))


def build_chain(
    arch: dict[str, Any], in_channels: int, geometry: Geometry, num_classes: int
) -> nn.Module:
    channels = positive_int(arch, "stem_channels")
    stages = arch.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError("architecture stages must be a non-empty list")
    layers: list[nn.Module] = [*geometry.conv_bn(in_channels, channels, 3), nn.ReLU()]
    for index, stage in enumerate(stages):
        if not isinstance(stage, dict) or not isinstance(stage.get("blocks"), list):
            raise ConfigError(f"chain stage {index} must be an object with width and blocks")
        width = positive_int(stage, "width")
        if index > 0:
            stride = geometry.reduction_stride()
            layers += [*geometry.conv_bn(channels, width, 3, stride=stride), nn.ReLU()]
            geometry = geometry.reduced()
        elif width != channels:
            layers += [*geometry.conv_bn(channels, width, 1), nn.ReLU()]
        layers.extend(block(str(op), width, geometry) for op in stage["blocks"])
        channels = width
    layers += [nn.ReLU(), Classifier(channels, num_classes)]
    return nn.Sequential(*layers)
