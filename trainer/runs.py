"""The record of each fine-tune run: one JSON line in `<home>/finetune/runs.jsonl`, and the
Prometheus gauges of shopguide.metrics.FinetuneMetrics."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from shopguide.metrics import FinetuneMetrics
from trainer.train import MONITOR


@dataclass
class RunRecord:
    started: float  # seconds since the epoch
    duration_s: float
    outcome: str  # published, rejected, skipped or failed
    events: int  # accepted events read from Kafka in this run
    users: int = 0
    held_out: int = 0
    new_items: int = 0
    live_version: int | None = None
    version: int | None = None  # the version published by this run
    candidate: dict[str, float] = field(default_factory=dict)  # metrics on the held-out slice
    live: dict[str, float] = field(default_factory=dict)
    error: str = ""


class RunLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: RunRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(dataclasses.asdict(record)) + "\n")

    def read(self) -> list[RunRecord]:
        if not self.path.exists():
            return []
        return [RunRecord(**json.loads(line)) for line in self.path.read_text().splitlines() if line.strip()]


def observe(metrics: FinetuneMetrics, record: RunRecord) -> None:
    metrics.runs.labels(record.outcome).inc()
    metrics.duration.set(record.duration_s)
    metrics.events_used.set(record.events)
    if MONITOR in record.candidate:
        metrics.candidate_metric.set(record.candidate[MONITOR])
        metrics.live_metric.set(record.live[MONITOR])
    if record.version is not None:
        metrics.published_version.set(record.version)
    metrics.last_run.set(record.started + record.duration_s)


def describe(record: RunRecord) -> str:
    """One line for the console."""
    facts = f"{record.events} events, {record.users} users, {record.held_out} held out, {record.new_items} new items"
    if record.outcome == "failed":
        return f"fine-tune failed after {record.duration_s:.1f} s: {record.error}"
    if record.outcome == "skipped":
        return f"fine-tune skipped ({facts}: too few held-out users to judge); offsets not committed"
    verdict = f"published version {record.version}" if record.outcome == "published" else "rejected"
    return (f"fine-tune {verdict}: candidate NDCG@20 {record.candidate[MONITOR]:.4f} vs live version "
            f"{record.live_version} {record.live[MONITOR]:.4f}, HR@20 {record.candidate['HR@20']:.4f} vs "
            f"{record.live['HR@20']:.4f} ({facts}, {record.duration_s:.1f} s)")
