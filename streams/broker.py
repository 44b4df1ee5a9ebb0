"""A local single-node Apache Kafka (KRaft) from the official jars: fetch, format, start, stop.

Jars come from Maven Central through deploy/kafka/pom.xml into `Settings.cache`; the broker's
data, log, rendered config and pid file live under `<home>/kafka`, so a stop and start keeps
every topic and message.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import os
import re
import secrets
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from shopguide.errors import UserError
from shopguide.kafka_security import sasl_kwargs
from shopguide.process import free_port, port_open, read_pid, stop_recorded

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kafka"
POM = DEPLOY / "pom.xml"
TEMPLATE = DEPLOY / "server.properties"
SCRAM_TEMPLATE = DEPLOY / "scram.properties"
SCRAM = "SCRAM-SHA-512"
BROKER_USER = "broker"
LOG_CONFIG = DEPLOY / "log4j2.properties"
JAVA_HEAP = ("-Xms256m", "-Xmx768m")
# The JVM's compilers all start with it (none are added later), so `start` can lower their priority.
JAVA_FLAGS = ("-XX:+UseG1GC", "-XX:-UseDynamicNumberOfCompilerThreads", "-Djava.awt.headless=true")
COMPILER_THREADS = ("C1 CompilerThre", "C2 CompilerThre")  # as Linux names them (15 characters)
COMPILER_NICE = 19


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    return match.group(1)


def libs_dir(cache: Path) -> Path:
    return Path(cache) / f"kafka-{kafka_version()}" / "libs"


def fetch(cache: Path, quiet: bool = False) -> Path:
    """Download the broker jars once (Maven prints nothing when they are already here)."""
    libs = libs_dir(cache)
    done = libs / ".complete"
    if done.exists():
        return libs
    if shutil.which("mvn") is None:
        raise UserError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install maven")
    libs.mkdir(parents=True, exist_ok=True)
    command = ["mvn", "-B", "-f", str(POM), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}", f"-Dmaven.repo.local={Path(cache) / 'm2'}"]
    _run_with_progress(command, f"fetching Kafka {kafka_version()} jars", quiet)
    done.touch()
    return libs


def _run_with_progress(command: list[str], description: str, quiet: bool) -> None:
    from tqdm import tqdm

    output = []
    with tqdm(desc=description, unit=" files", disable=quiet) as bar:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            output.append(line)
            if "Downloaded from" in line:
                bar.update(1)
        process.wait()
    if process.returncode:
        tail = "".join(output[-15:])
        raise UserError(f"fetching the Kafka jars failed ({' '.join(command)}):\n{tail}")


def parse_port(bootstrap_servers: str) -> int:
    try:
        return int(bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        raise UserError(f"bootstrap servers {bootstrap_servers!r}: expected host:port") from None


@dataclass
class LocalBroker:
    """One KRaft broker+controller on loopback; its state under `home/kafka`."""

    home: Path
    cache: Path
    port: int = 9092
    controller_port: int = 9093
    partitions: int = 4
    scram_users: dict[str, str] | None = None  # user -> password: the client listener takes SASL/SCRAM only

    @property
    def root(self) -> Path:
        return Path(self.home).resolve() / "kafka"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "logs" / "server.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pid(self) -> int | None:
        """The running broker's pid, or None (a stale pid file is removed)."""
        return read_pid(self.pid_file)

    def running_port(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[1])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def start(self, timeout_s: float = 90.0, quiet: bool = False) -> None:
        if self.pid() is not None:
            raise UserError(f"a broker is already running from {self.root} (pid {self.pid()}, "
                            f"port {self.running_port()}); `shopguide broker stop` first")
        for port in (self.port, self.controller_port):
            if port_open(port):
                raise UserError(f"port {port} on 127.0.0.1 is taken; choose another with --port/--controller-port")
        libs = fetch(self.cache, quiet=quiet)
        config = self._write_config()
        if not (self.root / "data" / "meta.properties").exists():
            self._java(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id()}", "-c", str(config),
                       *self._scram_credentials(), check=True)
        process = self._java(libs, "kafka.Kafka", str(config))
        self.pid_file.write_text(f"{process.pid} {self.port}\n")
        self._wait_ready(process, timeout_s)
        lower_compilers(process.pid)

    def stop(self, timeout_s: float = 60.0) -> bool:
        """Graceful shutdown (SIGTERM lets Kafka flush and close its logs); False if none ran."""
        return stop_recorded(self.pid_file, timeout_s)

    def _write_config(self) -> Path:
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        values = {"port": self.port, "controller_port": self.controller_port, "data_dir": self.root / "data",
                  "partitions": self.partitions, "protocol": "SASL_PLAINTEXT" if self.scram_users else "PLAINTEXT",
                  "broker_user": BROKER_USER, "broker_password": self._broker_password()}
        text = TEMPLATE.read_text() + (SCRAM_TEMPLATE.read_text() if self.scram_users else "")
        config = self.root / "server.properties"
        config.touch(mode=0o600)  # it may hold the broker's own SCRAM password
        config.write_text(re.sub(r"\$\{(\w+)\}", lambda m: str(values[m.group(1)]), text))
        return config

    def _broker_password(self) -> str:
        """The broker's own SCRAM password: made once, kept beside the data like the cluster id."""
        path = self.root / "broker.secret"
        if self.scram_users and not path.exists():
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(16))
        return path.read_text() if path.exists() else ""

    def _scram_credentials(self) -> list[str]:
        users = {BROKER_USER: self._broker_password(), **(self.scram_users or {})} if self.scram_users else {}
        return [f"--add-scram={SCRAM}=[name={user},password={password}]" for user, password in users.items()]

    def client_kwargs(self) -> dict:
        """kafka-python keyword arguments of the broker's own identity (its readiness probe)."""
        if not self.scram_users:
            return {}
        return {"security_protocol": "SASL_PLAINTEXT", **sasl_kwargs(SCRAM, BROKER_USER, self._broker_password())}

    def _java(self, libs: Path, main: str, *args: str, check: bool = False):
        command = ["java", *JAVA_HEAP, *JAVA_FLAGS,
                   f"-Dlog4j2.configurationFile={LOG_CONFIG}", f"-Dkafka.logs.dir={self.root / 'logs'}",
                   "-cp", f"{libs}/*", main, *args]
        stdout = (self.root / "logs" / "stdout.log").open("ab")
        if check:
            result = subprocess.run(command, stdout=stdout, stderr=subprocess.STDOUT)
            if result.returncode:
                raise UserError(f"formatting Kafka storage failed; see {self.root / 'logs' / 'stdout.log'}")
            return result
        # A new session: Ctrl-C in the terminal that started it does not kill the broker.
        return subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)

    def _wait_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise UserError(f"the broker exited with code {process.returncode}; see {self.log_file}")
            if port_open(self.port) and _metadata_ready(self.bootstrap_servers, self.client_kwargs()):
                return
            time.sleep(0.3)
        self.stop()
        raise UserError(f"the broker did not accept connections within {timeout_s:.0f} s; see {self.log_file}")


def lower_compilers(pid: int) -> None:
    """Run the JVM's JIT compiler threads at the lowest priority. Sharing two cores with the
    pipeline, the broker's C2 compiler took 20 s of CPU in a 3-minute `bench e2e`, as much as its
    request handlers, at up to 0.8 of a core; at nice 19 it compiles in the cores' idle time
    instead of taking one from the worker (README, Headroom). A no-op without Linux's /proc."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):  # a thread that just ended
            if (task / "comm").read_text().startswith(COMPILER_THREADS):
                os.setpriority(os.PRIO_PROCESS, int(task.name), COMPILER_NICE)


@contextlib.contextmanager
def bench_broker(settings, home: Path, given: bool):
    """`settings` for a benchmark: as they are when a broker was given, else pointing at one
    started on free ports under `home` and stopped afterwards."""
    if given:
        yield settings
        return
    broker = LocalBroker(home, settings.cache, free_port(), free_port(), settings.partitions)
    print(f"starting a broker on {broker.bootstrap_servers} for the benchmark")
    broker.start()
    try:
        yield dataclasses.replace(settings, bootstrap_servers=broker.bootstrap_servers)
    finally:
        broker.stop()


def _cluster_id() -> str:
    """Kafka's own cluster id form: a random UUID, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _metadata_ready(bootstrap_servers: str, credentials: dict) -> bool:
    """The port opens before the broker has registered with its controller; ask for metadata."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000,
                                 bootstrap_timeout_ms=3000, **credentials)
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()
