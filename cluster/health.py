"""What `GET /health` answers: can this cluster answer searches and take writes, and if
not, which part cannot and why.

- `ok` (200): the coordinator and every shard of the map answered;
- `degraded` (200): searches still answer, `partial` where a shard is missing, or writes
  wait for the coordinator; a load balancer should keep sending traffic, a monitor should
  page someone;
- `down` (503): no shard answered, so no search can.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

from coordinator.router import fan_out, last_line


async def cluster_health(coordinator_check: Awaitable, shard_clients: Callable[[], dict],
                         timeout_s: float) -> tuple[int, dict]:
    """(status code, body). `coordinator_check` refreshes the shard list from the coordinator's
    map (so a shard that came back is asked again); `shard_clients` gives the list after it."""
    try:
        await asyncio.wait_for(coordinator_check, timeout_s)
        coordinator = None
    except Exception as exc:   # a dead or restarting coordinator: the shards are still asked
        coordinator = "no answer" if isinstance(exc, asyncio.TimeoutError) else last_line(str(exc))
    clients = shard_clients()
    answering, failed = await fan_out({n: c.ready() for n, c in clients.items()}, timeout_s)
    status = "ok" if not failed and coordinator is None else "degraded" if answering else "down"
    body = {"status": status, "shards": len(clients), "answering": len(answering),
            "unavailable": {n: exc.reason for n, exc in sorted(failed.items())}, "coordinator": coordinator or "ok"}
    return (503 if status == "down" else 200), body
