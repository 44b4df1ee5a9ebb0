"""`shopguide bench search`: what the hedged search answer costs in the served graph.

Two graphs are exported from the same checkpoint into a scratch directory: the served one
(trainer/export.py: every row hedged) and the one without the hedge (the query added to the newest
position, one score of the catalogue). Both answer the same calls, one after the other, on ONNX
Runtime with the same threads: real histories (the data set's test inputs), either without queries or each with a query
of two or three words of its target's title (as trainer/evaluate_search.py simulates them).
Prints p50 latency per call and the hedged graph's ratio to the other, per batch size.
"""
from __future__ import annotations

import random
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from serving.wire import GRAPH_INPUT, GRAPH_QUERY, left_pad
from shopguide.catalogue import simulated_query
from shopguide.errors import UserError
from trainer.bench_model import measure
from trainer.model import NextItemModel


class Unhedged(nn.Module):
    """The served head as it was before the hedge: the query joins the newest position, and one
    score of the catalogue answers."""

    def __init__(self, model: NextItemModel, top_k: int):
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(self, item_ids: torch.Tensor, query_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.encode_newest(item_ids, query_ids)
        top_scores, top_ids = torch.topk(self.model.score(hidden), self.top_k, dim=1)
        return top_ids, top_scores, hidden


def run(checkpoint_path: Path, batches: list[int], seconds: float, threads: int, top_k: int = 20) -> list[tuple]:
    import onnxruntime as ort

    from trainer import data as loader
    from trainer.checkpoint import Checkpoint
    from trainer.corpus import read_catalogue
    from trainer.export import TopK, write_graph

    checkpoint = Checkpoint.load(checkpoint_path)
    if checkpoint.model.text is None:
        raise UserError(f"{checkpoint_path}: the model has no text tower (train it with --catalogue)")
    model = checkpoint.model.eval().serving_copy()
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    sessions = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, head in (("without the hedge", Unhedged(model, top_k)), ("served (hedged)", TopK(model, top_k))):
            path = Path(scratch) / f"{len(sessions)}.onnx"
            write_graph(head.eval(), path, Path(scratch))
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    records = read_catalogue(checkpoint.config["catalogue"])
    titles = {n: records[item]["title"] for n, item in enumerate(checkpoint.index.to_list(), start=1) if item in records}
    _, sequences = loader.load(Path(checkpoint.data), checkpoint.index)
    split = loader.leave_one_out(sequences)
    rng = random.Random(0)
    asks = [(history, query) for history, target in zip(split.test_inputs, split.test_targets)
            if history and (query := simulated_query(titles.get(target, ""), rng)) is not None]
    max_len = model.args.max_len
    rows = []
    print(f"{'batch':>5}  {'queries':<14}{'without the hedge':>20}{'served (hedged)':>18}{'ratio':>8}")
    for batch in batches:
        for kind in ("none", "every row"):
            calls = []
            for _ in range(100):
                picked = [asks[i] for i in np.random.default_rng(len(calls)).integers(0, len(asks), batch)]
                texts = [query if kind == "every row" else "" for _, query in picked]
                calls.append({GRAPH_INPUT: left_pad([history for history, _ in picked], max_len),
                              GRAPH_QUERY: checkpoint.vocabulary.query_rows(texts)})
            p50 = {name: measure(name, lambda feed, s=session: s.run(None, feed), calls, seconds, batch).p50_ms
                   for name, session in sessions.items()}
            ratio = p50["served (hedged)"] / p50["without the hedge"]
            rows.append((batch, kind, p50["without the hedge"], p50["served (hedged)"], ratio))
            print(f"{batch:>5}  {kind:<14}{p50['without the hedge']:>17.2f} ms{p50['served (hedged)']:>15.2f} ms{ratio:>7.2f}x",
                  flush=True)
    return rows
