"""A candidate's size and cost as the search reports them: parameters and FLOPs.

FLOPs follow ``torch.utils.flop_counter``: 2 per multiply-add of convolutions and matrix
products, nothing for normalisation, pooling or activations. The forward count applies torch's
own formulas from module hooks, because entering ``FlopCounterMode`` (any torch dispatch mode)
first imports TorchDynamo, about 3 CPU-seconds of a 10-second trial; a test checks both agree.
"""

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

    def linear_hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
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


def count_training_flops(model: nn.Module, inputs: torch.Tensor) -> int:
    """FLOPs of one training step's forward and backward pass, counted by FlopCounterMode."""
    was_training = model.training
    try:
        model.train()
        with FlopCounterMode(display=False) as counter:
            model(inputs).sum().backward()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return int(counter.get_total_flops())
