"""The core install (`pip install shopguide`, no extras) in a venv of its own: no torch, the worker
runs against the real broker, and a command that needs an extra says which in one line.

The venv's dependencies are built once per pyproject.toml (under the shopguide cache: the first
build downloads about 100 MB); the project itself is reinstalled from this checkout every run.
"""
import hashlib
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import msgpack
import pytest

from shopguide.config import Settings
from shopguide.extras import EXTRAS
from shopguide.process import free_port
from streams.events import Event
from streams.replay import publish
from streams.worker_process import WorkerProcess
from tests.fixtures.worker import changelog, latest_sessions

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ("pyproject.toml", "README.md", "shopguide", "serving", "streams", "trainer", "console")
USERS = [f"u{n}" for n in range(5)]


def pip(env: Path, *args: str) -> None:
    subprocess.run([str(env / "bin" / "python"), "-m", "pip", "install", "-q", *args], check=True, timeout=600)


def dependencies_venv(source: Path) -> Path:
    """An isolated venv with the core install of this pyproject.toml (built from `source` when missing)."""
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    env = Settings.from_env().cache / "venvs" / f"core-py{sys.version_info.major}{sys.version_info.minor}-{key}"
    if not (env / ".complete").exists():
        for stale in env.parent.glob("core-*"):  # built for an earlier pyproject.toml
            shutil.rmtree(stale)
        venv.create(env, with_pip=True)
        pip(env, "setuptools>=70.1")  # lets pip build the project here without fetching a build environment
        pip(env, "--no-build-isolation", str(source))
        (env / ".complete").touch()
    return env


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")  # a copy: the build leaves nothing in the checkout
    for name in PROJECT_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, source / name)
    env = dependencies_venv(source)
    pip(env, "--no-deps", "--no-build-isolation", "--force-reinstall", str(source))
    return env


def shopguide(env: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(env / "bin" / "shopguide"), *args], capture_output=True, text=True, timeout=60)


def test_no_extra_is_installed(core_venv):
    modules = sorted({m for modules in EXTRAS.values() for m in modules})
    probe = f"import importlib.util as u; print([m for m in {modules!r} if u.find_spec(m)])"
    found = subprocess.run([str(core_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_kafka_python_checks_record_batches_in_c(core_venv):
    """kafka-python falls back to a pure-Python CRC-32C without the crc32c package: about 100 us of
    CPU per record produced or read (replay, the catalogue, the fine-tune job's log reader)."""
    probe = "import crc32c, kafka.record.util as u; print(u.calc_crc32c.__defaults__[0] is crc32c.crc32c)"
    found = subprocess.run([str(core_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "True"


def test_commands_that_need_an_extra_say_which(core_venv):
    assert shopguide(core_venv, "--help").returncode == 0
    help_ = shopguide(core_venv, "train", "--help")
    assert help_.returncode == 0 and "needs: pip install 'shopguide[train]'" in help_.stdout
    for args, line in [(("train", "--data", "x.csv", "--out", "out"), "shopguide train needs: pip install 'shopguide[train]'"),
                       (("triton", "start"), "shopguide triton start needs: pip install 'shopguide[local]'")]:
        result = shopguide(core_venv, *args)
        assert (result.returncode, result.stdout, result.stderr) == (1, "", line + "\n")


def test_worker_consumes_without_torch(core_venv, kafka_settings, producer, topic_reader, tmp_path):
    settings = kafka_settings(triton_grpc=f"127.0.0.1:{free_port()}")  # no Triton: popularity answers
    sessions, recommendations = topic_reader(changelog(settings)), topic_reader(settings.topic_recommendations)
    worker = WorkerProcess(settings, tmp_path / "worker.log", "--loglevel", "info",
                           executable=str(core_venv / "bin" / "shopguide"), command=("worker",))
    try:
        for user in USERS:
            publish(producer, settings, Event("click", user, "s", 1.7e9, items=(f"{user}-i",)))
        producer.flush()
        sessions.until(lambda r: len(latest_sessions(r)) == len(USERS), timeout_s=180, what="every user's session")
        answers = recommendations.until(lambda r: len(r) >= len(USERS), what="a recommendation per event")
        assert {msgpack.unpackb(r.value)["source"] for r in answers} == {"fallback"}
        assert worker.value("shopguide_events_consumed_total") == len(USERS)
    finally:
        worker.stop()
