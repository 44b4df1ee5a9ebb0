"""The storefront that `bench e2e` and the demo load the pipeline with: a process of its own that
sends planned clicks and searches at a fixed rate.

It shares the machine's cores with the pipeline it measures, so it does as little per event as it
can: every event is encoded before the clock starts, stamped with the moment it is due (in its
payload and as its Kafka timestamp, from which latency is measured), and every TICK_S the events
then due go out as one record batch per partition. An event waits at most a tick in the storefront,
and that wait counts in the measured latency, as a producer's linger would.
"""
from __future__ import annotations

import asyncio
import multiprocessing
import time
from typing import NamedTuple

from shopguide.config import Settings

TICK_S = 0.005  # the storefront sends what is due this often: part of the measured latency
ENCODE_S = 30e-6  # a generous cost of encoding one event, so that the first is not due before it is ready
LEAD_S = 0.5


class Offered(NamedTuple):
    rate: float   # events/s the storefront achieved
    cpu_s: float  # CPU seconds it took while sending


class Planned(NamedTuple):
    due: float  # epoch seconds
    topic: str
    partition: int
    key: bytes
    value: bytes


def offer(settings: Settings, clicks: list[tuple], rate: float) -> Offered:
    """Send `clicks` ((user, item, query): a click when item is not None, else a search) at `rate`
    per second from a storefront process of its own."""
    context = multiprocessing.get_context("spawn")
    result = context.Queue()
    storefront = context.Process(target=_offer, args=(settings, clicks, rate, result))
    storefront.start()
    offered = result.get(timeout=2 * len(clicks) / rate + 60)  # raises queue.Empty if the storefront died
    storefront.join()
    return offered


def _offer(settings: Settings, clicks: list[tuple], rate: float, result) -> None:
    result.put(asyncio.run(_paced(settings, clicks, rate)))


async def _paced(settings: Settings, clicks: list[tuple], rate: float) -> Offered:
    from aiokafka import AIOKafkaProducer

    from shopguide.kafka_security import client_kwargs

    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks=1, **client_kwargs(settings))
    await producer.start()
    try:
        partitions = {topic: sorted(await producer.partitions_for(topic)) for topic in settings.event_topics}
        start = time.time() + LEAD_S + ENCODE_S * len(clicks)
        planned = plan(settings, clicks, rate, start, partitions)
        await asyncio.sleep(max(start - time.time(), 0.0))
        cpu = time.process_time()
        deliveries, sent = [], 0
        while sent < len(planned):
            due = min(int((time.time() - start) * rate) + 1, len(planned))
            if due > sent:
                deliveries.extend(await send_due(producer, planned[sent:due]))
                sent = due
            await asyncio.sleep(TICK_S)
        finished = time.time()
        await asyncio.gather(*deliveries)
        return Offered(len(planned) / max(finished - start, 1e-9), time.process_time() - cpu)
    finally:
        await producer.stop()


def plan(settings: Settings, clicks: list[tuple], rate: float, start: float,
         partitions: dict[str, list[int]]) -> list[Planned]:
    """Each event encoded, due at start + n / rate, on its topic's partition for its user's key
    (the default partitioner's, as a keyed send would pick)."""
    from aiokafka.partitioner import DefaultPartitioner

    from streams.events import Event, encode, topic_for, user_key

    partitioner = DefaultPartitioner()
    planned = []
    for n, (user, item, query) in enumerate(clicks):
        due = start + n / rate
        event = Event("click", user, user, due, items=(item,)) if item is not None else \
            Event("search", user, user, due, query=query)
        topic, key = topic_for(event.type, settings), user_key(user)
        planned.append(Planned(due, topic, partitioner(key, partitions[topic], partitions[topic]), key, encode(event)))
    return planned


async def send_due(producer, due: list[Planned]) -> list:
    """One record batch per partition for `due`, each record stamped with its due time; the batches'
    delivery futures."""
    batches: dict[tuple[str, int], object] = {}
    deliveries = []
    for event in due:
        where = (event.topic, event.partition)
        batch = batches.get(where)
        if batch is None:
            batch = batches[where] = producer.create_batch()
        stamp = round(event.due * 1000)  # milliseconds, whatever aiokafka's docstring says
        if batch.append(key=event.key, value=event.value, timestamp=stamp) is None:  # full: send it
            deliveries.append(await producer.send_batch(batch, event.topic, partition=event.partition))
            batches[where] = batch = producer.create_batch()
            batch.append(key=event.key, value=event.value, timestamp=stamp)
    for (topic, partition), batch in batches.items():
        deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    return deliveries
