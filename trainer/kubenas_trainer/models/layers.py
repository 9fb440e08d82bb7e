"""Layers shared by the model families, written once for 1-D sequences and 2-D images.

A family builds with a :class:`Geometry` that knows the number of spatial dimensions and the current
spatial shape, so a reduction never shrinks a dimension below 1 and works on any input size.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Geometry:
    """Spatial shape of the feature maps at one point of a network: ``(L,)`` or ``(H, W)``."""

    shape: tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.shape)

    def reduction_stride(self) -> tuple[int, ...]:
        """Stride 2 along every dimension that can still be halved, 1 along the others."""
        return tuple(2 if size > 1 else 1 for size in self.shape)

    def reduced(self) -> "Geometry":
        return Geometry(tuple(math.ceil(size / 2) for size in self.shape))

    def conv(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: tuple[int, ...] | None = None,
        groups: int = 1,
    ) -> nn.Module:
        """A bias-free convolution: "same" padding at stride 1, ``kernel // 2`` when reducing."""
        conv_class = nn.Conv1d if self.dims == 1 else nn.Conv2d
        if stride is None or all(step == 1 for step in stride):
            return conv_class(c_in, c_out, kernel, padding="same", groups=groups, bias=False)
        padding = kernel // 2
        if self.dims == 1:
            return nn.Conv1d(c_in, c_out, kernel, stride[0], padding, groups=groups, bias=False)
        return nn.Conv2d(
            c_in, c_out, kernel, (stride[0], stride[1]), padding, groups=groups, bias=False
        )

    def batch_norm(self, channels: int) -> nn.Module:
        return nn.BatchNorm1d(channels) if self.dims == 1 else nn.BatchNorm2d(channels)

    def avg_pool(self, kernel: int) -> nn.Module:
        """Stride-1 average pooling that keeps the shape and ignores the padding in the mean."""
        pool_class = nn.AvgPool1d if self.dims == 1 else nn.AvgPool2d
        return pool_class(kernel, stride=1, padding=kernel // 2, count_include_pad=False)

    def downsample_pool(self) -> nn.Module:
        """Average pooling matching a stride-2 ``kernel // 2``-padded conv's output shape."""
        stride = self.reduction_stride()
        if self.dims == 1:
            return nn.AvgPool1d(stride[0], stride=stride[0], ceil_mode=True)
        return nn.AvgPool2d((stride[0], stride[1]), stride=(stride[0], stride[1]), ceil_mode=True)

    def conv_bn(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        *,
        stride: tuple[int, ...] | None = None,
        groups: int = 1,
    ) -> list[nn.Module]:
        return [
            self.conv(c_in, c_out, kernel, stride=stride, groups=groups),
            self.batch_norm(c_out),
        ]


class Residual(nn.Module):
    """``x + body(x)``: keeps gradients flowing through deep chains of same-width blocks."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.body(x)
        return out


class Classifier(nn.Module):
    """Global average pooling over every spatial dimension, then a linear layer."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.linear(x.flatten(2).mean(dim=2))
        return logits
