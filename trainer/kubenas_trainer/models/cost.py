"""A candidate's size and cost as the search reports them: parameters and forward FLOPs."""

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_flops(model: nn.Module, inputs: torch.Tensor, *, backward: bool = False) -> int:
    """FLOPs torch counts (2 per multiply-add) for a forward pass, plus backward if asked.

    The forward-only count runs in eval mode so batch-norm uses its running statistics, as at
    inference; the model's mode is restored afterwards.
    """
    was_training = model.training
    model.train(backward)
    try:
        with FlopCounterMode(display=False) as counter:
            if backward:
                model(inputs).sum().backward()
            else:
                with torch.no_grad():
                    model(inputs)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return int(counter.get_total_flops())
