"""The async Triton client: request encoding (pure) and answers from the real Triton."""
import asyncio
import json

import numpy as np
import onnxruntime as ort
import pytest

from tritonclient.grpc import InferInput, service_pb2
from tritonclient.utils import serialize_byte_tensor

from serving.client import (ServingError, TritonClient, bytes_elements, bytes_tensor, decode, encode, encode_queries,
                            infer_inputs)
from shopguide.process import free_port


def test_encode_joins_each_rows_ids_into_one_element_of_tritons_bytes_wire_form():
    shape, content = encode([["a", 7], [], ["b", "c", "d"]])
    joined = np.array([[b"a\x1f7"], [b""], [b"b\x1fc\x1fd"]], dtype=np.object_)
    assert shape == [3, 1] and content == serialize_byte_tensor(joined).item()
    assert bytes_elements(content) == joined.ravel().tolist()


def test_queries_are_one_bytes_column_and_none_is_empty_text():
    shape, content = encode_queries(["red car", "", None], 3)
    assert shape == [3, 1] and bytes_elements(content) == [b"red car", b"", b""]
    assert encode_queries(None, 2) == ([2, 1], bytes_tensor([b"", b""]))
    with pytest.raises(ValueError, match="1 queries for 2 sessions"):
        encode_queries(["a"], 2)


def test_the_request_carries_what_tritonclients_own_serialiser_would():
    sessions, queries = [["12", 7], ["héllo"]], ["wooden toys", ""]
    for ours, (name, rows) in zip(infer_inputs(sessions, queries), (
            ("HISTORY", np.array([[b"12\x1f7"], ["héllo".encode()]], dtype=np.object_)),
            ("QUERY", np.array([[b"wooden toys"], [b""]], dtype=np.object_)))):
        theirs = InferInput(name, list(rows.shape), "BYTES").set_data_from_numpy(rows)
        assert ours._get_tensor() == theirs._get_tensor() and ours._get_content() == theirs._get_content()


def test_decode_splits_each_rows_ranked_ids_and_drops_padding_answers():
    response = service_pb2.ModelInferResponse(model_name="next_item", model_version="1")
    for name, datatype, shape, raw in (
            ("RANKED", "BYTES", [2, 1], bytes_tensor([b"x\x1f\x1fy", "z\x1fwé\x1fv".encode()])),
            ("SCORES", "FP32", [2, 3], np.array([[3.0, 2.0, 1.0], [6.0, 5.0, 4.0]], dtype=np.float32).tobytes())):
        response.outputs.add(name=name, datatype=datatype, shape=shape)
        response.raw_output_contents.append(raw)
    assert decode(response) == [(["x", "y"], [3.0, 1.0]), (["z", "wé", "v"], [6.0, 5.0, 4.0])]


def recommend(url, sessions, timeout_s=10.0, queries=None):
    async def call():
        client = TritonClient(url)
        try:
            return await client.recommend(sessions, timeout_s, queries)
        finally:
            await client.close()
    return asyncio.run(call())


@pytest.fixture(scope="module")
def catalogue(triton):
    return [str(item) for item in json.loads((triton.export_dir / "item_index.json").read_text())]


@pytest.fixture(scope="module")
def reference(triton, catalogue):
    """The export run directly by ONNX Runtime: what Triton must answer."""
    session = ort.InferenceSession(str(triton.export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    max_len = json.loads((triton.export_dir / "export.json").read_text())["max_len"]
    model_ids = {item: n for n, item in enumerate(catalogue, start=1)}

    def answer(items):
        known = [model_ids[i] for i in items if i in model_ids][-max_len:]
        row = np.zeros((1, max_len), dtype=np.int64)
        if known:
            row[0, max_len - len(known):] = known
        top_ids, top_scores = session.run(["top_ids", "top_scores"], {session.get_inputs()[0].name: row})
        return [catalogue[i - 1] for i in top_ids[0]], top_scores[0]
    return answer


def assert_same_answer(answer, expected):
    items, scores = answer
    assert items[0] == expected[0][0]
    np.testing.assert_allclose(scores, expected[1], rtol=1e-4, atol=1e-4)


@pytest.mark.triton
def test_known_items_get_the_models_answer_and_the_served_version(triton, catalogue, reference):
    session = catalogue[:3]
    answers, version = recommend(triton.url, [session])
    assert version == triton.repository.latest()
    items, scores = answers[0]
    assert set(items) <= set(catalogue)
    assert scores == sorted(scores, reverse=True)
    assert_same_answer(answers[0], reference(session))


@pytest.mark.triton
def test_new_users_and_unknown_items_answer_like_padding(triton, catalogue, reference):
    answers, _ = recommend(triton.url, [[], ["never-seen", "nor-this"], ["never-seen", *catalogue[:2]]])
    assert answers[0] == answers[1]
    assert_same_answer(answers[0], reference([]))
    assert_same_answer(answers[2], reference(catalogue[:2]))


@pytest.mark.triton
def test_a_mixed_batch_answers_each_row_as_if_alone(triton, catalogue, reference):
    sessions = [catalogue[5:6], [], catalogue[:40], ["unknown"], catalogue[10:13]]
    answers, _ = recommend(triton.url, sessions)
    assert len(answers) == len(sessions)
    for session, answer in zip(sessions, answers):
        assert_same_answer(answer, reference(session))


@pytest.mark.triton
def test_concurrent_calls_of_different_widths_share_dynamic_batches_correctly(triton, catalogue, reference):
    sessions = [catalogue[n:n + width] for n, width in enumerate([1, 3, 7, 2, 12, 5, 1, 9])]

    async def calls():
        client = TritonClient(triton.url)
        try:
            return await asyncio.gather(*(client.recommend([s], 10.0) for s in sessions))
        finally:
            await client.close()
    for session, (answers, _) in zip(sessions, asyncio.run(calls())):
        assert_same_answer(answers[0], reference(session))


@pytest.mark.triton
def test_a_version_without_a_text_tower_answers_a_query_as_if_there_were_none(triton, catalogue, reference):
    sessions = [catalogue[:3], []]
    answers, _ = recommend(triton.url, sessions, queries=["wooden train set", "puzzle"])
    for session, answer in zip(sessions, answers):
        assert_same_answer(answer, reference(session))


@pytest.mark.triton
def test_an_empty_batch_makes_no_call():
    assert recommend(f"127.0.0.1:{free_port()}", []) == ([], None)


@pytest.mark.triton
def test_readiness_follows_the_server(triton):
    async def probe(url):
        client = TritonClient(url)
        try:
            return await client.ready()
        finally:
            await client.close()
    assert asyncio.run(probe(triton.url)) is True
    assert asyncio.run(probe(f"127.0.0.1:{free_port()}")) is False


def test_an_unreachable_server_is_a_serving_error_with_cause_unavailable():
    with pytest.raises(ServingError) as error:
        recommend(f"127.0.0.1:{free_port()}", [["a"]], timeout_s=2.0)
    assert error.value.cause == "unavailable"


@pytest.mark.triton
def test_a_deadline_too_short_to_meet_is_a_timeout(triton, catalogue):
    with pytest.raises(ServingError) as error:
        recommend(triton.url, [catalogue[:3]] * 64, timeout_s=1e-6)
    assert error.value.cause == "timeout"
