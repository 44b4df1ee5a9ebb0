"""A worker paused past its session timeout never sends what its producer held when the pause began.

The child process below arms the guard and queues one record with a linger (so the producer
still holds it) shorter than the guard's limit, and says so; the test SIGSTOPs it for longer than
the limit and resumes it. The producer's sender then wakes, and the write must be refused: the child exits 75 and the
record never reaches the broker. The same child left alone delivers the record, so the check can
fail. The child installs neither the ticker nor the SIGCONT handler: only the write path is under
test.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streams.stall_guard import EXIT_CODE
from tests.fixtures.kafka import read_all

pytestmark = pytest.mark.kafka

LIMIT_S = 2.0
LINGER_MS = 1000
CHILD = """
import asyncio, sys, time
from aiokafka import AIOKafkaProducer
from streams import faust_internals
from streams.stall_guard import StallGuard

async def main(servers, topic):
    guard = StallGuard(session_timeout_s=%(limit)s + 0.5, heartbeat_s=0.5)
    faust_internals.check_before_sends(guard.check)
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=%(linger)d)
    await producer.start()
    await producer.client.force_metadata_update()
    await producer.client.fetch_all_metadata()
    guard.last_tick = time.monotonic()
    delivered = await producer.send(topic, b"held")
    print("queued", flush=True)
    await delivered
    await producer.stop()

asyncio.run(main(*sys.argv[1:]))
""" % {"limit": LIMIT_S, "linger": LINGER_MS}


def _start(bootstrap_servers: str, topic: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", CHILD, bootstrap_servers, topic], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])
    assert child.stdout.readline().strip() == "queued", child.stderr.read()
    return child


def _make_topic(producer, topic: str) -> None:
    producer.send(topic, b"first")
    producer.flush()


@pytest.mark.parametrize("paused", [False, True], ids=["left alone", "paused past the limit"])
def test_a_paused_worker_never_sends_what_it_held(bootstrap_servers, unique_name, producer, paused):
    topic = unique_name("held")
    _make_topic(producer, topic)
    child = _start(bootstrap_servers, topic)
    if paused:
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(LIMIT_S + 1.5)
        os.kill(child.pid, signal.SIGCONT)
    code = child.wait(timeout=30)
    if paused:
        assert code == EXIT_CODE, child.stderr.read()
        assert read_all(bootstrap_servers, topic) == [b"first"]
    else:
        assert code == 0, child.stderr.read()
        assert sorted(read_all(bootstrap_servers, topic)) == [b"first", b"held"]
