"""Actor calls that a cancelled request does not cancel.

When a client goes away, Ray Serve cancels its request, and Ray cancels recursively:
every actor call made under that request. In Ray 2.60, cancelling the pending calls of
an async actor (the coordinator, the web frontend) to a sync one (a shard) wedges that
caller's queue to the shard for good, or cancels another request's call to it
(tests/cluster/test_cancelled_requests.py). A call submitted outside the request's
context is not its child: the request stops waiting for it, and the call, a read or a
write that is safe to repeat, finishes on its own.
"""
from __future__ import annotations

import contextvars


def submit(method, *args):
    """`method.remote(*args)` with no Ray task as its parent; an awaitable ObjectRef."""
    return contextvars.Context().run(method.remote, *args)
