"""The parts' own capacities, measured in the `bench e2e` run beside the pipeline, so its rates can
be given as ratios that hold from one machine to another: the Faust pass-through agent (events/s
on the run's broker, streams/bench_stream.py) and Triton (users/s of the served model over the
histories the run's own events build, serving/bench_triton.py).
"""
from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from shopguide.config import Settings

TRITON_POOL = 32  # distinct micro-batches the Triton measurement cycles through


def passthrough_rate(settings: Settings, events: int, passes: int = 2, as_worker: bool = False,
                     label: str = "") -> float:
    """Events/s of the bare Faust agent over `events` synthetic events on topics of its own (named
    under the run's prefix and `label`, so the run's clean-up deletes them): the fastest of
    `passes`. The first pass meets a broker just started (its JIT cold): four passes in a row on
    this 2-core machine gave 3,116, 3,835, 4,135 and 3,575 events/s, while the pipeline's stages
    run on a warm one. `as_worker`: the agent takes its messages from the consumer as the session
    worker does."""
    from streams.bench_stream import measure_passthrough
    from streams.topics import own_pipeline

    variant = "-as-worker" if as_worker else ""
    return max(measure_passthrough(own_pipeline(settings, f"{settings.worker_id}-passthrough{variant}{label}{n or ''}"),
                                   events, as_worker) for n in range(passes))


def histories(events: list[tuple], length: int) -> list[tuple]:
    """Each history the worker would send Triton for `events` ((user, item, query); item None: a
    search), in order: the user's newest `length` items after each event that has some."""
    held: dict = defaultdict(tuple)
    seen = []
    for user, item, _ in events:
        if item is not None:
            held[user] = (held[user] + (item,))[-length:]
        if held[user]:
            seen.append(held[user])
    return seen


def triton_rate(settings: Settings, seen: list[tuple], batch: int, seconds: float, concurrency: int) -> dict:
    """bench triton's figures for micro-batches of `batch` histories drawn from `seen`."""
    from serving.bench_triton import measure
    from serving.client import TritonClient

    rng = random.Random(1)
    pool = [[list(map(str, h)) for h in rng.sample(seen, min(batch, len(seen)))] for _ in range(TRITON_POOL)]

    async def measured() -> dict:
        client = TritonClient(settings.triton_grpc, settings.model_name)
        try:
            await client.recommend(pool[0], timeout_s=10.0)  # connect before the clock starts
            return await measure(client, pool, seconds, concurrency)
        finally:
            await client.close()

    return asyncio.run(measured())
