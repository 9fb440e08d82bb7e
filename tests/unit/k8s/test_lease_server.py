"""The lease endpoint over real HTTP (aiohttp's test server): the worker token is checked, a
request waits for a pass's answer, and one that waits too long is told to come again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from kubenas.k8s import lease_server
from kubenas.k8s.lease_server import Desk, add_lease_routes
from kubenas.k8s.leases import LeaseDesk

TOKEN = "s3cret-token-of-the-experiment"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NEXT = "/v1/leases/team/exp/next"
DONE = "/v1/leases/team/exp/done"
ASK = {"worker": "exp-w1", "pod": "exp-w1-abc"}


def serve(desk: LeaseDesk, test: Callable[[TestClient[Any, Any]], Awaitable[None]]) -> None:
    """Run ``test`` against the routes, with ``desk`` as the experiment team/exp's."""
    wakes: list[int] = []

    def lookup(namespace: str, name: str) -> Desk | None:
        if (namespace, name) != ("team", "exp"):
            return None
        return Desk(desk, lambda: wakes.append(1))

    async def main() -> None:
        app = web.Application()
        add_lease_routes(app, lookup)
        async with TestClient(TestServer(app)) as client:
            await test(client)

    asyncio.run(main())


def a_desk() -> LeaseDesk:
    desk = LeaseDesk()
    desk.token = TOKEN
    return desk


def test_a_wrong_token_or_an_unknown_experiment_is_refused() -> None:
    async def test(client: TestClient[Any, Any]) -> None:
        wrong = await client.post(NEXT, json=ASK, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 403
        missing = await client.post(NEXT, json=ASK)
        assert missing.status == 403
        unknown = await client.post("/v1/leases/team/other/next", json=ASK, headers=AUTH)
        assert unknown.status == 404, "workers retry: the operator may not know it yet"
        bad = await client.post(NEXT, json={"worker": "exp-w1"}, headers=AUTH)
        assert bad.status == 400 and "pod" in await bad.text()

    serve(a_desk(), test)


def test_next_is_answered_by_the_pass_and_done_says_whether_it_was_recorded() -> None:
    desk = a_desk()

    async def a_pass() -> None:
        """What a reconcile pass does with the desk, as soon as something is on it."""
        while not desk.waiting():
            await asyncio.sleep(0.01)
        (asked,) = desk.waiting()
        asked.answer.set_result({"assignment": {"trial": "exp-0000", "lease": "L1"}})
        desk.answered([asked])
        while True:
            taken = desk.take_deliveries()
            if taken:
                break
            await asyncio.sleep(0.01)
        (delivered,) = taken
        assert (delivered.trial, delivered.lease, delivered.exit_code) == ("exp-0000", "L1", 0)
        delivered.answer.set_result(True)
        while not (taken := desk.take_deliveries()):
            await asyncio.sleep(0.01)
        taken[0].answer.set_result(False)  # the same lease again, after it was lost

    async def test(client: TestClient[Any, Any]) -> None:
        passing = asyncio.create_task(a_pass())
        answer = await client.post(NEXT, json=ASK, headers=AUTH)
        assert answer.status == 200
        assert (await answer.json())["assignment"]["trial"] == "exp-0000"
        result = {"worker": "exp-w1", "trial": "exp-0000", "lease": "L1", "exit": 0}
        done = await client.post(DONE, json={**result, "message": "{}"}, headers=AUTH)
        assert done.status == 200 and (await done.json()) == {"recorded": True}
        lost = await client.post(DONE, json=result, headers=AUTH)
        assert lost.status == 410
        await passing

    serve(desk, test)


def test_a_request_no_pass_answers_in_time_is_told_to_come_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lease_server, "LONG_POLL_SECONDS", 0.2)
    desk = a_desk()

    async def test(client: TestClient[Any, Any]) -> None:
        answer = await client.post(NEXT, json=ASK, headers=AUTH)
        assert (await answer.json()) == {"retry": True}
        assert desk.waiting() == [], "the withdrawn ask is not answered by a later pass"
        result = {"worker": "exp-w1", "trial": "exp-0000", "lease": "L1", "exit": 0}
        done = await client.post(DONE, json=result, headers=AUTH)
        assert done.status == 503, "not recorded yet: the worker sends it again"

    serve(desk, test)
