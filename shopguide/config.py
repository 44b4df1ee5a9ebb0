"""Every setting in one frozen object: its default, and the environment variable behind it.

Flags override environment variables, which override the defaults below.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from shopguide.errors import UserError


def _setting(default, env: str, doc: str):
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = _setting("127.0.0.1:9092", "SHOPGUIDE_BOOTSTRAP_SERVERS", "Kafka bootstrap servers")
    home: Path = _setting(Path("var"), "SHOPGUIDE_HOME", "run-time state: broker data, logs, pid files, worker tables")
    cache: Path = _setting(Path.home() / ".cache" / "shopguide", "SHOPGUIDE_CACHE", "downloaded Kafka jars")
    data_dir: Path = _setting(Path("../shared/data"), "SHOPGUIDE_DATA", "the shared data sets")
    partitions: int = _setting(4, "SHOPGUIDE_PARTITIONS", "partitions of each event topic")
    replication: int = _setting(1, "SHOPGUIDE_REPLICATION",
                                "replication factor of every topic the pipeline creates, changelogs included")
    session_length: int = _setting(50, "SHOPGUIDE_SESSION_LENGTH", "recent items kept per user")
    worker_id: str = _setting("shopguide", "SHOPGUIDE_APP_ID", "Faust app id (consumer group, changelog prefix)")
    worker_host: str = _setting("127.0.0.1", "SHOPGUIDE_WORKER_HOST", "address the worker's /metrics listens on")
    worker_port: int = _setting(6066, "SHOPGUIDE_WORKER_PORT", "worker web port serving /metrics")
    session_ttl_s: float = _setting(30 * 86400.0, "SHOPGUIDE_SESSION_TTL",
                                    "sessions idle this long in event time are evicted (s)")
    triton_grpc: str = _setting("127.0.0.1:8001", "SHOPGUIDE_TRITON_GRPC", "Triton gRPC endpoint")
    triton_http: str = _setting("127.0.0.1:8000", "SHOPGUIDE_TRITON_HTTP", "Triton HTTP endpoint")
    triton_metrics_port: int = _setting(8002, "SHOPGUIDE_TRITON_METRICS_PORT", "Triton metrics port")
    model_repository: Path = _setting(Path("model_repository"), "SHOPGUIDE_MODEL_REPOSITORY", "Triton model repository")
    model_name: str = _setting("next_item", "SHOPGUIDE_MODEL_NAME", "model name in the repository")
    model_keep: int = _setting(3, "SHOPGUIDE_MODEL_KEEP", "model versions kept in the repository (rollback needs 2)")
    triton_timeout_s: float = _setting(0.2, "SHOPGUIDE_TRITON_TIMEOUT", "timeout of one Triton call (s)")
    recommend_k: int = _setting(10, "SHOPGUIDE_RECOMMEND_K", "items per recommendation")
    batch_max: int = _setting(1000, "SHOPGUIDE_BATCH_MAX", "events per agent batch (one Triton call each)")
    batch_wait_s: float = _setting(0.01, "SHOPGUIDE_BATCH_WAIT", "longest wait to fill an agent batch (s)")
    session_timeout_s: float = _setting(30.0, "SHOPGUIDE_SESSION_TIMEOUT", "Kafka consumer session timeout (s)")
    heartbeat_s: float = _setting(3.0, "SHOPGUIDE_HEARTBEAT", "Kafka consumer heartbeat interval (s)")
    rebalance_timeout_s: float = _setting(60.0, "SHOPGUIDE_REBALANCE_TIMEOUT", "Kafka rebalance timeout (s)")

    topic_clicks: str = _setting("shop.clicks", "SHOPGUIDE_TOPIC_CLICKS", "click events")
    topic_searches: str = _setting("shop.searches", "SHOPGUIDE_TOPIC_SEARCHES", "search events")
    topic_purchases: str = _setting("shop.purchases", "SHOPGUIDE_TOPIC_PURCHASES", "purchase and add_to_cart events")
    topic_deadletter: str = _setting("shop.deadletter", "SHOPGUIDE_TOPIC_DEADLETTER", "rejected events with a reason")
    topic_recommendations: str = _setting("shop.recommendations", "SHOPGUIDE_TOPIC_RECOMMENDATIONS", "recommendations")

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Build settings from `environ` (default os.environ); non-None overrides win."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def event_topics(self) -> tuple[str, str, str]:
        return (self.topic_clicks, self.topic_searches, self.topic_purchases)


def _parse(f: dataclasses.Field, raw: str):
    kind = type(f.default)
    try:
        if kind is bool:
            return raw.lower() in ("1", "true", "yes", "on")
        if issubclass(kind, Path):
            return Path(raw).expanduser()
        return kind(raw)
    except ValueError:
        raise UserError(f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}") from None


def describe() -> str:
    """One line per setting, for --help epilogs and the README."""
    return "\n".join(
        f"  {f.metadata['env']:<34} {f.metadata['doc']} (default {f.default})"
        for f in dataclasses.fields(Settings)
    )
