"""Where the CPU goes during a `bench e2e` stage: each part's processes from /proc (broker, worker,
Triton server, the model's Python-backend stub), the whole machine from /proc/stat, and inside
the worker and the stub the share of py-spy samples per part (Kafka client, Faust, session fold,
Triton client, sends; ONNX Runtime vs the model's Python).
"""
from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
SAMPLE_HZ = 100

# A sample goes to the first part any of its frames belongs to (a send's aiokafka frames are a send,
# a fold's msgpack frames the fold); frames are "function (path:line)" in py-spy's raw output.
WORKER_PARTS = (
    ("Triton client", ("tritonclient/", "grpc/", "serving/client.py")),
    ("sends", ("streams/delivery.py", "send (streams/recommender.py")),
    ("session fold", ("streams/sessions.py", "fold (streams/agents.py", "streams/session_store.py")),
    ("recommender (cache, filter)", ("streams/recommender.py", "streams/answers.py", "streams/popularity.py")),
    ("event decode", ("streams/events.py",)),
    ("Kafka client (aiokafka)", ("aiokafka/", "kafka/")),
    ("agent batches, dead letters", ("streams/agents.py",)),
    ("Faust (and its consumer thread's hand-offs)", ("faust/", "mode/")),
)
# py-spy's --nonblocking sampling cannot always tell a thread blocked in epoll from one running:
# such samples are waiting for the network, not work, and are left out of the shares.
WAITING = "select (selectors.py"
STUB_PARTS = (
    ("ONNX Runtime", ("onnxruntime/",)),
    ("model.py (ids, padding, outputs)", ("model.py",)),
)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of `pid` so far (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) * TICK_S  # utime, stime


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle, since boot."""
    user, nice, system, idle, iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) * TICK_S


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return found


class StageProfile:
    """CPU seconds per part over one stage; py-spy samples of the worker and the stub in `directory`."""

    def __init__(self, parts: dict[str, int | None], directory: Path, seconds: float):
        self.parts = {name: pid for name, pid in parts.items() if pid is not None}
        self.directory = directory
        self.seconds = seconds
        self.samplers: list[subprocess.Popen] = []

    def __enter__(self) -> "StageProfile":
        self.directory.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(spy).exists():
            print("py-spy is not installed (pip install py-spy): CPU per process only")
        for name in ("worker", "model stub"):
            if name in self.parts and Path(spy).exists():
                self.samplers.append(subprocess.Popen(
                    [spy, "record", "--pid", str(self.parts[name]), "--duration", str(int(self.seconds)),
                     "--rate", str(SAMPLE_HZ), "--nonblocking", "--format", "raw",
                     "--output", str(self.spy_file(name))], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.start = {name: cpu_seconds(pid) for name, pid in self.parts.items()}
        self.busy_start = machine_busy_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu = {name: cpu_seconds(pid) - self.start[name] for name, pid in self.parts.items()}
        self.busy = machine_busy_seconds() - self.busy_start
        for sampler in self.samplers:
            sampler.wait(timeout=self.seconds + 60)

    def spy_file(self, name: str) -> Path:
        return self.directory / f"{name.replace(' ', '-')}.txt"

    def shares(self, name: str, table) -> dict[str, float]:
        """Share of `name`'s py-spy samples per part of `table` (empty without a profile)."""
        path = self.spy_file(name)
        return split_samples(path.read_text().splitlines(), table) if path.exists() else {}

    def report(self, events: int, measured_apart: dict[str, float] | None = None) -> str:
        """`measured_apart`: CPU seconds of parts that ran only during the stage (counted by themselves)."""
        lines = [f"CPU over the stage ({events:,} events; core-seconds, share of the machine's busy time, "
                 f"CPU ms per event):"]
        cpu = {**self.cpu, **(measured_apart or {})}
        for name, used in [*cpu.items(), ("everything else on the machine", self.busy - sum(cpu.values()))]:
            lines.append(f"  {name:<32} {used:>7.2f} s {used / self.busy:>6.0%} {1000 * used / max(events, 1):>7.3f} ms")
            table = {"worker": WORKER_PARTS, "model stub": STUB_PARTS}.get(name)
            for part, share in (self.shares(name, table) if table else {}).items():
                lines.append(f"      {part:<44} {share:>6.0%} of its samples")
        return "\n".join(lines)


def split_samples(lines: list[str], table) -> dict[str, float]:
    """py-spy raw lines ("frame;frame;... count") -> share of the working samples per part, 'other' last."""
    counts: collections.Counter = collections.Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and WAITING not in stack.rsplit(";", 1)[-1]:
            part = next((part for part, marks in table if any(mark in stack for mark in marks)), "other")
            counts[part] += int(count)
    total = sum(counts.values()) or 1
    order = [part for part, _ in table] + ["other"]
    return {part: counts[part] / total for part in order if counts[part]}
