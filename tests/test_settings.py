"""Every setting has a range: a bad environment variable or flag stops the command with one line
naming it and what it expects, never a traceback."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from console.cli import main
from shopguide.checks import ANY
from shopguide.config import FIELDS, TRITON_MAX_BATCH, Settings
from shopguide.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# Free text and paths: anything goes (an empty path is refused when parsed, below).
UNCHECKED = {"home", "cache", "data_dir", "model_repository", "kafka_sasl_username", "kafka_sasl_password_file",
             "kafka_ca_file"}

BAD = [
    ("SHOPGUIDE_MODEL_KEEP", "-3", "an integer >= 2"),
    ("SHOPGUIDE_MODEL_KEEP", "1", "an integer >= 2"),
    ("SHOPGUIDE_SESSION_LENGTH", "0", "an integer from 1 to 1000"),
    ("SHOPGUIDE_SESSION_LENGTH", "100000", "an integer from 1 to 1000"),
    ("SHOPGUIDE_BATCH_MAX", "1025", "an integer from 1 to 1024"),
    ("SHOPGUIDE_BATCH_MAX", "0", "an integer from 1 to 1024"),
    ("SHOPGUIDE_TRITON_TIMEOUT", "nan", "a finite number of seconds > 0"),
    ("SHOPGUIDE_TRITON_TIMEOUT", "inf", "a finite number of seconds > 0"),
    ("SHOPGUIDE_TRITON_TIMEOUT", "0", "a finite number of seconds > 0"),
    ("SHOPGUIDE_PARTITIONS", "0", "an integer >= 1"),
    ("SHOPGUIDE_EVENT_LOOP", "tokio", "one of uvloop, asyncio"),
    ("SHOPGUIDE_PARTITIONS", "four", "an integer >= 1"),
    ("SHOPGUIDE_REPLICATION", "0", "an integer >= 1"),
    ("SHOPGUIDE_SESSION_TTL", "-1", "a finite number of seconds > 0"),
    ("SHOPGUIDE_BATCH_WAIT", "0", "a finite number of seconds > 0"),
    ("SHOPGUIDE_FETCH_WAIT", "-0.01", "a finite number of seconds > 0"),
    ("SHOPGUIDE_SESSION_TIMEOUT", "nan", "a finite number of seconds > 0"),
    ("SHOPGUIDE_HEARTBEAT", "-1", "a finite number of seconds > 0"),
    ("SHOPGUIDE_REBALANCE_TIMEOUT", "0", "a finite number of seconds > 0"),
    ("SHOPGUIDE_RECOMMEND_K", "0", "an integer >= 1"),
    ("SHOPGUIDE_WORKER_PORT", "0", "an integer from 1 to 65535"),
    ("SHOPGUIDE_WORKER_PORT", "70000", "an integer from 1 to 65535"),
    ("SHOPGUIDE_TRITON_METRICS_PORT", "-1", "an integer from 1 to 65535"),
    ("SHOPGUIDE_TRITON_GRPC", "triton", "host:port"),
    ("SHOPGUIDE_TRITON_HTTP", "triton:0", "host:port"),
    ("SHOPGUIDE_BOOTSTRAP_SERVERS", "a:9092,b", "host:port[,host:port...]"),
    ("SHOPGUIDE_WORKER_HOST", "two words", "a host name or address"),
    ("SHOPGUIDE_APP_ID", "my app", "1-200 characters"),
    ("SHOPGUIDE_MODEL_NAME", "../x", "1-200 characters"),
    ("SHOPGUIDE_TOPIC_CLICKS", "clicks!", "1-200 characters"),
    ("SHOPGUIDE_KAFKA_SECURITY_PROTOCOL", "TLS", "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ("SHOPGUIDE_KAFKA_SASL_MECHANISM", "GSSAPI", "one of SCRAM-SHA-512, SCRAM-SHA-256, PLAIN"),
    ("SHOPGUIDE_HOME", "", "is empty: expected a path"),
]


def test_every_setting_but_free_text_and_paths_declares_a_range():
    assert {name for name, f in FIELDS.items() if f.metadata["check"] is ANY} == UNCHECKED


def test_defaults_pass_their_own_checks():
    Settings()


@pytest.mark.parametrize("env, raw, expected", BAD, ids=[f"{env}={raw}" for env, raw, _ in BAD])
def test_a_bad_variable_is_named_with_what_it_expects(env, raw, expected):
    with pytest.raises(UserError) as error:
        Settings.from_env({env: raw})
    message = str(error.value)
    assert message.startswith(env) and expected in message and "\n" not in message


def test_checks_run_on_construction_too():
    with pytest.raises(UserError, match=r"^SHOPGUIDE_PARTITIONS=0: expected an integer >= 1$"):
        Settings(partitions=0)


def test_batch_max_bound_is_the_served_models_max_batch_size():
    config = (ROOT / "model_repository" / "next_item" / "config.pbtxt").read_text()
    assert int(re.search(r"^max_batch_size:\s*(\d+)", config, re.M).group(1)) == TRITON_MAX_BATCH
    assert Settings(batch_max=TRITON_MAX_BATCH).batch_max == TRITON_MAX_BATCH


@pytest.mark.parametrize("values, words", [
    ({"heartbeat_s": 30.0}, "SHOPGUIDE_HEARTBEAT=30.0 must be below SHOPGUIDE_SESSION_TIMEOUT=30.0"),
    ({"topic_deadletter": "shop.clicks"}, "SHOPGUIDE_TOPIC_CLICKS and SHOPGUIDE_TOPIC_DEADLETTER both name"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
     "SHOPGUIDE_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs SHOPGUIDE_KAFKA_SASL_USERNAME and "
     "SHOPGUIDE_KAFKA_SASL_PASSWORD_FILE"),
    ({"kafka_sasl_username": "u"}, "SASL credentials are set but SHOPGUIDE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
    ({"kafka_ca_file": Path("ca.pem")}, "SHOPGUIDE_KAFKA_CA_FILE is set but SHOPGUIDE_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"),
])
def test_settings_that_cannot_hold_together(values, words):
    with pytest.raises(UserError, match=re.escape(words)):
        Settings(**values)


def test_an_empty_optional_variable_leaves_it_unset():
    settings = Settings.from_env({"SHOPGUIDE_KAFKA_CA_FILE": "", "SHOPGUIDE_KAFKA_SASL_USERNAME": ""})
    assert settings.kafka_ca_file is None and settings.kafka_sasl_username == ""


def test_the_command_prints_one_line_for_a_bad_variable(monkeypatch, capsys):
    monkeypatch.setenv("SHOPGUIDE_MODEL_KEEP", "-3")
    assert main(["model", "rollback"]) == 1
    err = capsys.readouterr().err
    assert err == "shopguide model: error: SHOPGUIDE_MODEL_KEEP=-3: expected an integer >= 2\n"


@pytest.mark.parametrize("argv, flag", [
    (["model", "publish", "--keep", "-3", "export"], "--keep"),
    (["worker", "--worker-port", "0"], "--worker-port"),
    (["triton", "start", "--grpc", "nowhere"], "--grpc"),
    (["replay", "--data", "tests/test_settings.py", "--bootstrap-servers", "kafka"], "--bootstrap-servers"),
])
def test_a_bad_flag_is_named_by_argparse_in_one_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and f"argument {flag}:" in err and "expected" in err and err.count("\n") == 1
