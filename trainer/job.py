"""`shopguide finetune`: read new events from Kafka, fine-tune the live model, publish if not worse.

One run: load the newest version in the model repository (its checkpoint.pt), read the events
since the last committed offsets, fine-tune (trainer/finetune.py), and on success export, publish
and have Triton load the new version (serving/rollout.py: the old version serves until the new
one is ready). Offsets are committed and the users' histories saved only after a publish or a
rejection; a skipped or failed run leaves them, so its events are read again next time.
"""
from __future__ import annotations

import json
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from shopguide.config import Settings
from shopguide.errors import UserError
from trainer.finetune import Histories, fine_tune, user_sequences
from trainer.finetune_config import Every, FinetuneConfig
from trainer.runs import RunLog, RunRecord, describe, observe

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


def state_dir(settings: Settings) -> Path:
    return Path(settings.home) / "finetune"


def live_checkpoint(settings: Settings):
    """(newest version, its Checkpoint): the version's own checkpoint.pt, else the checkpoint its
    export was made from (versions published by hand with `shopguide model publish`)."""
    from serving.repository import ModelRepository, export_meta
    from trainer.checkpoint import Checkpoint

    models = ModelRepository.from_settings(settings)
    version = models.latest()
    if version is None:
        raise UserError(f"no model version in {models.model_dir} to fine-tune (shopguide model publish EXPORT_DIR)")
    version_dir = models.model_dir / str(version)
    path = version_dir / CHECKPOINT
    if not path.exists():
        path = Path(export_meta(version_dir).get("source") or path)
    if not path.exists():
        raise UserError(f"version {version} in {models.model_dir} carries no {CHECKPOINT} and names no source checkpoint")
    return version, Checkpoint.load(path)


class FinetuneJob:
    def __init__(self, settings: Settings, options: JobOptions, metrics=None):
        from trainer.eventlog import EventLog

        self.settings = settings
        self.options = options
        self.metrics = metrics
        self.log = EventLog(settings, options.group)
        self.runs = RunLog(state_dir(settings) / "runs.jsonl")
        self.histories_file = state_dir(settings) / "histories.json"

    def run(self) -> list[RunRecord]:
        """Once, or periodically until `options.runs` runs (forever when None)."""
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

    def run_once(self) -> RunRecord:
        started, clock = time.time(), time.monotonic()
        record = RunRecord(started, 0.0, "failed", 0)
        try:
            self._run(record)
        except Exception as exc:  # recorded and counted; the live model keeps serving
            record.outcome, record.error = "failed", f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, UserError):
                traceback.print_exc()
        record.duration_s = time.monotonic() - clock
        self.runs.append(record)
        print(describe(record), flush=True)
        if self.metrics is not None:
            observe(self.metrics, record)
        return record

    def close(self) -> None:
        self.log.close()

    def _run(self, record: RunRecord) -> None:
        from tqdm import tqdm

        record.live_version, live = live_checkpoint(self.settings)
        with tqdm(desc="read events", unit=" events", disable=not self.options.progress) as bar:
            batch = self.log.read(bar)
        record.events = len(batch.events)
        new = user_sequences(batch.events)
        histories = self._histories(live.model.args.max_len)
        result = fine_tune(live, histories, new, self.options.config, self.options.progress)
        record.outcome, record.users, record.held_out = result.outcome, result.users, result.held_out
        record.new_items, record.candidate, record.live = result.new_items, result.candidate_metrics, result.live_metrics
        if result.outcome == "skipped":
            return
        if result.outcome == "published":
            record.version = self._publish(result.candidate)
        histories.update(new)
        self._save_histories(histories)
        self.log.commit(batch)

    def _publish(self, candidate) -> int:
        from trainer.export import export
        from serving.rollout import publish

        with tempfile.TemporaryDirectory(dir=self._ensure_state_dir()) as tmp:
            out = export(candidate, Path(tmp) / "export")
            candidate.save(out / CHECKPOINT)  # the next run fine-tunes from this version
            version, _ = publish(self.settings, out, int8=self.options.int8)
        return version

    def _histories(self, max_len: int) -> Histories:
        items = json.loads(self.histories_file.read_text()) if self.histories_file.exists() else {}
        return Histories(items, max_len=max_len)

    def _save_histories(self, histories: Histories) -> None:
        self._ensure_state_dir()
        tmp = self.histories_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(histories.items))
        tmp.replace(self.histories_file)

    def _ensure_state_dir(self) -> Path:
        path = state_dir(self.settings)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _wait_for_events(self, count: int) -> None:
        while self.log.lag() < count:
            time.sleep(LAG_POLL_S)

