"""Reusing model answers: one inference per distinct model input (history and steering query) per
batch, none for an input answered before, and nothing reused across a model version change or
after a pause with no call."""
import asyncio
from types import SimpleNamespace

from prometheus_client import CollectorRegistry

from serving.client import ServingError
from serving.wire import ADDED_ITEMS
from shopguide.metrics import WorkerMetrics
from streams.answers import CONFIRM_S, AnswerCache
from streams.events import Event
from streams.recommender import Recommender
from streams.sessions import Session, apply


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_cache_forgets_on_a_new_version_a_pause_and_past_its_size():
    clock = Clock()
    cache = AnswerCache(2, clock)
    cache.confirm(1)
    for key in "abc":
        cache.put(key, key.upper(), 1)
    assert cache.get("a") is None and cache.get("c") == ("C", 1)  # least recently used went first
    cache.put("x", "X", 2)  # an answer of a version no call has confirmed is not kept
    assert cache.get("x") is None
    cache.confirm(2)
    assert cache.get("c") is None
    cache.put("d", "D", 2)
    clock.now += CONFIRM_S + 0.1
    assert cache.get("d") is None


class Triton:
    """Answers each history with its last item (a query alone: the query); `version` is the model
    version it serves. `calls` holds each call's histories, `queries` its queries."""

    def __init__(self):
        self.calls, self.queries, self.version, self.down = [], [], 1, False

    async def recommend(self, sessions, timeout_s, queries):
        if self.down:
            raise ServingError("unavailable", "down")
        self.calls.append(list(sessions))
        self.queries.append(list(queries))
        return [([str(items[-1] if items else query)], [1.0]) for items, query in zip(sessions, queries)], self.version


def recommender(client, size=100, repository="model_repository"):
    settings = SimpleNamespace(recommend_k=1, triton_timeout_s=0.1, triton_grpc="127.0.0.1:1", model_name="m",
                               topic_recommendations="recs", answer_cache=size, query_events=2, query_ttl_s=60.0,
                               model_repository=repository)
    return Recommender(settings, outbox=None, metrics=WorkerMetrics(CollectorRegistry()), client=client)


def update(user, *items, session=None):
    return SimpleNamespace(key=user.encode(), session=session or Session(items=tuple(items)))


def ask(model, *updates):
    return asyncio.run(model.ask_model(updates, model.model_inputs(updates)))


def test_one_inference_per_history_and_none_for_an_unchanged_one():
    triton = Triton()
    model = recommender(triton)
    answers, cause = ask(model, update("a", 1), update("b", 1), update("a", 1, 2), update("c"))
    assert len(triton.calls) == 1 and sorted(triton.calls[0]) == [(1,), (1, 2)]
    assert answers[0] == answers[2] == ((["2"], [1.0]), 1)  # a's events share the newest history's answer
    assert answers[1] == ((["1"], [1.0]), 1) and answers[3] is None and cause is None
    answers, _ = ask(model, update("a", 1, 2), update("d", 1))  # a search; d's history is b's
    assert len(triton.calls) == 1 and answers[1] == ((["1"], [1.0]), 1)
    assert model.metrics.inferences_saved._value.get() == 1 + 2


def test_a_new_version_is_not_answered_from_the_old_ones_cache():
    triton = Triton()
    model = recommender(triton)
    ask(model, update("a", 1))
    triton.version = 2
    answers, _ = ask(model, update("a", 1), update("b", 5))  # a's cached answer is version 1, b asks
    assert answers[0][1] == 1 and answers[1][1] == 2
    answers, _ = ask(model, update("a", 1))
    assert answers[0][1] == 2 and len(triton.calls) == 3


def test_cached_answers_serve_while_triton_is_down_only_until_unconfirmed():
    triton = Triton()
    model = recommender(triton)
    model.cache.clock = clock = Clock()
    ask(model, update("a", 1))
    triton.down = True
    answers, cause = ask(model, update("a", 1), update("b", 2))
    assert answers[0] == ((["1"], [1.0]), 1) and answers[1] is None and cause == "unavailable"
    clock.now += CONFIRM_S + 0.1
    assert ask(model, update("a", 1))[0] == [None]


def searched(query, *items, later=0):
    """A session of `items`, then a search for `query`, then `later` clicks on x (a second apart)."""
    events = [Event("click", "u", "s", 1e9, items=(item,)) for item in items]
    events += [Event("search", "u", "s", 1e9 + 1, query=query)]
    events += [Event("click", "u", "s", 1e9 + 2 + n, items=("x",)) for n in range(later)]
    session = None
    for event in events:
        session = apply(session, event, length=10)
    return session


def test_the_query_is_part_of_the_model_input_and_of_the_cache_key():
    triton = Triton()
    model = recommender(triton)
    ask(model, update("a", 1), update("b", session=searched("red car", 1)), update("c", session=searched("doll")))
    assert sorted(zip(triton.calls[0], triton.queries[0])) == [((), "doll"), ((1,), ""), ((1,), "red car")]
    answers, _ = ask(model, update("d", session=searched("red car", 1)), update("e", 1))
    assert len(triton.calls) == 1 and [answer[0][0] for answer in answers] == [["1"], ["1"]]
    ask(model, update("f", session=searched("blue car", 1)))
    assert triton.queries[1] == ["blue car"]


def test_a_query_steers_the_next_events_then_the_history_alone_answers():
    triton = Triton()
    model = recommender(triton)  # query_events=2
    for later, query in [(0, "kite"), (2, "kite"), (3, "")]:
        ask(model, update("a", session=searched("kite", 1, later=later)))
        assert triton.queries[-1] == [query]


def test_an_item_the_answering_version_added_by_content_says_new(tmp_path):
    (tmp_path / "m" / "2").mkdir(parents=True)
    (tmp_path / "m" / "2" / ADDED_ITEMS).write_text('["3"]')
    model = recommender(Triton(), repository=tmp_path)
    assert model.finalise(update("a", 1), (["3"], [1.0]), "", 2) == (["3"], [1.0], ["new"])
    assert model.finalise(update("a", 1), (["3"], [1.0]), "", 1) == (["3"], [1.0], ["viewed:1"])  # version 1 added none
