"""Every place the worker reaches past Faust's public API, gathered here (checked against
faust-streaming 0.11 and aiokafka 0.14: re-check on upgrades).

- `send`: straight to the aiokafka producer. Faust's `topic.send` (declares, futures, sensors,
  its one-at-a-time buffer that pauses consumption) cost more per message than the send itself.
- `serve_metrics_only`: drop Faust's built-in pages (/router, /table, the index), leaving the
  pages the app adds.
"""
from __future__ import annotations

from typing import Awaitable

import faust


async def send(app: faust.App, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
               headers: list[tuple[str, bytes]] | None = None) -> Awaitable:
    """Queue one record; returns the future of its delivery (RecordMetadata, or the broker's error)."""
    return await app.producer.send(topic, key, value, partition, None, headers)


def serve_metrics_only(app: faust.App) -> None:
    app.web.blueprints._enabled.clear()
