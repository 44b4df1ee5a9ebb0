"""`shopguide bench startup`: seconds from launching `shopguide worker` until it consumes.

Each run launches a worker under a new app id (a new consumer group) on topics that already
hold one click, and times two moments from the launch: /metrics answers (imports done, web
server up) and the click is consumed (group joined, partitions assigned, the event applied). No
Triton is needed: the worker answers from popularity. `--shopguide` runs another install's command, so
two installs are compared on the same broker.
"""
from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from shopguide.config import Settings

MOMENTS = ("metrics", "consumed")


def run_startup_bench(settings: Settings, runs: int, shopguide: str | None, bootstrap_given: bool) -> list[dict]:
    from streams.broker import bench_broker
    from streams.events import Event
    from streams.replay import produce
    from streams.topics import delete_topics, ensure_topics, own_pipeline

    with tempfile.TemporaryDirectory(prefix="shopguide-bench-") as home, \
            bench_broker(settings, Path(home), bootstrap_given) as settings:
        prefix = f"bench-startup-{uuid.uuid4().hex[:8]}"
        settings = dataclasses.replace(own_pipeline(settings, prefix), home=Path(home))
        ensure_topics(settings)
        produce(settings, [Event("click", "u1", "s1", time.time(), items=("i1",))], progress=False)
        try:
            return [_launch(settings, f"{prefix}-{n}", Path(home) / f"worker-{n}.log", shopguide) for n in range(runs)]
        finally:
            if bootstrap_given:
                delete_topics(settings, prefix)


def _launch(settings: Settings, app_id: str, log: Path, shopguide: str | None) -> dict:
    from shopguide.process import free_port
    from streams.worker_process import WorkerProcess, wait_for

    settings = dataclasses.replace(settings, worker_id=app_id, worker_port=free_port())
    command = {"executable": shopguide, "command": ("worker",)} if shopguide else {}
    started = time.monotonic()
    worker = WorkerProcess(settings, log, **command)
    seen: dict[str, float] = {}

    def reached() -> bool:
        samples = worker.samples()
        if samples:
            seen.setdefault("metrics", time.monotonic() - started)
        if sum(s.value for s in samples if s.name == "shopguide_events_consumed_total") >= 1:
            seen.setdefault("consumed", time.monotonic() - started)
        return len(seen) == len(MOMENTS)

    try:
        wait_for(lambda: reached() or worker.check_alive(), 120, "the worker consuming", poll_s=0.05)
    finally:
        worker.stop()
    return seen


def median(results: list[dict]) -> dict:
    return {moment: statistics.median(r[moment] for r in results) for moment in MOMENTS}


def line(seconds: dict) -> str:
    return "   ".join(f"{moment} {seconds[moment]:.2f} s" for moment in MOMENTS)
