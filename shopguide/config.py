"""Every setting in one frozen object: its default, the environment variable behind it, and what
it may hold.

Flags override environment variables, which override the defaults below. Constructing Settings
checks every value and the pairs that must agree, so a bad one stops a command with one line
naming the variable and what it expects (a flag's bad value is caught by argparse, shopguide.args).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from shopguide.checks import ADDRESS, ADDRESSES, ANY, HOST, KAFKA_NAME, PORT, SECONDS, Check, between, one_of
from shopguide.errors import UserError

# max_batch_size in model_repository/next_item/config.pbtxt: a bigger micro-batch fails every call.
TRITON_MAX_BATCH = 1024
# A session record is rewritten to the changelog on every event: a few hundred items at most.
MAX_SESSION_LENGTH = 1000
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")


def _setting(default, env: str, doc: str, check: Check = ANY, kind: type | None = None):
    """`check` is what every value must pass; `kind` parses the variable (default: the default's type)."""
    return field(default=default, metadata={"env": env, "doc": doc, "check": check, "kind": kind or type(default)})


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = _setting("127.0.0.1:9092", "SHOPGUIDE_BOOTSTRAP_SERVERS", "Kafka bootstrap servers",
                                      ADDRESSES)
    home: Path = _setting(Path("var"), "SHOPGUIDE_HOME", "run-time state: broker data, logs, pid files, worker tables")
    cache: Path = _setting(Path.home() / ".cache" / "shopguide", "SHOPGUIDE_CACHE", "downloaded Kafka jars")
    data_dir: Path = _setting(Path("../shared/data"), "SHOPGUIDE_DATA", "the shared data sets")
    partitions: int = _setting(4, "SHOPGUIDE_PARTITIONS", "partitions of each event topic", between(1))
    replication: int = _setting(1, "SHOPGUIDE_REPLICATION",
                                "replication factor of every topic the pipeline creates, changelogs included",
                                between(1))
    session_length: int = _setting(50, "SHOPGUIDE_SESSION_LENGTH", "recent items kept per user",
                                   between(1, MAX_SESSION_LENGTH))
    worker_id: str = _setting("shopguide", "SHOPGUIDE_APP_ID", "Faust app id (consumer group, changelog prefix)",
                              KAFKA_NAME)
    worker_host: str = _setting("127.0.0.1", "SHOPGUIDE_WORKER_HOST", "address the worker's /metrics listens on", HOST)
    worker_port: int = _setting(6066, "SHOPGUIDE_WORKER_PORT", "worker web port serving /metrics", PORT)
    session_ttl_s: float = _setting(30 * 86400.0, "SHOPGUIDE_SESSION_TTL",
                                    "sessions idle this long in event time are evicted (s)", SECONDS)
    triton_grpc: str = _setting("127.0.0.1:8001", "SHOPGUIDE_TRITON_GRPC", "Triton gRPC endpoint", ADDRESS)
    triton_http: str = _setting("127.0.0.1:8000", "SHOPGUIDE_TRITON_HTTP", "Triton HTTP endpoint", ADDRESS)
    triton_metrics_port: int = _setting(8002, "SHOPGUIDE_TRITON_METRICS_PORT", "Triton metrics port", PORT)
    model_repository: Path = _setting(Path("model_repository"), "SHOPGUIDE_MODEL_REPOSITORY", "Triton model repository")
    model_name: str = _setting("next_item", "SHOPGUIDE_MODEL_NAME", "model name in the repository", KAFKA_NAME)
    model_keep: int = _setting(3, "SHOPGUIDE_MODEL_KEEP", "model versions kept in the repository (rollback needs 2)",
                               between(2))
    triton_timeout_s: float = _setting(0.2, "SHOPGUIDE_TRITON_TIMEOUT", "timeout of one Triton call (s)", SECONDS)
    recommend_k: int = _setting(10, "SHOPGUIDE_RECOMMEND_K", "items per recommendation", between(1))
    batch_max: int = _setting(1000, "SHOPGUIDE_BATCH_MAX", "events per agent batch (one Triton call each)",
                              between(1, TRITON_MAX_BATCH))
    batch_wait_s: float = _setting(0.01, "SHOPGUIDE_BATCH_WAIT",
                                   "longest an agent batch waits for more after its first event (s)", SECONDS)
    fetch_min_bytes: int = _setting(65_536, "SHOPGUIDE_FETCH_MIN_BYTES",
                                    "bytes a worker's fetch waits for, up to SHOPGUIDE_FETCH_WAIT (1: answer every fetch "
                                    "at once)", between(1))
    fetch_wait_s: float = _setting(0.01, "SHOPGUIDE_FETCH_WAIT", "longest a worker's fetch waits for "
                                   "SHOPGUIDE_FETCH_MIN_BYTES (s)", SECONDS)
    event_loop: str = _setting("uvloop", "SHOPGUIDE_EVENT_LOOP",
                               "the worker's event loops: uvloop (libuv, in C) or asyncio (the standard library's)",
                               one_of("uvloop", "asyncio"))
    answer_cache: int = _setting(10_000, "SHOPGUIDE_ANSWER_CACHE",
                                 "model answers kept for reuse while a history is unchanged (0: none)", between(0))
    # A search's results are browsed in the next few clicks, within minutes; past that the history,
    # now holding those clicks, carries the intent, and an old query would pull answers off it.
    query_events: int = _setting(5, "SHOPGUIDE_QUERY_EVENTS",
                                 "a search steers its own answer and the session's next N events (0: its own only)",
                                 between(0))
    query_ttl_s: float = _setting(900.0, "SHOPGUIDE_QUERY_TTL",
                                  "a search steers answers this long after it, in event time (s)", SECONDS)
    session_timeout_s: float = _setting(30.0, "SHOPGUIDE_SESSION_TIMEOUT", "Kafka consumer session timeout (s)",
                                        SECONDS)
    heartbeat_s: float = _setting(3.0, "SHOPGUIDE_HEARTBEAT", "Kafka consumer heartbeat interval (s)", SECONDS)
    rebalance_timeout_s: float = _setting(60.0, "SHOPGUIDE_REBALANCE_TIMEOUT", "Kafka rebalance timeout (s)", SECONDS)

    kafka_security_protocol: str = _setting("PLAINTEXT", "SHOPGUIDE_KAFKA_SECURITY_PROTOCOL",
                                            "Kafka listener protocol (SSL and SASL_SSL: TLS)",
                                            one_of(*SECURITY_PROTOCOLS))
    kafka_sasl_mechanism: str = _setting("SCRAM-SHA-512", "SHOPGUIDE_KAFKA_SASL_MECHANISM",
                                         "SASL mechanism (SASL_* protocols)", one_of(*SASL_MECHANISMS))
    kafka_sasl_username: str = _setting("", "SHOPGUIDE_KAFKA_SASL_USERNAME", "SASL user name (SASL_* protocols)")
    kafka_sasl_password_file: Path | None = _setting(None, "SHOPGUIDE_KAFKA_SASL_PASSWORD_FILE",
                                                     "file holding the SASL password (SASL_* protocols)", kind=Path)
    kafka_ca_file: Path | None = _setting(None, "SHOPGUIDE_KAFKA_CA_FILE",
                                          "PEM CA bundle that signed the brokers' certificates (SSL, SASL_SSL; "
                                          "unset: the system's)", kind=Path)

    topic_clicks: str = _setting("shop.clicks", "SHOPGUIDE_TOPIC_CLICKS", "click events", KAFKA_NAME)
    topic_searches: str = _setting("shop.searches", "SHOPGUIDE_TOPIC_SEARCHES", "search events", KAFKA_NAME)
    topic_purchases: str = _setting("shop.purchases", "SHOPGUIDE_TOPIC_PURCHASES", "purchase and add_to_cart events",
                                    KAFKA_NAME)
    topic_deadletter: str = _setting("shop.deadletter", "SHOPGUIDE_TOPIC_DEADLETTER", "rejected events with a reason",
                                     KAFKA_NAME)
    topic_recommendations: str = _setting("shop.recommendations", "SHOPGUIDE_TOPIC_RECOMMENDATIONS", "recommendations",
                                          KAFKA_NAME)
    topic_catalog: str = _setting("shop.catalog", "SHOPGUIDE_TOPIC_CATALOG",
                                  "the catalogue: item records keyed by item id (compacted)", KAFKA_NAME)

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and not f.metadata["check"](value):
                raise UserError(f"{f.metadata['env']}={value}: expected {f.metadata['check'].expected}")
        if problem := _disagreement(self):
            raise UserError(problem)

    @classmethod
    def from_env(cls, environ=None, **overrides) -> "Settings":
        """Build settings from `environ` (default os.environ); non-None overrides win."""
        environ = os.environ if environ is None else environ
        values = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is not None:
                values[f.name] = parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @property
    def event_topics(self) -> tuple[str, str, str]:
        return (self.topic_clicks, self.topic_searches, self.topic_purchases)

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol.endswith("SSL")


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def env_name(name: str) -> str:
    return FIELDS[name].metadata["env"]


def parse(f: dataclasses.Field, raw: str):
    """A variable's text as the field's type; an empty one unsets a field whose default is None."""
    kind, env = f.metadata["kind"], f.metadata["env"]
    if not raw.strip():
        if f.default is None or f.default == "":
            return f.default
        raise UserError(f"{env} is empty: expected {expected(f)}")
    try:
        if kind is bool:
            return raw.lower() in ("1", "true", "yes", "on")
        if issubclass(kind, Path):
            return Path(raw).expanduser()
        return kind(raw)
    except ValueError:
        raise UserError(f"{env}={raw!r}: expected {expected(f)}") from None


def expected(f: dataclasses.Field) -> str:
    check = f.metadata["check"]
    if check is ANY:
        kind = f.metadata["kind"]
        return "a path" if issubclass(kind, Path) else {int: "an integer", float: "a number"}.get(kind, "any text")
    return check.expected


def _disagreement(settings: Settings) -> str | None:
    """The first pair of settings that cannot hold together, in words."""
    s = settings
    if s.heartbeat_s >= s.session_timeout_s:
        return (f"SHOPGUIDE_HEARTBEAT={s.heartbeat_s} must be below SHOPGUIDE_SESSION_TIMEOUT={s.session_timeout_s} "
                "(the group drops a consumer that misses its heartbeats for the session timeout)")
    topics = [f.name for f in dataclasses.fields(s) if f.name.startswith("topic_")]
    for n, first in enumerate(topics):
        for second in topics[n + 1:]:
            if getattr(s, first) == getattr(s, second):
                return f"{env_name(first)} and {env_name(second)} both name {getattr(s, first)!r}: expected distinct topics"
    return _security_disagreement(s)


def _security_disagreement(s: Settings) -> str | None:
    protocol = f"SHOPGUIDE_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol}"
    if s.kafka_sasl and not (s.kafka_sasl_username and s.kafka_sasl_password_file):
        return f"{protocol} needs SHOPGUIDE_KAFKA_SASL_USERNAME and SHOPGUIDE_KAFKA_SASL_PASSWORD_FILE"
    if not s.kafka_sasl and (s.kafka_sasl_username or s.kafka_sasl_password_file):
        return f"SASL credentials are set but {protocol} does not use SASL: expected SASL_PLAINTEXT or SASL_SSL"
    if not s.kafka_tls and s.kafka_ca_file:
        return f"SHOPGUIDE_KAFKA_CA_FILE is set but {protocol} does not use TLS: expected SSL or SASL_SSL"
    return None


def describe() -> str:
    """One line per setting, for --help epilogs and the README."""
    return "\n".join(
        f"  {f.metadata['env']:<35} {f.metadata['doc']} (default {f.default if f.default not in (None, '') else 'unset'}; "
        f"{expected(f)})"
        for f in dataclasses.fields(Settings)
    )
