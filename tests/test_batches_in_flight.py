"""The agent's two batches in flight (`SessionAgent.run`), on plain stand-ins for Faust's stream and
the producer (pure logic; the real broker and Triton are in test_recommendations and the chaos
suite): the next batch asks the model as soon as the call before has returned, while the batch
before is still sent, folds on the sessions that batch left, and is sent, confirmed and acked only
after it."""
import asyncio
from types import SimpleNamespace

from streams import faust_internals
from streams.events import user_key
from streams.sessions import Session
from tests.test_agent_errors import click, make_agent, message


class RecordingSink:
    """Records each step; a model call takes 50 ms, a delivery yields once (as a send does)."""

    def __init__(self):
        self.steps = []

    async def answer(self, updates):
        offsets = [update.offset for update in updates]
        self.steps.append(("ask", offsets))
        await asyncio.sleep(0.05)
        self.steps.append(("answered", offsets))
        return offsets

    async def deliver(self, updates, answers):
        await asyncio.sleep(0)
        self.steps.append(("deliver", answers))


def run_batches(monkeypatch, batches):
    agent, sent = make_agent()
    agent.sink = RecordingSink()
    acked = []

    async def take_batches(stream, max_, within):
        for batch in batches:
            yield batch

    async def ack(event):
        acked.append((event.message.offset, len(sent)))  # the records sent before this ack
    monkeypatch.setattr(faust_internals, "take_batches", take_batches)
    asyncio.run(agent.run(SimpleNamespace(ack=ack)))
    return agent, sent, acked


def test_the_next_batch_asks_once_the_call_before_returned_and_is_sent_after_the_batch_before(monkeypatch):
    batches = [[message(0, click("a"))], [message(1, click("b"))], [message(2, click("c", "u2"), "u2")]]
    agent, sent, acked = run_batches(monkeypatch, batches)
    steps = agent.sink.steps
    assert steps[:4] == [("ask", [0]), ("answered", [0]), ("ask", [1]), ("deliver", [0])]  # asked before 0 was sent
    calls = [offsets for step, offsets in steps if step in ("ask", "answered")]
    assert calls == [[0], [0], [1], [1], [2], [2]]  # one model call at a time
    assert [offsets for step, offsets in steps if step == "deliver"] == [[0], [1], [2]]
    changelog = [(record.key, Session.unpack(record.value).items) for record in sent if record.topic == "changelog"]
    assert changelog == [(user_key("u1"), ("a",)), (user_key("u1"), ("a", "b")), (user_key("u2"), ("c",))]
    assert [offset for offset, _ in acked] == [0, 1, 2]
    assert [records for _, records in acked] == [1, 2, 3]  # each batch acked once its own records were sent
    assert Session.unpack(agent.store.get(0, user_key("u1"))).items == ("a", "b")
    assert agent.unconfirmed == {}
