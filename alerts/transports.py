"""Where notice payloads go: an outbox folder and Kafka.

One interface, :func:`send`, takes a destination (a dict from
``ORCHESTRATOR["NOTICE_DESTINATIONS"]``), the notice identity (e.g.
``S190425a-1-Preliminary``), the format (json, avro, voevent) and the payload
bytes. Sending the same identity and format again is harmless by design:

- outbox: the file name is the identity, written atomically (temporary file
  then ``os.replace``), so a resend rewrites the same name with the same
  bytes; a file already there with *different* bytes is refused loudly, since
  two different notices must never share an identity.
- kafka: the message key is the identity and the headers carry identity,
  format and serial, so consumers can drop a repeated message. A resend
  must not happen at all, though: before a first send, :func:`send_mark`
  notes where the topic ends (its partitions' end offsets), and before any
  later attempt :func:`already_sent` reads the topic from that mark to its
  end for a message with this identity and format. A worker killed after
  the broker took the message but before the database recorded it therefore
  leaves no duplicate: the next attempt finds the message and sends nothing.

:class:`TransportError` means "try again later" (broker unreachable, disk
full); :class:`PermanentTransportError` means retrying cannot help
(misconfigured destination, conflicting outbox file).

Used by :mod:`alerts.delivery`, which records every attempt.
"""
import os
import tempfile
import time
from pathlib import Path

from django.conf import settings

# File name extension of each format in the outbox.
EXTENSIONS = {"json": "json", "avro": "avro", "voevent": "xml"}
CONTENT_TYPES = {"json": "application/json", "avro": "application/avro", "voevent": "application/xml"}
FORMATS = tuple(EXTENSIONS)

# Transports that only write to this machine's disk: the vetting task
# delivers to these itself, at once; networked ones (Kafka, which may wait
# seconds for a broker) are left to the queued deliver task.
LOCAL_TRANSPORTS = ("outbox",)

DEFAULT_KAFKA_TOPIC = "igwn.gwalert"
DEFAULT_KAFKA_TIMEOUT_S = 10.0
# librdkafka gives up on a message this long before flush() stops waiting,
# so a timed-out send is reported as failed rather than left in the queue to
# go out later behind the retry's back.
KAFKA_FLUSH_MARGIN_S = 5.0
KAFKA_LINGER_MS = 5


class TransportError(Exception):
    """The send failed but may succeed later; the delivery is retried."""


class PermanentTransportError(TransportError):
    """The send can never succeed as configured; the delivery fails at once."""


def send(destination, identity, format, payload, *, superevent_id, serial):
    """Send one payload of a notice to one destination."""
    if format not in EXTENSIONS:
        raise PermanentTransportError(f"unknown notice format {format!r}; expected one of {', '.join(FORMATS)}")
    transport = destination.get("transport")
    if transport not in TRANSPORTS:
        raise PermanentTransportError(
            f"destination {destination.get('name')!r}: unknown transport {transport!r}; "
            f"expected one of {', '.join(TRANSPORTS)}")
    return TRANSPORTS[transport](destination, identity, format, bytes(payload),
                                 superevent_id=superevent_id, serial=serial)


# --- outbox ------------------------------------------------------------------


def outbox_dir(destination):
    return Path(destination.get("directory") or settings.OUTBOX_DIR)


def outbox_path(destination, superevent_id, identity, format):
    """``<outbox>/<superevent>/<identity>.<ext>``."""
    return outbox_dir(destination) / superevent_id / f"{identity}.{EXTENSIONS[format]}"


def send_outbox(destination, identity, format, payload, *, superevent_id, serial):
    path = outbox_path(destination, superevent_id, identity, format)
    try:
        if path.exists():
            if path.read_bytes() == payload:
                return path  # already delivered, byte for byte: nothing to do
            raise PermanentTransportError(
                f"{path} already holds a different notice with identity {identity}; refusing to overwrite it")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(payload)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)  # readers see the whole file or none
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
    except PermanentTransportError:
        raise
    except OSError as error:
        raise TransportError(f"cannot write {path}: {error}") from error
    return path


# --- Kafka -------------------------------------------------------------------

# One producer per configuration and process: librdkafka handles do not
# survive fork(), so the process id is part of the key.
_producers = {}


def kafka_config(destination):
    """librdkafka configuration of a Kafka destination."""
    servers = destination.get("bootstrap_servers")
    if not servers:
        raise PermanentTransportError(f"destination {destination.get('name')!r}: no bootstrap_servers")
    timeout_s = float(destination.get("timeout_s", DEFAULT_KAFKA_TIMEOUT_S))
    config = {
        "bootstrap.servers": servers,
        "client.id": f"gw-alert-orchestrator-{destination.get('name', 'kafka')}",
        # Broker-side dedupe of the producer's own retries, and no
        # acknowledgement before every in-sync replica has the message.
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": KAFKA_LINGER_MS,
        "message.timeout.ms": int(timeout_s * 1000),
        "security.protocol": destination.get("security_protocol", "PLAINTEXT"),
    }
    if config["security.protocol"].startswith("SASL"):
        config.update({
            "sasl.mechanism": destination.get("sasl_mechanism", "SCRAM-SHA-512"),
            "sasl.username": destination.get("sasl_username", ""),
            "sasl.password": destination.get("sasl_password", ""),
        })
    config.update(destination.get("config", {}))  # any other librdkafka option
    return config


def kafka_topic(destination, format):
    return destination.get("topics", {}).get(format) or destination.get("topic") or DEFAULT_KAFKA_TOPIC


def _producer(config):
    from confluent_kafka import KafkaException, Producer

    key = (os.getpid(), tuple(sorted((name, str(value)) for name, value in config.items())))
    if key not in _producers:
        try:
            _producers[key] = Producer(config)
        except KafkaException as error:
            raise PermanentTransportError(f"bad Kafka configuration: {error}") from error
    return key, _producers[key]


def kafka_headers(identity, format, serial, superevent_id):
    return [
        ("identity", identity.encode()),
        ("format", format.encode()),
        ("serial", str(serial).encode()),
        ("superevent_id", superevent_id.encode()),
        ("content-type", CONTENT_TYPES[format].encode()),
    ]


def send_kafka(destination, identity, format, payload, *, superevent_id, serial):
    """Produce one message and wait for the broker's acknowledgement."""
    from confluent_kafka import KafkaException

    config = kafka_config(destination)
    topic = kafka_topic(destination, format)
    cache_key, producer = _producer(config)
    reports = []
    try:
        producer.produce(topic, value=payload, key=identity.encode(),
                         headers=kafka_headers(identity, format, serial, superevent_id),
                         on_delivery=lambda error, message: reports.append((error, message)))
        remaining = producer.flush(config["message.timeout.ms"] / 1000 + KAFKA_FLUSH_MARGIN_S)
    except (KafkaException, BufferError) as error:
        raise TransportError(f"Kafka {topic}: {error}") from error
    if remaining or not reports:
        raise TransportError(f"Kafka {topic}: no acknowledgement for {identity} ({format}) in time")
    error, message = reports[0]
    if error is not None:
        if error.fatal():  # the producer is unusable from now on
            _producers.pop(cache_key, None)
        raise TransportError(f"Kafka {topic}: {error.str()}")
    return topic, message.partition(), message.offset()


# Producer-only options, left out of the configuration of the consumers
# that read the topic back.
PRODUCER_OPTIONS = ("enable.idempotence", "acks", "linger.ms", "message.timeout.ms")
_consumers = {}


def _consumer(destination, cached=True):
    """A consumer of the destination's broker that never joins a group or commits."""
    from confluent_kafka import Consumer, KafkaException

    config = {name: value for name, value in kafka_config(destination).items() if name not in PRODUCER_OPTIONS}
    config.update({"group.id": f"{config['client.id']}-check", "enable.auto.commit": False,
                   "enable.partition.eof": False})
    key = (os.getpid(), tuple(sorted((name, str(value)) for name, value in config.items())))
    try:
        if not cached:
            return Consumer(config)
        if key not in _consumers:
            _consumers[key] = Consumer(config)
    except KafkaException as error:
        raise PermanentTransportError(f"bad Kafka configuration: {error}") from error
    return _consumers[key]


def _kafka_timeout_s(destination):
    return float(destination.get("timeout_s", DEFAULT_KAFKA_TIMEOUT_S))


def _end_offsets(consumer, topic, timeout_s):
    """{partition: end offset} of ``topic`` ({} if it does not exist yet)."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return {}
        return {partition: consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)[1]
                for partition in metadata.partitions}
    except KafkaException as error:
        raise TransportError(f"Kafka {topic}: cannot read the end offsets: {error}") from error


def kafka_send_mark(destination, format):
    topic = kafka_topic(destination, format)
    return {"topic": topic, "ends": {str(partition): end for partition, end in
                                     _end_offsets(_consumer(destination), topic, _kafka_timeout_s(destination)).items()}}


def kafka_already_sent(destination, identity, format, mark):
    """Whether a message with this identity and format is on the topic after ``mark``."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

    topic, timeout_s = mark["topic"], _kafka_timeout_s(destination)
    consumer = _consumer(destination, cached=False)
    try:
        ends = _end_offsets(consumer, topic, timeout_s)
        starts = {partition: mark["ends"].get(str(partition), OFFSET_BEGINNING) for partition in ends}
        left = {partition for partition, end in ends.items() if end > max(starts[partition], 0)}
        consumer.assign([TopicPartition(topic, partition, starts[partition]) for partition in left])
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise TransportError(f"Kafka {topic}: could not read back to the end in {timeout_s:g} s")
            message = consumer.poll(0.2)
            if message is None or message.error() is not None or message.partition() not in left:
                continue
            headers = dict(message.headers() or ())
            if message.key() == identity.encode() and headers.get("format") == format.encode():
                return True
            if message.offset() + 1 >= ends[message.partition()]:
                left.discard(message.partition())
        return False
    except KafkaException as error:
        raise TransportError(f"Kafka {topic}: cannot read the topic back: {error}") from error
    finally:
        consumer.close()


def send_mark(destination, format):
    """Taken before a first send: what :func:`already_sent` needs to tell
    whether that send got through (JSON), or None where resending is harmless."""
    mark = SEND_MARKS.get(destination.get("transport"))
    return mark(destination, format) if mark else None


def already_sent(destination, identity, format, mark):
    """Whether an earlier attempt, begun after ``mark``, got the payload there."""
    check = ALREADY_SENT.get(destination.get("transport"))
    return bool(mark is not None and check and check(destination, identity, format, mark))


TRANSPORTS = {"outbox": send_outbox, "kafka": send_kafka}
SEND_MARKS = {"kafka": kafka_send_mark}
ALREADY_SENT = {"kafka": kafka_already_sent}
