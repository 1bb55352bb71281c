"""RayShardClient waits out an actor restart on idempotent calls, never on searches.

The logic with a stand-in handle; the real restart is in test_multinode.py and
test_ray_cluster.py (a node removed, an actor killed during writes)."""
import asyncio
from types import SimpleNamespace

import numpy as np
import pytest
import ray

from cluster.shard_actor import RayShardClient
from coordinator.protocol import QueryBatch
from shards.query import PreparedQuery


class Flaky:
    """A remote method that fails `fails` times with `error`, then answers `result`."""

    def __init__(self, fails, result, error=lambda: ray.exceptions.ActorUnavailableError("restarting", None)):
        self.fails, self.result, self.error, self.calls = fails, result, error, 0

    def remote(self, *args):
        async def answer():
            self.calls += 1
            if self.calls <= self.fails:
                raise self.error()
            return self.result
        return answer()


class Handle:
    def __init__(self, **methods):
        self.__dict__.update(methods)


def test_a_write_is_sent_again_until_the_actor_is_back():
    h = Handle(upsert=Flaky(3, 5))
    assert asyncio.run(RayShardClient("s0", h).upsert({"ids": [1]})) == 5
    assert h.upsert.calls == 4


def test_a_restart_longer_than_the_budget_is_an_error():
    h = Handle(delete=Flaky(10_000, 1))
    client = RayShardClient("s0", h)
    client.restart_s = 0.3
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        asyncio.run(client.delete([1]))
    assert 2 <= h.delete.calls < 10


def test_a_dead_actor_and_a_search_are_not_retried():
    h = Handle(get=Flaky(1, {}, ray.exceptions.ActorDiedError), search_wire=Flaky(1, b""))
    client = RayShardClient("s0", h)
    with pytest.raises(ray.exceptions.ActorDiedError):
        asyncio.run(client.get(1))
    q = PreparedQuery(code=np.zeros(2, np.uint64), qhist=np.zeros(8, np.uint8), k=1, required=(), filters=(),
                      optional=(), w_hamming=1.0, w_colour=0.0, w_optional=0.0)
    with pytest.raises(ray.exceptions.ActorUnavailableError):
        asyncio.run(client.search_batch(QueryBatch([q], [None])))
    assert h.get.calls == 1 and h.search_wire.calls == 1


def test_a_delete_whose_landed_try_lost_its_answer_is_still_a_delete(tmp_path):
    """The shard client's retry of a delete that had landed counts 0 deleted; the REST front
    answers 200 for an item that was there, and 404 only for one that was not."""
    from cluster.rest import Frontend, HttpError
    from shards.errors import NotFound
    real = Frontend.func_or_class      # its methods on a plain object: no Serve, no replica

    class Front:
        delete_item, _delete_item, _lookup = real.delete_item, real._delete_item, real._lookup

        def _auth(self, request):
            pass

    front = Front()
    front.uploads = tmp_path / "uploads"
    front.uploads.mkdir()
    written = []
    front.metrics = SimpleNamespace(written=written.append)
    photo = front.uploads / ("0" * 32 + ".img")
    photo.write_bytes(b"jpeg")
    front.coordinator = Handle(get=Flaky(0, {"meta": {"image": f"uploads/{photo.name}"}}), delete=Flaky(0, 0))
    assert asyncio.run(front.delete_item(None, "sku-1")) == {"deleted": "sku-1"}
    assert not photo.exists() and written == ["delete"]
    front.coordinator = Handle(get=Flaky(1, None, error=lambda: NotFound("no item with id 'sku-2'")),
                               delete=Flaky(0, 0))
    with pytest.raises(HttpError) as gone:
        asyncio.run(front.delete_item(None, "sku-2"))
    assert gone.value.status == 404 and front.coordinator.delete.calls == 1 and written == ["delete"]
