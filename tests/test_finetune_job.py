"""The fine-tune job against the real broker, worker and Triton: a run reads the new events the
worker has folded, publishes a better version that Triton serves while requests keep flowing
(none fails), records its position; the next run reads only the events produced since and
fine-tunes the new version; a run reads at most --max-events, and a backlog takes several."""
import asyncio

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from serving.rollout import rollback
from console.cli import main
from shopguide.metrics import FinetuneMetrics
from streams.events import Event, encode, topic_for
from tests.fixtures.worker import wait_for
from tests.test_triton_rollout import Stream
from trainer.eventlog import EventLog
from trainer.finetune_config import FinetuneConfig
from trainer.histories import fold_frontier, read_snapshot
from trainer.job import CHECKPOINT, FinetuneJob, JobOptions
from trainer.runs import RunLog

pytestmark = [pytest.mark.kafka, pytest.mark.triton]
CONFIG = FinetuneConfig(lr=1e-2, batch_size=16, max_epochs=10, patience=10, max_minutes=1.0, min_users=10, holdout=0.5)


def new_item_events(prefix: str, users: int, start_ts: float) -> list[Event]:
    """Each user clicks a known toy, then goes back and forth between two never-seen items of one
    of five pairs; a search (no item) rides along. The live model cannot rank unseen items."""
    events = []
    for n in range(users):
        user, ts, pair = f"{prefix}-user{n}", start_ts + n, n % 5
        events += [Event("click", user, "s", ts, items=("1",)), Event("search", user, "s", ts + 0.1, query="blocks")]
        events += [Event("click" if step % 2 else "add_to_cart", user, "s", ts + 0.2 + step / 10,
                         items=(f"{prefix}-{'ab'[step % 2]}{pair}",)) for step in range(4)]
    return events


def produce(settings, events: list[Event], garbage: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for event in events:
        producer.send(topic_for(event.type, settings), encode(event), key=str(event.user).encode())
    for _ in range(garbage):
        producer.send(settings.topic_clicks, b"\xc1 not msgpack", key=b"x")
    producer.flush()
    producer.close()


def wait_folded(settings) -> None:
    """Until the worker has folded every event in the log into sessions (or dead-lettered it)."""
    log = EventLog(settings, "shopguide-finetune-wait")

    def folded():
        partitions = log.partitions()
        ends = log.consumer.end_offsets(list(partitions.values()))
        frontier = fold_frontier(dict.fromkeys(partitions, 0), log.folded(), read_snapshot(settings))
        return all(frontier[at] >= ends[tp] for at, tp in partitions.items())
    try:
        wait_for(folded, 120, "every event folded")
    finally:
        log.close()


@pytest.fixture
def job_settings(kafka_settings, triton, start_worker):
    """Settings of the session's Triton and a worker of this test's own."""
    served = triton.settings
    settings = kafka_settings(model_repository=served.model_repository, model_name=served.model_name,
                              triton_grpc=served.triton_grpc, model_keep=5)
    start_worker(settings).wait_assigned()
    return settings


def test_two_runs_publish_without_failed_requests_and_commit_offsets(job_settings, triton):
    settings, before = job_settings, triton.repository.latest()
    metrics = FinetuneMetrics(CollectorRegistry())
    first = new_item_events("w1", 60, 1.7e9)
    produce(settings, first, garbage=3)
    wait_folded(settings)
    job = FinetuneJob(settings, JobOptions("shopguide-finetune-test", CONFIG, progress=False), metrics)
    published = []
    try:
        stream = asyncio.run(_during_requests(triton.url, job.run_once, published))
        carried = (triton.repository.model_dir / str(published[0]) / CHECKPOINT).exists()
        second = new_item_events("w2", 30, 1.8e9)
        produce(settings, second)
        wait_folded(settings)
        record_2 = job.run_once()
        lag, position = job.log.lag(job.runs.position()), job.runs.position()
        mirrored = {at: job.log.consumer.committed(tp) for at, tp in job.log.partitions().items()}
        published.append(record_2.version)
    finally:
        job.close()
        for version in reversed([v for v in published if v is not None]):
            rollback(settings)  # the session's Triton serves the tiny model again
    record_1 = RunLog(settings.home / "finetune" / "runs.jsonl").read()[0]

    assert record_1.outcome == "published" and record_1.live_version == before
    assert record_1.events == len(first) and record_1.rejected == 3  # the garbage was skipped
    assert record_1.new_items == 10 and record_1.held_out == 30
    assert record_1.candidate["NDCG@20"] > record_1.live["NDCG@20"] == 0.0
    assert stream.failures == []
    assert before in stream.versions and record_1.version in stream.versions  # swapped under load

    assert record_2.events == len(second)  # only what came after the first run's commit
    assert record_2.live_version == record_1.version and record_2.outcome == "published"
    assert carried  # the published version holds the checkpoint the next run starts from
    assert lag == 0 and record_2.committed
    assert mirrored == {at: position.get(at) for at in mirrored}  # the group's offsets mirror the run log
    assert metrics.registry.get_sample_value("shopguide_finetune_runs_total", {"outcome": "published"}) == 2
    assert metrics.registry.get_sample_value("shopguide_finetune_published_version") == record_2.version


def test_a_run_with_too_few_users_commits_nothing(job_settings, triton):
    produce(job_settings, new_item_events("few", 3, 1.7e9))
    wait_folded(job_settings)
    job = FinetuneJob(job_settings, JobOptions("shopguide-finetune-few", CONFIG, progress=False))
    try:
        record = job.run_once()
        lag = job.log.lag(job.runs.position())
    finally:
        job.close()
    assert record.outcome == "skipped" and record.events == 18 and not record.committed
    assert lag == 18  # every event stays for the next run
    assert triton.repository.live() == record.live_version


def test_a_backlog_is_read_in_bounded_runs_each_committing_what_it_read(job_settings):
    events = new_item_events("backlog", 40, 1.7e9)
    produce(job_settings, events)
    wait_folded(job_settings)
    never_enough = FinetuneConfig(min_users=1000)  # every run skips: only a full window commits
    job = FinetuneJob(job_settings, JobOptions("shopguide-finetune-backlog", never_enough, progress=False,
                                               max_events=100))
    try:
        records = [job.run_once() for _ in range(3)]
        lag = job.log.lag(job.runs.position())
    finally:
        job.close()
    assert [r.events for r in records] == [100, 100, 40]
    assert [r.committed for r in records] == [True, True, False]  # the last window was not full: it waits
    assert lag == 40
    for at in set(records[0].window) | set(records[1].window):  # the second window starts where the first ended
        first, second = records[0].window.get(at), records[1].window.get(at)
        assert not (first and second) or first[1] == second[0]


def test_bad_every_is_a_one_line_error(capsys):
    assert main(["finetune", "--every", "soon"]) == 1
    assert "--every 'soon'" in capsys.readouterr().err


async def _during_requests(url, change, published):
    """Run the blocking `change` while two callers keep asking Triton; until the new version answers."""
    stream = Stream(url)
    callers = [asyncio.create_task(stream.run([["1", "2"], []] * 4)) for _ in range(2)]
    await asyncio.sleep(0.5)
    try:
        record = await asyncio.get_running_loop().run_in_executor(None, change)
        published.append(record.version)
        for _ in range(100):
            if record.version in stream.versions[-5:]:
                break
            await asyncio.sleep(0.1)
    finally:
        stream.running = False
        await asyncio.gather(*callers)
        await stream.client.close()
    return stream
