"""Confirmed sends: a batch's offsets are acked only after everything it produced is in Kafka.

The worker queues a batch's changelog writes, recommendations and dead letters without waiting,
then `confirm()` waits for every delivery. aiokafka already retries what is retriable (a broker
that is down, a leader that moved) until `producer_request_timeout`; an error it hands back
(a record the broker refuses, a timeout) is re-sent here a few times with a back-off. A record
that still fails raises SendFailed: the worker must then stop without committing the batch, so
its events are read again after the restart (sessions skip what they already hold).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_S = (0.5, 2.0, 5.0)  # before the 2nd, 3rd and 4th attempt


@dataclass(frozen=True, slots=True)
class Record:
    kind: str  # changelog | recommendation | deadletter: the failure metric's label
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None = None
    headers: list[tuple[str, bytes]] | None = None


DEADLETTER_MAX_BYTES = 512 * 1024  # larger payloads are dead-lettered cut to their head
DEADLETTER_HEAD_BYTES = 64 * 1024


def dead_letter(topic: str, message, reason: str, extra: list[tuple[str, bytes]] = ()) -> Record:
    """The dead-letter record of a consumed `message` (its key and bytes, where it was read, why)."""
    value = message.value
    headers = [("reason", reason.encode()), ("source_topic", message.topic.encode()),
               ("source_partition", str(message.partition).encode()),
               ("source_offset", str(message.offset).encode()), *extra]
    if value is not None and len(value) > DEADLETTER_MAX_BYTES:
        headers.append(("truncated", str(len(value)).encode()))
        value = value[:DEADLETTER_HEAD_BYTES]
    return Record("deadletter", topic, message.key, value, None, headers)


# (topic, key, value, partition, headers) -> the delivery future
Send = Callable[..., Awaitable[Awaitable]]


class SendFailed(RuntimeError):
    pass


class Outbox:
    def __init__(self, send: Send, on_failure: Callable[[str], None] = lambda kind: None,
                 send_now: Callable[[], None] = lambda: None):
        self.send = send
        self.on_failure = on_failure
        self.send_now = send_now  # confirm waits for every queued record: none should linger
        self.pending: list[tuple[Record, Awaitable]] = []

    async def put(self, record: Record) -> None:
        self.pending.append((record, await self._send(record)))

    async def confirm(self) -> None:
        """Wait for every queued record; re-send failures; raise SendFailed if one never lands."""
        pending, self.pending = self.pending, []
        if pending:
            self.send_now()
        results = await asyncio.gather(*(future for _, future in pending), return_exceptions=True)
        failed = [record for (record, _), result in zip(pending, results) if isinstance(result, BaseException)]
        for record in failed:
            await self._retry(record)

    async def _retry(self, record: Record) -> None:
        for attempt, pause in enumerate(BACKOFF_S, start=2):
            self.on_failure(record.kind)
            await asyncio.sleep(pause)
            try:
                await (await self._send(record))
                return
            except Exception as exc:  # the broker's error, whatever its class
                error = exc
                log.warning("%s send to %s failed (attempt %d of %d): %r",
                            record.kind, record.topic, attempt, ATTEMPTS, exc)
        self.on_failure(record.kind)
        raise SendFailed(f"{record.kind} send to {record.topic} failed {ATTEMPTS} times: {error!r}")

    async def _send(self, record: Record) -> Awaitable:
        """The delivery future; an error raised before the record was queued (too large for the
        producer) comes back inside it, like the broker's."""
        try:
            return await self.send(record.topic, record.key, record.value, record.partition, record.headers)
        except Exception as exc:
            failed = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            return failed
