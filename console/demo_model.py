"""The demo's models: a fast first one, so the first recommendation comes within minutes of a
fresh install, and a better one trained in the background while the replay runs, then rolled
out live through the normal publish path (serving/rollout.py): Triton loads it while the first
one keeps answering.

Both are `shopguide train`'s default recipe; the better one trains longer. Cheaper recipes were
measured for the first (README, "Quick start"): a smaller model does not buy more epochs in a
short budget, because scoring the whole catalogue dominates an epoch, and each scored below the
default. The better model follows only while the first one is live, so a model published by
hand is never replaced by the demo's.
"""
from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

from shopguide.config import Settings

FIRST, BETTER = "demo-first", "demo-better"  # under HOME/models
MONITOR = "NDCG@20"  # what training keeps the best weights by (trainer/train.py)


def first_model(settings: Settings, data: Path, minutes: float) -> None:
    """Publish the fast first model when the repository has none (trained now if needed)."""
    from console.stack import ensure_model

    ensure_model(settings, data, minutes, FIRST)


def first_is_live(settings: Settings) -> bool:
    """Whether Triton's live version is the demo's first model (read from its export.json)."""
    from serving.repository import ModelRepository, export_meta

    models = ModelRepository.from_settings(settings)
    live = models.live()
    first = settings.home / "models" / FIRST / "checkpoint.pt"
    return live is not None and Path(export_meta(models.model_dir / str(live)).get("source", "")) == first


class BetterModel:
    """Trains in a process of its own at the lowest CPU priority (the pipeline keeps its cores),
    exports, and publishes the result when it beats the first model on validation."""

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
        first, better = self.result.get()
        scores = f"validation {MONITOR} {better['valid'][MONITOR]:.4f} vs the first model's {first['valid'][MONITOR]:.4f}"
        if better["valid"][MONITOR] <= first["valid"][MONITOR]:
            self.outcome = f"the better model was not better ({scores}): not published"
            return
        try:
            version, serving = publish(self.settings, self.out / "export")
        except UserError as exc:
            self.outcome = f"the better model was not published: {exc}"
            return
        self.published = (version, time.time())
        self.outcome = (f"model v{version} ({better['epochs']} epochs; {scores}) published and served by Triton "
                        f"(v{serving}) while the replay ran")
        print(f"\n{self.outcome}")


def _train(data: Path, minutes: float, models: Path, result) -> None:
    """In the background process: train the default recipe, export it, hand back both models'
    metrics. Output goes to the log, not the demo's terminal."""
    import contextlib
    import os

    import torch

    from trainer.checkpoint import Checkpoint
    from trainer.config import TrainConfig
    from trainer.export import export
    from trainer.train import fit

    os.nice(19)
    torch.set_num_threads(2)
    out = models / BETTER
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        better = fit(data, TrainConfig(max_minutes=minutes), out=out, progress=False)
        export(out / "checkpoint.pt", out / "export")
        first = Checkpoint.load(models / FIRST / "checkpoint.pt")
        print(f"{len(better.history)} epochs; test {better.metrics['test']}", flush=True)
    # A model that never beat its random start has no validation metrics: it scores 0.
    result.put(({"valid": first.metrics.get("valid", {MONITOR: 0.0})},
                {"valid": better.metrics.get("valid", {MONITOR: 0.0}), "epochs": len(better.history)}))
