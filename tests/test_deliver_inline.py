"""The consumer's per-message hand-over without tasks (`faust_internals.deliver_inline`): a delivery
that does not block finishes at once, one that blocks still races the flow's suspension as in
Faust's `wait_first`. A bare mode Service stands in for the consumer (the method uses only its
stopped and crashed events); no broker."""
import asyncio

import pytest
from faust.transport.consumer import Consumer
from mode import Service

from streams import faust_internals

faust_internals.deliver_inline()


def wait_first(*coros, timeout=None):
    return Consumer.wait_first(Service(), *coros, timeout=timeout)


async def put(queue: asyncio.Queue, value, log: list):
    try:
        await queue.put(value)
        log.append("put")
        return value
    except asyncio.CancelledError:
        log.append("cancelled")
        raise


def test_a_delivery_that_does_not_block_finishes_at_once_and_the_others_never_run():
    async def go():
        queue, log, suspended = asyncio.Queue(maxsize=1), [], asyncio.Event()
        delivery, suspension = put(queue, "a", log), suspended.wait()
        results = await wait_first(delivery, suspension)
        return results, delivery, suspension, log, queue.qsize()

    results, delivery, suspension, log, queued = asyncio.run(go())
    assert results.done == [delivery] and results.results == ["a"] and not results.stopped
    assert log == ["put"] and queued == 1
    assert suspension.cr_frame is None  # closed unstarted: no "never awaited" warning


def test_a_delivery_that_blocks_goes_on_once_there_is_room():
    async def go():
        queue, log, suspended = asyncio.Queue(maxsize=1), [], asyncio.Event()
        queue.put_nowait("full")
        asyncio.get_running_loop().call_later(0.05, queue.get_nowait)
        results = await wait_first(put(queue, "b", log), suspended.wait())
        return results, log, queue.get_nowait()

    results, log, queued = asyncio.run(go())
    assert results.results == ["b"] and not results.stopped
    assert log == ["put"] and queued == "b"


def test_a_blocked_delivery_is_cancelled_when_the_flow_is_suspended_first():
    async def go():
        queue, log, suspended = asyncio.Queue(maxsize=1), [], asyncio.Event()
        queue.put_nowait("full")
        suspension = suspended.wait()
        asyncio.get_running_loop().call_later(0.05, suspended.set)
        results = await wait_first(put(queue, "c", log), suspension)
        await asyncio.sleep(0)  # the cancelled delivery's task runs its handler
        return results, suspension, log, queue.qsize()

    results, suspension, log, queued = asyncio.run(go())
    assert results.done == [suspension] and results.results == [True]
    assert log == ["cancelled"] and queued == 1


def test_an_error_in_a_delivery_is_raised_and_the_others_never_run():
    async def failing():
        raise ValueError("undecodable")

    async def go():
        suspension = asyncio.Event().wait()
        with pytest.raises(ValueError, match="undecodable"):
            await wait_first(failing(), suspension)
        return suspension

    assert asyncio.run(go()).cr_frame is None


def test_a_wait_with_a_timeout_is_faust_s_own():
    async def go():
        return await wait_first(asyncio.Event().wait(), timeout=0.05)

    assert asyncio.run(go()) == ([], [], True)  # Faust's answer when nothing won in time
