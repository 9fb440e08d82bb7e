"""The operator's policy for trial pod templates, shared by the operator (before it creates a
Job) and ``kubenas validate`` (before anything is applied), so both refuse the same templates
with the same field."""

from __future__ import annotations

from typing import Any


class PodTemplateError(ValueError):
    """A pod template asks for something the operator's settings forbid."""


# What Pod Security's ``restricted`` level lets a container add to the capabilities it drops.
ALLOWED_CAPABILITIES = {"NET_BIND_SERVICE"}


def check_pod_template(pod_spec: dict[str, Any], allow_privileged: bool) -> None:
    """The operator's own policy, the part of Pod Security ``restricted`` a template can break
    that the operator does not set itself: no privilege, host namespaces, hostPath, root user
    or added capabilities. Refused with the field, before any Job exists."""
    if allow_privileged:
        return
    where = "spec.trial.podTemplate.spec"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(key):
            raise PodTemplateError(f"{where}.{key}: not allowed by the operator")
    for i, volume in enumerate(pod_spec.get("volumes") or []):
        if "hostPath" in volume:
            raise PodTemplateError(f"{where}.volumes[{i}].hostPath: not allowed by the operator")
    _check_user(pod_spec.get("securityContext") or {}, f"{where}.securityContext")
    for kind in ("containers", "initContainers"):
        for i, container in enumerate(pod_spec.get(kind) or []):
            context = container.get("securityContext") or {}
            field = f"{where}.{kind}[{i}].securityContext"
            if context.get("privileged") or context.get("allowPrivilegeEscalation"):
                raise PodTemplateError(
                    f"{field}: privileged containers are not allowed by the operator"
                )
            _check_user(context, field)
            added = set((context.get("capabilities") or {}).get("add") or []) - ALLOWED_CAPABILITIES
            if added:
                raise PodTemplateError(
                    f"{field}.capabilities.add: {', '.join(sorted(added))} not allowed by the "
                    "operator (trial containers drop ALL)"
                )


def _check_user(context: dict[str, Any], field: str) -> None:
    if context.get("runAsUser") == 0:
        raise PodTemplateError(f"{field}.runAsUser: running as root is not allowed by the operator")
    if context.get("runAsNonRoot") is False:
        raise PodTemplateError(
            f"{field}.runAsNonRoot: running as root is not allowed by the operator"
        )
