"""The catalogue on the real broker, worker and Triton: the Toys catalogue loaded with `catalog load`,
an item the model recommends goes out of stock mid-stream and leaves the answers within a second,
comes back when back in stock, leaves again when delisted; a bad catalogue record is dead-lettered
once, with its reason."""
import time

import msgpack
import pytest

from shopguide.config import Settings
from streams.catalog_load import load, set_state
from streams.events import Event
from streams.replay import publish
from tests.fixtures.tiny_model import toys_file
from tests.fixtures.worker import all_partitions, wait_for
from tests.test_recommendations import toys_items

pytestmark = [pytest.mark.kafka, pytest.mark.triton]
GONE_WITHIN_S = 1.0


class Shoppers:
    """Each ask is a new shopper clicking `item`: the same history, so the same model answer."""

    def __init__(self, settings: Settings, producer, recommendations, item: str):
        self.settings, self.producer, self.recommendations, self.item = settings, producer, recommendations, item
        self.asked = 0

    def ask(self) -> dict:
        self.asked += 1
        user = f"shopper-{self.asked}"
        publish(self.producer, self.settings, Event("click", user, "s", time.time(), items=(self.item,)))
        self.producer.flush()
        key = user.encode()
        records = self.recommendations.until(lambda rs: any(r.key == key for r in rs), what=f"answer to {user}")
        return msgpack.unpackb(next(r.value for r in records if r.key == key), raw=False)

    def answers_until(self, seconds: float) -> list[dict]:
        deadline = time.time() + seconds
        answers = []
        while time.time() < deadline:
            answers.append(self.ask())
        return answers


def test_an_item_out_of_stock_leaves_the_answers_within_a_second_and_can_return(
        kafka_settings, start_worker, producer, topic_reader, triton, toys_slice):
    settings = kafka_settings(triton_grpc=triton.url, triton_timeout_s=2.0)
    loaded = load(settings, toys_file().with_name("items.tsv"), progress=False)
    assert loaded.sent == 11_924 and not loaded.skipped
    recommendations, dead = topic_reader(settings.topic_recommendations), topic_reader(settings.topic_deadletter)
    worker = start_worker(settings)
    wait_for(lambda: worker.assigned() == all_partitions(settings), what="worker assigned")
    seed = toys_items(toys_slice, 1)[0]
    shoppers = Shoppers(settings, producer, recommendations, seed)

    first = shoppers.ask()
    assert first["source"] == "model" and len(first["items"]) == settings.recommend_k
    assert first["reasons"] == [f"viewed:{seed}"] * settings.recommend_k
    target = first["items"][0]

    set_state(settings, target, "out_of_stock")
    out_at = time.time()
    during = shoppers.answers_until(GONE_WITHIN_S + 2.0)
    settled = [a for a in during if a["produced_time"] >= out_at + GONE_WITHIN_S]
    assert settled and all(target not in a["items"] for a in settled), "an out-of-stock item was still recommended"
    assert all(len(a["items"]) == settings.recommend_k and a["source"] == "model" for a in during)
    assert worker.value("shopguide_catalog_unbuyable", state="out_of_stock") == 1

    set_state(settings, target, "in_stock")
    wait_for(lambda: target in shoppers.ask()["items"], timeout_s=10, what="the item back in the answers")

    set_state(settings, target, "delisted")
    wait_for(lambda: target not in shoppers.ask()["items"], timeout_s=10, what="the delisted item gone")
    assert worker.value("shopguide_catalog_unbuyable", state="delisted") == 1

    producer.send(settings.topic_catalog, key=b"sku-junk", value=b"\xc1").get(timeout=10)
    letters = dead.until(lambda rs: len(rs) >= 1, what="the bad record dead-lettered")
    time.sleep(1.0)  # one worker, one dead letter: nothing else follows
    assert len(dead.consumer.poll(timeout_ms=500)) == 0 and len(letters) == 1
    headers = dict(letters[0].headers)
    assert headers["reason"] == b"malformed_msgpack" and headers["source_topic"] == settings.topic_catalog.encode()
    assert worker.value("shopguide_catalog_records_total", outcome="malformed_msgpack") == 1
