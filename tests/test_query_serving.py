"""The served model's query path on a real Triton: a version with a text tower reads QUERY with its
own tokenizer and feeds the graph's query_ids in the same run; empty text answers as no query. And
on the real broker and worker: a search's answer, and the next SHOPGUIDE_QUERY_EVENTS, are the
query-steered ones, with `searched:<query>` reasons for items whose title shares a word with it.

The version here is a small graph built with onnx.helper (item and token vectors summed, scored
against every item, top_k inside the graph) and a word-level tokenizer: it follows the contract of
serving/wire.py without the trainer, so model.py's plumbing is tested apart from any model quality.
"""
import asyncio
import json
import time

import numpy as np
import onnxruntime as ort
import pytest
import msgpack
import tritonclient.grpc as grpcclient

from serving import wire
from serving.client import TritonClient
from serving.rollout import publish
from serving.triton import LocalTriton
from shopguide.errors import UserError
from streams.catalog_load import load
from streams.events import Event
from streams.replay import publish as produce
from tests.fixtures.triton import triton_settings
from tests.fixtures.worker import all_partitions, wait_for

pytestmark = pytest.mark.triton

ITEMS = [f"i{n}" for n in range(1, 31)]
WORDS = ["[PAD]", "[UNK]", "red", "car", "doll", "kite", "train", "wooden"]
META = {"top_k": 5, "max_len": 4, "query_tokens": 3}


def tower_graph(rng, items: int, tokens: int, dim: int = 8):
    """item_ids [B, L], query_ids [B, W] -> top_ids, top_scores [B, top_k]; id 0 adds nothing and is never answered."""
    from onnx import TensorProto, helper, numpy_helper

    def table(rows, cols, scale=1.0):
        values = rng.normal(size=(rows, cols)).astype(np.float32) * scale
        values[0] = 0.0
        return values
    bias = np.zeros(items + 1, dtype=np.float32)
    bias[0] = -1e9
    constants = {"item_table": table(items + 1, dim), "token_table": table(tokens, dim, 3.0),
                 "out_table": rng.normal(size=(dim, items + 1)).astype(np.float32), "bias": bias,
                 "axis1": np.array([1], dtype=np.int64), "k": np.array([META["top_k"]], dtype=np.int64)}
    nodes = [
        helper.make_node("Gather", ["item_table", wire.GRAPH_INPUT], ["item_vectors"]),
        helper.make_node("ReduceSum", ["item_vectors", "axis1"], ["history"], keepdims=0),
        helper.make_node("Gather", ["token_table", wire.GRAPH_QUERY], ["token_vectors"]),
        helper.make_node("ReduceSum", ["token_vectors", "axis1"], ["query"], keepdims=0),
        helper.make_node("Add", ["history", "query"], ["user"]),
        helper.make_node("MatMul", ["user", "out_table"], ["logits"]),
        helper.make_node("Add", ["logits", "bias"], ["scores"]),
        helper.make_node("TopK", ["scores", "k"], [wire.GRAPH_OUTPUTS[1], wire.GRAPH_OUTPUTS[0]], axis=-1),
    ]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", width])
              for name, width in ((wire.GRAPH_INPUT, "items"), (wire.GRAPH_QUERY, "tokens"))]
    outputs = [helper.make_tensor_value_info(wire.GRAPH_OUTPUTS[0], TensorProto.INT64, ["batch", "k"]),
               helper.make_tensor_value_info(wire.GRAPH_OUTPUTS[1], TensorProto.FLOAT, ["batch", "k"])]
    graph = helper.make_graph(nodes, "tower", inputs, outputs,
                              [numpy_helper.from_array(value, name) for name, value in constants.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def word_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({word: n for n, word in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


@pytest.fixture(scope="module")
def tower_export(tmp_path_factory):
    import onnx

    out = tmp_path_factory.mktemp("tower_export")
    onnx.save(tower_graph(np.random.default_rng(7), len(ITEMS), len(WORDS)), str(out / "model.onnx"))
    word_tokenizer().save(str(out / "tokenizer.json"))
    (out / "item_index.json").write_text(json.dumps(ITEMS))
    (out / "export.json").write_text(json.dumps(META))
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory, tower_export):
    settings = triton_settings(tmp_path_factory.mktemp("tower_triton"))
    server = LocalTriton(settings)
    server.start()
    try:
        assert publish(settings, tower_export)[0] == 1
        yield settings
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(tower_export):
    """The export run directly by ONNX Runtime, the query tokenised by wire.token_rows."""
    session = ort.InferenceSession(str(tower_export / "model.onnx"), providers=["CPUExecutionProvider"])
    tokenizer = word_tokenizer()

    def answer(items, query):
        ids = wire.left_pad([[ITEMS.index(item) + 1 for item in items]])
        top_ids, top_scores = session.run(list(wire.GRAPH_OUTPUTS), {
            wire.GRAPH_INPUT: ids, wire.GRAPH_QUERY: wire.token_rows(tokenizer, [query], META["query_tokens"])})
        return [ITEMS[n - 1] for n in top_ids[0]], top_scores[0]
    return answer


def recommend(url, sessions, queries=None):
    async def call():
        client = TritonClient(url)
        try:
            return (await client.recommend(sessions, 10.0, queries))[0]
        finally:
            await client.close()
    return asyncio.run(call())


def assert_same(answer, expected):
    assert answer[0] == expected[0]
    np.testing.assert_allclose(answer[1], expected[1], rtol=1e-5, atol=1e-4)


def test_a_query_steers_the_answer_as_the_graph_answers_it(served, reference):
    sessions = [["i1", "i2"], ["i1", "i2"], [], [], ["i3", "i4", "i5", "i6", "i7"], ["i9"]]
    queries = ["", "red car", "", "Wooden DOLL", "kite", "zeppelin kite train car"]
    answers = recommend(served.triton_grpc, sessions, queries)
    for session, query, answer in zip(sessions, queries, answers):
        assert_same(answer, reference(session[-META["max_len"]:], query))
    assert answers[0][0] != answers[1][0] and answers[2][0] != answers[3][0]


def test_a_batch_of_short_and_long_histories_is_answered_row_by_row_as_the_graph_answers(served, reference):
    sessions = [[f"i{1 + n % 20}"] for n in range(40)] + [[f"i{n}", "i2", "i3", f"i{n + 5}"] for n in range(1, 11)]
    queries = ["", "red car"] * 25
    assert len(wire.length_groups([len(row) for row in sessions])) == 2  # model.py runs the two lengths apart
    answers = recommend(served.triton_grpc, sessions, queries)
    for session, query, answer in zip(sessions, queries, answers):
        assert_same(answer, reference(session, query))


def test_concurrent_calls_with_different_queries_share_batches_correctly(served, reference):
    calls = [(["i1", "i2"][:n % 3], ["", "red", "doll kite"][n % 3]) for n in range(9)]

    async def gather():
        client = TritonClient(served.triton_grpc)
        try:
            return await asyncio.gather(*(client.recommend([items], 10.0, [query]) for items, query in calls))
        finally:
            await client.close()
    for (items, query), (answers, _) in zip(calls, asyncio.run(gather())):
        assert_same(answers[0], reference(items, query))


def test_a_request_without_query_answers_as_an_empty_one(served, reference):
    rows = np.array([[b"i1", b"i2"], [b"", b"i5"]], dtype=np.object_)
    request = grpcclient.InferInput(wire.REQUEST_ITEMS, list(rows.shape), "BYTES")
    request.set_data_from_numpy(rows)
    with grpcclient.InferenceServerClient(served.triton_grpc) as client:
        items = client.infer("next_item", [request]).as_numpy(wire.RESPONSE_ITEMS)
    assert [[item.decode() for item in row] for row in items] == [reference(["i1", "i2"], "")[0], reference(["i5"], "")[0]]


def test_a_version_whose_export_json_and_graph_disagree_on_the_query_is_refused(served, tower_export, tmp_path):
    for name in ("model.onnx", "tokenizer.json", "item_index.json"):
        (tmp_path / name).write_bytes((tower_export / name).read_bytes())
    (tmp_path / "export.json").write_text(json.dumps({key: META[key] for key in ("top_k", "max_len")}))
    with pytest.raises(UserError, match="takes query_ids but export.json has no query_tokens"):
        publish(served, tmp_path)


class Shopper:
    """One user's events, each sent once the previous one is answered (clicks and searches travel on
    different topics, so only that fixes their order); `send` returns the event's recommendation."""

    def __init__(self, name, settings, producer, recommendations):
        self.name, self.settings, self.producer, self.recommendations = name, settings, producer, recommendations
        self.answered = 0

    def send(self, kind, value) -> dict:
        fields = {"query": value} if kind == "search" else {"items": (value,)}
        produce(self.producer, self.settings, Event(kind, self.name, "s", time.time(), **fields))
        self.producer.flush()
        self.answered += 1
        key = self.name.encode()
        mine = self.recommendations.until(lambda rs: sum(r.key == key for r in rs) >= self.answered,
                                          what=f"answer {self.answered} to {self.name}")
        return msgpack.unpackb([r.value for r in mine if r.key == key][-1], raw=False)


@pytest.mark.kafka
def test_a_search_steers_its_answer_and_the_next_events_then_the_history_alone(
        served, reference, kafka_settings, start_worker, producer, topic_reader, tmp_path):
    settings = kafka_settings(triton_grpc=served.triton_grpc, triton_timeout_s=2.0, recommend_k=META["top_k"],
                              query_events=1)
    titles = tmp_path / "items.csv"
    titles.write_text("item,title\n" + "".join(f"{item},{'toy car' if n % 2 else 'rag doll'} {n}\n"
                                               for n, item in enumerate(ITEMS)))
    load(settings, titles, progress=False)
    worker = start_worker(settings)
    wait_for(lambda: worker.assigned() == all_partitions(settings), what="worker assigned")
    recommendations = topic_reader(settings.topic_recommendations)
    shopper, control = (Shopper(name, settings, producer, recommendations) for name in ("shopper", "control"))

    unsteered = [control.send("click", item) for item in ("i1", "i2")][-1]
    for item in ("i1", "i2"):
        shopper.send("click", item)
    searched = shopper.send("search", "Red CAR")
    steered = reference(["i1", "i2"], "Red CAR")[0]
    assert searched["source"] == "model" and searched["event_type"] == "search"
    assert searched["items"] == steered != unsteered["items"] == reference(["i1", "i2"], "")[0]
    cars = {item for n, item in enumerate(ITEMS) if n % 2}
    assert searched["reasons"] == ["searched:Red CAR" if item in cars else "viewed:i2" for item in steered]
    assert unsteered["reasons"] == ["viewed:i2"] * META["top_k"]

    history = ["i1", "i2", "i3"]
    next_event = shopper.send("click", "i3")["items"]
    assert next_event == reference(history, "Red CAR")[0] != reference(history, "")[0]
    history.append("i4")
    after = shopper.send("click", "i4")  # query_events=1: the history alone from here
    assert after["items"] == reference(history, "")[0] != reference(history, "Red CAR")[0]
    assert set(after["reasons"]) == {"viewed:i4"}
    assert worker.value("shopguide_recommendations_steered_total") == 2
