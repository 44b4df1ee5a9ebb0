"""The Grafana dashboard and the alert rules against a real Prometheus that scrapes the metric
classes of shopguide/metrics.py, served by prometheus_client as a worker and the fine-tune job
serve them. The full-stack version (a replay through the real pipeline) reuses these helpers."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from serving.client import TritonClient
from shopguide.metrics import FinetuneMetrics, WorkerMetrics
from shopguide.process import free_port
from tests.fixtures.prometheus import panel_queries, panels_without_data

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "shopguide.json"

pytestmark = pytest.mark.prometheus


def serve(registry: CollectorRegistry):
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server, f"127.0.0.1:{port}"


def record_traffic(worker: WorkerMetrics) -> None:
    for kind, count in (("click", 40), ("search", 8), ("purchase", 2)):
        worker.events.labels(type=kind).inc(count)
    worker.deadletters.labels(reason="schema_version").inc()
    worker.recommendations.labels(source="model").inc(45)
    worker.recommendations.labels(source="fallback").inc(5)
    worker.fallbacks.labels(cause="new_user").inc(5)
    worker.steered.inc(12)
    for seconds in (0.004, 0.012, 0.03):
        worker.latency.observe(seconds)
        worker.triton_latency.observe(seconds / 2)
    worker.triton_batch.observe(24)
    worker.batch_events.observe(30)
    for phase, seconds in (("queued", 0.015), ("fold", 0.001), ("answer", 0.02), ("confirm", 0.003)):
        worker.batch_phase.labels(phase).observe(seconds)
    for partition in range(4):
        worker.lag.labels(topic="shop.clicks", partition=str(partition)).set(partition * 10)
    worker.sessions.set(48)
    worker.model_version.set(3)


def record_finetune_run(finetune: FinetuneMetrics) -> None:
    finetune.runs.labels(outcome="published").inc()
    finetune.duration.set(42.0)
    finetune.events_used.set(12_000)
    finetune.candidate_metric.set(0.081)
    finetune.live_metric.set(0.078)
    finetune.published_version.set(3)
    finetune.last_run.set_to_current_time()


@pytest.fixture(scope="module")
def scraped(prometheus):
    """A worker and a fine-tune job exporting a little traffic, each scraped 3 times."""
    worker_registry, finetune_registry = CollectorRegistry(), CollectorRegistry()
    worker, finetune = WorkerMetrics(worker_registry), FinetuneMetrics(finetune_registry)
    record_traffic(worker)
    record_finetune_run(finetune)
    servers, endpoints = {}, {}
    try:
        for job, registry in (("shopguide-worker", worker_registry), ("shopguide-finetune", finetune_registry)):
            servers[job], endpoints[job] = serve(registry)
            prometheus.set_targets(job, [endpoints[job]])
        for job, endpoint in endpoints.items():
            prometheus.wait_for_scrapes(job, [endpoint])
        record_traffic(worker)  # so the rates between scrapes are not all zero
        prometheus.wait_until(lambda: prometheus.query("sum(shopguide_events_consumed_total) == 100"),
                              30, "to scrape the second batch")
        yield prometheus
    finally:
        for job, server in servers.items():
            prometheus.set_targets(job, [])
            server.shutdown()
            server.server_close()


def uses_triton(expr: str) -> bool:
    return "nv_inference_" in expr or 'job="triton"' in expr


def test_every_worker_and_finetune_panel_returns_data(scraped):
    dashboard = json.loads(DASHBOARD.read_text())
    assert panels_without_data(scraped, dashboard, keep=lambda expr: not uses_triton(expr)) == []
    # what was left out needs a Triton server: only those panels
    left_out = {title for title, expr in panel_queries(dashboard) if uses_triton(expr)}
    assert left_out and all(title.startswith("Triton") for title in left_out)


def test_panel_values_follow_the_recorded_traffic(scraped):
    events = scraped.query("sum by (type) (shopguide_events_consumed_total)")
    assert {row["metric"]["type"]: float(row["value"][1]) for row in events} == \
        {"click": 80.0, "search": 16.0, "purchase": 4.0}
    ratio, = scraped.query('sum(shopguide_recommendations_total{source="fallback"}) / sum(shopguide_recommendations_total)')
    assert float(ratio["value"][1]) == pytest.approx(0.1)


def test_a_query_on_a_missing_metric_is_reported(prometheus):
    dashboard = {"panels": [{"title": "typo", "targets": [{"expr": "shopguide_event_consumed_total"}]}]}
    assert panels_without_data(prometheus, dashboard) == ["typo: shopguide_event_consumed_total"]


def test_alert_rules_evaluate_on_scraped_series(scraped):
    """The deploy/prometheus rules, loaded by the server, evaluate without errors on real series."""
    scraped.wait_until(lambda: all(rule["health"] != "unknown" for rule in scraped.rules()), 30, "to evaluate the rules")
    rules = scraped.rules()
    assert rules and {rule["name"]: rule.get("lastError", "") for rule in rules if rule["health"] != "ok"} == {}


def test_triton_panels_return_data(prometheus, triton):
    """The Triton panels on the session's real Triton, after one inference."""
    async def infer():
        client = TritonClient(triton.url)
        try:
            await client.recommend([[]], timeout_s=10.0)
        finally:
            await client.close()
    asyncio.run(infer())
    endpoint = triton.metrics_url.removeprefix("http://").removesuffix("/metrics")
    prometheus.set_targets("triton", [endpoint])
    try:
        prometheus.wait_for_scrapes("triton", [endpoint])
        assert panels_without_data(prometheus, json.loads(DASHBOARD.read_text()), keep=uses_triton) == []
    finally:
        prometheus.set_targets("triton", [])
