"""The local broker: it serves clients, a stop and start keeps topics and messages, and its JIT
compilers run at the lowest priority."""
import os
from pathlib import Path

import pytest
from kafka import KafkaProducer

from shopguide.errors import UserError
from shopguide.process import free_port
from streams.broker import COMPILER_NICE, COMPILER_THREADS, LocalBroker
from tests.fixtures.kafka import read_all

pytestmark = pytest.mark.kafka


def test_restart_keeps_messages(kafka_broker, unique_name):
    topic = unique_name("keep")
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    for n in range(3):
        producer.send(topic, f"m{n}".encode())
    producer.flush()
    producer.close()

    assert kafka_broker.stop()
    assert kafka_broker.pid() is None
    kafka_broker.start(quiet=True)

    # unkeyed messages spread over partitions: their order across partitions is not kept
    assert sorted(read_all(kafka_broker.bootstrap_servers, topic)) == [b"m0", b"m1", b"m2"]


def test_second_start_from_same_home_is_refused(kafka_broker):
    twin = LocalBroker(kafka_broker.home, kafka_broker.cache, free_port(), free_port())
    with pytest.raises(UserError, match="already running"):
        twin.start(quiet=True)


def _nice_by_thread(pid: int) -> dict[str, set[int]]:
    """Each thread name of the process, with the nice values its threads run at."""
    nice: dict[str, set[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        name = (task / "comm").read_text().strip()
        nice.setdefault(name, set()).add(os.getpriority(os.PRIO_PROCESS, int(task.name)))
    return nice


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread priorities are read from Linux's /proc")
def test_compilers_yield_to_the_pipeline(kafka_broker):
    nice = _nice_by_thread(kafka_broker.pid())
    compilers = {name: values for name, values in nice.items() if name.startswith(COMPILER_THREADS)}
    assert {prefix[:2] for prefix in compilers} == {"C1", "C2"}
    assert set().union(*compilers.values()) == {COMPILER_NICE}
    handlers = {name: values for name, values in nice.items() if name.startswith("data-plane")}  # requests
    assert handlers and set().union(*handlers.values()) == {os.getpriority(os.PRIO_PROCESS, 0)}
