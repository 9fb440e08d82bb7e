"""Zero-cost proxies: scores of an untrained network that predict how well it will train.

Each proxy looks at a freshly initialised network and at most one mini-batch of training data, and
returns one number; **larger always means predicted better** (Abdelfattah et al., "Zero-Cost
Proxies for Lightweight NAS", ICLR 2021; Mellor et al., "Neural Architecture Search without
Training", ICML 2021). "Weighted layers" below are the convolutions and linear layers.

==========  ====  ===========================================================================
proxy       data  what it measures
==========  ====  ===========================================================================
synflow     no    natural log (as NASLib's tables give it) of the synaptic flow: with every
                  weight made positive, batch norm bypassed and an all-ones input in double
                  precision, the sum over weighted layers of ``|w * d(sum of outputs)/dw|``
                  (Tanaka et al. 2020).
                  ``-inf`` when no signal reaches the output (e.g. a cell of ``none`` edges).
naswot      yes   log-determinant of the kernel ``K[i, j]`` = number of ReLUs on which samples
                  i and j fall on the same side, summed over every ReLU's input (NASWOT).
                  Networks that tell the samples of a batch apart score higher.
jacob_cov   yes   ``-sum(log(v + k) + 1 / (v + k))`` over the eigenvalues v of the correlation
                  matrix of the per-sample input gradients ``d(sum of outputs)/dx``, k = 1e-5:
                  higher when those gradients are decorrelated across samples.
snip        yes   sum over weighted layers of ``|w * dL/dw|`` for the cross-entropy loss L of
                  the batch: the loss's sensitivity to removing each weight (Lee et al. 2019).
grad_norm   yes   sum over weighted layers of the L2 norm of ``dL/dw``.
params      no    number of parameters (as a float, like every proxy).
flops       no    forward FLOPs on one sample, as ``models.cost.count_forward_flops`` counts them.
==========  ====  ===========================================================================

Data proxies run with batch norm in training mode (batch statistics), as the reference
implementations leave a freshly built network. A score is ``-inf`` when it is undefined because
the output does not depend on the input (the worst value, so it still ranks). Every proxy works
on its own copy of the model, so scores do not depend on the order they are computed in.
"""

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from kubenas_trainer.data import Splits
from kubenas_trainer.models import build_model
from kubenas_trainer.models.cost import count_forward_flops, count_parameters

# Added to the eigenvalues in jacob_cov, as the reference implementation does, so that a
# (near-)singular correlation matrix gives a large penalty instead of log(0).
JACOB_COV_EPSILON = 1e-5

WEIGHTED_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass(frozen=True)
class Probe:
    """What a proxy may look at: the shape of one sample and, for data proxies, one mini-batch
    (inputs and integer labels, on the model's device)."""

    sample_shape: tuple[int, ...]
    inputs: torch.Tensor | None = None
    targets: torch.Tensor | None = None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inputs is None or self.targets is None:
            raise ValueError("this proxy needs a mini-batch of training data")
        return self.inputs, self.targets


ProxyFunction = Callable[[nn.Module, Probe], float]


@dataclass(frozen=True)
class Proxy:
    compute: ProxyFunction
    needs_data: bool


def _scratch_copy(model: nn.Module) -> nn.Module:
    """A copy to score, in training mode: proxies change weights, BN statistics and gradients."""
    return copy.deepcopy(model).train()


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _layer_weight_names(model: nn.Module) -> list[str]:
    """The weight of every weighted layer (convolutions and linear layers), by parameter name,
    in module order: sums over them are always taken in the same order."""
    return [
        f"{name}.weight"
        for name, module in model.named_modules()
        if isinstance(module, WEIGHTED_LAYERS)
    ]


def _layer_weights(model: nn.Module) -> list[torch.Tensor]:
    parameters = dict(model.named_parameters(remove_duplicate=False))
    return [parameters[name] for name in _layer_weight_names(model)]


def synflow(model: nn.Module, probe: Probe) -> float:
    """Log synaptic flow from an all-ones input, with positive weights and no batch norm.

    The model is run on double-precision absolute copies of its tensors (``functional_call``)
    with each batch norm's output replaced by its input, rather than on a deep copy of the
    module tree, which cost twice the rest of the proxy."""
    weight_names = _layer_weight_names(model)
    weighted = set(weight_names)
    positive = {
        name: parameter.detach().double().abs().requires_grad_(name in weighted)
        for name, parameter in model.named_parameters()
    }
    buffers = {  # in double like the rest; integer buffers (batch counts) stay the model's
        name: buffer.double()
        for name, buffer in model.named_buffers()
        if buffer.is_floating_point()
    }
    handles = [
        module.register_forward_hook(_bypass)
        for module in model.modules()
        if isinstance(module, BATCH_NORMS)
    ]
    was_training = model.training
    ones = torch.ones((1, *probe.sample_shape), dtype=torch.float64, device=_device_of(model))
    try:
        model.eval()  # the bypassed batch norms neither use nor update batch statistics
        functional_call(model, {**positive, **buffers}, (ones,)).sum().backward()
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    total = 0.0
    with torch.no_grad():
        for name in weight_names:
            weight = positive[name]
            if weight.grad is not None:
                total += float((weight * weight.grad).abs().sum())
    return math.log(total) if total > 0 else -math.inf


def _bypass(
    module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor
) -> torch.Tensor:
    """A forward hook that hands a module's input on as its output."""
    return args[0]


def naswot(model: nn.Module, probe: Probe) -> float:
    """Log-determinant of the batch's kernel of binary ReLU activation codes."""
    net = _scratch_copy(model)
    inputs, _ = probe.batch()
    kernel = torch.zeros((len(inputs), len(inputs)), dtype=torch.float64, device=inputs.device)

    def add_codes(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        codes = (args[0].flatten(1) > 0).float()
        agree = codes @ codes.T + (1 - codes) @ (1 - codes).T
        kernel.add_(agree.double())

    handles = [
        module.register_forward_pre_hook(add_codes)
        for module in net.modules()
        if isinstance(module, nn.ReLU)
    ]
    try:
        with torch.no_grad():
            net(inputs)
    finally:
        for handle in handles:
            handle.remove()
    sign, log_det = torch.linalg.slogdet(kernel)
    return float(log_det) if float(sign) > 0 else -math.inf


def jacob_cov(model: nn.Module, probe: Probe) -> float:
    """Penalty on correlated per-sample input gradients (larger = less correlated)."""
    net = _scratch_copy(model)
    inputs, _ = probe.batch()
    x = inputs.detach().clone().requires_grad_(True)
    output = net(x)
    (gradient,) = torch.autograd.grad(output, x, torch.ones_like(output), allow_unused=True)
    if gradient is None:
        return -math.inf  # the output ignores the input
    correlation = torch.corrcoef(gradient.flatten(1).double())
    if not bool(torch.isfinite(correlation).all()):
        return -math.inf  # a sample's input gradient is constant: no correlation is defined
    eigenvalues = torch.linalg.eigvalsh(correlation).clamp(min=0) + JACOB_COV_EPSILON
    return -float((eigenvalues.log() + 1 / eigenvalues).sum())


def _loss_gradients(model: nn.Module, probe: Probe) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each weighted layer's weight with the gradient of the batch's cross-entropy loss."""
    net = _scratch_copy(model)
    inputs, targets = probe.batch()
    weights = _layer_weights(net)
    loss = F.cross_entropy(net(inputs), targets)
    gradients = torch.autograd.grad(loss, weights, allow_unused=True)
    return [
        (weight.detach(), torch.zeros_like(weight) if gradient is None else gradient)
        for weight, gradient in zip(weights, gradients, strict=True)
    ]


def snip(model: nn.Module, probe: Probe) -> float:
    """Summed connection sensitivity ``|w * dL/dw|`` of the weighted layers."""
    return sum(
        float((weight * gradient).abs().sum()) for weight, gradient in _loss_gradients(model, probe)
    )


def grad_norm(model: nn.Module, probe: Probe) -> float:
    """Sum of the weighted layers' loss-gradient L2 norms."""
    return sum(float(gradient.norm()) for _, gradient in _loss_gradients(model, probe))


def params(model: nn.Module, probe: Probe) -> float:
    return float(count_parameters(model))


def flops(model: nn.Module, probe: Probe) -> float:
    ones = torch.ones((1, *probe.sample_shape), device=_device_of(model))
    return float(count_forward_flops(model, ones))  # leaves the model as it found it


PROXIES: dict[str, Proxy] = {
    "synflow": Proxy(synflow, needs_data=False),
    "naswot": Proxy(naswot, needs_data=True),
    "jacob_cov": Proxy(jacob_cov, needs_data=True),
    "snip": Proxy(snip, needs_data=True),
    "grad_norm": Proxy(grad_norm, needs_data=True),
    "params": Proxy(params, needs_data=False),
    "flops": Proxy(flops, needs_data=False),
}


def data_proxies(names: Sequence[str]) -> list[str]:
    """Those of ``names`` that need a mini-batch of training data."""
    return [name for name in names if PROXIES[name].needs_data]


def score_architecture(
    family: str,
    architecture: dict[str, Any],
    names: Sequence[str],
    probe: Probe,
    num_classes: int,
    seed: int,
    device: torch.device,
) -> dict[str, float]:
    """Build the network at initialisation (torch seeded with ``seed`` first, so the scores are
    a function of the architecture and the seed) and compute each named proxy."""
    torch.manual_seed(seed)
    model = build_model(family, architecture, probe.sample_shape, num_classes).to(device)
    return {name: PROXIES[name].compute(model, probe) for name in names}


def training_probe(splits: Splits, batch_size: int, seed: int, device: torch.device) -> Probe:
    """One mini-batch drawn from the training split by ``seed``: every architecture of a screen is
    scored on the same samples, so their scores compare."""
    inputs, targets = splits.train
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(targets), generator=generator)[: min(batch_size, len(targets))]
    return Probe(
        splits.sample_shape,
        torch.from_numpy(inputs)[chosen].to(device),
        torch.from_numpy(targets)[chosen].to(device),
    )
