"""What the chaos suite runs and breaks: a broker and a Triton it may kill and start again, and a
pipeline's workers under a supervisor that restarts any that exits unasked, as Kubernetes would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from serving.repository import ModelRepository
from serving.triton import LocalTriton
from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.process import alive, free_port
from streams.broker import LocalBroker
from streams.worker_process import WorkerProcess, wait_for

RESTART_DELAY_S = 2.0  # a supervisor's pause before starting an exited worker again


@dataclass
class Stack:
    broker: LocalBroker
    triton: LocalTriton
    home: Path                       # scenario directories: worker logs and homes
    say: Callable[[str], None] = print

    def pipeline(self, name: str, **overrides) -> Settings:
        """Settings for a pipeline of its own: uuid-named topics and app id, this stack's services."""
        from streams.topics import own_pipeline

        run = f"chaos-{name}-{uuid.uuid4().hex[:8]}"
        return dataclasses.replace(own_pipeline(self.triton.settings, run), home=self.home / run,
                                   bootstrap_servers=self.broker.bootstrap_servers,
                                   partitions=self.broker.partitions, **overrides)

    def kill_broker(self) -> None:
        self.say("SIGKILL the broker")
        _kill_group(self.broker.pid(), signal.SIGKILL)

    def start_broker(self) -> None:
        self.say("starting the broker again (same data)")
        self.broker.start(quiet=True)

    def pause_triton(self) -> None:
        self.say("SIGSTOP Triton")
        _kill_group(self.triton.pid(), signal.SIGSTOP, wait=False)

    def kill_triton(self) -> None:
        self.say("SIGKILL Triton")
        _kill_group(self.triton.pid(), signal.SIGKILL)

    def start_triton(self) -> None:
        self.say("starting Triton again")
        self.triton.start()

    @contextlib.contextmanager
    def message_limit(self, topic: str, max_bytes: int):
        """The broker rejects records over `max_bytes` on `topic` until the block ends."""
        from kafka import KafkaAdminClient
        from kafka.admin import ConfigResource, ConfigResourceType

        admin = KafkaAdminClient(bootstrap_servers=self.broker.bootstrap_servers)
        try:
            self.say(f"{topic}: max.message.bytes={max_bytes}")
            admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                configs={"max.message.bytes": str(max_bytes)})])
            yield
        finally:
            self.say(f"{topic}: max.message.bytes back to the broker's default")
            admin.reset_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=["max.message.bytes"])])
            admin.close()


def _kill_group(pid: int | None, sig: int, wait: bool = True) -> None:
    """Signal a service's whole process group (Triton's backend stubs too); with `wait`, until it is gone."""
    if pid is None:
        raise RuntimeError("the service is not running")
    os.killpg(pid, sig)
    if wait:
        wait_for(lambda: not alive(pid), 30, f"process {pid} gone")


@contextlib.contextmanager
def own_stack(settings: Settings, home: Path, train_minutes: float, say: Callable[[str], None] = print):
    """A broker and a Triton of the chaos run's own under `home`, on free loopback ports. The broker
    starts empty; Triton serves the model in `home`'s repository: a copy of the newest one in
    settings.model_repository if there is none yet, else a small one trained once."""
    from console.stack import TOYS, ensure_model

    broker = LocalBroker(home, settings.cache, free_port(), free_port(), settings.partitions)
    if broker.pid() is not None:
        raise UserError(f"a broker still runs from {broker.root} (pid {broker.pid()}): an earlier chaos run?")
    shutil.rmtree(broker.root, ignore_errors=True)  # topics of earlier runs
    private = dataclasses.replace(
        settings, home=home, model_repository=home / "model_repository", bootstrap_servers=broker.bootstrap_servers,
        triton_grpc=f"127.0.0.1:{free_port()}", triton_http=f"127.0.0.1:{free_port()}",
        triton_metrics_port=free_port())
    _copy_model(settings, private, say)
    ensure_model(private, settings.data_dir / TOYS, train_minutes)
    triton = LocalTriton(private)
    with contextlib.ExitStack() as started:
        say(f"starting Kafka on {broker.bootstrap_servers} (data in {broker.root})")
        broker.start(quiet=True)
        started.callback(broker.stop)
        say(f"starting Triton on {private.triton_grpc} (log {triton.log_file})")
        triton.start()
        started.callback(triton.stop)
        yield Stack(broker, triton, home / "runs", say)


def _copy_model(yours: Settings, private: Settings, say) -> None:
    mine, theirs = ModelRepository.from_settings(private), ModelRepository.from_settings(yours)
    if mine.latest() is None and theirs.latest() is not None:
        say(f"serving a copy of {theirs.model_dir} version {theirs.latest()}")
        mine.publish(theirs.model_dir / str(theirs.latest()))


class Workers:
    """The workers of one pipeline. One that exits without being asked to is started again after
    RESTART_DELAY_S, on a fresh web port, logging to the same file."""

    def __init__(self, settings: Settings, directory: Path, say: Callable[[str], None] = print):
        self.settings, self.directory, self.say = settings, directory, say
        self.processes: list[WorkerProcess] = []
        self.left: set[int] = set()  # slots stopped on purpose
        self.restarts = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True, name="chaos-supervisor")
        self._watcher.start()

    def start(self) -> int:
        with self._lock:
            self.processes.append(self._spawn(len(self.processes)))
            return len(self.processes) - 1

    def _spawn(self, slot: int) -> WorkerProcess:
        settings = dataclasses.replace(self.settings, worker_port=free_port(),
                                       home=self.directory / f"worker-{slot}")
        self.directory.mkdir(parents=True, exist_ok=True)
        # info: the rebalances and recoveries a post-mortem of a failed scenario needs
        return WorkerProcess(settings, self.directory / f"worker-{slot}.log", "--loglevel", "info")

    def _watch(self) -> None:
        while not self._closed.wait(0.5):
            for slot, worker in enumerate(list(self.processes)):
                code = worker.process.poll()
                if code is None or slot in self.left:
                    continue
                how = f"was killed ({signal.Signals(-code).name})" if code < 0 else f"exited with code {code}"
                self.say(f"worker {slot} {how}; restarting it (log {worker.log_path})")
                if self._closed.wait(RESTART_DELAY_S):
                    return
                with self._lock:
                    if slot not in self.left:
                        self.processes[slot] = self._spawn(slot)
                        self.restarts += 1

    def signal(self, slot: int, sig: int) -> None:
        self.say(f"{signal.Signals(sig).name} worker {slot}")
        with contextlib.suppress(ProcessLookupError):
            self.processes[slot].process.send_signal(sig)

    def leave(self, slot: int) -> None:
        """Stop the worker gracefully, for good."""
        self.say(f"worker {slot} leaves (SIGTERM)")
        with self._lock:
            self.left.add(slot)
        self.processes[slot].stop()

    def wait_consuming(self, slot: int, timeout_s: float = 180.0) -> None:
        """Until the worker in `slot` (whichever process holds it now) has taken events."""
        wait_for(lambda: self.processes[slot].value("shopguide_events_consumed_total") > 0, timeout_s,
                 f"worker {slot} consuming")

    def wait_holding(self, slots: list[int], timeout_s: float = 180.0) -> None:
        """Until the workers in `slots` together hold every event partition, none held twice."""
        every = {(t, p) for t in self.settings.event_topics for p in range(self.settings.partitions)}

        def split() -> bool:
            held = [self.processes[slot].assigned() for slot in slots]
            return all(held) and sum(map(len, held)) == len(every) and set().union(*held) == every
        wait_for(split, timeout_s, f"workers {slots} holding every partition")

    def close(self) -> None:
        self._closed.set()
        self._watcher.join()
        for worker in self.processes:
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGCONT)  # a paused worker cannot take SIGTERM
            worker.stop()
