"""Run `shopguide worker` as a child process and watch it through its /metrics (demo, bench, tests)."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

from shopguide.config import Settings
from shopguide.metrics import scrape


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process `settings` (an unset one stays empty)."""
    return {f.metadata["env"]: "" if getattr(settings, f.name) is None else str(getattr(settings, f.name))
            for f in dataclasses.fields(Settings)}


def wait_for(condition, timeout_s: float = 120.0, what: str = "condition", poll_s: float = 0.3):
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not met within {timeout_s:.0f} s")
        time.sleep(poll_s)
    return result


class WorkerProcess:
    """`executable` (this Python, or another install's `shopguide`) running `command` (default
    `shopguide worker`), configured by environment."""

    def __init__(self, settings: Settings, log_path, *extra_args: str,
                 command: tuple[str, ...] = ("-m", "console.cli", "worker"), executable: str = sys.executable):
        self.settings = settings
        self.log_path = log_path
        env = {**os.environ, **settings_env(settings)}
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen([executable, *command, *extra_args],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def samples(self) -> list:
        """Every sample of the worker's /metrics (empty while its web server is not up)."""
        return scrape(f"http://127.0.0.1:{self.settings.worker_port}/metrics")

    def value(self, name: str, **labels) -> float:
        return sum(s.value for s in self.samples() if s.name == name and labels.items() <= s.labels.items())

    def assigned(self) -> set[tuple[str, int]]:
        """Event-topic partitions this worker holds (its consumer-lag series)."""
        return {(s.labels["topic"], int(s.labels["partition"])) for s in self.samples()
                if s.name == "shopguide_consumer_lag"}

    def wait_assigned(self, timeout_s: float = 120.0) -> None:
        every = {(t, p) for t in self.settings.event_topics for p in range(self.settings.partitions)}
        wait_for(lambda: self.process.poll() is None and self.assigned() == every or self.check_alive(),
                 timeout_s, "worker holding every partition")

    def check_alive(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with code {self.process.returncode}; see {self.log_path}")
        return False

    def stop(self, timeout_s: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
