"""A small JSON-over-HTTPS client for the node agent.

The agent needs only get/list/watch/create/patch/delete on a few resources; plain dicts over
``requests`` keep it light on CPU (no model (de)serialisation on a 2-core machine) and make
410 Gone and 409 Conflict visible as status codes rather than buried in exceptions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from kubenas_devcluster.kubeconfig import AdminCredentials

Json = dict[str, Any]


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status


class ApiClient:
    """Thread-safe enough for the agent: one ``requests.Session`` per client object."""

    def __init__(self, credentials: AdminCredentials) -> None:
        self.server = credentials.server.rstrip("/")
        self.ca_pem = credentials.ca_file.read_bytes()
        self._session = requests.Session()
        # Not the environment's CA bundle (REQUESTS_CA_BUNDLE would override ``verify``) nor
        # its proxies: this client only ever talks to our API server on loopback.
        self._session.trust_env = False
        self._session.verify = str(credentials.ca_file)
        self._session.cert = (str(credentials.cert_file), str(credentials.key_file))

    def request(
        self,
        method: str,
        path: str,
        body: Json | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Json:
        """Send one request and return the decoded answer; raise :class:`ApiError` otherwise."""
        response = self._session.request(
            method,
            self.server + path,
            params=params,
            timeout=timeout,
            data=json.dumps(body) if body is not None else None,
            headers={"Content-Type": content_type, "Accept": "application/json"},
        )
        if response.status_code >= 300:
            raise ApiError(response.status_code, response.text)
        answer: Json = response.json() if response.content else {}
        return answer

    def get(self, path: str, params: dict[str, str] | None = None) -> Json:
        return self.request("GET", path, params=params)

    def create(self, path: str, body: Json) -> Json:
        return self.request("POST", path, body)

    def patch_merge(self, path: str, body: Json) -> Json:
        """JSON merge patch: lists are replaced whole, so send them complete."""
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def delete(self, path: str, body: Json | None = None) -> Json:
        return self.request("DELETE", path, body)

    def watch(self, path: str, params: dict[str, str], timeout: float) -> Iterator[Json]:
        """Yield watch events until the server closes the stream (after ``timeout`` seconds)."""
        query = {
            **params,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(int(timeout)),
        }
        with self._session.get(
            self.server + path, params=query, stream=True, timeout=(10, timeout + 30)
        ) as response:
            if response.status_code >= 300:
                raise ApiError(response.status_code, response.text)
            # chunk_size=None hands over each chunk as the server flushes it (one per event);
            # a fixed size would hold an event back until the next one arrives.
            pending = b""
            for chunk in response.iter_content(chunk_size=None):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        event: Json = json.loads(line)
                        yield event
