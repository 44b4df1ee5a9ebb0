"""Replay turns data-set interactions into valid, user-keyed events on the right topics."""
import pytest

from streams.events import decode, user_key
from streams.replay import replay

DIGINETICA = "../shared/data/diginetica-sample/train-item-views.csv"
AMAZON = "../shared/data/amazon-toys/Toys_and_Games.txt"


@pytest.mark.kafka
def test_csv_types_reach_their_topics_keyed_by_user(kafka_settings, topic_reader, tmp_path):
    settings = kafka_settings()
    data = tmp_path / "events.csv"
    data.write_text("user,item,timestamp,type\n"
                    "alice,sku-1,2024-01-01T10:00:00,click\n"
                    "bob,red shoes,1704103300,search\n"
                    "alice,sku-2,1704103400,add_to_cart\n"
                    "alice,sku-2,1704103500,purchase\n")
    assert replay(settings, data, progress=False) == 4

    clicks = topic_reader(settings.topic_clicks).until(lambda r: len(r) >= 1)
    searches = topic_reader(settings.topic_searches).until(lambda r: len(r) >= 1)
    purchases = topic_reader(settings.topic_purchases).until(lambda r: len(r) >= 2)
    assert [(r.key, decode(r.value).items) for r in clicks] == [(b"alice", ("sku-1",))]
    assert decode(searches[0].value).query == "red shoes" and searches[0].key == b"bob"
    assert sorted(decode(r.value).type for r in purchases) == ["add_to_cart", "purchase"]
    assert decode(clicks[0].value).ts == 1704103200.0


@pytest.mark.kafka
def test_diginetica_and_amazon_replay_in_order(kafka_settings, topic_reader):
    settings = kafka_settings()
    assert replay(settings, DIGINETICA, limit=300, progress=False) == 300
    assert replay(settings, AMAZON, limit=200, rate=2000, progress=False) == 200

    clicks = [decode(r.value) for r in topic_reader(settings.topic_clicks).until(lambda r: len(r) >= 300)]
    purchases = topic_reader(settings.topic_purchases).until(lambda r: len(r) >= 200)
    assert len(clicks) == 300
    first_per_user = {}
    for event in clicks:  # within a partition (so within a user) the order is the data's time order
        assert event.ts >= first_per_user.setdefault(event.user, event.ts)
        first_per_user[event.user] = event.ts
    assert len({r.key for r in purchases}) > 100  # interleaved: the first items of many users
    assert all(r.key == user_key(decode(r.value).user) for r in purchases)
