"""A candidate's size and cost as the search reports them: parameters and FLOPs.

FLOPs follow ``torch.utils.flop_counter``: 2 per multiply-add of convolutions and matrix
products, nothing for normalisation, pooling or activations. The forward count applies torch's
own formulas from module hooks, because entering ``FlopCounterMode`` (any torch dispatch mode)
first imports TorchDynamo, about 3 CPU-seconds of a 10-second trial; a test checks both agree.
"""

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_forward_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """Forward FLOPs of ``model`` on ``inputs`` in eval mode (inference), as FlopCounterMode."""
    total = 0

    def conv_hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        weight = module.weight
        assert isinstance(weight, torch.Tensor)
        total += conv_flop_count(list(args[0].shape), list(weight.shape), list(output.shape))

    def linear_hook(
        module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
    ) -> None:
        nonlocal total
        total += 2 * args[0].numel() * output.shape[-1]

    handles = []
    for module in model.modules():
        if isinstance(module, nn.Conv1d | nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


def _conv_backward_flops(
    grad_out_shape: list[int], x_shape: list[int], w_shape: list[int], *args: Any, **kwargs: Any
) -> int:
    """Each gradient of a convolution (input, weight) costs what its forward pass costs.

    Replaces torch's formula, whose weight-gradient term ignores ``groups`` and so counts a
    depthwise convolution's backward as if it were dense (25x too many for ``mbconv3x3_e6``).
    """
    transposed, output_mask = args[4], args[7]
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_training_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward pass, counted by FlopCounterMode."""
    was_training = model.training
    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    try:
        model.train()
        with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(inputs).sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return int(counter.get_total_flops())
