"""Pure logic of the recommendation stage: the popularity window and what a shopper is shown."""
from types import SimpleNamespace

from streams.popularity import Popularity
from streams.recommender import Recommender


def test_window_forgets_old_items():
    popularity = Popularity(window=3, refresh_s=0)
    popularity.observe(["a", "a", "b"])
    assert popularity.ranked()[0] == ("a", 2)
    popularity.observe(["c", "c"])
    assert dict(popularity.ranked()) == {"b": 1, "c": 2}


def test_ranking_is_refreshed_at_most_every_refresh_s(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("streams.popularity.time.monotonic", lambda: now[0])
    popularity = Popularity(refresh_s=1.0)
    popularity.observe(["a"])
    assert popularity.ranked() == [("a", 1)]
    popularity.observe(["b", "b"])
    assert popularity.ranked() == [("a", 1)]
    now[0] += 1.0
    assert popularity.ranked() == [("b", 2), ("a", 1)]


def test_fill_tops_up_without_repeats_or_exclusions():
    popularity = Popularity()
    popularity.observe(["p1"] * 3 + ["p2"] * 2 + ["x"] * 5)
    items, scores = popularity.fill(["m1", "p1"], [2.0, 1.0], 4, exclude={"x"})
    assert items == ["m1", "p1", "p2"]  # only two popular items exist besides the excluded one
    assert scores[:2] == [2.0, 1.0] and 0 < scores[2] < 1


def recommender(k=3):
    settings = SimpleNamespace(recommend_k=k, triton_timeout_s=0.1, triton_grpc="127.0.0.1:1", model_name="m",
                               topic_recommendations="recs", answer_cache=0, query_events=5, query_ttl_s=900.0,
                               model_repository="model_repository")
    popular = Popularity()
    popular.observe(["hot"] * 5 + ["warm"] * 2)
    return Recommender(settings, outbox=None, metrics=None, client=object(), popularity=popular)


def update(purchased=(), items=("1",)):
    return SimpleNamespace(session=SimpleNamespace(purchased=purchased, items=items))


def test_bought_items_never_shown_even_when_the_model_ranks_them_first():
    items, _, reasons = recommender().finalise(update(purchased=(7, "hot")), (["7", "a", "b", "c"], [4.0, 3.0, 2.0, 1.0]))
    assert items == ["a", "b", "c"] and reasons == ["viewed:1"] * 3


def test_fallback_answer_is_popularity_without_purchases():
    items, scores, reasons = recommender().finalise(update(purchased=("hot",)), None)
    assert items == ["warm"] and scores == [2 / 7] and reasons == ["popular"]
