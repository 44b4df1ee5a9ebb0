"""What the storefront sees, kept for the live page: the shoppers who were just sent a
recommendation (off `shop.recommendations`), newest first, each with their newest items (read off
the event topics) and that recommendation, with titles from the catalogue, the pipeline's rates,
and how many recommendations each model version (or popularity) sent: a rollout shows as a new
version taking over. One consumer thread, from the newest offsets."""
from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict, deque

import msgpack

from shopguide.catalogue import title
from streams.events import RejectedEvent, decode

RATE_WINDOW_S = 5.0
USERS_TRACKED = 10_000  # whose newest items are kept while their recommendation is on its way


class LiveView:
    def __init__(self, settings, titles: dict[str, str], shoppers: int = 12, recent_items: int = 5):
        from streams.watch import TopicTail

        self.titles = titles
        self.recommendations_topic = settings.topic_recommendations
        self.shoppers_kept = shoppers
        self.recent_items = recent_items
        self.shoppers: OrderedDict[str, dict] = OrderedDict()  # just recommended, newest last
        self.items: OrderedDict[str, list[str]] = OrderedDict()  # newest items of recently active users
        self.arrivals = {"events": deque(), "recommendations": deque()}
        self.answered: Counter[str] = Counter()  # recommendations by "v<version>" or "popularity"
        self.lock = threading.Lock()
        self.tail = TopicTail(settings, [*settings.event_topics, settings.topic_recommendations], self._took)

    def start(self) -> "LiveView":
        self.tail.start()
        return self

    def stop(self) -> None:
        self.tail.stop()

    def _took(self, batch, now: float) -> None:
        with self.lock:
            for message in batch:
                self._take(message, now)

    def _take(self, message, now: float) -> None:
        if message.topic == self.recommendations_topic:
            self.arrivals["recommendations"].append(now)
            self._recommended(msgpack.unpackb(message.value, raw=False), now)
            return
        self.arrivals["events"].append(now)
        try:
            event = decode(message.value)
        except RejectedEvent:
            return
        user = str(event.user)
        items = self.items.pop(user, [])
        self.items[user] = (items + [title(self.titles, item) for item in event.items])[-self.recent_items:]
        while len(self.items) > USERS_TRACKED:
            self.items.popitem(last=False)

    def _recommended(self, record: dict, now: float) -> None:
        user = str(record["user"])
        self.answered[f"v{record['model_version']}" if record["model_version"] else "popularity"] += 1
        self.shoppers.pop(user, None)
        self.shoppers[user] = {
            "user": user, "items": list(self.items.get(user, [])),
            "recommended": {"items": [title(self.titles, item) for item in record["items"]],
                            "source": record["source"], "model_version": record["model_version"],
                            "latency_ms": round((now - record["produced_time"]) * 1000)},
        }
        while len(self.shoppers) > self.shoppers_kept:
            self.shoppers.popitem(last=False)

    def snapshot(self) -> dict:
        """Newest shoppers first, events and recommendations per second over the last 5 s, and
        recommendations so far by model version."""
        with self.lock:
            horizon = time.time() - RATE_WINDOW_S
            rates = {}
            for kind, arrivals in self.arrivals.items():
                while arrivals and arrivals[0] < horizon:
                    arrivals.popleft()
                rates[kind] = round(len(arrivals) / RATE_WINDOW_S, 1)
            return {"shoppers": [dict(s) for s in reversed(self.shoppers.values())], "rates": rates,
                    "answered": dict(sorted(self.answered.items()))}
