"""A batch's confirm does not wait out the producer's linger: `faust_internals.send_now` hands
what the aiokafka producer holds to its sender at once (on the real broker)."""
import asyncio
import time
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaProducer

from streams import faust_internals
from streams.delivery import Outbox, Record

pytestmark = pytest.mark.kafka

LINGER_MS = 2000


def confirm_seconds(bootstrap_servers: str, topic: str, send_now: bool) -> float:
    """Seconds from queueing two records to their confirmed delivery, with a 2 s linger."""
    async def go():
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, linger_ms=LINGER_MS)
        await producer.start()
        try:
            app = SimpleNamespace(producer=SimpleNamespace(_producer=producer))
            await producer.client.force_metadata_update()

            async def send(topic, key, value, partition, headers):
                return await producer.send(topic, value, key=key, partition=partition, headers=headers)
            outbox = Outbox(send, send_now=(lambda: faust_internals.send_now(app)) if send_now else (lambda: None))
            first = await send(topic, b"k", b"first", None, None)
            faust_internals.send_now(app)
            await first  # the topic exists before the clock starts
            started = time.monotonic()
            for value in (b"a", b"b"):
                await outbox.put(Record("recommendation", topic, b"k", value))
            await outbox.confirm()
            return time.monotonic() - started
        finally:
            await producer.stop()
    return asyncio.run(go())


def test_confirm_sends_at_once_instead_of_after_the_linger(bootstrap_servers, unique_name):
    assert confirm_seconds(bootstrap_servers, unique_name("now"), send_now=True) < LINGER_MS / 1000 / 2
    assert confirm_seconds(bootstrap_servers, unique_name("linger"), send_now=False) >= LINGER_MS / 1000 * 0.9  # the linger holds
