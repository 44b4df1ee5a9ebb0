"""A real Prometheus scrapes the running pipeline (real broker, worker and Triton) during a replay,
and every worker and Triton panel of the dashboard returns data. The fine-tune panels need a
fine-tune job's exporter: test_dashboard.py covers them with the same metric classes."""
from __future__ import annotations

import json

import pytest

from streams.events import Event
from streams.replay import publish
from tests.fixtures.prometheus import panels_without_data
from tests.fixtures.worker import all_partitions, wait_for
from tests.test_dashboard import DASHBOARD

pytestmark = [pytest.mark.kafka, pytest.mark.triton, pytest.mark.prometheus]


def traffic(round_: int) -> list[Event]:
    """Clicks and a purchase from known users, and a search from a user with no items."""
    events = [Event("click", f"u{n}", "s", 1.7e9 + round_, items=(str(1 + (n + round_) % 30),)) for n in range(10)]
    events.append(Event("purchase", "u0", "s", 1.7e9 + round_, items=("2",)))
    events.append(Event("search", f"new{round_}", "s", 1.7e9 + round_, query="lego"))
    return events


def test_every_pipeline_panel_returns_data_during_a_replay(
        kafka_settings, start_worker, producer, triton, prometheus):
    settings = kafka_settings(triton_grpc=triton.url, triton_timeout_s=2.0)
    worker = start_worker(settings)
    wait_for(lambda: worker.assigned() == all_partitions(settings), what="worker assigned")
    endpoints = {"shopguide-worker": f"127.0.0.1:{settings.worker_port}",
                 "triton": triton.metrics_url.removeprefix("http://").removesuffix("/metrics")}
    for job, endpoint in endpoints.items():
        prometheus.set_targets(job, [endpoint])
    try:
        for round_ in range(20):
            for event in traffic(round_):
                publish(producer, settings, event)
            producer.send(settings.topic_clicks, key=b"u1", value=b"\xc1 not msgpack")
            producer.flush()
            if round_ % 5 == 4:
                for job, endpoint in endpoints.items():
                    prometheus.wait_for_scrapes(job, [endpoint], scrapes=1)
        wait_for(lambda: worker.value("shopguide_recommendations_total") >= 20 * 12, what="every recommendation")
        for job, endpoint in endpoints.items():
            prometheus.wait_for_scrapes(job, [endpoint], scrapes=2)
        dashboard = json.loads(DASHBOARD.read_text())
        # Every valid event now has items or a search query, so popularity answers only when Triton
        # fails: the fallback panels are left to test_dashboard.py, like the fine-tune ones.
        missing = panels_without_data(prometheus, dashboard, keep=lambda expr: not any(
            name in expr for name in ("shopguide_finetune_", "shopguide_fallbacks_", 'source="fallback"')))
        assert missing == []
        assert worker.value("shopguide_recommendations_total", source="model") > 0
        assert worker.value("shopguide_events_deadlettered_total", reason="malformed_msgpack") == 20
    finally:
        for job in endpoints:
            prometheus.set_targets(job, [])
