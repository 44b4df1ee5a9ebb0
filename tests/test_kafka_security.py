"""Kafka TLS and SASL: the client keyword arguments and Faust credentials built from settings,
every client construction in the code routed through them, and the pipeline against a broker that
takes SASL/SCRAM-SHA-512 only: the worker (Faust, its changelog recovery, topic creation) and
replay authenticate from SHOPGUIDE_KAFKA_* settings, and a client without (or with wrong)
credentials is refused."""
from __future__ import annotations

import ast
import os
import ssl
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from kafka import KafkaProducer
from kafka.errors import KafkaError

from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.kafka_security import client_kwargs, faust_credentials
from shopguide.process import free_port
from streams.broker import LocalBroker
from streams.topics import read_sessions
from streams.worker_process import settings_env, wait_for
from tests.fixtures.kafka import TopicReader

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "shopguide", "scram-test-secret"
EVENTS, USERS = 120, 12
CLIENTS = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient", "AIOKafkaConsumer", "AIOKafkaProducer",
           "AIOKafkaAdminClient"}
# The chaos suite's own modules: they only ever talk to the private plaintext broker it starts.
PLAINTEXT_ONLY = {"streams/audit.py", "console/chaos_load.py", "console/chaos_stack.py"}


def sasl(tmp_path, protocol="SASL_PLAINTEXT", **values) -> Settings:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    return Settings(kafka_security_protocol=protocol, kafka_sasl_username=USER, kafka_sasl_password_file=secret,
                    **values)


def test_plaintext_adds_nothing():
    assert client_kwargs(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


def test_sasl_reads_the_password_file_without_its_newline(tmp_path):
    settings = sasl(tmp_path)
    assert client_kwargs(settings) == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                                       "sasl_plain_username": USER, "sasl_plain_password": PASSWORD}
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials) and credentials.password == PASSWORD
    assert credentials.protocol.value == "SASL_PLAINTEXT" and credentials.mechanism.value == "SCRAM-SHA-512"


def test_tls_verifies_against_the_ca_file(tmp_path):
    certifi = pytest.importorskip("certifi")
    settings = sasl(tmp_path, "SASL_SSL", kafka_ca_file=Path(certifi.where()), kafka_sasl_mechanism="PLAIN")
    context = client_kwargs(settings)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    credentials = faust_credentials(settings)
    assert credentials.protocol.value == "SASL_SSL" and credentials.ssl_context.verify_mode == ssl.CERT_REQUIRED
    tls_only = faust_credentials(Settings(kafka_security_protocol="SSL"))
    assert isinstance(tls_only, faust.SSLCredentials) and tls_only.protocol.value == "SSL"


@pytest.mark.parametrize("problem", ["missing password file", "empty password file", "CA file not PEM"])
def test_unreadable_secrets_are_one_line_naming_the_setting(tmp_path, problem):
    ca_file = {"kafka_ca_file": tmp_path / "password"} if problem == "CA file not PEM" else {}
    settings = sasl(tmp_path, "SASL_SSL", **ca_file)
    if problem == "missing password file":
        settings.kafka_sasl_password_file.unlink()
    elif problem == "empty password file":
        settings.kafka_sasl_password_file.write_text("\n")
    env = "SHOPGUIDE_KAFKA_CA_FILE" if problem == "CA file not PEM" else "SHOPGUIDE_KAFKA_SASL_PASSWORD_FILE"
    with pytest.raises(UserError, match=f"^{env}=") as error:
        client_kwargs(settings)
    assert "\n" not in str(error.value)


def kafka_client_calls():
    for path in sorted(ROOT.glob("*/*.py")):
        if path.parent.name in ("tests", ".venv"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in CLIENTS:
                yield str(path.relative_to(ROOT)), node


def test_every_kafka_client_in_the_code_takes_the_security_settings():
    """Each construction passes **client_kwargs(settings) (or a dict made by it: the session
    store's consumer_options, the local broker's own identity)."""
    calls = list(kafka_client_calls())
    assert len(calls) >= 10
    bare = [f"{path}:{node.lineno}" for path, node in calls
            if path not in PLAINTEXT_ONLY and not any(keyword.arg is None for keyword in node.keywords)]
    assert bare == []


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory):
    broker = LocalBroker(home=tmp_path_factory.mktemp("scram-home"), cache=Settings.from_env().cache,
                         port=free_port(), controller_port=free_port(), scram_users={USER: PASSWORD})
    broker.start(quiet=True)
    yield broker
    broker.stop()


@pytest.fixture
def scram_settings(scram_broker, tmp_path) -> Settings:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    return Settings(bootstrap_servers=scram_broker.bootstrap_servers, home=tmp_path / "home", worker_port=free_port(),
                    triton_grpc=f"127.0.0.1:{free_port()}",  # no Triton: popularity answers
                    kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="SCRAM-SHA-512",
                    kafka_sasl_username=USER, kafka_sasl_password_file=secret)


@pytest.mark.kafka
def test_worker_and_replay_authenticate_and_a_client_without_credentials_is_refused(
        scram_broker, scram_settings, start_worker, tmp_path):
    settings = scram_settings
    worker = start_worker(settings)
    data = tmp_path / "events.csv"
    data.write_text("user,item,timestamp\n" + "".join(
        f"user-{n % USERS},sku-{n},{1704103200 + n}\n" for n in range(EVENTS)))
    replay = subprocess.run([sys.executable, "-m", "console.cli", "replay", "--data", str(data)],
                            env={**os.environ, **settings_env(settings)}, capture_output=True, text=True, timeout=60)
    assert replay.returncode == 0, replay.stderr

    wait_for(lambda: worker.value("shopguide_events_consumed_total") >= EVENTS or worker.check_alive(),
             60, "the worker consuming every event")
    reader = TopicReader(settings.bootstrap_servers, settings.topic_recommendations, **client_kwargs(settings))
    try:
        assert len(reader.until(lambda r: len(r) >= EVENTS, 30, "a recommendation per event")) == EVENTS
    finally:
        reader.close()
    sessions = wait_for(lambda: (found := read_sessions(settings)) and len(found) == USERS and found,
                        30, "every user's session in the changelog")
    assert sum(session.events for session in sessions.values()) == EVENTS

    for credentials in ({}, {**client_kwargs(settings), "sasl_plain_password": "wrong"}):
        with pytest.raises(KafkaError):
            KafkaProducer(bootstrap_servers=settings.bootstrap_servers, bootstrap_timeout_ms=3000, **credentials)
    assert "Failed authentication" in scram_broker.log_file.read_text()
