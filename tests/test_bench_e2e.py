"""The pure parts of `bench e2e`: the offered events, the histories Triton is measured on, and the
split of profile samples into the pipeline's parts."""
import itertools

from console.bench_capacity import histories
from console.bench_e2e import _with_searches
from console.bench_profile import WORKER_PARTS, split_samples


def test_searches_follow_their_users_click_at_the_share_asked():
    clicks = [(f"u{n}", f"i{n}") for n in range(90)]
    events = list(_with_searches(iter(clicks), 0.1))
    searches = [n for n, (_, item) in enumerate(events) if item is None]
    assert len(searches) == 10 and all(events[n - 1][0] == events[n][0] for n in searches)
    assert list(_with_searches(iter(clicks), 0.0)) == clicks


def test_histories_are_what_the_worker_sends():
    events = [("a", 1), ("b", 2), ("a", None), ("a", 3), ("a", 4), ("c", None)]
    assert histories(events, 2) == [(1,), (2,), (1,), (1, 3), (3, 4)]  # c has no items: popularity answers


def test_samples_go_to_the_first_part_in_their_stack():
    lines = ["run (faust/agents/agent.py:1);process (streams/agents.py:2);send (streams/recommender.py:3);"
             "send (aiokafka/producer/producer.py:4) 3",
             "run (faust/agents/agent.py:1);fold (streams/agents.py:5);apply (streams/sessions.py:6) 1",
             "_run (asyncio/events.py:1) 4", "run_forever (asyncio/base_events.py:1);select (selectors.py:468) 9"]
    shares = split_samples(lines, WORKER_PARTS)
    assert shares == {"sends": 0.375, "session fold": 0.125, "other": 0.5}  # waiting in epoll is no work
    assert list(itertools.islice(shares, 1)) == ["sends"]
