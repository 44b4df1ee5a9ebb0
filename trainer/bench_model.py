"""`shopguide bench model`: the model alone, torch eager against ONNX Runtime fp32 and int8.

Each runtime answers the same real histories (the data set's test inputs, newest max_len items,
left-padded to the longest in the call) at batch 1 and batch 64, one call at a time, with the
same number of CPU threads. Prints requests/s, sequences/s and p50/p99 latency per call.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from serving.repository import export_meta
from serving.wire import GRAPH_INPUT, HISTORY_GRAPH, HISTORY_INT8, left_pad


@dataclass
class Result:
    runtime: str
    batch: int
    requests_per_s: float
    sequences_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int


def runtimes(checkpoint_path: Path, export_dir: Path, threads: int, top_k: int) -> dict[str, Callable]:
    """name -> function(item_ids int64 array) running the model plus top-k."""
    import onnxruntime as ort
    import torch

    from trainer.export import FP32, INT8, TopK
    from trainer.checkpoint import Checkpoint

    torch.set_num_threads(threads)
    head = TopK(Checkpoint.load(checkpoint_path).model.eval(), top_k).eval()

    def eager(ids: np.ndarray):
        with torch.inference_mode():
            return head(torch.from_numpy(ids))

    found = {"torch eager (CPU)": eager}
    # a text tower's export answers calls without a query with its history graph
    tower = (export_dir / HISTORY_GRAPH).exists()
    for name, file in (("ORT fp32 (CPU)", HISTORY_GRAPH if tower else FP32), ("ORT int8 (CPU)", HISTORY_INT8 if tower else INT8)):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(export_dir / file), options, providers=["CPUExecutionProvider"])
        found[name] = lambda ids, s=session: s.run(None, {GRAPH_INPUT: ids})
    if torch.cuda.is_available():
        gpu = TopK(Checkpoint.load(checkpoint_path).model.eval(), top_k).eval().cuda()

        def eager_gpu(ids: np.ndarray):
            with torch.inference_mode():
                out = gpu(torch.from_numpy(ids).cuda())
                torch.cuda.synchronize()
                return out

        found[f"torch eager ({torch.cuda.get_device_name()})"] = eager_gpu
    return found


def requests(histories: list[list[int]], batch: int, max_len: int, count: int) -> list[np.ndarray]:
    """`count` calls of `batch` real histories each, left-padded to the longest in the call."""
    rng = np.random.default_rng(0)
    calls = []
    for _ in range(count):
        calls.append(left_pad([histories[i] for i in rng.integers(0, len(histories), batch)], max_len))
    return calls


def measure(name: str, run: Callable, calls: list, seconds: float, batch: int | None = None) -> Result:
    """run(call) over `calls` in turn for `seconds`; batch: sequences per call (default: the
    first call's rows, for calls that are id arrays)."""
    for ids in calls[:5]:
        run(ids)  # warm-up: allocations, lazy initialisation
    latencies, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        ids = calls[len(latencies) % len(calls)]
        begin = time.perf_counter()
        run(ids)
        latencies.append(time.perf_counter() - begin)
    total = sum(latencies)
    batch = batch or calls[0].shape[0]
    return Result(name, batch, len(latencies) / total, batch * len(latencies) / total,
                  1000 * statistics.median(latencies), 1000 * float(np.percentile(latencies, 99)), len(latencies))


def plot(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r.batch for r in results})
    fig, axes = plt.subplots(1, len(batches), figsize=(6 * len(batches), 4))
    for ax, batch in zip(np.atleast_1d(axes), batches):
        rows = [r for r in results if r.batch == batch]
        bars = ax.barh([r.runtime for r in rows], [r.sequences_per_s for r in rows], color="tab:blue")
        ax.bar_label(bars, [f"{r.sequences_per_s:,.0f}/s  p50 {r.p50_ms:.2f} ms  p99 {r.p99_ms:.2f} ms" for r in rows],
                     fontsize=8, padding=3)
        ax.set_xlim(0, max(r.sequences_per_s for r in rows) * 2.4)
        ax.invert_yaxis()
        ax.set_xlabel("sequences per second (higher is better)")
        ax.set_title(f"batch {batch}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(checkpoint_path: Path, export_dir: Path, data: Path | None, batches: list[int], seconds: float,
        threads: int, out: Path | None) -> list[Result]:
    from trainer import data as loader
    from trainer.checkpoint import Checkpoint

    checkpoint = Checkpoint.load(checkpoint_path)
    meta = export_meta(export_dir)
    _, sequences = loader.load(data or Path(checkpoint.data), checkpoint.index)
    histories = [seq[:-1] for seq in sequences if len(seq) > 1]
    found = runtimes(checkpoint_path, export_dir, threads, meta["top_k"])
    results = []
    print(f"{'runtime':<34}{'batch':>6}{'req/s':>10}{'seq/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for batch in batches:
        calls = requests(histories, batch, meta["max_len"], 200)
        for name, fn in found.items():
            r = measure(name, fn, calls, seconds)
            results.append(r)
            print(f"{r.runtime:<34}{r.batch:>6}{r.requests_per_s:>10.1f}{r.sequences_per_s:>10.0f}"
                  f"{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}")
    eager = {r.batch: r.requests_per_s for r in results if r.runtime == "torch eager (CPU)"}
    for r in results:
        if r.runtime.startswith("ORT"):
            print(f"{r.runtime} at batch {r.batch}: {r.requests_per_s / eager[r.batch]:.1f}x torch eager")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_model.json").write_text(json.dumps([asdict(r) for r in results], indent=2))
        plot(results, out / "bench_model.png")
        print(f"wrote {out / 'bench_model.json'} and {out / 'bench_model.png'}")
    return results
