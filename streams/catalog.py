"""The whole catalogue in every worker (a global table): what cannot be bought, from `shop.catalog`.

Every worker reads every partition of the compacted topic from its beginning with a consumer of
its own (in no group: all of it, not a share), in large fetches like the session
recovery (streams.session_store), then keeps following it. Recommendations wait until that first
read has reached the ends the topic had when the worker started, so a restarted worker never
answers from a stale stock list; afterwards a change reaches answers within a fetch round trip.

Only what the filter and the reasons need is held: the ids of items out of stock or delisted (a
tombstone), and each listed item's title (a search's reason names the items whose title shares a
word with the query, streams/picks.py). An item the catalogue never mentioned may be recommended,
so a shop without a catalogue, or with a partial one, is served as before (README "Catalogue").

A record that fails validation (streams.catalog_schema) is counted by every worker, and
dead-lettered by one: the worker holding the same partition number of the click topic, and only
for records that arrived after it started (not again on each restart or by each worker).
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter

from shopguide.kafka_security import client_kwargs
from shopguide.metrics import WorkerMetrics
from streams.agents import CRASH_EXIT
from streams.catalog_schema import CatalogItem, decode
from streams.delivery import Outbox, SendFailed, dead_letter
from streams.events import RejectedEvent
from streams.session_store import FETCH_BYTES

log = logging.getLogger(__name__)

UNBUYABLE_STATES = ("out_of_stock", "delisted")
# Records checked per turn of the event loop: 10,000-30,000/s on a busy 2-core machine, so a bulk
# load arriving while the worker answers holds the loop 0.1 s at a time at most, not seconds.
MAX_RECORDS = 1_000


class Catalog:
    def __init__(self, following: bool = False):
        self.unbuyable: dict[str, str] = {}  # item id -> out_of_stock | delisted
        self.titles: dict[str, str] = {}     # item id -> title, for listed items
        self.counts: Counter[str] = Counter()
        self.caught_up = asyncio.Event()
        if not following:  # nothing will ever be read: nothing to wait for
            self.caught_up.set()

    async def ready(self) -> None:
        await self.caught_up.wait()

    def apply(self, item: str, record: CatalogItem | None) -> None:
        state = "delisted" if record is None else None if record.in_stock else "out_of_stock"
        if record is None:
            self.titles.pop(item, None)
        else:
            self.titles[item] = record.title
        before = self.unbuyable.pop(item, None)
        if before is not None:
            self.counts[before] -= 1
        if state is not None:
            self.unbuyable[item] = state
            self.counts[state] += 1


class CatalogFollower:
    def __init__(self, settings, catalog: Catalog, metrics: WorkerMetrics, outbox: Outbox):
        self.settings = settings
        self.topic = settings.topic_catalog
        self.deadletter = settings.topic_deadletter
        self.catalog = catalog
        self.metrics = metrics
        self.outbox = outbox
        self.owned: set[int] = set()  # partitions of the click topic this worker holds
        self.started_at: dict = {}  # TopicPartition -> its end offset when this worker started
        for state in UNBUYABLE_STATES:
            metrics.catalog_unbuyable.labels(state).set(0)

    async def run(self) -> None:
        try:
            await self.follow()
        except Exception as exc:  # answers must never go on from a catalogue that stopped moving
            log.critical("catalogue consumer failed, stopping: %s", exc, exc_info=True)
            logging.shutdown()
            os._exit(CRASH_EXIT)

    async def follow(self) -> None:
        from aiokafka import AIOKafkaConsumer

        started = time.monotonic()
        # Subscribed in no group: every partition is this consumer's, from the earliest offset.
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.settings.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest",
                                    max_partition_fetch_bytes=FETCH_BYTES, fetch_max_bytes=8 * FETCH_BYTES,
                                    **client_kwargs(self.settings))
        await consumer.start()
        try:
            tps = list(consumer.assignment())
            if not tps:
                raise RuntimeError(f"topic {self.topic} has no partitions")
            await consumer.seek_to_beginning(*tps)
            self.started_at = await consumer.end_offsets(tps)
            pending = {tp for tp in tps if self.started_at[tp] > 0}
            while True:
                if not pending and not self.catalog.caught_up.is_set():
                    self.catalog.caught_up.set()
                    log.info("catalogue read in %.1f s: %s", time.monotonic() - started, dict(self.catalog.counts))
                batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
                for records in batches.values():
                    await self.apply(records)
                    await asyncio.sleep(0)  # fetched records come back without a pause: let the loop turn
                for tp in list(pending):
                    if await consumer.position(tp) >= self.started_at[tp]:
                        pending.discard(tp)
        finally:
            await consumer.stop()

    async def apply(self, records) -> None:
        rejected, outcomes = [], Counter()
        for record in records:
            try:
                self.catalog.apply(*decode(record.key, record.value))
                outcomes["applied"] += 1
            except RejectedEvent as rejection:
                outcomes[rejection.reason] += 1
                if self.dead_letters(record):
                    rejected.append(dead_letter(self.deadletter, record, rejection.reason))
        for outcome, count in outcomes.items():  # a labelled metric costs as much as a record's checks
            self.metrics.catalog_records.labels(outcome).inc(count)
        for state in UNBUYABLE_STATES:
            self.metrics.catalog_unbuyable.labels(state).set(self.catalog.counts[state])
        if rejected:
            await self.send(rejected)

    def dead_letters(self, record) -> bool:
        """Whether this worker dead-letters `record`: one worker does, once (see the module's doc)."""
        new = record.offset >= self.started_at.get((record.topic, record.partition), 0)
        return new and record.partition % self.settings.partitions in self.owned

    async def send(self, rejected) -> None:
        for letter in rejected:
            await self.outbox.put(letter)
        try:
            await self.outbox.confirm()
        except SendFailed as failure:  # the record is rejected either way; its copy is what is lost
            log.error("catalogue dead letters lost: %s", failure)
