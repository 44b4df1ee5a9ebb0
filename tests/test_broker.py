"""The local broker: it serves clients, and a stop and start keeps topics and messages."""
import pytest
from kafka import KafkaProducer

from shopguide.errors import UserError
from shopguide.process import free_port
from streams.broker import LocalBroker
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
