"""`shopguide finetune`: fine-tune the live model on the events since the last run, publish if
not worse; exactly once per event, whatever step a crash or kill interrupts.

One run: load the live version (the newest verified one, serving/repository.py) from its
checkpoint.pt; take a window of events from the run log's position up to where the workers
have folded events into sessions, at most --max-events (trainer/eventlog.py), and each user's
history from the session changelog (trainer/histories.py); fine-tune (trainer/finetune.py); on
success export and publish (serving/rollout.py: Triton probes the version before it gets a
number, the old version serves until the new one is ready).

The run's line in the run log is its commit: a published or rejected run (or a skipped one
whose window --max-events filled) moves the position past its window; a failed or skipped one
leaves it, so its events come again. A published version carries its run's record, so a kill
between the publish and the line is recorded at the next start; the Kafka offsets only mirror
the position afterwards. Each process start first tidies what a killed run left (`recover`).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.process import kill_point
from trainer.finetune import fine_tune, user_sequences
from trainer.finetune_config import MAX_EVENTS, Every, FinetuneConfig
from trainer.runs import RECORD, RunLog, RunRecord, describe, observe, unrecorded

CHECKPOINT = "checkpoint.pt"
LAG_POLL_S = 2.0


@dataclass
class JobOptions:
    group: str = "shopguide-finetune"
    config: FinetuneConfig = FinetuneConfig()
    every: Every = Every()
    runs: int | None = None  # stop after this many runs (None: once, or forever with --every)
    int8: bool = False
    progress: bool = True
    max_events: int = MAX_EVENTS


def state_dir(settings: Settings) -> Path:
    return Path(settings.home) / "finetune"


def live_checkpoint(settings: Settings):
    """(live version, its Checkpoint): the version's own checkpoint.pt, else the checkpoint its
    export was made from (versions published by hand with `shopguide model publish`)."""
    from serving.repository import ModelRepository
    from trainer.checkpoint import Checkpoint

    models = ModelRepository.from_settings(settings)
    version = models.live()
    if version is None:
        raise UserError(f"no model version in {models.model_dir} to fine-tune (shopguide model publish EXPORT_DIR)")
    return version, Checkpoint.load(checkpoint_path(models, version))


def checkpoint_path(models, version: int) -> Path:
    """Where `version` of `models` (a serving.repository.ModelRepository) has its checkpoint."""
    from serving.repository import export_meta

    version_dir = models.model_dir / str(version)
    path = version_dir / CHECKPOINT
    if not path.exists():
        path = Path(export_meta(version_dir).get("source") or path)
    if not path.exists():
        raise UserError(f"version {version} in {models.model_dir} carries no {CHECKPOINT} and names no source checkpoint")
    return path


class FinetuneJob:
    def __init__(self, settings: Settings, options: JobOptions, metrics=None):
        from trainer.eventlog import EventLog

        self.settings = settings
        self.options = options
        self.metrics = metrics
        self.log = EventLog(settings, options.group)
        self.runs = RunLog(state_dir(settings) / "runs.jsonl")

    def run(self) -> list[RunRecord]:
        """Once, or periodically until `options.runs` runs (forever when None)."""
        self.recover()
        every, records = self.options.every, []
        periodic = every.events is not None or every.seconds is not None
        while True:
            if every.events is not None:
                self._wait_for_events(every.events)
            records.append(self.run_once())
            if not periodic or (self.options.runs is not None and len(records) >= self.options.runs):
                return records
            if every.seconds is not None:
                time.sleep(every.seconds)

    def recover(self) -> None:
        """What a killed run left: scratch exports and staging directories removed, Triton
        serving the live version, a published version's run recorded."""
        from serving.repository import ModelRepository
        from serving.rollout import recover

        notes = recover(self.settings)
        for scratch in sorted(state_dir(self.settings).glob("tmp*")):
            shutil.rmtree(scratch, ignore_errors=True)
            notes.append(f"removed {scratch.name}")
        for record in unrecorded(ModelRepository.from_settings(self.settings), {r.run for r in self.runs.read()}):
            self.runs.append(record)
            notes.append(f"recorded the run of version {record.version} ({record.outcome})")
        for note in notes:
            print(f"recovered: {note}", flush=True)

    def run_once(self) -> RunRecord:
        started, clock = time.time(), time.monotonic()
        record = RunRecord(started, 0.0, "failed", 0, run=uuid.uuid4().hex)
        try:
            self._run(record)
        except Exception as exc:  # recorded and counted; the live model keeps serving
            record.outcome, record.committed, record.error = "failed", False, f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, UserError):
                traceback.print_exc()
        record.duration_s = time.monotonic() - clock
        self.runs.append(record)
        kill_point("saved")
        if record.committed:
            self._mirror(record)
        print(describe(record), flush=True)
        if self.metrics is not None:
            observe(self.metrics, record)
        return record

    def close(self) -> None:
        self.log.close()

    def _run(self, record: RunRecord) -> None:
        from tqdm import tqdm

        from trainer.histories import fold_frontier, histories, read_snapshot

        record.live_version, live = live_checkpoint(self.settings)
        starts = self.log.starts(self.runs.position())
        folded = self.log.folded()  # before the snapshot: it then holds every event below
        snapshot = read_snapshot(self.settings)
        with tqdm(desc="read events", unit=" events", disable=not self.options.progress) as bar:
            window = self.log.read(starts, fold_frontier(starts, folded, snapshot), self.options.max_events, bar)
        record.window, record.events, record.rejected = window.spans(), len(window.events), window.rejected
        new = user_sequences(read.event for read in window.events)
        result = fine_tune(live, histories(snapshot, window, live.model.args.max_len), new,
                           self.options.config, self.options.progress, self._catalogue(live))
        record.outcome, record.users, record.held_out = result.outcome, result.users, result.held_out
        record.new_items, record.candidate, record.live = result.new_items, result.candidate_metrics, result.live_metrics
        record.committed = result.outcome != "skipped" or window.full  # a full window would not grow
        if result.outcome == "published":
            record.version = self._publish(result.candidate, record)
            kill_point("published")

    def _catalogue(self, live) -> dict | None:
        """Each listed item's content, for a model with a text tower (trainer/finetune.py)."""
        if live.model.text is None:
            return None
        from streams.catalog_reader import listed_items
        from trainer.content import catalogue_fields

        return {item: catalogue_fields(record) for item, record in listed_items(self.settings, self.options.progress).items()}

    def _publish(self, candidate, record: RunRecord) -> int:
        from serving.rollout import publish
        from trainer.export import export

        with tempfile.TemporaryDirectory(dir=self._ensure_state_dir()) as tmp:
            out = export(candidate, Path(tmp) / "export")
            candidate.save(out / CHECKPOINT)  # the next run fine-tunes from this version
            (out / RECORD).write_text(json.dumps(dataclasses.asdict(record)))
            version, _ = publish(self.settings, out, int8=self.options.int8)
        return version

    def _mirror(self, record: RunRecord) -> None:
        """The position in the consumer group too, for lag monitors; the run log stays the truth."""
        from kafka.errors import KafkaError

        try:
            self.log.commit({at: end for at, (_, end) in record.window.items()})
        except KafkaError as exc:
            print(f"offsets not mirrored to Kafka ({exc}); the run log holds the position", flush=True)

    def _ensure_state_dir(self) -> Path:
        path = state_dir(self.settings)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _wait_for_events(self, count: int) -> None:
        while self.log.lag(self.runs.position()) < count:
            time.sleep(LAG_POLL_S)
