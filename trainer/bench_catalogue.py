"""`shopguide bench model --items N ...`: what the catalogue's size costs, with random weights.

Per size, in a fresh process (so peak memory is that size's alone): one training step (batch 256,
loss on the newest position, history length 50) with the whole-catalogue softmax and with drawn
negatives; the fp32 ONNX export; and ONNX Runtime latency at batch 1 and 64 for exact scoring
(every item) and, from 100,000 items up, cluster-pruned scoring (trainer/clustered.py). Random
weights cost what trained ones do; for what pruning costs in quality, see the README (Toys).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from shopguide.errors import UserError

BATCH = 256
MAX_LEN = 50
CLUSTERED_FROM = 100_000
COLUMNS = ("items", "scoring", "train step, whole catalogue", "train step, 8,192 drawn", "export",
           "model.onnx", "batch 1 p50", "batch 64 p50", "peak memory")


def run(sizes: list[int], threads: int, seconds: float) -> list[dict]:
    print(" | ".join(COLUMNS))
    rows = []
    for size in sizes:
        command = [sys.executable, "-m", "trainer.bench_catalogue", str(size), str(threads), str(seconds)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise UserError(f"bench model --items {size} failed: {done.stderr.strip().splitlines()[-1:]}")
        for line in done.stdout.splitlines():
            row = json.loads(line)
            rows.append(row)
            print(_format(row), flush=True)
    return rows


def _format(row: dict) -> str:
    return " | ".join([f"{row['items']:,}", row["scoring"], f"{row['step_full_s']:.2f} s", f"{row['step_drawn_s']:.2f} s",
                       f"{row['export_s']:.0f} s", f"{row['onnx_mib']:.0f} MiB",
                       f"{row['batch1_ms']:.2f} ms", f"{row['batch64_ms']:.1f} ms ({64000 / row['batch64_ms']:,.0f} seq/s)",
                       f"{row['peak_gib']:.1f} GiB"])


def measure_size(items: int, threads: int, seconds: float) -> list[dict]:
    import torch

    from trainer.clustered import clusters_for
    from trainer.model import ModelArgs, NextItemModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = NextItemModel(ModelArgs(num_ids=items + 1, max_len=MAX_LEN))
    histories = torch.randint(1, items + 1, (BATCH, MAX_LEN + 1))
    steps = {name: _train_step(model, histories, negatives) for name, negatives in (("full", 0), ("drawn", 8_192))}
    model.eval()
    choices = [("exact", 0)]
    if items >= CLUSTERED_FROM:
        choices.append(("clustered", clusters_for(items)))
    rows = []
    for name, clusters in choices:
        export_s, onnx_mib, session = _export(model, clusters, threads)
        rows.append({"items": items, "scoring": name if not clusters else f"{clusters:,} clusters",
                     "step_full_s": steps["full"], "step_drawn_s": steps["drawn"], "export_s": export_s,
                     "onnx_mib": onnx_mib, "batch1_ms": _latency(session, 1, items, seconds),
                     "batch64_ms": _latency(session, 64, items, seconds)})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return [{**row, "peak_gib": peak} for row in rows]


def _train_step(model, histories, negatives: int) -> float:
    from trainer.config import TrainConfig
    from trainer.train import optimisers_for

    optimisers = optimisers_for(model, TrainConfig(), negatives)
    model.train()
    times = []
    for _ in range(3):  # the first step allocates optimiser state
        started = time.perf_counter()
        loss = model.loss(histories[:, :-1], histories[:, -1], negatives)
        for optimiser in optimisers:
            optimiser.zero_grad(set_to_none=True)
        loss.backward()
        for optimiser in optimisers:
            optimiser.step()
        times.append(time.perf_counter() - started)
    return min(times[1:])


def _export(model, clusters: int, threads: int):
    import onnxruntime as ort

    from trainer.export import serving_head, write_graph

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        head, _ = serving_head(model, 20, clusters)
        write_graph(head, Path(tmp) / "model.onnx", Path(tmp))
        export_s = time.perf_counter() - started
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(Path(tmp) / "model.onnx"), options, providers=["CPUExecutionProvider"])
        return export_s, (Path(tmp) / "model.onnx").stat().st_size / 2**20, session


def _latency(session, batch: int, items: int, seconds: float) -> float:
    from serving.wire import GRAPH_INPUT
    from trainer.bench_model import measure

    rng = np.random.default_rng(0)
    calls = [rng.integers(1, items + 1, (batch, MAX_LEN)) for _ in range(8)]
    return measure("ORT fp32", lambda ids: session.run(None, {GRAPH_INPUT: ids}), calls, seconds).p50_ms


if __name__ == "__main__":
    for found in measure_size(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])):
        print(json.dumps(found))
