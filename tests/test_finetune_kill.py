"""The fine-tune job killed (SIGKILL) at each step of a run, as a real process beside a real
worker and Triton: during the export, inside the publish before and after the rename into the
repository, after the publish before the run's line is written, after the line before the Kafka
offsets. After each kill the next run completes, and then: nothing is left behind, Triton
serves the live (newest verified) version, the committed runs' windows cover every event once,
and every version a run published is in the run log."""
import subprocess
import sys
from collections import defaultdict

import pytest

from serving.client import server_state
from serving.probe import probe_name
from serving.repository import ModelRepository
from serving.triton import LocalTriton
from streams.worker_process import settings_env
from tests.fixtures.triton import triton_settings
from tests.test_finetune_job import new_item_events, produce, wait_folded
from trainer.eventlog import EventLog
from trainer.job import state_dir
from trainer.runs import RECORD, RunLog

pytestmark = [pytest.mark.kafka, pytest.mark.triton]
STEPS = ["export", "publish-staged", "publish-renamed", "published", "saved"]
USERS, GARBAGE = 20, 2
FLAGS = ["--group", "finetune-kill", "--max-epochs", "2", "--patience", "2", "--min-users", "5", "--holdout", "0.5",
         "--min-gain", "-1", "--threads", "1"]  # any candidate passes the gate: every run publishes


@pytest.fixture
def stack(kafka_settings, tiny_export, start_worker, tmp_path):
    """A Triton of this test's own serving the tiny model, and a worker."""
    served = triton_settings(tmp_path / "triton")
    settings = kafka_settings(model_repository=served.model_repository, triton_grpc=served.triton_grpc,
                              triton_http=served.triton_http, triton_metrics_port=served.triton_metrics_port,
                              model_keep=20)
    ModelRepository.from_settings(settings).publish(tiny_export)
    triton = LocalTriton(settings)
    triton.start()
    try:
        start_worker(settings).wait_assigned()
        yield settings
    finally:
        triton.stop()


def finetune(settings, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**settings_env(settings), "SHOPGUIDE_TEST_KILL_AT": kill_at or ""}
    return subprocess.run([sys.executable, "-m", "console.cli", "finetune", *FLAGS], env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_run_killed_at_any_step_leaves_nothing_twice_nothing_skipped(stack):
    settings, models = stack, ModelRepository.from_settings(stack)
    produced = 0
    for n, step in enumerate(STEPS):
        events = new_item_events(f"kill{n}", USERS, 1.7e9 + n * 1000)
        produce(settings, events, garbage=GARBAGE)
        produced += len(events)
        wait_folded(settings)
        killed = finetune(settings, kill_at=step)
        assert killed.returncode == -9, f"{step}: {killed.stdout[-2000:]}{killed.stderr[-2000:]}"
        assert serving(settings) in [[v] for v in models.servable()]  # even before the next run tidies up
        rerun = finetune(settings)
        assert rerun.returncode == 0, f"after {step}: {rerun.stdout[-2000:]}{rerun.stderr[-2000:]}"
        check(settings, models, produced, garbages=(n + 1) * GARBAGE, step=step)


def serving(settings) -> list[int]:
    return server_state(settings.triton_grpc, settings.model_name).serving


def check(settings, models, produced: int, garbages: int, step: str) -> None:
    import tritonclient.grpc as grpcclient

    assert not list(models.model_dir.glob(".publish-*")), step
    assert not list(state_dir(settings).glob("tmp*")), step
    with grpcclient.InferenceServerClient(settings.triton_grpc) as client:
        assert not client.is_model_ready(probe_name(settings.model_name)), step
    live = models.live()
    assert live in models.verified() and models.pinned() == live and serving(settings) == [live], step

    records = RunLog(state_dir(settings) / "runs.jsonl").read()
    committed = [r for r in records if r.committed]
    assert sum(r.events for r in committed) == produced, step  # every event in exactly one committed run
    assert sum(r.rejected for r in committed) == garbages, step
    assert_windows_chain(committed, settings, step)
    published = {r.version for r in records if r.outcome == "published"}
    carrying = {int(d.name) for d in [*models.model_dir.iterdir(), *(models.model_dir / "retired").glob("*")]
                if d.name.isdigit() and (d / RECORD).exists()}
    assert carrying <= published and live in published, step


def assert_windows_chain(committed, settings, step: str) -> None:
    """Per partition, the committed windows start at 0, follow each other and reach the log's end."""
    spans = defaultdict(list)
    for record in committed:
        for at, span in record.window.items():
            spans[at].append(span)
    log = EventLog(settings, "finetune-kill-check")
    try:
        partitions = log.partitions()
        ends = log.consumer.end_offsets(list(partitions.values()))
    finally:
        log.close()
    for at, tp in partitions.items():
        chain = sorted(spans.get(at, []))
        bounds = [0] + [edge for span in chain for edge in span] + [ends[tp]]
        assert bounds[::2] == bounds[1::2] or not chain and ends[tp] == 0, (step, at, chain, ends[tp])
