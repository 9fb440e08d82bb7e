"""Thin calls to the Kubernetes API, tolerant where the controller's idempotence needs it:
creating what already exists and deleting what is already gone both count as done."""

from __future__ import annotations

import json
from typing import Any, Protocol, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from kubenas.k8s.settings import EXPERIMENTS, GROUP, LABEL_EXPERIMENT, TRIALS, VERSION


def load_kube_config() -> None:
    """In-cluster credentials when running in a pod, else ``KUBECONFIG``."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _items(response: Any) -> list[dict[str, Any]]:
    """Items of a raw list response: plain dicts, skipping the client's typed models, which cost
    more than the API call itself on a busy operator."""
    return cast(list[dict[str, Any]], json.loads(response.data)["items"])


def _discard(response: Any) -> None:
    """Read an unwanted response body to its end, then hand the connection back. Released
    unread, the connection would carry the body into the next request's response."""
    response.drain_conn()
    response.release_conn()


class KubeApi(Protocol):
    """The calls a reconcile pass makes; :class:`Api` makes them against the API server, a
    watch-fed cache may answer the reads, and the unit tests use an in-memory fake."""

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]: ...
    def list_jobs(self, namespace: str, experiment: str) -> list[dict[str, Any]]: ...
    def list_experiment_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]: ...
    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]: ...
    def read_pod_log(self, namespace: str, pod: str, container: str) -> str: ...
    def create_configmap(self, configmap: dict[str, Any]) -> None: ...
    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    def ensure_secret(self, secret: dict[str, Any]) -> dict[str, Any]: ...
    def create_trial(self, trial: dict[str, Any]) -> dict[str, Any]: ...
    def get_trial(self, namespace: str, name: str) -> dict[str, Any]: ...
    def create_job(self, job: dict[str, Any]) -> bool: ...
    def delete_job(self, namespace: str, name: str) -> None: ...
    def patch_trial_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]: ...
    def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...
    def close(self) -> None: ...


class Api:
    """:class:`KubeApi` against the API server."""

    def __init__(self) -> None:
        self.api_client = client.ApiClient()
        self.custom = client.CustomObjectsApi(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    def close(self) -> None:
        self.api_client.close()

    def get_experiment(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, EXPERIMENTS, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list_trials(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, TRIALS, label_selector=f"{LABEL_EXPERIMENT}={experiment}"
        )
        return cast(list[dict[str, Any]], listed["items"])

    def list_jobs(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        listed = self.batch.list_namespaced_job(
            namespace, label_selector=f"{LABEL_EXPERIMENT}={experiment}"
        )
        return [self.api_client.sanitize_for_serialization(j) for j in listed.items]

    def list_experiment_pods(self, namespace: str, experiment: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_pod(
            namespace, label_selector=f"{LABEL_EXPERIMENT}={experiment}", _preload_content=False
        )
        return _items(response)

    def list_job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        listed = self.core.list_namespaced_pod(namespace, label_selector=f"job-name={job}")
        return [self.api_client.sanitize_for_serialization(p) for p in listed.items]

    def read_pod_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's whole log, as ``kubectl logs`` prints it (the kubelet serves it)."""
        response = self.core.read_namespaced_pod_log(
            pod, namespace, container=container, _preload_content=False
        )
        return cast(bytes, response.data).decode("utf-8", errors="replace")

    def create_configmap(self, configmap: dict[str, Any]) -> None:
        """Create it, or keep the one an earlier pass created (its content is the same)."""
        try:
            _discard(
                self.core.create_namespaced_config_map(
                    configmap["metadata"]["namespace"], configmap, _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status != 409:
                raise

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            response = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return cast(dict[str, Any], json.loads(response.data))

    def ensure_secret(self, secret: dict[str, Any]) -> dict[str, Any]:
        """The stored Secret: created from ``secret``, or the one an earlier pass created."""
        namespace, name = secret["metadata"]["namespace"], secret["metadata"]["name"]
        try:
            response = self.core.create_namespaced_secret(namespace, secret, _preload_content=False)
        except ApiException as exc:
            if exc.status != 409:
                raise
            response = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        return cast(dict[str, Any], json.loads(response.data))

    def create_trial(self, trial: dict[str, Any]) -> dict[str, Any]:
        """The stored trial, created now or by an earlier pass (a decision applied twice)."""
        namespace, name = trial["metadata"]["namespace"], trial["metadata"]["name"]
        try:
            return cast(
                dict[str, Any],
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, TRIALS, trial
                ),
            )
        except ApiException as exc:
            if exc.status == 409:
                return self.get_trial(namespace, name)
            raise

    def get_trial(self, namespace: str, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, TRIALS, name),
        )

    def create_job(self, job: dict[str, Any]) -> bool:
        try:
            _discard(
                self.batch.create_namespaced_job(
                    job["metadata"]["namespace"], job, _preload_content=False
                )
            )
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def delete_job(self, namespace: str, name: str) -> None:
        try:
            _discard(
                self.batch.delete_namespaced_job(
                    name, namespace, propagation_policy="Background", _preload_content=False
                )
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def patch_trial_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, TRIALS, name, {"status": status}
            ),
        )

    def patch_experiment_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The stored experiment; None when it is gone (deleted meanwhile)."""
        try:
            return cast(
                dict[str, Any],
                self.custom.patch_namespaced_custom_object_status(
                    GROUP, VERSION, namespace, EXPERIMENTS, name, {"status": status}
                ),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return None
