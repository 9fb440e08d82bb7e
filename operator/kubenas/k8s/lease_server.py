"""The HTTP side of trial reuse: ``POST /v1/leases/{namespace}/{experiment}/next`` and ``/done``
from worker pods (docs/design-pod-reuse.md). Each request is checked against the experiment's
worker token, posted into its :class:`LeaseDesk`, and answered when a reconcile pass has
decided; a request that waits too long is answered ``retry`` (``/next``) or 503 (``/done``),
and the worker asks again."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from kubenas.k8s.leases import Delivery, LeaseDesk

# Under the worker's 60 s client timeout, with room for a pass that is slow.
LONG_POLL_SECONDS = 25.0
T = TypeVar("T")


@dataclass(frozen=True)
class Desk:
    """One experiment's desk and the wake-up of its reconcile loop."""

    desk: LeaseDesk
    wake: Callable[[], None]


Lookup = Callable[[str, str], Desk | None]


def add_lease_routes(app: web.Application, lookup: Lookup) -> None:
    async def next_trial(request: web.Request) -> web.Response:
        found, body = await _admitted(request, lookup, ("worker", "pod"))
        ask = found.desk.ask(str(body["worker"]), str(body["pod"]))
        found.wake()
        answer = await _waited(ask.answer)
        if answer is None:
            found.desk.withdraw(ask)
            return web.json_response({"retry": True})
        return web.json_response(answer)

    async def done(request: web.Request) -> web.Response:
        found, body = await _admitted(request, lookup, ("worker", "trial", "lease", "exit"))
        delivery = found.desk.deliver(
            Delivery(
                worker=str(body["worker"]),
                trial=str(body["trial"]),
                lease=str(body["lease"]),
                exit_code=int(body["exit"]),
                message=str(body.get("message") or ""),
            )
        )
        found.wake()
        recorded = await _waited(delivery.answer)
        if recorded is None:
            return web.json_response({"error": "not recorded yet: send it again"}, status=503)
        if not recorded:
            return web.json_response({"lost": True}, status=410)
        return web.json_response({"recorded": True})

    app.router.add_post("/v1/leases/{namespace}/{experiment}/next", next_trial)
    app.router.add_post("/v1/leases/{namespace}/{experiment}/done", done)


async def _admitted(
    request: web.Request, lookup: Lookup, fields: tuple[str, ...]
) -> tuple[Desk, dict[str, Any]]:
    """The experiment's desk and the request's body, once its token is the experiment's; an
    experiment this operator does not run yet (just started, or gone) is 404, which workers
    retry."""
    found = lookup(request.match_info["namespace"], request.match_info["experiment"])
    if found is None or found.desk.token is None:
        raise web.HTTPNotFound(text="no such experiment here (yet)")
    given = request.headers.get("Authorization", "").removeprefix("Bearer ").encode()
    if not hmac.compare_digest(given, found.desk.token.encode()):
        raise web.HTTPForbidden(text="wrong worker token")
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"not JSON: {exc}") from exc
    missing = [f for f in fields if not isinstance(body, dict) or f not in body]
    if missing:
        raise web.HTTPBadRequest(text=f"missing fields: {', '.join(missing)}")
    return found, body


async def _waited(answer: Future[T]) -> T | None:
    """The pass's answer, or None when it did not come within the long poll."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(answer), LONG_POLL_SECONDS)
    except TimeoutError:
        if answer.done() and not answer.cancelled():
            return answer.result()
        return None
