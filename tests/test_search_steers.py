"""Search steers the answer, end to end with the trained text tower (tiny_text_export) on the real
broker, worker and Triton: the answer to a search is what Triton answers for the history and the
query, not the history's own answer. (A version without a tower answering a call with a query:
tests/test_client.py.)"""
import json

import pytest

from serving.rollout import publish
from serving.triton import LocalTriton
from streams.catalog_load import load
from streams.picks import words
from tests.fixtures.tiny_model import toys_file
from tests.fixtures.triton import triton_settings
from tests.fixtures.worker import all_partitions, wait_for
from tests.test_query_serving import Shopper, recommend

pytestmark = [pytest.mark.kafka, pytest.mark.triton]


@pytest.fixture(scope="module")
def tower_triton(tmp_path_factory, tiny_text_export):
    assert "query_tokens" in json.loads((tiny_text_export / "export.json").read_text()), "the export has no text tower"
    settings = triton_settings(tmp_path_factory.mktemp("text_triton"))
    server = LocalTriton(settings)
    server.start()
    try:
        publish(settings, tiny_text_export)
        yield settings
    finally:
        server.stop()


def ask(url, sessions, queries):
    return [items for items, _ in recommend(url, sessions, queries)]


def titles() -> dict[str, str]:
    rows = (line.split("\t") for line in toys_file().with_name("items.tsv").read_text().splitlines()[1:])
    return {row[0]: row[2] for row in rows}


def steering_query(url, history, targets, k):
    """What a shopper who then opens one of `targets` might type: the first two words of its title. The
    answer hedges towards the history, so a tiny model's top k can stay put for a query; take the first
    target whose query moves Triton's own answer, so that the test can tell a search from a click."""
    plain = ask(url, [history], [""])[0][:k]
    for target in targets:
        query = " ".join(titles()[target].split()[:2])
        if ask(url, [history], [query])[0][:k] != plain:
            return query
    pytest.fail(f"no query from the titles of {len(targets)} items changes the tiny model's answer")


def test_the_answer_to_a_search_is_tritons_answer_for_the_history_and_the_query(
        tower_triton, tiny_text_export, kafka_settings, start_worker, producer, topic_reader):
    settings = kafka_settings(triton_grpc=tower_triton.triton_grpc, triton_timeout_s=2.0)
    load(settings, toys_file().with_name("items.tsv"), progress=False)
    worker = start_worker(settings)
    wait_for(lambda: worker.assigned() == all_partitions(settings), what="worker assigned")
    recommendations = topic_reader(settings.topic_recommendations)
    shopper, control = (Shopper(name, settings, producer, recommendations) for name in ("shopper", "control"))
    first, second, *others = (str(item) for item in json.loads((tiny_text_export / "item_index.json").read_text())[:40])
    query = steering_query(tower_triton.triton_grpc, [first, second], others, settings.recommend_k)

    for item in (first, second):
        unsteered = control.send("click", item)
        shopper.send("click", item)
    searched = shopper.send("search", query)
    direct, plain = ask(tower_triton.triton_grpc, [[first, second]] * 2, [query, ""])
    assert searched["source"] == "model" and unsteered["source"] == "model"
    assert searched["items"] == direct[:settings.recommend_k]
    assert unsteered["items"] == plain[:settings.recommend_k] != searched["items"]
    expected = [f"searched:{query}" if words(query) & words(titles()[item]) else f"viewed:{second}"
                for item in searched["items"]]
    assert searched["reasons"] == expected

