"""The local Triton server: the `tritonserver` binary shipped in the nvidia-pytriton wheel, run in
the background with its pid file and log under `<home>/triton`.

Model control is explicit: Triton loads the model at start when a version exists, and `reload()`
after a publish or rollback makes it load the live version (the one config.pbtxt pins, see
serving/repository.py) while the old one keeps serving, then retires the old one. No request
sees a gap.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serving.repository import ModelRepository
from shopguide.config import Settings
from shopguide.errors import UserError
from shopguide.extras import install_line
from shopguide.process import port_open, read_pid, stop_recorded

STUB = "triton_python_backend_stub"


def wheel_dir() -> Path:
    """site-packages/pytriton, found without importing pytriton (its import is slow)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the nvidia-pytriton wheel is not installed: {install_line(['local'])}")
    return Path(list(spec.submodule_search_locations)[0])


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"Triton address {address!r}: expected host:port")
    return host, int(port)


def prepare_backends(wheel: Path) -> Path:
    """The wheel keeps the Python backend's stub apart; Triton looks for it beside the backend."""
    backends = wheel / "tritonserver" / "backends"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "tritonserver" / "python_backend_stubs" / version / STUB
    target = backends / "python" / STUB
    if not stub.exists():
        raise UserError(f"nvidia-pytriton has no Python backend stub for Python {version}")
    if not target.exists() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    return backends


def server_environment(wheel: Path) -> dict[str, str]:
    env = dict(os.environ)
    libs = str(wheel.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = f"{env['LD_LIBRARY_PATH']}:{libs}" if env.get("LD_LIBRARY_PATH") else libs
    # The stub embeds Python and finds its prefix through the `python3` first on PATH: this
    # interpreter's environment, so model.py imports the numpy and onnxruntime installed here.
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}:{env.get('PATH', '')}"
    return env


@dataclass
class LocalTriton:
    settings: Settings

    @property
    def root(self) -> Path:
        return Path(self.settings.home).resolve() / "triton"

    @property
    def pid_file(self) -> Path:
        return self.root / "triton.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "triton.log"

    @property
    def repository(self) -> ModelRepository:
        return ModelRepository.from_settings(self.settings)

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def command(self, wheel: Path) -> list[str]:
        grpc_host, grpc_port = split_address(self.settings.triton_grpc)
        http_host, http_port = split_address(self.settings.triton_http)
        command = [
            str(wheel / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository.root}",
            f"--backend-directory={prepare_backends(wheel)}",
            "--model-control-mode=explicit",
            f"--grpc-address={grpc_host}", f"--grpc-port={grpc_port}",
            f"--http-address={http_host}", f"--http-port={http_port}",
            "--allow-metrics=true", f"--metrics-address={grpc_host}",
            f"--metrics-port={self.settings.triton_metrics_port}",
            "--exit-timeout-secs=10",
        ]
        if self.repository.latest() is not None:
            command.append(f"--load-model={self.settings.model_name}")
        return command

    def start(self, timeout_s: float = 120.0) -> int:
        """Start in the background and wait until Triton (and the model, if published) is ready."""
        if self.pid() is not None:
            raise UserError(f"Triton already runs from {self.root} (pid {self.pid()}); `shopguide triton stop` first")
        self.repository.init()
        self.repository.pin()  # the newest verified version, even if a killed publish did not pin it
        ports = [split_address(self.settings.triton_grpc)[1], split_address(self.settings.triton_http)[1],
                 self.settings.triton_metrics_port]
        taken = [port for port in ports if port_open(port)]
        if taken:
            raise UserError(f"port {taken[0]} is taken; choose other Triton ports (--grpc/--http/--metrics-port)")
        wheel = wheel_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # A new session: Ctrl-C in the starting terminal does not reach the server.
            process = subprocess.Popen(self.command(wheel), env=server_environment(wheel), stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(f"{process.pid}\n")
        self._wait_ready(process, timeout_s)
        return process.pid

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Graceful shutdown (in-flight requests finish); False if none ran."""
        return stop_recorded(self.pid_file, timeout_s)

    def _wait_ready(self, process: subprocess.Popen, timeout_s: float) -> None:
        from serving.client import server_state

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise UserError(f"Triton exited with code {process.returncode}:\n{self.log_tail()}")
            if server_state(self.settings.triton_grpc).ready:
                return
            time.sleep(0.3)
        self.stop()
        raise UserError(f"Triton was not ready within {timeout_s:.0f} s; see {self.log_file}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(line for line in text[-lines:] if not line.startswith(("+", "|")))
