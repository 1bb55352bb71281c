"""run_to_end: a write a client started finishes as a whole even if the client hangs up
(the Ray side, `submit`, is tested with real actors in test_cancelled_requests.py)."""
import asyncio
import logging

import pytest

from cluster.uncancelled import run_to_end


async def settle():
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_cancelled_caller_leaves_the_write_running_to_its_end():
    async def main():
        started, release, done = asyncio.Event(), asyncio.Event(), []

        async def write():
            started.set()
            await release.wait()          # the upsert, say
            done.append("indexed")
            await asyncio.sleep(0)
            done.append("old photo removed")

        caller = asyncio.create_task(run_to_end(write()))
        await started.wait()
        caller.cancel()                   # the client hung up: Serve cancels the handler
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert done == []
        release.set()
        await settle()
        return done
    assert asyncio.run(main()) == ["indexed", "old photo removed"]


def test_a_caller_still_there_gets_the_result_or_the_error():
    async def fine():
        return 3

    async def refused():
        raise ValueError("bad id")

    async def main():
        assert await run_to_end(fine()) == 3
        with pytest.raises(ValueError, match="bad id"):
            await run_to_end(refused())
    asyncio.run(main())


def test_an_error_after_the_caller_has_gone_is_logged(caplog):
    async def main():
        release = asyncio.Event()

        async def write():
            await release.wait()
            raise OSError("disk full")

        caller = asyncio.create_task(run_to_end(write()))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        release.set()
        await settle()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        asyncio.run(main())
    assert "a write whose client had gone failed: OSError('disk full')" in caplog.text
