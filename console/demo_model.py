"""The demo's models: a fast first one, so the first recommendation comes within minutes of a
fresh install, and a better one, the first trained further in the background while the replay
runs, then rolled out live through the normal publish path (serving/rollout.py): Triton loads it
while the first one keeps answering.

Both use `shopguide train`'s default recipe. Cheaper recipes were measured for the first (README,
"Quick start"): a smaller model does not buy more epochs in a short budget, because scoring the
whole catalogue dominates an epoch, and each scored below the default. Training goes on from the
first model's weights rather than from scratch, so every epoch the background gets (at the
lowest CPU priority, on a busy machine maybe one) adds to what the first one learnt. The better
model follows only while the first one is live, so a model published by hand is never replaced
by the demo's.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from shopguide.config import Settings

FIRST, BETTER = "demo-first", "demo-better"  # under HOME/models
MONITOR = "NDCG@20"  # what training keeps the best weights by (trainer/train.py)


def first_model(settings: Settings, data: Path, minutes: float, catalogue: Path | None) -> None:
    """Publish the fast first model when the repository has none (trained now if needed, with the
    catalogue's text tower when there is one)."""
    from console.stack import ensure_model

    ensure_model(settings, data, minutes, FIRST, catalogue)


def first_is_live(settings: Settings) -> bool:
    """Whether Triton's live version is the demo's first model (read from its export.json)."""
    from serving.repository import ModelRepository, export_meta

    models = ModelRepository.from_settings(settings)
    live = models.live()
    first = settings.home / "models" / FIRST / "checkpoint.pt"
    return live is not None and Path(export_meta(models.model_dir / str(live)).get("source", "")) == first


class BetterModel:
    """Trains the first model further in a process of its own at the lowest CPU priority (the
    pipeline keeps its cores), and publishes the result when validation improved."""

    def __init__(self, settings: Settings, data: Path, minutes: float):
        self.settings = settings
        self.out = settings.home / "models" / BETTER
        self.log = self.out / "train.log"
        context = multiprocessing.get_context("spawn")
        self.result = context.Queue()
        self.process = context.Process(target=_train, args=(data, minutes, settings.home / "models", self.result))
        self.thread = threading.Thread(target=self._publish_when_trained, daemon=True)
        self.published: tuple[int, float] | None = None  # (version, time.time() it served from)
        self.outcome = ""

    def start(self) -> "BetterModel":
        self.out.mkdir(parents=True, exist_ok=True)
        print(f"training a better model in the background (log {self.log})")
        self.process.start()
        self.thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
        self.process.join(10)
        self.thread.join(5)

    def _publish_when_trained(self) -> None:
        from serving.rollout import publish
        from shopguide.errors import UserError

        self.process.join()
        if self.process.exitcode != 0:
            self.outcome = f"the better model's training stopped (exit {self.process.exitcode}; log {self.log})"
            return
        trained = self.result.get()
        scores = f"validation {MONITOR} {trained['first']:.4f} -> {trained['better']:.4f}"
        if trained["better"] <= trained["first"]:
            self.outcome = f"further training did not improve the first model ({scores}): nothing published"
            return
        try:
            version, serving = publish(self.settings, self.out / "export")
        except UserError as exc:
            self.outcome = f"the better model was not published: {exc}"
            return
        self.published = (version, time.time())
        self.outcome = (f"model v{version} ({trained['epochs']} more epochs; {scores}) published and served by "
                        f"Triton (v{serving}) while the replay ran")
        print(f"\n{self.outcome}")


def _train(data: Path, minutes: float, models: Path, result) -> None:
    """In the background process: train the first model further and export it if validation
    improved (training saves a checkpoint only then). Output goes to the log, not the terminal."""
    import contextlib
    import os

    import torch

    from trainer import data as training_data
    from trainer.checkpoint import Checkpoint
    from trainer.config import TrainConfig
    from trainer.export import export
    from trainer.train import train

    os.nice(19)
    torch.set_num_threads(2)
    out = models / BETTER
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        checkpoint = Checkpoint.load(models / FIRST / "checkpoint.pt")
        first, epochs = checkpoint.metrics.get("valid", {}).get(MONITOR, 0.0), len(checkpoint.history)
        split = training_data.leave_one_out(training_data.load(data, checkpoint.index)[1])
        (out / "checkpoint.pt").unlink(missing_ok=True)
        train(checkpoint, split, TrainConfig(max_minutes=minutes), out / "checkpoint.pt", progress=False)
        better = checkpoint.metrics["valid"][MONITOR] if (out / "checkpoint.pt").exists() else first
        if better > first:
            export(out / "checkpoint.pt", out / "export")
        print(f"{len(checkpoint.history) - epochs} more epochs; validation {MONITOR} {first:.4f} -> {better:.4f}", flush=True)
    result.put({"first": first, "better": better, "epochs": len(checkpoint.history) - epochs})
