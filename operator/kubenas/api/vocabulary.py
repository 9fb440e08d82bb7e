"""The one vocabulary of architectures: family names, operation names and their encodings.

The API models, the search spaces, the CRD (checked by a test) and the trainer all read these
definitions, so the control plane can never accept an architecture the trainer cannot build.
Pure Python on purpose: the trainer imports it without pulling in the control plane.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

# Each family's name as a type, so the API's discriminated union is spelled with these very names.
Nb201FamilyName = Literal["nb201-cell"]
ChainFamilyName = Literal["chain"]
CustomFamilyName = Literal["custom"]
NB201_FAMILY: str = get_args(Nb201FamilyName)[0]
CHAIN_FAMILY: str = get_args(ChainFamilyName)[0]
CUSTOM_FAMILY: str = get_args(CustomFamilyName)[0]
# Families whose architectures the built-in trainer builds; ``custom`` goes to a user's trainer.
TRAINER_FAMILIES = (NB201_FAMILY, CHAIN_FAMILY)

# -- nb201-cell --------------------------------------------------------------------------------

Nb201Operation = Literal["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
NB201_OPERATIONS: tuple[Nb201Operation, ...] = get_args(Nb201Operation)
NB201_NODES = 4
# NAS-Bench-201 cell edges, in the order its architecture string lists them: node j <- node i.
NB201_EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def nb201_edge_name(to_node: int, from_node: int) -> str:
    """The search-space parameter that holds the operation of edge ``from_node -> to_node``."""
    return f"edge_{to_node}_{from_node}"


def format_nb201_cell(operations: dict[tuple[int, int], str]) -> str:
    """NAS-Bench-201's own format, e.g. ``|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|``,
    from the operation of each edge ``(to_node, from_node)``."""
    nodes = []
    for to_node in range(1, NB201_NODES):
        ops = [f"{operations[(to_node, i)]}~{i}" for i in range(to_node)]
        nodes.append("|" + "|".join(ops) + "|")
    return "+".join(nodes)


def parse_nb201_cell(cell: str) -> dict[tuple[int, int], str]:
    """Inverse of :func:`format_nb201_cell`: the operation of every edge ``(to_node, from_node)``.

    Raises ValueError unless each node has exactly one known operation from each earlier node.
    """
    groups = cell.strip().split("+")
    if len(groups) != NB201_NODES - 1:
        raise ValueError(f"cell must have {NB201_NODES - 1} '+'-separated nodes, got {cell!r}")
    operations: dict[tuple[int, int], str] = {}
    for to_node, group in enumerate(groups, start=1):
        sources = []
        for token in group.strip("|").split("|"):
            op, _, source = token.partition("~")
            if op not in NB201_OPERATIONS or not source.isdigit():
                raise ValueError(
                    f"bad cell edge {token!r}: want op~input with op in {NB201_OPERATIONS}"
                )
            sources.append(int(source))
            operations[(to_node, int(source))] = op
        if sorted(sources) != list(range(to_node)):
            raise ValueError(
                f"cell node {to_node} needs one edge from each of nodes 0..{to_node - 1}"
            )
    return operations


# -- chain -------------------------------------------------------------------------------------

# Square, odd kernels only: a 1-D network uses the same K, and "same" padding stays symmetric.
CHAIN_KERNEL_SIZES = (3, 5, 7)
CHAIN_EXPANSIONS = tuple(range(1, 10))
_KERNELS = "|".join(f"{k}x{k}" for k in CHAIN_KERNEL_SIZES)
_EXPANSIONS = f"[{CHAIN_EXPANSIONS[0]}-{CHAIN_EXPANSIONS[-1]}]"
# RE2-compatible (no back-references), so the CRD's CEL rule can hold the very same pattern.
CHAIN_OPERATION_PATTERN = (
    rf"^(identity|(conv|sepconv)({_KERNELS})|mbconv({_KERNELS})_e({_EXPANSIONS}))$"
)
CHAIN_OPERATION_FORMS = "identity, convKxK, sepconvKxK or mbconvKxK_eE"
CHAIN_OPERATIONS_DEFAULT = (
    "conv3x3",
    "conv5x5",
    "sepconv3x3",
    "mbconv3x3_e3",
    "mbconv3x3_e6",
    "identity",
)

ChainKind = Literal["identity", "conv", "sepconv", "mbconv"]


@dataclass(frozen=True)
class ChainOperation:
    """A decoded chain block name: ``mbconv5x5_e6`` is kind mbconv, kernel 5, expansion 6."""

    kind: ChainKind
    kernel: int = 0
    expansion: int = 0


def parse_chain_operation(name: str) -> ChainOperation:
    """Decode a chain block name; raises ValueError for any name outside the vocabulary."""
    match = re.fullmatch(CHAIN_OPERATION_PATTERN, name)
    if match is None:
        raise ValueError(
            f"unknown chain block {name!r}: want {CHAIN_OPERATION_FORMS} "
            f"with K in {CHAIN_KERNEL_SIZES} and E in 1..{CHAIN_EXPANSIONS[-1]}"
        )
    if name == "identity":
        return ChainOperation("identity")
    _, plain_kind, plain_kernel, mbconv_kernel, expansion = match.groups()
    if plain_kind == "conv":
        return ChainOperation("conv", int(plain_kernel.split("x")[0]))
    if plain_kind == "sepconv":
        return ChainOperation("sepconv", int(plain_kernel.split("x")[0]))
    return ChainOperation("mbconv", int(mbconv_kernel.split("x")[0]), int(expansion))


# -- zero-cost proxies -------------------------------------------------------------------------

# Scores of an untrained network that the trainer computes (kubenas_trainer.proxies, which
# checks it implements exactly these); larger is predicted better for each.
ProxyName = Literal["synflow", "naswot", "jacob_cov", "snip", "grad_norm", "params", "flops"]
PROXIES: tuple[ProxyName, ...] = get_args(ProxyName)
# Proxies that need no training data: the rest look at one mini-batch of the training split.
DATA_FREE_PROXIES = frozenset({"synflow", "params", "flops"})

# -- cost metrics ------------------------------------------------------------------------------

# What a network costs to run, measured by the trainer on its own device before any training
# (kubenas_trainer.costs): parameters, FLOPs of one sample, latency at batch 1 in milliseconds,
# images per second at the throughput batch, and peak inference memory in MiB.
COST_METRICS = ("params", "flops", "latency_ms", "throughput", "peak_memory_mb")
# The ones that take timed runs on the device, so they are measured only when an experiment
# names them (params and FLOPs are always reported).
TIMED_COST_METRICS = ("latency_ms", "throughput", "peak_memory_mb")

# -- weight sharing (strategy ``oneshot``) -------------------------------------------------------

# How one supernet is trained and read, per family: a differentiable relaxation that does not
# collapse to parameter-free cells for NB201 cells (beta-DARTS), single-path one-shot with
# uniform path sampling and an evolutionary search for chains (SPOS).
OneshotMethod = Literal["beta-darts", "spos"]
ONESHOT_METHODS: dict[str, tuple[OneshotMethod, ...]] = {
    NB201_FAMILY: ("beta-darts",),
    CHAIN_FAMILY: ("spos",),
}
