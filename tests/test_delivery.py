"""The outbox confirms every send, re-sends what the broker refused, and gives up loudly."""
import asyncio

import pytest

from streams import delivery
from streams.delivery import Outbox, Record, SendFailed


class Broker:
    """Refuses the first `refusals` sends, then accepts; raises before queueing when `raise_early`."""

    def __init__(self, refusals: int, raise_early: bool = False):
        self.refusals = refusals
        self.raise_early = raise_early
        self.landed = []

    async def send(self, topic, key, value, partition, headers):
        if self.refusals:
            self.refusals -= 1
            if self.raise_early:
                raise ValueError("too large for the producer")
            future = asyncio.get_running_loop().create_future()
            future.set_exception(RuntimeError("refused"))
            return future
        self.landed.append((topic, key, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result("metadata")
        return future


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(delivery, "BACKOFF_S", (0, 0, 0))


def run(broker, *records):
    failures = []
    outbox = Outbox(broker.send, failures.append)

    async def go():
        for record in records:
            await outbox.put(record)
        await outbox.confirm()
    asyncio.run(go())
    return failures


@pytest.mark.parametrize("raise_early", [False, True])
def test_refused_sends_are_retried_and_counted(raise_early):
    broker = Broker(refusals=2, raise_early=raise_early)
    failures = run(broker, Record("recommendation", "recs", b"u", b"r1"), Record("changelog", "log", b"u", b"s"))
    assert sorted(broker.landed) == [("log", b"u", b"s"), ("recs", b"u", b"r1")]
    assert failures == ["recommendation", "changelog"]


def test_a_send_that_never_lands_raises():
    broker = Broker(refusals=10)
    with pytest.raises(SendFailed, match="deadletter send to dl failed 4 times"):
        run(broker, Record("deadletter", "dl", b"u", b"x"))
    assert broker.landed == []
