"""The demo: its replay and scoring logic (pure), and one whole run on the real broker, Triton and
worker in which a fast first model answers, a better one trained in the background is rolled out
live, no event goes unanswered, and the models, trained with the catalogue, answer searches."""
import argparse
import re
import time
from types import SimpleNamespace

import pytest

from console.demo import _last, draw
from console.demo_replay import Pass, Shopper, interleave, last_answers, replay_popularity


def shopper(user, *viewed, next_item="next"):
    return Shopper(user, tuple(viewed), next_item)


def record(user, event_time, items, version=1):
    return {"user": user, "event_time": event_time, "items": items, "model_version": version,
            "source": "model" if version else "fallback"}


def test_interleave_aligns_every_shoppers_last_view_in_the_last_round():
    clicks = list(interleave([shopper("a", "a1", "a2", "a3"), shopper("b", "b1")]))
    assert clicks == [("a", "a1", None), ("a", "a2", None), ("a", "a3", None), ("b", "b1", None)]


def test_draw_holds_back_each_shoppers_last_item_and_keeps_the_newest_views():
    drawn = draw({"u": ["1", "2", "3", "4", "5"], "short": ["1", "2"]}, history=2, seed=0)
    assert drawn == [Shopper("u", ("3", "4"), "5")]


def test_last_answers_take_the_recommendation_after_the_newest_event():
    records = [record("a", 2.0, ["x"]), record("a", 1.0, ["y"]), record("b", 1.0, ["z"])]
    answers = last_answers([shopper("a", "1"), shopper("c", "1")], records)
    assert answers == {"a": records[0]}


def test_a_pass_scores_the_model_and_popularity_on_the_held_back_items():
    shoppers = [shopper("a", "p", "q", next_item="q"), shopper("b", "p", next_item="r")]
    records = [record("a", 1.0, ["q"]), record("b", 1.0, ["x"], version=None)]
    done = Pass(1, 0.0, shoppers, 100.0, 3, records, [0.01, 0.02])
    assert replay_popularity(shoppers)[:2] == ["p", "q"]
    assert done.hits() == (2, 1, 1)  # a's next item is in the model's list and in popularity's
    assert done.by_version == {"v1": 1, "popularity": 1}


def test_passes_continue_until_one_ran_on_the_model_that_stays_live():
    done = SimpleNamespace(started=100.0)
    assert _last(done, None)
    assert not _last(done, SimpleNamespace(done=False, published=None))
    assert _last(done, SimpleNamespace(done=True, published=None))  # not better: the first stays
    assert not _last(done, SimpleNamespace(done=True, published=(2, 150.0)))  # rolled out during it
    assert _last(done, SimpleNamespace(done=True, published=(2, 50.0)))


@pytest.mark.kafka
@pytest.mark.triton
@pytest.mark.slow
def test_a_fresh_demo_serves_a_fast_model_then_rolls_out_a_better_one(kafka_settings, toys_slice, tmp_path, capsys):
    from console.demo import run
    from shopguide.process import free_port
    from tests.fixtures.tiny_model import toys_file
    from tests.fixtures.triton import triton_settings

    data = tmp_path / "data" / "amazon-toys"
    data.mkdir(parents=True)
    (data / "Toys_and_Games.txt").write_text(toys_slice.read_text())
    (data / "items.tsv").write_text((toys_file().parent / "items.tsv").read_text())
    own = triton_settings(tmp_path / "triton")
    settings = kafka_settings(data_dir=tmp_path / "data", model_repository=own.model_repository,
                              triton_grpc=own.triton_grpc, triton_http=own.triton_http,
                              triton_metrics_port=own.triton_metrics_port)
    # A first model of 0.3 s barely learns: trained on for a minute it improves on validation, even
    # at the lowest CPU priority on a busy machine.
    args = argparse.Namespace(shoppers=40, history=5, rate=100.0, show=2, train_minutes=0.005, better_minutes=1.0,
                              page_port=free_port(), seed=0)
    started = time.monotonic()
    assert run(args, settings) == 0
    out = capsys.readouterr().out
    assert "training a better model in the background" in out
    assert re.search(r"model v2 \(.*\) published and served by Triton \(v2\) while the replay ran", out), out
    assert re.search(r"pass \d+: .*v1 [\d,]+.*v2", out) or re.search(r"pass \d+: .*v2 [\d,]+", out), out
    assert re.search(r"^  v2: [0-9.]+ over", out, re.M), out
    assert " 0 events unanswered" in out, out
    assert "we recommended (model v2)" in out
    assert re.search(r'had they searched ".+" \(words of that title\) first: ', out), out
    assert re.search(r"searches, simulated \(each of the [\d,]+ shoppers .*\): hit rate @10 [0-9.]+ with the search", out), out
    assert time.monotonic() - started < 600
