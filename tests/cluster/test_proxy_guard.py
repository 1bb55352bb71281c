"""The proxy middleware: a request whose replica died gets 503 + Retry-After; nothing else changes."""
import asyncio
import json

import pytest
import ray

from cluster.proxy_guard import ReplicaLossIs503


def call(app) -> list[dict]:
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(ReplicaLossIs503(app)({"type": "http", "path": "/search"}, receive, send))
    return sent


async def answers_500(scope, receive, send):
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b'{"error": "a bug"}'})


async def says_nothing(scope, receive, send):       # what Serve's proxy does when the replica died
    return None


async def replica_died(scope, receive, send):
    raise ray.exceptions.ActorDiedError()


async def broken(scope, receive, send):
    raise ValueError("a bug in the proxy path")


async def died_mid_body(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    raise ray.exceptions.ActorDiedError()


@pytest.mark.parametrize("app", [says_nothing, replica_died])
def test_a_lost_replica_is_a_503_with_retry_after(app):
    start, body = call(app)
    assert start["status"] == 503 and (b"retry-after", b"2") in start["headers"]
    assert "retry" in json.loads(body["body"])["error"]


def test_an_application_error_passes_through_unchanged():
    start, body = call(answers_500)
    assert start["status"] == 500 and body["body"] == b'{"error": "a bug"}'


def test_other_exceptions_and_half_sent_answers_are_not_hidden():
    with pytest.raises(ValueError):
        call(broken)
    with pytest.raises(ray.exceptions.ActorDiedError):
        call(died_mid_body)
