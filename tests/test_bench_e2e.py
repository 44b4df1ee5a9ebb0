"""The pure parts of `bench e2e`: the offered events, the histories Triton is measured on, and the
split of profile samples into the pipeline's parts, a stage's mean batch from the worker's counters."""
import itertools

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from console.bench_capacity import histories
from console.bench_e2e import SEARCH, Stage, _batch_means, _halfway, _with_searches, _work
from console.bench_profile import WORKER_PARTS, split_samples
from shopguide.metrics import WorkerMetrics


def test_a_search_for_words_of_its_items_title_precedes_a_click_at_the_probability_asked():
    clicks = [(f"u{n}", f"i{n}") for n in range(2000)]
    titles = {f"i{n}": f"wooden pull along duck {n}" for n in range(0, 2000, 2)}
    events = list(_with_searches(iter(clicks), 0.1, titles))
    searches = [n for n, (_, item, _) in enumerate(events) if item is None]
    assert 150 < len(searches) < 250 and len(events) == 2000 + len(searches)
    for n in searches:
        (user, _, query), (next_user, item, _) = events[n], events[n + 1]
        assert user == next_user and item is not None
        assert query in titles[item] and 2 <= len(query.split()) <= 3 if item in titles else query == SEARCH
    assert list(_with_searches(iter(clicks), 0.0, titles)) == [(user, item, None) for user, item in clicks]


def test_histories_are_what_the_worker_sends():
    events = [("a", 1, None), ("b", 2, None), ("a", None, "q"), ("a", 3, None), ("a", 4, None), ("c", None, "q")]
    assert histories(events, 2) == [(1,), (2,), (1,), (1, 3), (3, 4)]  # c has no items: popularity answers


def test_samples_go_to_the_first_part_in_their_stack():
    lines = ["run (faust/agents/agent.py:1);process (streams/agents.py:2);send (streams/recommender.py:3);"
             "send (aiokafka/producer/producer.py:4) 3",
             "run (faust/agents/agent.py:1);fold (streams/agents.py:5);apply (streams/sessions.py:6) 1",
             "_run (asyncio/events.py:1) 4", "run_forever (asyncio/base_events.py:1);select (selectors.py:468) 9"]
    shares = split_samples(lines, WORKER_PARTS)
    assert shares == {"sends": 0.375, "session fold": 0.125, "other": 0.5}  # waiting in epoll is no work
    assert list(itertools.islice(shares, 1)) == ["sends"]


def test_a_stages_mean_batch_comes_from_the_workers_and_tritons_counters():
    metrics = WorkerMetrics(CollectorRegistry())
    served = {"requests": 0, "us": 0}

    def samples():
        text = generate_latest(metrics.registry).decode() + "".join(  # as Triton serves them
            f'# TYPE {name} counter\n{name}{{model="next_item",version="1"}} {value}\n'
            f'{name}{{model="next_item",version="2"}} {value}\n' for name, value in (
                ("nv_inference_request_success", served["requests"]), ("nv_inference_request_duration_us", served["us"]),
                ("nv_inference_queue_duration_us", served["us"] / 10),
                ("nv_inference_compute_infer_duration_us", served["us"] / 2)))
        return [sample for family in text_string_to_metric_families(text) for sample in family.samples]

    metrics.batch_events.observe(7)
    metrics.batch_phase.labels("answer").observe(1.0)
    before = _work(samples())
    for events, answer in ((10, 0.020), (30, 0.040)):
        metrics.batch_events.observe(events)
        metrics.batch_phase.labels("answer").observe(answer)
        metrics.batch_phase.labels("queued").observe(0.015)
        metrics.triton_latency.observe(answer / 2)
    served.update(requests=2, us=8000)  # per version: 4 requests of 4 ms in all
    done = {name: value - before.get(name, 0.0) for name, value in _work(samples()).items()}
    means = _batch_means(done)
    assert means["events"] == 20 and abs(means["answer"] - 30) < 1e-9 and abs(means["queued"] - 15) < 1e-9
    assert abs(means["triton"] - 15) < 1e-9 and means["fold"] == means["confirm"] == 0
    assert (means["server"], means["queue"], means["compute"]) == (4.0, 0.4, 2.0)


def _stage_at(target: float, sustained: bool) -> Stage:
    return Stage(target, target, 100, 100 if sustained else 90, [0.01] * 100, [0.01] * 100, 0, 1.0)


def test_a_stage_answered_from_the_fallback_is_not_sustained():
    def stage(fallbacks: int) -> Stage:
        return Stage(1000, 1000, 1000, 1000, [0.01] * 1000, [0.01] * 1000, fallbacks, 1.0)

    assert stage(0).sustained and stage(10).sustained
    assert not stage(11).sustained  # more than 1 %: Triton timed out and popularity kept up instead


def test_refining_bisects_between_the_highest_sustained_stage_and_the_lowest_failed_one():
    stages = [_stage_at(1000, True), _stage_at(1400, True), _stage_at(1800, False)]
    assert _halfway(stages) == 1600
    stages.append(_stage_at(1600, True))
    assert _halfway(stages) == 1700
    stages.append(_stage_at(1700, False))
    assert _halfway(stages) == 1650
    assert _halfway(stages[:2]) is None and _halfway([_stage_at(1000, False)]) is None  # nothing failed / sustained
    assert _halfway([_stage_at(1000, False), _stage_at(1400, True)]) is None  # failed below a sustained one
