"""A screen trial's scores in the cluster: read from its pod's log, kept in ConfigMaps.

Scores of up to 20,000 architectures do not fit a termination message (4 KiB) or a bounded
NASTrial status, so each proxy gets one ConfigMap owned by the trial. It holds ranks, not
values: every consumer (the strategies' prior, the Spearman in the status) only compares ranks,
and two bytes per architecture keep a ConfigMap under 60 KB at the largest screening. Pure
functions; :mod:`kubenas.k8s.act` and :mod:`kubenas.k8s.reconcile` do the reading and writing.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from kubenas.k8s.manifests import owner_reference
from kubenas.k8s.settings import LABEL_EXPERIMENT, LABEL_MANAGED_BY, LABEL_TRIAL, MANAGER

# A rank is stored doubled (ties share their mean position, a half-integer): at most
# 2 * (20,000 - 1), well inside uint16; the largest value marks an undefined score.
UNDEFINED = 0xFFFF
RANKS_KEY = "ranks"
ENCODING = (
    "uint16 little-endian, one per architecture: twice its 0-based rank from the lowest score; "
    "65535 = undefined"
)

Json = dict[str, Any]


def doubled_ranks(values: Sequence[float | None]) -> list[int]:
    """Twice each value's 0-based rank from the lowest (ties: the sum of the first and last
    position they share); an undefined value is UNDEFINED. Orders exactly as the values do."""
    defined = sorted((v, i) for i, v in enumerate(values) if v is not None)
    out = [UNDEFINED] * len(values)
    start = 0
    while start < len(defined):
        end = start
        while end + 1 < len(defined) and defined[end + 1][0] == defined[start][0]:
            end += 1
        for position in range(start, end + 1):
            out[defined[position][1]] = start + end
        start = end + 1
    return out


def pack(values: Sequence[float | None]) -> str:
    ranks = doubled_ranks(values)
    return base64.b64encode(struct.pack(f"<{len(ranks)}H", *ranks)).decode("ascii")


def unpack(text: str) -> list[float | None]:
    raw = base64.b64decode(text)
    ranks = struct.unpack(f"<{len(raw) // 2}H", raw)
    return [None if r == UNDEFINED else float(r) for r in ranks]


def configmap_name(trial: str, proxy: str) -> str:
    return f"{trial}-screen-{proxy.replace('_', '-')}"


def build_configmaps(trial_obj: Json, scores: Mapping[str, Sequence[float | None]]) -> list[Json]:
    """One ConfigMap per proxy, owned by the screen trial (deleted with it)."""
    meta = trial_obj["metadata"]
    labels = {
        LABEL_MANAGED_BY: MANAGER,
        LABEL_EXPERIMENT: str(trial_obj["spec"]["experiment"]),
        LABEL_TRIAL: str(meta["name"]),
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": configmap_name(meta["name"], proxy),
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [owner_reference(trial_obj)],
            },
            "data": {"proxy": proxy, "candidates": str(len(values)), "encoding": ENCODING},
            "binaryData": {RANKS_KEY: pack(values)},
        }
        for proxy, values in scores.items()
    ]


def read_configmap(configmap: Json) -> list[float | None] | None:
    """A proxy's ranks from its ConfigMap; None if it is not one of ours."""
    packed = (configmap.get("binaryData") or {}).get(RANKS_KEY)
    return unpack(packed) if isinstance(packed, str) else None
