"""Background services (broker, Triton): pid files, liveness, ports on loopback."""
from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0): reap it if so.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def read_pid(pid_file: Path) -> int | None:
    """The pid in `pid_file` if that process runs; a stale file is removed."""
    try:
        pid = int(Path(pid_file).read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if alive(pid):
        return pid
    Path(pid_file).unlink(missing_ok=True)
    return None


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL to its process group if it has not exited within `timeout_s`."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)


def stop_recorded(pid_file: Path, timeout_s: float) -> bool:
    """Stop the service whose pid `pid_file` records (see `terminate`); False if none ran."""
    pid = read_pid(pid_file)
    if pid is None:
        return False
    terminate(pid, timeout_s)
    Path(pid_file).unlink(missing_ok=True)
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_point(step: str) -> None:
    """Test hook: SIGKILL this process at `step` when SHOPGUIDE_TEST_KILL_AT names it (the crash
    tests of the fine-tune job and the rollout, tests/test_finetune_kill.py)."""
    if os.environ.get("SHOPGUIDE_TEST_KILL_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
