"""`shopguide bench triton`: throughput and latency of the async client against a running Triton."""
from __future__ import annotations

import asyncio
import json
import random
import time

from serving.client import ServingError, TritonClient, server_state
from serving.repository import ModelRepository
from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.stats import percentile


def sample_sessions(items: list[str], users: int, max_len: int, rng: random.Random) -> list[list[str]]:
    return [rng.sample(items, rng.randint(1, min(max_len, len(items)))) for _ in range(users)]


async def measure(client: TritonClient, pool: list[list[list[str]]], seconds: float, concurrency: int) -> dict:
    """Calls of the micro-batches in `pool` (round robin), `concurrency` in flight, for `seconds`."""
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds

    async def caller(n: int) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                await client.recommend(pool[(n + len(latencies)) % len(pool)], timeout_s=5.0)
                latencies.append(time.perf_counter() - sent)
            except ServingError:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    elapsed = time.perf_counter() - started
    batch = sum(map(len, pool)) / len(pool)
    return {"batch": batch, "requests_per_s": len(latencies) / elapsed,
            "users_per_s": len(latencies) * batch / elapsed, "errors": errors,
            "p50_ms": 1000 * percentile(latencies, 0.5), "p99_ms": 1000 * percentile(latencies, 0.99)}


async def _bench(settings: Settings, batches: list[int], seconds: float, concurrency: int, items, max_len) -> None:
    client = TritonClient(settings.triton_grpc, settings.model_name)
    try:
        await client.recommend([items[:1]], timeout_s=10.0)  # connect before the clock starts
        print(f"{'batch':>6} {'requests/s':>11} {'users/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for batch in batches:
            rng = random.Random(batch)
            pool = [sample_sessions(items, batch, max_len, rng) for _ in range(16)]
            row = await measure(client, pool, seconds, concurrency)
            print(f"{row['batch']:>6.0f} {row['requests_per_s']:>11.1f} {row['users_per_s']:>9.0f} "
                  f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['errors']:>7}")
    finally:
        await client.close()


def run(settings: Settings, batches: list[int], seconds: float, concurrency: int) -> None:
    state = server_state(settings.triton_grpc, settings.model_name)
    if not state.serving:
        raise UserError(f"no version of {settings.model_name} serves at {settings.triton_grpc}; "
                        f"`shopguide triton start` and `shopguide model publish` first")
    version_dir = ModelRepository.from_settings(settings).model_dir / str(state.serving[-1])
    try:
        items = json.loads((version_dir / "item_index.json").read_text())
    except FileNotFoundError:
        raise UserError(f"{version_dir} is not here: point --model-repository at the one Triton serves") from None
    print(f"{settings.model_name} version {state.serving[-1]} at {settings.triton_grpc}, "
          f"{concurrency} calls in flight, {seconds:.0f} s per batch size")
    asyncio.run(_bench(settings, batches, seconds, concurrency, [str(i) for i in items], settings.session_length))
