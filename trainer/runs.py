"""The record of each fine-tune run: one JSON line in `<home>/finetune/runs.jsonl`, and the
Prometheus gauges of shopguide.metrics.FinetuneMetrics.

The run log is the job's position: a committed run (published, rejected, or skipped on a window
that --max-events filled) moved it past its window, per source partition. A published run's
record also travels inside its model version (`finetune.json`), so a run killed after the
publish and before its line was written is recorded at the next start (`unrecorded`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from shopguide.metrics import FinetuneMetrics
from trainer.train import MONITOR

RECORD = "finetune.json"  # a published run's record, inside its model version


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
    run: str = ""  # a unique id
    window: dict[str, list[int]] = field(default_factory=dict)  # "topic:partition" -> [start, end) read
    rejected: int = 0  # records read that the worker dead-letters
    committed: bool = False  # the position moved past the window: its events are done with


class RunLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: RunRecord) -> None:
        """One line, written in one call and synced: a kill leaves it whole or cut short."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(dataclasses.asdict(record)) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # after a line a kill cut short
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> list[RunRecord]:
        if not self.path.exists():
            return []
        return [record for line in self.path.read_text().splitlines() if (record := _parse(line))]

    def position(self) -> dict[str, int]:
        """Per source partition, the offset after the last event of a committed run."""
        position: dict[str, int] = {}
        for record in self.read():
            if record.committed:
                position.update({at: end for at, (_, end) in record.window.items()})
        return position


def unrecorded(models, known: set[str]) -> list[RunRecord]:
    """The runs whose versions are in the repository (`models`, a serving.repository.ModelRepository)
    but not in the log: numbered, published; retired before a line was written, failed."""
    from serving.repository import RETIRED

    directories = [models.model_dir / str(v) for v in models.versions()]
    directories += [models.model_dir / RETIRED / str(v) for v in models.retired()]
    found = []
    for directory in directories:
        path = directory / RECORD
        record = _parse(path.read_text()) if path.exists() else None
        if record is None or record.run in known:
            continue
        record.version = int(directory.name)
        if directory.parent.name == RETIRED:
            record.outcome, record.committed = "failed", False
            record.error = f"killed while publishing; version {record.version} was retired before it served"
        found.append(record)
    return found


def _parse(line: str) -> RunRecord | None:
    try:
        return RunRecord(**json.loads(line)) if line.strip() else None
    except (ValueError, TypeError):
        return None  # a line a kill cut short


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
        kept = "window committed: --max-events reached" if record.committed else "its events wait for the next run"
        return f"fine-tune skipped ({facts}: too few held-out users to judge); {kept}"
    verdict = f"published version {record.version}" if record.outcome == "published" else "rejected"
    return (f"fine-tune {verdict}: candidate NDCG@20 {record.candidate[MONITOR]:.4f} vs live version "
            f"{record.live_version} {record.live[MONITOR]:.4f}, HR@20 {record.candidate['HR@20']:.4f} vs "
            f"{record.live['HR@20']:.4f} ({facts}, {record.duration_s:.1f} s)")
