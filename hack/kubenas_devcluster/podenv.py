"""A container's environment and command line, resolved the way the kubelet resolves them."""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from kubenas_devcluster.apiclient import ApiClient, ApiError, Json

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ContainerConfigError(Exception):
    """The container cannot start yet (missing ConfigMap, Secret or key): the kubelet's
    ``CreateContainerConfigError``, retried until it resolves or the pod is deleted."""


def expand(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names replaced, ``$$`` escapes, others kept."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return variables.get(name, match.group(0))

    return _REFERENCE.sub(substitute, text)


def declared_env(api: ApiClient, pod: Json, container: Json) -> dict[str, str]:
    """The variables the container declares (``envFrom`` first, then ``env``, in order)."""
    namespace = pod["metadata"]["namespace"]
    result: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind in ("configMapRef", "secretRef"):
            if kind in source:
                ref = source[kind]
                data = _object_data(api, kind, namespace, ref["name"], ref.get("optional", False))
                result.update({prefix + key: value for key, value in data.items()})
    for variable in container.get("env") or []:
        value = _env_value(api, pod, variable, result)
        if value is not None:
            result[variable["name"]] = value
    return result


def _env_value(api: ApiClient, pod: Json, variable: Json, defined: dict[str, str]) -> str | None:
    if "valueFrom" not in variable:
        return expand(variable.get("value", ""), defined)
    source = variable["valueFrom"]
    namespace = pod["metadata"]["namespace"]
    if "fieldRef" in source:
        return _field(pod, source["fieldRef"]["fieldPath"])
    for key_kind, kind in (("configMapKeyRef", "configMapRef"), ("secretKeyRef", "secretRef")):
        if key_kind in source:
            ref = source[key_kind]
            optional = bool(ref.get("optional", False))
            data = _object_data(api, kind, namespace, ref["name"], optional)
            if ref["key"] not in data and not optional:
                raise ContainerConfigError(f"couldn't find key {ref['key']} in {ref['name']}")
            return data.get(ref["key"])
    raise ContainerConfigError(f"unsupported valueFrom for {variable['name']}: {sorted(source)}")


def _field(pod: Json, path: str) -> str:
    metadata: dict[str, Any] = pod["metadata"]
    spec: dict[str, Any] = pod["spec"]
    simple = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata["namespace"],
        "metadata.uid": metadata["uid"],
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": "127.0.0.1",
        "status.podIP": "127.0.0.1",
    }
    if path in simple:
        return str(simple[path])
    subscript = _SUBSCRIPT.match(path)
    if subscript:
        return str((metadata.get(subscript.group(1)) or {}).get(subscript.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef {path}")


def _object_data(
    api: ApiClient, kind: str, namespace: str, name: str, optional: bool
) -> dict[str, str]:
    resource = "configmaps" if kind == "configMapRef" else "secrets"
    try:
        found = api.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
    except ApiError as error:
        if error.status == 404 and optional:
            return {}
        if error.status == 404:
            raise ContainerConfigError(f"{resource[:-1]} {name!r} not found") from error
        raise
    data: dict[str, str] = found.get("data") or {}
    if resource == "secrets":
        return {key: base64.b64decode(value).decode() for key, value in data.items()}
    return dict(data)
