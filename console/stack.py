"""The local stack for the demo and the end-to-end benchmark: broker, Triton with a model, worker.

`local_stack` starts whatever is not already running, yields the worker, and stops only what it
started, in reverse order.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

from shopguide.config import Settings

TOYS = "amazon-toys/Toys_and_Games.txt"


@contextlib.contextmanager
def local_stack(settings: Settings, train_minutes: float, train_data: Path | None = None):
    with contextlib.ExitStack() as started:
        started.enter_context(_broker(settings))
        ensure_model(settings, train_data or settings.data_dir / TOYS, train_minutes)
        started.enter_context(_triton(settings))
        yield started.enter_context(_worker(settings))


def ensure_model(settings: Settings, train_data: Path, minutes: float, name: str | None = None,
                 catalogue: Path | None = None) -> None:
    """Publish a model if the repository has none: train one on `train_data` first if
    HOME/models/`name` (default: the data file's stem) holds no checkpoint yet; with `catalogue`,
    one that knows items by their content and is steered by searches."""
    from serving.repository import ModelRepository

    models = ModelRepository.from_settings(settings)
    models.init()
    if models.latest() is not None:
        return
    from trainer.export import export
    from trainer.train import TrainConfig, fit

    out = settings.home / "models" / (name or Path(train_data).stem)
    if not (out / "checkpoint.pt").exists():
        print(f"no model yet: training on {train_data} for at most {minutes:g} min into {out}")
        fit(train_data, TrainConfig(max_minutes=minutes, catalogue=str(catalogue or "")), out=out)
    version = models.publish(export(out / "checkpoint.pt", out / "export"))
    print(f"published model version {version} to {models.model_dir}")


def _broker(settings: Settings):
    from shopguide.process import port_open
    from streams.broker import LocalBroker, parse_port

    port = parse_port(settings.bootstrap_servers)
    if port_open(port):
        return contextlib.nullcontext()
    broker = LocalBroker(settings.home, settings.cache, port, port + 1, settings.partitions)
    return _started(broker, "Kafka", f"on {broker.bootstrap_servers} (data in {broker.root})")


def _triton(settings: Settings):
    from serving.client import server_state
    from serving.triton import LocalTriton

    if server_state(settings.triton_grpc, settings.model_name).live:
        return contextlib.nullcontext()
    triton = LocalTriton(settings)
    return _started(triton, "Triton", f"on {settings.triton_grpc} (log {triton.log_file})")


@contextlib.contextmanager
def _started(service, name: str, where: str):
    """Start `service` now and stop it on the way out."""
    print(f"starting {name} {where}")
    service.start()
    try:
        yield
    finally:
        print(f"stopping {name}")
        service.stop()


@contextlib.contextmanager
def _worker(settings: Settings):
    from streams.worker_process import WorkerProcess
    from streams.topics import ensure_topics

    ensure_topics(settings)
    log = settings.home / "worker.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"starting a worker (log {log}, metrics http://127.0.0.1:{settings.worker_port}/metrics)")
    worker = WorkerProcess(settings, log)
    try:
        worker.wait_assigned()
        yield worker
    finally:
        print("stopping the worker")
        worker.stop()
