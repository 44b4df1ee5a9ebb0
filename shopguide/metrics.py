"""Prometheus metrics of the worker and of the fine-tune job.

Each class is given its registry (never the global one at import), so tests and several apps in
one process do not collide. Names are stable: dashboards and alert rules under deploy/ use them.
Latencies are in seconds.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
SEND_KINDS = ("changelog", "recommendation", "deadletter")


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.events = Counter("shopguide_events_consumed", "Events accepted, by type",
                              ["type"], registry=registry)
        self.deadletters = Counter("shopguide_events_deadlettered", "Events sent to the dead-letter topic, by reason",
                                   ["reason"], registry=registry)
        self.recommendations = Counter("shopguide_recommendations", "Recommendations pushed, by source (model or fallback)",
                                       ["source"], registry=registry)
        self.fallbacks = Counter("shopguide_fallbacks", "Recommendations served by popularity, by cause",
                                 ["cause"], registry=registry)
        self.latency = Histogram("shopguide_event_to_recommendation_seconds",
                                 "Event time (Kafka timestamp) to recommendation pushed",
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.triton_latency = Histogram("shopguide_triton_request_seconds", "One Triton inference call",
                                        buckets=LATENCY_BUCKETS, registry=registry)
        self.triton_batch = Histogram("shopguide_triton_batch_size", "Users in one Triton call",
                                      buckets=BATCH_BUCKETS, registry=registry)
        self.batch_events = Histogram("shopguide_batch_events", "Events in one agent batch",
                                      buckets=BATCH_BUCKETS + (1024,), registry=registry)
        self.batch_phase = Histogram("shopguide_batch_phase_seconds", "One agent batch's time in each phase: queued "
                                     "(its oldest event, from its Kafka timestamp until the batch is handed over: "
                                     "the producer's linger, the broker, the fetch, the batch wait), fold (decode, "
                                     "sessions), answer (the recommender's model answers: the wait for the batch before's Triton "
                                     "call to return, then its own), "
                                     "wait (for the batch before to be confirmed), send (changelog, recommendations "
                                     "and dead letters queued), confirm (until Kafka has every record)", ["phase"],
                                     buckets=LATENCY_BUCKETS, registry=registry)
        self.steered = Counter("shopguide_recommendations_steered", "Model answers a search query steered (its own "
                               "and the session's next events, SHOPGUIDE_QUERY_EVENTS)", registry=registry)
        self.inferences_saved = Counter("shopguide_inferences_saved", "Model answers reused instead of inferred: "
                                        "a history answered earlier or in the same batch", registry=registry)
        self.lag = Gauge("shopguide_consumer_lag", "Messages behind the end of the partition",
                         ["topic", "partition"], registry=registry)
        self.sessions = Gauge("shopguide_session_table_size", "Users held in this worker's session table",
                              registry=registry)
        self.model_version = Gauge("shopguide_model_version", "Model version that answered last",
                                   registry=registry)
        self.send_failures = Counter("shopguide_send_failures", "Sends Kafka refused or timed out (each attempt), "
                                     "by kind: changelog, recommendation, deadletter", ["kind"], registry=registry)
        for kind in SEND_KINDS:  # a zero series per kind from the start: dashboards and alerts see 0, not nothing
            self.send_failures.labels(kind)
        self.replayed = Counter("shopguide_events_already_applied",
                                "Events read again after a crash or rebalance whose session already held them",
                                registry=registry)
        self.evicted = Counter("shopguide_sessions_evicted", "Sessions idle past the TTL, tombstoned",
                               registry=registry)
        self.catalog_unbuyable = Gauge("shopguide_catalog_unbuyable", "Catalogue items never recommended, by state "
                                       "(out_of_stock, delisted)", ["state"], registry=registry)
        self.catalog_records = Counter("shopguide_catalog_records", "Catalogue records read, by outcome (applied, "
                                       "or the reason it was rejected)", ["outcome"], registry=registry)
        for state in ("out_of_stock", "delisted"):  # zero series from the start, so panels show 0, not "no data"
            self.catalog_unbuyable.labels(state)
        self.catalog_records.labels("applied")


class FinetuneMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.registry = registry
        self.runs = Counter("shopguide_finetune_runs", "Fine-tune runs, by outcome (published, rejected, failed)",
                            ["outcome"], registry=registry)
        self.duration = Gauge("shopguide_finetune_last_duration_seconds", "Wall time of the last run",
                              registry=registry)
        self.events_used = Gauge("shopguide_finetune_last_events", "Events the last run learned from",
                                 registry=registry)
        self.candidate_metric = Gauge("shopguide_finetune_last_candidate_ndcg", "Candidate NDCG@20 on the held-out slice",
                                      registry=registry)
        self.live_metric = Gauge("shopguide_finetune_last_live_ndcg", "Live model NDCG@20 on the held-out slice",
                                 registry=registry)
        self.published_version = Gauge("shopguide_finetune_published_version", "Newest version published",
                                       registry=registry)
        self.last_run = Gauge("shopguide_finetune_last_run_timestamp_seconds", "When the last run ended",
                              registry=registry)


def scrape(url: str, timeout_s: float = 5.0) -> list:
    """Every sample served at the Prometheus page `url` (none while nothing answers there); the
    parser names a counter's samples with `_total`."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(url, timeout=timeout_s).read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return []
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]
