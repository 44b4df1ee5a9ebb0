"""`shopguide bench online`: online hit rate of three arms over a time-ordered replay, and their cost.

The first part of time trains the static model (trainer/train.py `fit`). The rest is replayed in
time order, in micro-batches as the worker sends them: each event extends its user's history,
every arm recommends for that user at that moment, and the recommendation hits when the user's
next event is among its top k. Arms: popularity (counts updated as events arrive), the static
model, and the same model fine-tuned every N events by trainer/finetune.py `fine_tune` (the step
`shopguide finetune` runs) and re-exported when the gate passes. Models run in-process with ONNX
Runtime on the exported model.onnx, the file Triton serves; the Kafka/Triton hops are left out.
"""
from __future__ import annotations

import csv
import dataclasses
import heapq
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shopguide import datasets
from serving.repository import export_meta
from serving.wire import GRAPH_INPUT, left_pad
from trainer.finetune import Histories, fine_tune, user_sequences
from trainer.finetune_config import FinetuneConfig

KS = (10, 20)
TOP = max(KS)
ARMS = ("popularity", "static", "fine-tuned")


@dataclass
class Arm:
    hits: dict[int, list[bool]] = field(default_factory=lambda: {k: [] for k in KS})
    positions: list[int] = field(default_factory=list)  # replay position of each scored event
    inference_cpu_s: float = 0.0
    recommendations: int = 0

    def score(self, position: int, recommended: list[str], target: str) -> None:
        self.positions.append(position)
        for k in KS:
            self.hits[k].append(target in recommended[:k])

    def rate(self, k: int) -> float:
        return float(np.mean(self.hits[k])) if self.hits[k] else 0.0


class OnnxRecommender:
    """A model export run by ONNX Runtime, fed like the served model.py: unknown ids drop out,
    the newest max_len remain, left-padded."""

    def __init__(self, export_dir: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        items = json.loads((export_dir / "item_index.json").read_text())
        self.model_ids = {item: n for n, item in enumerate(items, start=1)}
        self.shop_ids = np.array([""] + items, dtype=object)
        self.max_len = export_meta(export_dir)["max_len"]

    def recommend(self, histories: list[list[str]]) -> list[list[str]]:
        rows = left_pad([[self.model_ids[i] for i in items if i in self.model_ids] for items in histories], self.max_len)
        top_ids, _ = self.session.run(None, {GRAPH_INPUT: rows})
        return [list(ids) for ids in self.shop_ids[top_ids[:, :TOP]]]


class OnlineBench:
    def __init__(self, data: Path, train_fraction: float = 0.7, every: int = 1000, train_minutes: float = 5.0,
                 config: FinetuneConfig = FinetuneConfig(max_minutes=20 / 60), batch: int = 64, threads: int = 2):
        self.data, self.train_fraction, self.every = Path(data), train_fraction, every
        self.train_minutes, self.config = train_minutes, config
        self.batch, self.threads = batch, threads

    def run(self, out: Path, work: Path | None = None) -> Path:
        """Writes online.md, online.png and online.json to `out`; the models and the training file
        to `work` (default `out`)."""
        import torch

        torch.set_num_threads(self.threads)
        work = work or out
        for directory in (out, work):
            directory.mkdir(parents=True, exist_ok=True)
        events = [e for e in datasets.read(self.data) if e.kind != "search"]
        cut = _cut_time(events, self.train_fraction)
        train, replay = [e for e in events if e.timestamp < cut], [e for e in events if e.timestamp >= cut]
        started = time.monotonic()
        static = self._train(train, work)
        facts = {"data": f"{self.data} ({len(events)} events, {len({e.user for e in events})} users, "
                         f"{len({e.item for e in events})} items)",
                 "split": f"train on the first {self.train_fraction:.0%} of time ({len(train)} events), "
                          f"replay {len(replay)} events",
                 "static model": f"{len(static.history)} epochs in {time.monotonic() - started:.0f} s, "
                                 f"{len(static.index)} items"}
        arms, finetunes = self._replay(static, train, replay, work)
        (out / "online.json").write_text(json.dumps(_summary(arms, finetunes, len(replay), facts), indent=2))
        _plot(out / "online.png", arms, finetunes, len(replay))
        return _write_markdown(out / "online.md", arms, finetunes, len(replay), facts, self)

    def _train(self, train: list, out: Path):
        from trainer.export import export
        from trainer.train import TrainConfig, fit

        path = out / "train.csv"
        with path.open("w", newline="") as f:
            csv.writer(f).writerows((e.user, e.item, e.timestamp, e.kind) for e in train)
        checkpoint = fit(path, TrainConfig(max_minutes=self.train_minutes), out=out / "static")
        export(checkpoint, out / "static" / "export", top_k=TOP)
        return checkpoint

    def _replay(self, static, train: list, replay: list, out: Path):
        from trainer.export import export
        from tqdm import tqdm

        histories = defaultdict(list, datasets.sequences(train))
        counts = Counter(e.item for e in train)
        targets = _next_items(replay)
        models = {"static": OnnxRecommender(out / "static" / "export", self.threads)}
        models["fine-tuned"] = models["static"]
        arms = {name: Arm() for name in ARMS}
        live, context = static, Histories(datasets.sequences(train), max_len=static.model.args.max_len)
        window, finetunes = [], []
        for start in tqdm(range(0, len(replay), self.batch), desc="replay", unit=" batches"):
            chunk = replay[start:start + self.batch]
            for event in chunk:
                histories[event.user].append(event.item)
            users = [e.user for e in chunk]
            self._popularity(arms["popularity"], counts, chunk, start, targets)
            for name, model in models.items():
                _recommend(arms[name], lambda: model.recommend([histories[u] for u in users]), start, targets, chunk)
            window += chunk
            if len(window) >= self.every:
                cpu = time.process_time()
                result = fine_tune(live, context, _sequences(window), self.config, progress=False)
                if result.outcome == "published":
                    live = result.candidate
                    export(live, out / "finetuned" / "export", top_k=TOP)
                    models["fine-tuned"] = OnnxRecommender(out / "finetuned" / "export", self.threads)
                if result.outcome != "skipped":
                    context.update(_sequences(window))
                    window = []
                finetunes.append({"position": start + len(chunk), "outcome": result.outcome,
                                  "cpu_s": time.process_time() - cpu, "candidate": result.candidate_metrics,
                                  "live": result.live_metrics, "new_items": result.new_items})
        return arms, finetunes

    def _popularity(self, arm: Arm, counts: Counter, chunk: list, start: int, targets: list) -> None:
        def recommend():
            for event in chunk:
                counts[event.item] += 1
            top = [item for item, _ in heapq.nlargest(TOP, counts.items(), key=lambda kv: kv[1])]
            return [top] * len(chunk)
        _recommend(arm, recommend, start, targets, chunk)


def _recommend(arm: Arm, recommend, start: int, targets: list, chunk: list) -> None:
    cpu = time.process_time()
    lists = recommend()
    arm.inference_cpu_s += time.process_time() - cpu
    arm.recommendations += len(chunk)
    for offset, recommended in enumerate(lists):
        target = targets[start + offset]
        if target is not None:
            arm.score(start + offset, recommended, target)


def _cut_time(events: list, fraction: float) -> float:
    first, last = events[0].timestamp, events[-1].timestamp
    return first + fraction * (last - first)


def _next_items(replay: list) -> list[str | None]:
    """For each replayed event, the item of the same user's next event (None for a user's last)."""
    targets: list[str | None] = [None] * len(replay)
    last_seen: dict[str, int] = {}
    for position, event in enumerate(replay):
        if event.user in last_seen:
            targets[last_seen[event.user]] = event.item
        last_seen[event.user] = position
    return targets


def _sequences(window: list) -> dict[str, list[str]]:
    """Interactions as the fine-tune step sees events off the log."""
    from streams.events import Event

    return user_sequences(Event(e.kind, e.user, e.user, e.timestamp, items=(e.item,)) for e in window)


def _cost(arms: dict[str, Arm], finetunes: list, replayed: int) -> dict[str, dict[str, float]]:
    tuning = 1000.0 * sum(f["cpu_s"] for f in finetunes) / max(replayed, 1)
    return {name: {"inference_cpu_s_per_1000_recs": 1000.0 * arm.inference_cpu_s / max(arm.recommendations, 1),
                   "finetune_cpu_s_per_1000_events": tuning if name == "fine-tuned" else 0.0}
            for name, arm in arms.items()}


def _summary(arms, finetunes, replayed, facts) -> dict:
    cost = _cost(arms, finetunes, replayed)
    return {"facts": facts, "finetunes": finetunes,
            "arms": {name: {"scored": len(arm.positions), **{f"HR@{k}": arm.rate(k) for k in KS}, **cost[name]}
                     for name, arm in arms.items()}}


def _plot(path: Path, arms: dict[str, Arm], finetunes: list, replayed: int, buckets: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (per_bucket, cumulative) = plt.subplots(1, 2, figsize=(13, 4.5))
    edges = np.linspace(0, replayed, buckets + 1)
    for name, arm in arms.items():
        positions, hits = np.array(arm.positions), np.array(arm.hits[TOP], dtype=float)
        which = np.clip(np.searchsorted(edges, positions, side="right") - 1, 0, buckets - 1)
        rates = [hits[which == b].mean() if (which == b).any() else np.nan for b in range(buckets)]
        per_bucket.plot((edges[:-1] + edges[1:]) / 2, rates, marker="o", label=name)
        settled = slice(min(100, len(hits)), None)  # the first few dozen scores are mostly noise
        cumulative.plot(positions[settled], (np.cumsum(hits) / np.arange(1, len(hits) + 1))[settled], label=name)
    for f in finetunes:
        for ax in (per_bucket, cumulative):
            ax.axvline(f["position"], color="tab:green" if f["outcome"] == "published" else "tab:gray",
                       alpha=0.3, linestyle=":")
    per_bucket.set_title(f"Online HR@{TOP} per tenth of the replay")
    cumulative.set_title(f"Cumulative online HR@{TOP} (dotted: fine-tunes; green = published)")
    for ax in (per_bucket, cumulative):
        ax.set_xlabel("replayed events (time order)")
        ax.set_ylabel(f"HR@{TOP}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_markdown(path: Path, arms, finetunes, replayed, facts, bench: OnlineBench) -> Path:
    cost = _cost(arms, finetunes, replayed)
    outcomes = Counter(f["outcome"] for f in finetunes)
    lines = ["# Online evaluation: popularity, static model, fine-tuned model", ""]
    lines += [f"- **{k}**: {v}" for k, v in facts.items()]
    config = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(bench.config).items())
    lines += [f"- **fine-tuning**: every {bench.every} events ({config}); "
              f"{len(finetunes)} runs: " + ", ".join(f"{n} {o}" for o, n in outcomes.items()),
              f"- **how**: in-process replay, micro-batches of {bench.batch}; models run by ONNX Runtime "
              f"({bench.threads} threads) on the exported model.onnx that Triton serves, not through Kafka/Triton",
              "- **score**: a recommendation hits when the user's next event is among its top k; "
              "a user's last event has no next one and is not scored",
              "- **cost**: CPU-seconds (time.process_time, all threads) of inference per 1,000 recommendations, "
              "and of fine-tuning (training, gate, export) per 1,000 replayed events", "",
              "| arm | scored | online HR@10 | online HR@20 | inference CPU-s / 1k recs | fine-tune CPU-s / 1k events |",
              "|---|---|---|---|---|---|"]
    for name, arm in arms.items():
        lines.append(f"| {name} | {len(arm.positions)} | {arm.rate(10):.4f} | {arm.rate(20):.4f} | "
                     f"{cost[name]['inference_cpu_s_per_1000_recs']:.3f} | {cost[name]['finetune_cpu_s_per_1000_events']:.2f} |")
    lines += ["", f"![online HR@{TOP} over time](online.png)", ""]
    path.write_text("\n".join(lines))
    return path
