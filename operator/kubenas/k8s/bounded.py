"""Kubernetes client calls with a bounded duration.

The generated client waits forever unless each call passes ``_request_timeout``. The operator's
:class:`~kubenas.k8s.client.Api` gets a REST client that gives every call a connect and read
timeout, shortened to what is left of the current pass's deadline (set per worker thread with
:func:`deadline`), so one pass never outlives its budget by more than one connect timeout.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

from kubernetes.client import rest

from kubenas.k8s.client import Api

USER_AGENT = "kubenas-operator"

_local = threading.local()


class PassDeadlineExceeded(TimeoutError):
    """The pass used up its time budget; the next API call was not made."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Calls made by this thread inside the block end within ``seconds`` from now."""
    previous = getattr(_local, "deadline", None)
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = previous


def remaining() -> float | None:
    """Seconds left of this thread's deadline, None without one."""
    until: float | None = getattr(_local, "deadline", None)
    return None if until is None else until - time.monotonic()


class BoundedRESTClient(rest.RESTClientObject):  # type: ignore[misc]
    """Every request gets (connect, read) timeouts, never more than the pass has left."""

    def __init__(self, configuration: Any, connect: float, read: float) -> None:
        super().__init__(configuration)
        self.connect_timeout = connect
        self.read_timeout = read

    def request(
        self,
        method: str,
        url: str,
        headers: Any = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> Any:
        connect, read = self.connect_timeout, self.read_timeout
        if isinstance(_request_timeout, int | float) and _request_timeout:
            read = min(read, float(_request_timeout))
        elif isinstance(_request_timeout, tuple) and len(_request_timeout) == 2:
            connect, read = min(connect, _request_timeout[0]), min(read, _request_timeout[1])
        left = remaining()
        if left is not None:
            if left <= 0:
                raise PassDeadlineExceeded(f"{method} {url}: the pass ran out of time")
            connect, read = min(connect, left), min(read, left)
        return super().request(
            method, url, headers, body, post_params, _request_timeout=(connect, read)
        )


def bounded_api(connect: float, read: float, pool_size: int) -> Api:
    """An :class:`Api` whose calls all time out, sized for ``pool_size`` concurrent threads."""
    api = Api()
    configuration = copy.copy(api.api_client.configuration)
    configuration.connection_pool_maxsize = pool_size
    old = api.api_client.rest_client
    api.api_client.configuration = configuration
    api.api_client.rest_client = BoundedRESTClient(configuration, connect, read)
    old.pool_manager.clear()
    api.api_client.user_agent = USER_AGENT
    return api
