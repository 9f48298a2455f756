"""librdkafka's mock cluster as the IGWN Alert broker, for the tests and the
listen benchmark (``benchmark_listen``), and a writer that publishes as
GraceDB does."""
import contextlib

KAFKA_WAIT_S = 10.0


@contextlib.contextmanager
def mock_kafka_cluster():
    """A one-broker mock Kafka cluster living in this process: yields host:port.

    The cluster belongs to the client that creates it and dies with it, so
    that client is held here until the block ends.
    """
    from confluent_kafka import Producer

    holder = Producer({"test.mock.num.brokers": 1})
    try:
        brokers = list(holder.list_topics(timeout=KAFKA_WAIT_S).brokers.values())
        yield f"{brokers[0].host}:{brokers[0].port}"
    finally:
        del holder


def publish(broker, topic, messages):
    """Write messages as GraceDB does (hop's JSON format); bytes go as they are."""
    from hop import Stream

    with Stream(auth=False).open(f"kafka://{broker}/{topic}", "w", automatic_offload=False) as producer:
        for message in messages:
            if isinstance(message, bytes):
                producer.write_raw(message, headers=[])
            else:
                producer.write(message)
