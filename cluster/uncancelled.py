"""Work that a cancelled request does not cut short.

When a client goes away, Ray Serve cancels its request, and Ray cancels recursively:
every actor call made under it. In Ray 2.60, cancelling the pending calls of an async
actor (the coordinator, the web frontend) to a sync one (a shard) wedges that caller's
queue to the shard for good, or cancels another request's call to it
(tests/cluster/test_cancelled_requests.py). A call submitted outside the request's
context (`submit`) is not its child: the request stops waiting for it, and the call, a
read or a write that is safe to repeat, finishes on its own.

A write a client started also finishes as a whole (`run_to_end`): the item and the
clean-up of its old photo, even if the client hangs up in between.
"""
from __future__ import annotations

import asyncio
import contextvars
import logging

log = logging.getLogger("ray.serve")
_running: set[asyncio.Task] = set()   # the loop keeps only weak references to tasks


def submit(method, *args):
    """`method.remote(*args)` with no Ray task as its parent; an awaitable ObjectRef."""
    return contextvars.Context().run(method.remote, *args)


async def run_to_end(coro):
    """Await `coro`. If the caller is cancelled meanwhile, `coro` still runs to its end,
    and an error it then raises goes to the log, as nobody is left to answer."""
    task = asyncio.ensure_future(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        task.add_done_callback(_report)
        raise


def _report(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a write whose client had gone failed: %r", task.exception())
