"""GET /health's verdict (cluster/health.py) over stand-in shard clients; the real
cluster's `ok` is checked in test_rest.py."""
import asyncio

from cluster.health import cluster_health
from shards.errors import ShardUnavailable


class Answers:
    async def ready(self):
        return {"items": 3}


class Fails:
    async def ready(self):
        raise ShardUnavailable("shard-001", "its actor is not running")


class Hangs:
    async def ready(self):
        await asyncio.sleep(60)


async def fine():
    return None


async def coordinator_gone():
    raise RuntimeError("ActorDiedError: the coordinator died\nits last words")


async def coordinator_hangs():
    await asyncio.sleep(60)


def health(check, clients):
    return asyncio.run(cluster_health(check, lambda: clients, 0.2))


def test_every_part_answering_is_ok():
    assert health(fine(), {"shard-000": Answers(), "shard-001": Answers()}) == (
        200, {"status": "ok", "shards": 2, "answering": 2, "unavailable": {}, "coordinator": "ok"})


def test_a_missing_shard_is_degraded_and_named_with_its_reason():
    code, body = health(fine(), {"shard-000": Answers(), "shard-001": Fails(), "shard-002": Hangs()})
    assert code == 200 and body["status"] == "degraded" and body["answering"] == 1
    assert body["unavailable"] == {"shard-001": "its actor is not running", "shard-002": "no answer within 0.2 s"}


def test_a_coordinator_that_does_not_answer_is_degraded_while_the_shards_answer():
    code, body = health(coordinator_gone(), {"shard-000": Answers()})
    assert (code, body["status"], body["coordinator"]) == (200, "degraded", "its last words")
    code, body = health(coordinator_hangs(), {"shard-000": Answers()})
    assert (code, body["status"], body["coordinator"]) == (200, "degraded", "no answer")


def test_no_shard_answering_is_down():
    assert health(fine(), {"shard-000": Fails()})[0] == 503
    assert health(coordinator_gone(), {}) == (
        503, {"status": "down", "shards": 0, "answering": 0, "unavailable": {}, "coordinator": "its last words"})
