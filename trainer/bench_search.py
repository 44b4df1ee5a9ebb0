"""`shopguide bench search`: what the hedged search answer costs, and what the history graph saves.

Three graphs are exported from the same checkpoint into a scratch directory: the two a tower
version serves (trainer/export.py: model.onnx, every row hedged, answers rows with a query;
history.onnx answers rows without one) and the searched graph without the hedge (the query added
to the newest position, one score of the catalogue). They answer the same calls on ONNX Runtime
with the same threads: real histories (the data set's test inputs), either without queries or each
with a query of two or three words of its target's title (as trainer/evaluate_search.py simulates
them). Prints p50 latency per call per graph and batch size, and the hedged graph's ratio to the
other graph that could answer the call: for calls without a query, what the history graph saves
(every row went to the hedged graph before it); for searched calls, what the hedge costs.
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

HISTORY, UNHEDGED, HEDGED = "history graph", "without the hedge", "hedged graph"


class Unhedged(nn.Module):
    """The served head as it was before the hedge: the query joins the newest position, and one
    score of the catalogue answers."""

    def __init__(self, model: NextItemModel, top_k: int):
        super().__init__()
        self.model = model
        self.top_k = top_k

    def forward(self, item_ids: torch.Tensor, query_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden = self.model.encode_newest(item_ids, query_ids)
        top_scores, top_ids = torch.topk(self.model.score(hidden, item_ids), self.top_k, dim=1)
        return top_ids, top_scores, hidden


def run(checkpoint_path: Path, batches: list[int], seconds: float, threads: int, top_k: int = 20) -> list[tuple]:
    from trainer import data as loader
    from trainer.checkpoint import Checkpoint
    from trainer.corpus import read_catalogue

    checkpoint = Checkpoint.load(checkpoint_path)
    if checkpoint.model.text is None:
        raise UserError(f"{checkpoint_path}: the model has no text tower (train it with --catalogue)")
    model = checkpoint.model.eval().serving_copy()
    sessions = _sessions(model, top_k, threads)
    records = read_catalogue(checkpoint.config["catalogue"])
    titles = {n: records[item]["title"] for n, item in enumerate(checkpoint.index.to_list(), start=1) if item in records}
    _, sequences = loader.load(Path(checkpoint.data), checkpoint.index)
    split = loader.leave_one_out(sequences)
    rng = random.Random(0)
    asks = [(history, query) for history, target in zip(split.test_inputs, split.test_targets)
            if history and (query := simulated_query(titles.get(target, ""), rng)) is not None]
    rows = []
    print(f"{'batch':>5}  {'queries':<11}{HISTORY:>15}{UNHEDGED:>19}{HEDGED:>14}{'hedged / other':>16}")
    for batch in batches:
        for kind, other in (("none", HISTORY), ("every row", UNHEDGED)):
            calls = []
            for _ in range(100):
                picked = [asks[i] for i in np.random.default_rng(len(calls)).integers(0, len(asks), batch)]
                texts = [query if kind == "every row" else "" for _, query in picked]
                calls.append({GRAPH_INPUT: left_pad([history for history, _ in picked], model.args.max_len),
                              GRAPH_QUERY: checkpoint.vocabulary.query_rows(texts)})
            p50 = {name: measure(name, lambda feed, s=sessions[name]: s.run(None, _fed(s, feed)), calls, seconds, batch).p50_ms
                   for name in (other, HEDGED)}
            ratio = p50[HEDGED] / p50[other]
            rows.append((batch, kind, other, p50[other], p50[HEDGED], ratio))
            cells = [f"{p50[name]:.2f} ms" if name in p50 else "" for name in (HISTORY, UNHEDGED, HEDGED)]
            print(f"{batch:>5}  {kind:<11}{cells[0]:>15}{cells[1]:>19}{cells[2]:>14}{ratio:>15.2f}x", flush=True)
    return rows


def _sessions(model: NextItemModel, top_k: int, threads: int) -> dict:
    import onnxruntime as ort

    from trainer.export import TopK, write_graph

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    sessions = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, head, searched in ((HISTORY, TopK(model, top_k), False), (UNHEDGED, Unhedged(model, top_k), True),
                                     (HEDGED, TopK(model, top_k), True)):
            path = Path(scratch) / f"{len(sessions)}.onnx"
            write_graph(head.eval(), path, Path(scratch), searched)
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return sessions


def _fed(session, feed: dict) -> dict:
    """The call's inputs that the graph takes (the history graph takes no query)."""
    return {graph_input.name: feed[graph_input.name] for graph_input in session.get_inputs()}
