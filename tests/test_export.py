"""The ONNX export of a model trained briefly on a real slice of amazon-toys."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from trainer.export import FP32, INT8
from trainer import data
from trainer.checkpoint import Checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def test_users(tiny_checkpoint, toys_slice):
    checkpoint = Checkpoint.load(tiny_checkpoint)
    _, sequences = data.load(toys_slice, checkpoint.index)
    split = data.leave_one_out(sequences)
    return checkpoint, split.test_inputs, np.array(split.test_targets)


def _session(export_dir, name):
    return ort.InferenceSession(str(export_dir / name), providers=["CPUExecutionProvider"])


def _top_ids(session, inputs, max_len=50, batch=512):
    found = []
    for start in range(0, len(inputs), batch):
        ids = data.left_pad(inputs[start:start + batch], max_len).numpy()
        found.append(session.run(["top_ids"], {"item_ids": ids})[0])
    return np.concatenate(found)


def test_graph_names_types_and_dynamic_axes(tiny_export):
    graph = onnx.load(str(tiny_export / FP32)).graph
    (inp,) = graph.input
    assert inp.name == "item_ids" and inp.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert all(d.dim_param for d in inp.type.tensor_type.shape.dim)  # batch and seq_len both dynamic
    outputs = {o.name: o.type.tensor_type.elem_type for o in graph.output}
    assert outputs == {"top_ids": onnx.TensorProto.INT64, "top_scores": onnx.TensorProto.FLOAT}


def test_export_metadata_and_item_index(tiny_export, tiny_checkpoint):
    checkpoint = Checkpoint.load(tiny_checkpoint)
    meta = json.loads((tiny_export / "export.json").read_text())
    assert meta["top_k"] == 50 and meta["max_len"] == 50 and meta["num_items"] == len(checkpoint.index)
    assert meta["checkpoint"]["metrics"]["test"]["HR@20"] == checkpoint.metrics["test"]["HR@20"]
    assert json.loads((tiny_export / "item_index.json").read_text()) == checkpoint.index.to_list()


@pytest.mark.parametrize("name", [FP32, INT8])
def test_new_users_long_histories_and_any_batch(tiny_export, name):
    session = _session(tiny_export, name)
    for ids in (np.zeros((1, 1), np.int64), np.zeros((3, 50), np.int64),
                np.arange(1, 81, dtype=np.int64).reshape(1, 80), np.array([[0, 0, 5], [7, 8, 9]], np.int64)):
        top_ids, top_scores = session.run(None, {"item_ids": ids})
        assert top_ids.shape == (ids.shape[0], 50) and top_scores.dtype == np.float32
        assert np.isfinite(top_scores).all()
        assert (top_ids > 0).all()  # never padding
        assert (np.diff(top_scores, axis=1) <= 0).all()


def test_fp32_top10_matches_torch(tiny_export, test_users):
    checkpoint, inputs, _ = test_users
    with torch.no_grad():
        expected = torch.cat([checkpoint.model(data.left_pad(inputs[i:i + 512], 50)).topk(10).indices
                              for i in range(0, len(inputs), 512)]).numpy()
    got = _top_ids(_session(tiny_export, FP32), inputs)[:, :10]
    assert (got == expected).all(axis=1).mean() >= 0.99


def test_int8_hit_rate_close_to_fp32(tiny_export, test_users):
    _, inputs, targets = test_users
    hr = {name: (_top_ids(_session(tiny_export, name), inputs)[:, :20] == targets[:, None]).any(1).mean()
          for name in (FP32, INT8)}
    assert hr[FP32] > 0.02  # the model learnt something, or the comparison would mean nothing
    assert abs(hr[INT8] - hr[FP32]) <= 0.03 * hr[FP32]


def test_text_tower_export_takes_a_query_and_answers_as_torch(tiny_text_export, tiny_text_checkpoint, toys_slice):
    from tokenizers import Tokenizer

    from serving import wire

    meta = json.loads((tiny_text_export / "export.json").read_text())
    session = _session(tiny_text_export, FP32)
    assert [i.name for i in session.get_inputs()] == ["item_ids", "query_ids"]
    assert [o.name for o in session.get_outputs()] == ["top_ids", "top_scores", "hidden"]
    checkpoint = Checkpoint.load(tiny_text_checkpoint)
    _, sequences = data.load(toys_slice, checkpoint.index)
    inputs = data.leave_one_out(sequences).test_inputs[:300]
    tokenizer = Tokenizer.from_file(str(tiny_text_export / "tokenizer.json"))
    queries = ["", "star wars", "wooden puzzle", "barbie doll house"] * 75
    query_ids = wire.token_rows(tokenizer, queries, meta["query_tokens"])
    ids = data.left_pad(inputs, 50).numpy()
    top_ids, _, hidden = session.run(None, {"item_ids": ids, "query_ids": query_ids})
    with torch.no_grad():
        expected = checkpoint.model(torch.from_numpy(ids), torch.from_numpy(query_ids)).topk(10).indices.numpy()
    assert (top_ids[:, :10] == expected).all(axis=1).mean() >= 0.99
    assert hidden.shape == (300, checkpoint.model.args.hidden)
    plain = session.run(["top_ids"], {"item_ids": ids, "query_ids": np.zeros_like(query_ids)})[0]
    assert (plain[1::4, :10] != top_ids[1::4, :10]).any(axis=1).mean() > 0.9  # a query changes the answer


def test_a_text_tower_export_answers_rows_without_a_query_from_its_history_graph(tiny_text_export, toys_slice,
                                                                                  tiny_text_checkpoint):
    from serving import wire

    checkpoint = Checkpoint.load(tiny_text_checkpoint)
    _, sequences = data.load(toys_slice, checkpoint.index)
    ids = data.left_pad(data.leave_one_out(sequences).test_inputs[:300], 50).numpy()
    history = _session(tiny_text_export, wire.HISTORY_GRAPH)
    assert [i.name for i in history.get_inputs()] == ["item_ids"]
    top_ids, top_scores, hidden = history.run(None, {"item_ids": ids})
    query_ids = np.zeros((len(ids), json.loads((tiny_text_export / "export.json").read_text())["query_tokens"]), np.int64)
    searched_ids, searched_scores, searched_hidden = _session(tiny_text_export, FP32).run(
        None, {"item_ids": ids, "query_ids": query_ids})
    assert (top_ids[:, :10] == searched_ids[:, :10]).all(axis=1).mean() >= 0.99
    np.testing.assert_allclose(top_scores, searched_scores, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(hidden, searched_hidden, rtol=1e-4, atol=1e-4)
    int8 = _session(tiny_text_export, wire.HISTORY_INT8).run(["top_ids"], {"item_ids": ids})[0]
    assert int8.shape == top_ids.shape and (int8 > 0).all()


def test_a_clustered_tower_export_probing_every_cluster_answers_as_torch(tiny_text_checkpoint, toys_slice, tmp_path):
    """The cluster-pruned head hedges searched rows too; probing every cluster, mixed and all-plain
    runs must rank as the exact torch model does."""
    from tokenizers import Tokenizer

    from serving import wire
    from trainer.export import export

    out = export(tiny_text_checkpoint, tmp_path / "clustered", top_k=10, clusters=4, probe=4)
    assert json.loads((out / "export.json").read_text())["scoring"]["exact"] is False
    checkpoint = Checkpoint.load(tiny_text_checkpoint)
    _, sequences = data.load(toys_slice, checkpoint.index)
    ids = data.left_pad(data.leave_one_out(sequences).test_inputs[:100], 50).numpy()
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    session = _session(out, FP32)
    for queries in (["star wars", "", "wooden puzzle", "doll"] * 25, [""] * 100):
        query_ids = wire.token_rows(tokenizer, queries, json.loads((out / "export.json").read_text())["query_tokens"])
        top_ids = session.run(["top_ids"], {"item_ids": ids, "query_ids": query_ids})[0]
        with torch.no_grad():
            expected = checkpoint.model(torch.from_numpy(ids), torch.from_numpy(query_ids)).topk(10).indices.numpy()
        assert (top_ids == expected).all(axis=1).mean() >= 0.99
