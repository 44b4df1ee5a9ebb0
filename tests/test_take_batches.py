"""The agent's batching (`faust_internals.take_batches`): a batch waits `within` from its first
event, or goes at once when full, and events that arrive while a batch is processed are not held
for a further `within` after it (Faust's take_events holds them). Faust's in-memory test channel,
no broker."""
import asyncio
import time

import faust

from streams import faust_internals

WITHIN_S = 1.0
MAX = 4


def handed_over(script, processing_s: float = 0.0) -> list[tuple[float, list[bytes]]]:
    """(seconds since the script began, values) per batch handed over while `script(put, batches)`
    runs; the first batch takes `processing_s` to process."""
    app = faust.App(f"take-{time.monotonic_ns()}", broker="kafka://127.0.0.1:1", store="memory://")
    batches = []

    @app.agent(app.topic("events", value_serializer="raw"))
    async def agent(stream):
        async for batch in faust_internals.take_batches(stream, MAX, WITHIN_S):
            batches.append((time.monotonic(), [event.value for event in batch]))
            if len(batches) == 1:
                await asyncio.sleep(processing_s)

    async def go():
        async with agent.test_context() as context:
            start = time.monotonic()
            await script(context.put, batches)
            await asyncio.sleep(processing_s + 2 * WITHIN_S)
        return [(at - start, values) for at, values in batches]

    return asyncio.run(go())


async def first_batch(batches) -> None:
    while not batches:
        await asyncio.sleep(0.01)


def test_a_batch_waits_from_its_first_event_then_goes():
    async def script(put, batches):
        await put(b"a")
        await asyncio.sleep(WITHIN_S / 4)
        await put(b"b")

    (at, values), = handed_over(script)
    assert values == [b"a", b"b"]
    assert at >= WITHIN_S * 0.95


def test_a_full_batch_goes_at_once_and_never_holds_more():
    async def script(put, batches):
        for n in range(MAX + 2):
            await put(bytes([n]))

    batches = handed_over(script)
    assert [len(values) for _, values in batches] == [MAX, 2]
    assert batches[0][0] < 0.9 * WITHIN_S  # before the wait is out (a busy CI machine once stalled it 0.58 s)


def test_events_that_came_during_a_batch_go_when_it_ends():
    processing_s = 1.5 * WITHIN_S  # longer than the wait: the next batch is due when this one ends

    async def script(put, batches):
        await put(b"a")
        await first_batch(batches)
        await asyncio.sleep(WITHIN_S / 4)
        await put(b"b")

    (first, _), (second, values) = handed_over(script, processing_s)
    assert values == [b"b"]
    assert second - (first + processing_s) < WITHIN_S / 2  # Faust's take_events: a whole WITHIN_S more
