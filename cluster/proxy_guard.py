"""Serve's HTTP proxy made to answer 503 + Retry-After when a replica dies under a request.

When the replica serving a request dies before it answers, Ray Serve's proxy has
nothing to send and its server falls back to a bare "500 Internal Server Error". The
request may or may not have taken effect, and retrying it is right (every write here is
idempotent: an upsert or a delete by id), which is what a 503 with Retry-After tells a
client. Errors of the application itself are responses from the replica and pass
through untouched, so a real bug still shows as a 500.

Serve loads this through RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH, which must be in the
environment before Ray starts (`cluster.demo.serve_environment` sets it).
"""
from __future__ import annotations

import json

IMPORT_PATH = "cluster.proxy_guard:middlewares"
RETRY_AFTER_S = 2


class ReplicaLossIs503:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started or not _replica_lost(exc):
                raise
        if not started:   # the proxy got no answer: the replica went away
            body = json.dumps({"error": "a server process went away while answering; retry"}).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"retry-after", str(RETRY_AFTER_S).encode())]})
            await send({"type": "http.response.body", "body": body})


def _replica_lost(exc: BaseException) -> bool:
    import ray
    return isinstance(exc, ray.exceptions.RayActorError)


def middlewares() -> list:
    from starlette.middleware import Middleware
    return [Middleware(ReplicaLossIs503)]
