"""Export a checkpoint for serving: ONNX with top-k inside the graph, optimised, plus int8.

Writes into out_dir:
- model.onnx        fp32, graph-optimised by ONNX Runtime
- model.int8.onnx   the same model with dynamic int8 quantisation of its weights
- item_index.json   the model id -> shop id list (position i holds model id i + 1)
- export.json       top_k, max_len, num_items and the checkpoint's description
- tokenizer.json    with a text tower: the query tokenizer (export.json "query_tokens" is its width)
- history.onnx, history.int8.onnx  with a text tower: the graph for rows without a query (below)

Graph I/O (names in serving/wire.py): input int64 [batch, seq_len] (both dynamic, left-padded with
0; histories longer than max_len are cut to their newest max_len items inside the graph); outputs
the top_k model ids int64 [batch, top_k] (never padding) and their scores float32 [batch, top_k].
A model with a text tower takes a second input, the search query's token ids int64
[batch, query_tokens] (a row of padding: no query), and is exported folded (`NextItemModel.serving_copy`):
the items' content vectors are part of its item table, so a call runs the tower on the query only.
A row with a query and a history is answered by the hedged mixture (`NextItemModel.searched_scores`).
It also answers its hidden state read with the query, float32 [batch, hidden] (GRAPH_HIDDEN), which
scores items by a dot product with their vectors: items added after export (new in the catalogue)
are ranked by it (on a searched row that score is a lower bound of the item's mixed score).
Rows without a query, most of them, go to history.onnx (serving/wire.py HISTORY_GRAPH): the same
answer and hidden state from the history alone, without the hedge's second reading of the newest
position, which costs 1.3-1.7x per call (`shopguide bench search`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from serving.wire import GRAPH_HIDDEN, GRAPH_INPUT, GRAPH_OUTPUTS, GRAPH_QUERY, HISTORY_GRAPH, HISTORY_INT8
from shopguide.process import kill_point
from trainer.checkpoint import Checkpoint
from trainer.clustered import PROBE, ClusteredTopK, cluster, default_clusters
from trainer.content import QUERY_TOKENS
from trainer.model import NextItemModel

FP32 = "model.onnx"
INT8 = "model.int8.onnx"


class TopK(nn.Module):
    """The model plus its top-k: what the server runs."""

    def __init__(self, model: NextItemModel, top_k: int):
        super().__init__()
        self.model = model
        self.top_k = min(top_k, model.num_ids - 1)  # padding is never among the answers

    def forward(self, item_ids: torch.Tensor, query_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if query_ids is None:
            hidden = self.model.encode_newest(item_ids)
            top_scores, top_ids = torch.topk(self.model.score(hidden, item_ids), self.top_k, dim=1)
            return (top_ids, top_scores) if self.model.text is None else (top_ids, top_scores, hidden)
        scores, hidden = self.model.searched_scores(item_ids, query_ids)
        top_scores, top_ids = torch.topk(scores, self.top_k, dim=1)
        return top_ids, top_scores, hidden


def export(checkpoint: Path | str | Checkpoint, out_dir: Path | str, top_k: int = 20, clusters: int | None = None,
           probe: int = PROBE) -> Path:
    """Write the serving files for `checkpoint` into out_dir; returns out_dir. clusters: 0 scores
    every item (exact), N > 0 prunes by N clusters (trainer/clustered.py), None picks by catalogue size."""
    source = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint.load(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = source.model.eval()
    head, scoring = serving_head(model.serving_copy() if model.text is not None else model, top_k, clusters, probe)
    with tempfile.TemporaryDirectory(dir=out) as tmp:  # in out: a killed export leaves nothing elsewhere
        graphs = {FP32: INT8, HISTORY_GRAPH: HISTORY_INT8} if model.text is not None else {FP32: INT8}
        for fp32 in graphs:
            write_graph(head, out / fp32, Path(tmp), searched=fp32 == FP32)
        kill_point("export")
        with _quiet():
            for fp32, int8 in graphs.items():
                _quantise(out / fp32, out / int8)
    source.index.save(out / "item_index.json")
    query = {}
    if model.text is not None:
        source.vocabulary.save_tokenizer(out / "tokenizer.json")
        query = {"query_tokens": QUERY_TOKENS, "query_input": GRAPH_QUERY, "hidden_output": GRAPH_HIDDEN,
                 "history_files": {"fp32": HISTORY_GRAPH, "int8": HISTORY_INT8}}
    meta = {"top_k": head.top_k, "max_len": source.model.args.max_len, "num_items": len(source.index),
            "scoring": scoring, "input": GRAPH_INPUT, "outputs": list(GRAPH_OUTPUTS), "files": {"fp32": FP32, "int8": INT8},
            "source": str(checkpoint) if not isinstance(checkpoint, Checkpoint) else "",
            "checkpoint": source.describe(), **query}
    (out / "export.json").write_text(json.dumps(meta, indent=2))
    return out


def serving_head(model: NextItemModel, top_k: int, clusters: int | None = None, probe: int = PROBE
                 ) -> tuple[nn.Module, dict]:
    """What the server runs (model plus top-k, exact or cluster-pruned) and how it scores."""
    clusters = default_clusters(model.num_ids - 1) if clusters is None else clusters
    if not clusters:
        return TopK(model, top_k).eval(), {"exact": True}
    clustering = cluster(model.item_embedding.weight, clusters)
    return ClusteredTopK(model, top_k, clustering, probe).eval(), {"exact": False, **clustering.describe(probe)}


def write_graph(head: nn.Module, path: Path, scratch: Path, searched: bool = True) -> None:
    """The head as an ONNX Runtime-optimised graph at `path` (the raw export goes to scratch);
    searched=False leaves out a text tower's query input (the history graph)."""
    with _quiet():
        _to_onnx(head, scratch / "raw.onnx", searched)
        _optimise(scratch / "raw.onnx", path)


@contextlib.contextmanager
def _quiet():
    """The exporter and quantiser log advice (torchvision ops, pre-processing) that does not apply."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _to_onnx(head: nn.Module, path: Path, searched: bool) -> None:
    example = torch.tensor([[0, 0, 1, 2], [3, 4, 5, 6]], dtype=torch.long) % head.model.num_ids
    batch, length = torch.export.Dim("batch"), torch.export.Dim("seq_len")
    inputs, names, shapes = (example,), [GRAPH_INPUT], {"item_ids": {0: batch, 1: length}}
    outputs = list(GRAPH_OUTPUTS)
    if head.model.text is not None:
        outputs.append(GRAPH_HIDDEN)
    if head.model.text is not None and searched:
        query = torch.zeros(2, QUERY_TOKENS, dtype=torch.long)
        query[1, :2] = torch.tensor([5, 6])
        inputs, names, shapes = (example, query), names + [GRAPH_QUERY], {**shapes, "query_ids": {0: batch}}
    with torch.no_grad():
        program = torch.onnx.export(head, inputs, input_names=names, output_names=outputs,
                                    dynamic_shapes=shapes, dynamo=True, optimize=True, verbose=False)
    program.save(str(path))


def _optimise(raw: Path, path: Path) -> None:
    """ONNX Runtime's extended graph optimisations (fusions that stay portable across CPUs)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path)
    ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])


def _quantise(fp32: Path, path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
