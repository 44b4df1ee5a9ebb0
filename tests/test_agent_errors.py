"""The agent's error policy, on plain stand-ins for Faust's message and the producer (pure logic;
the real-broker behaviour is in the chaos suite): one event's exception costs only that event, a
payload too large to re-send is dead-lettered cut, and a replayed event is not applied twice."""
import asyncio
from types import SimpleNamespace

import msgpack
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry

from shopguide.metrics import WorkerMetrics
from streams import agents
from streams.agents import NullSink, SessionAgent
from streams.delivery import Outbox
from streams.events import Event, encode, user_key
from streams.session_store import SessionStore
from streams.sessions import Session
from streams.stall_guard import StallGuard

SETTINGS = SimpleNamespace(session_length=50, session_ttl_s=86400.0, batch_max=100, batch_wait_s=0.01,
                           event_topics=("clicks", "searches", "purchases"), topic_deadletter="dead")


def store_holding_partition_0() -> SessionStore:
    store = SessionStore("unused:9092", "changelog")
    store.partitions[0] = {}
    store.recovered[0] = asyncio.Event()
    store.recovered[0].set()
    return store


def make_agent():
    sent = []

    async def send(topic, key, value, partition, headers):
        sent.append(SimpleNamespace(topic=topic, key=key, value=value, headers=dict(headers or ())))
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future
    agent = SessionAgent(SETTINGS, store_holding_partition_0(), WorkerMetrics(CollectorRegistry()), NullSink(), Outbox(send),
                         StallGuard(60.0, 3.0))
    return agent, sent


def message(offset, value, user="u1"):
    return SimpleNamespace(message=SimpleNamespace(
        topic="clicks", partition=0, offset=offset, tp=("clicks", 0), key=user_key(user), value=value, timestamp=1.0))


def click(item, user="u1"):
    return encode(Event("click", user, "s", 1.7e9, items=(item,)))


def test_an_exception_on_one_event_dead_letters_it_and_the_rest_proceed(monkeypatch):
    real_apply = agents.apply

    def apply(session, event, *args):
        if event.items == ("boom",):
            raise KeyError("boom")
        return real_apply(session, event, *args)
    monkeypatch.setattr(agents, "apply", apply)
    agent, sent = make_agent()
    asyncio.run(agent.process([message(0, click("a")), message(1, click("boom")), message(2, click("b"))]))
    dead = [record for record in sent if record.topic == "dead"]
    assert [(d.headers["reason"], d.headers["exception"], d.headers["source_offset"]) for d in dead] == \
        [(b"processing_error", b"KeyError", b"1")]
    assert Session.unpack(agent.store.get(0, user_key("u1"))).items == ("a", "b")


def test_a_payload_too_large_to_resend_is_dead_lettered_with_its_head():
    agent, sent = make_agent()
    huge = msgpack.packb({"v": 1, "pad": "x" * 1_000_500})
    asyncio.run(agent.process([message(0, huge), message(1, click("a"))]))
    (dead,) = [record for record in sent if record.topic == "dead"]
    assert dead.value == huge[:64 * 1024]
    assert dead.headers["truncated"] == str(len(huge)).encode() and dead.headers["reason"] == b"too_large"
    assert agent.store.get(0, user_key("u1")) is not None


def test_a_replayed_batch_is_answered_but_not_applied_again():
    agent, sent = make_agent()
    batch = [message(0, click("a")), message(1, click("b"))]
    asyncio.run(agent.process(batch))
    asyncio.run(agent.process(batch))
    session = Session.unpack(agent.store.get(0, user_key("u1")))
    assert session.items == ("a", "b") and session.counts["click"] == 2
    assert agent.metrics.replayed._value.get() == 2


def test_idle_sessions_are_tombstoned_in_event_time():
    agent, sent = make_agent()
    old = encode(Event("click", "old", "s", 1.7e9, items=("a",)))
    new = encode(Event("click", "new", "s", 1.7e9 + 2 * 86400, items=("b",)))
    asyncio.run(agent.process([message(0, old, "old"), message(1, new, "new")]))
    asyncio.run(agent.evict_idle())
    assert set(agent.store.partitions[0]) == {user_key("new")}
    assert [(r.key, r.value) for r in sent if r.topic == "changelog" and r.value is None] == [(user_key("old"), None)]


def test_a_partition_revoked_while_the_gauges_refresh_is_skipped_not_fatal():
    """The consumer thread may lose a partition between the agent reading the assignment and asking
    for its position (a rebalance): that raised out of the timer and stopped the worker."""
    kept, revoked = TopicPartition("clicks", 0), TopicPartition("clicks", 1)

    async def position(tp):
        if tp == revoked:
            raise IllegalStateError(f"Partition {tp} is not assigned")
        return 7

    consumer = SimpleNamespace(assignment=lambda: {kept, revoked}, highwater=lambda tp: 10, position=position)
    agent, _ = make_agent()
    asyncio.run(agent.refresh_gauges(consumer))
    lags = {s.labels["partition"]: s.value for s in agent.metrics.lag.collect()[0].samples}
    assert lags == {"0": 3.0}
