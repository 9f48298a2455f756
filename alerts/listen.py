"""Live intake: IGWN Alert messages from Kafka, applied as ``manage.py ingest`` applies them.

GraceDB announces every change on topics named ``<group>.<kind>``
(``gracedb.superevent``, ``gracedb.cbc_gstlal``, ``gracedb-test.burst_cwb``
...; DESIGN.md section 5b). This module reads them with hop-client, the
Kafka client that igwn-alert itself is built on, and hands each message to
:func:`alerts.ingest.ingest_stream`, so a message from the stream and the same
message from a file do exactly the same thing.

Why hop-client and not igwn-alert's ``listen``: igwn-alert commits a message
when the next one is read and exits the process on an interrupt; here the
offset of a message is stored only after it has been applied (or rejected and
recorded), so a listener killed at any moment loses nothing, and the ingest
path's idempotency makes the redelivered tail change nothing.

Messages are applied in batches of what has arrived (``read_batch``), one
database transaction per batch (per worker process with ``workers`` >= 2:
alerts/listen_worker.py), and their offsets are stored after that commit.

Broker trouble is librdkafka's to retry (with its reconnect backoff); its
errors are logged at most once per ``LOG_INTERVAL_S``, and a fatal error
reopens the stream after a growing pause, never a crash loop.
"""
import collections
import dataclasses
import datetime
import json
import logging
import threading
import time
import zlib

from django.db import close_old_connections, transaction

from alerts.ingest import INGEST_SOURCE, all_or_nothing, all_or_nothing_active, apply_each
from alerts.events import reject
from alerts.listen_worker import WorkerFailed, WorkerPool

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
BATCH_TIMEOUT = datetime.timedelta(seconds=0.2)
BATCH_MAX = 200  # messages applied in one transaction (per worker) at most
# Batches handed to worker processes and not yet answered: the listener reads
# the next batch while the workers apply this one.
IN_FLIGHT_MAX = 2
REOPEN_BACKOFF_S = (1.0, 60.0)  # first and longest pause before reopening a failed stream


def topic_names(group, kinds):
    """GraceDB's topic names: ``<group>.<kind>`` for each kind."""
    return [f"{group}.{kind}" for kind in kinds]


def kafka_url(broker, topics, username=""):
    """hop's URL for reading ``topics`` from ``broker`` (host:port)."""
    user = f"{username}@" if username else ""
    return f"kafka://{user}{broker}/{','.join(topics)}"


def message_content(payload):
    """A message as hop hands it over (a JSONBlob, a Blob of bytes, or an
    already decoded object), decoded; raise ValueError if it is not JSON."""
    content = getattr(payload, "content", payload)
    if isinstance(content, (bytes, bytearray)):
        content = bytes(content).decode("utf-8")
    if isinstance(content, str):
        content = json.loads(content)
    return content


@dataclasses.dataclass
class Progress:
    """Counts for the console's progress line."""

    applied: int = 0
    rejected: int = 0
    started: float = dataclasses.field(default_factory=time.monotonic)
    last_line: float = dataclasses.field(default_factory=time.monotonic)

    def rate(self):
        elapsed = time.monotonic() - self.started
        return (self.applied + self.rejected) / elapsed if elapsed > 0 else 0.0


class RateLimitedLog:
    """Log a repeated problem at most once per interval, with a count."""

    def __init__(self, interval_s=LOG_INTERVAL_S):
        self.interval_s = interval_s
        self.last = -float("inf")
        self.suppressed = 0

    def __call__(self, message, *args):
        now = time.monotonic()
        if now - self.last < self.interval_s:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} similar in the last {self.interval_s:g} s)" if self.suppressed else ""
        logger.warning(message + more, *args)
        self.last, self.suppressed = now, 0


def apply_payload(payload):
    """Apply one message; (True, what was done) or (False, why it was refused).
    A message that is not JSON is recorded as a Rejection like any bad message."""
    try:
        content = message_content(payload)
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        if all_or_nothing_active():
            raise
        reason = f"not a JSON message: {error}"
        raw = getattr(payload, "content", payload)
        reject(INGEST_SOURCE, reason, excerpt=raw if isinstance(raw, (bytes, str)) else repr(raw))
        return False, reason
    # The path of `ingest` from the parsed message on.
    return next(iter(apply_each([content])))


def apply_part(payloads):
    """Apply ``payloads`` in one transaction; the outcomes, once committed.

    First all of them without savepoints; if one fails, that is rolled
    back and the part applied again with each message in a savepoint of
    its own, so a bad message is rolled back and recorded and the rest stay.
    """
    try:
        try:
            with transaction.atomic(), all_or_nothing():
                return [apply_payload(payload) for payload in payloads]
        except Exception:  # noqa: BLE001 - a bad message (or a database error, which the second pass meets too)
            logger.debug("a message of the batch failed; applying it message by message", exc_info=True)
        with transaction.atomic():
            return [apply_payload(payload) for payload in payloads]
    finally:
        close_old_connections()


def uid_of(payload):
    """The uid a message names ("" if it cannot be read), to keep a uid's
    messages in order on one worker."""
    content = getattr(payload, "content", payload)
    if isinstance(content, (bytes, bytearray, str)):
        try:
            content = json.loads(content)
        except ValueError:
            return ""
    uid = content.get("uid") if isinstance(content, dict) else None
    return uid if isinstance(uid, str) else ""


def lag_of(consumer):
    """Messages waiting on the assigned partitions (None if unknown).

    hop does not expose the confluent-kafka consumer it wraps; its private
    attribute is read here, and any change there only loses the lag figure.
    """
    inner = getattr(getattr(consumer, "_consumer", None), "_consumer", None)
    if inner is None:
        return None
    try:
        total = 0
        for partition in inner.position(inner.assignment()):
            low, high = inner.get_watermark_offsets(partition, timeout=1.0, cached=False)
            position = partition.offset if partition.offset >= 0 else low
            total += max(high - position, 0)
        return total
    except Exception:  # noqa: BLE001 - a figure for the console, never a failure
        return None


def read_batch(consumer, most):
    """Up to ``most`` messages that have arrived, as hop's ``read`` gives
    them ((payload, metadata) pairs), waiting at most ``BATCH_TIMEOUT``.

    hop's ``read`` is a generator that hides where one fetch ends, so a
    batch could only be cut by waiting for the next message; this does what
    it does for one fetch, through the client hop wraps (private attributes,
    as in ``lag_of``). Offsets are stored in the same thread: librdkafka's
    consume and offset store from two threads deadlocked here.
    """
    from confluent_kafka import KafkaException

    messages = consumer._consumer._consumer.consume(most, BATCH_TIMEOUT.total_seconds())
    for message in messages:
        if message.error() is not None:
            raise KafkaException(message.error())
    return [consumer._unpack(message, metadata=True) for message in messages]


def split_by_uid(payloads, count):
    """``payloads`` in ``count`` parts, a uid's messages in one part, in order."""
    parts = [[] for _ in range(count)]
    for payload in payloads:
        parts[zlib.crc32(uid_of(payload).encode()) % count].append(payload)
    return parts


class Listener:
    """Consume IGWN Alert topics and apply each message; ``stop()`` ends ``run``."""

    def __init__(self, conf, on_progress=None, stream_factory=None, workers=1):
        self.conf = conf
        self.workers = max(int(workers), 1)
        self.on_progress = on_progress or (lambda progress, lag: None)
        self.stream_factory = stream_factory or self._hop_stream
        self.progress = Progress()
        self.broker_errors = RateLimitedLog(conf.get("log_interval_s", LOG_INTERVAL_S))
        self._stopped = threading.Event()
        self._consumer = None
        self._pool = None
        self._in_flight = collections.deque()  # (metadata of a batch, workers with a part of it)

    def _hop_stream(self):
        from hop import Stream
        from hop.auth import Auth
        from hop.io import StartPosition

        conf = self.conf
        auth = False
        if conf.get("username"):
            auth = Auth(conf["username"], conf.get("password", ""), protocol=conf.get("security_protocol", "SASL_SSL"),
                        method=conf.get("sasl_mechanism", "SCRAM-SHA-512"))
        return Stream(auth=auth, start_at=StartPosition.EARLIEST)

    def _error_callback(self, error):
        self.broker_errors("Kafka: %s (librdkafka retries by itself)", error)

    def open(self):
        topics = topic_names(self.conf["group"], self.conf["kinds"])
        url = kafka_url(self.conf["broker"], topics, self.conf.get("username", ""))
        return self.stream_factory().open(url, "r", group_id=self.conf["consumer_group"], ignoretest=False,
                                          error_callback=self._error_callback)

    def run(self, max_messages=None):
        """Read until ``stop()`` (or ``max_messages`` applied or rejected)."""
        pause = REOPEN_BACKOFF_S[0]
        self._max_messages = max_messages
        try:
            self._run_streams(pause)
        finally:
            self._close_pool()
        return self.progress

    def _close_pool(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _abandon_in_flight(self, error):
        """After a failure: batches not finished are not stored (the reopened
        stream reads them again); the workers' answers to them are drained,
        or the workers replaced if one failed."""
        try:
            while self._pool is not None and self._in_flight and not isinstance(error, WorkerFailed):
                for index in self._in_flight.popleft()[1]:
                    self._pool.receive(index)
        except WorkerFailed:
            error = WorkerFailed()
        self._in_flight.clear()
        if isinstance(error, WorkerFailed):
            self._close_pool()

    def _run_streams(self, pause):
        while not self._stopped.is_set():
            try:
                if self.workers > 1 and self._pool is None:
                    # Forked before the stream opens: no librdkafka thread in the children.
                    self._pool = WorkerPool(self.workers)
                self._consumer = self.open()
                with self._consumer as consumer:
                    self._consume(consumer)
            except Exception as error:  # noqa: BLE001 - never a crash loop: reopen after a pause
                self._abandon_in_flight(error)
                if self._stopped.is_set():
                    break
                self.broker_errors("IGWN Alert stream failed (%s: %s); reopening in %.0f s",
                                   type(error).__name__, error, pause)
                self._stopped.wait(pause)
                pause = min(pause * 2, REOPEN_BACKOFF_S[1])
            else:
                pause = REOPEN_BACKOFF_S[0]

    def _consume(self, consumer):
        """Apply the stream in batches of whatever has arrived (one message
        when they trickle in), and store each batch's offsets once the batch
        is committed to the database."""
        while not self._stopped.is_set():
            batch = read_batch(consumer, self._room())
            if batch:
                self._start_batch(batch)
            # Wait for the oldest batch when the workers hold enough, or when
            # nothing more has come.
            while self._in_flight and (self._pool is None or len(self._in_flight) >= IN_FLIGHT_MAX
                                       or not batch or self._stopped.is_set()):
                self._finish_batch(consumer)
            if self._max_messages and self._done() >= self._max_messages:
                self._stopped.set()
        while self._in_flight:  # stopped: what the workers hold is committed and stored
            self._finish_batch(consumer)

    def _done(self):
        return self.progress.applied + self.progress.rejected

    def _room(self):
        """How many messages the next batch may hold."""
        if not self._max_messages:
            return BATCH_MAX
        held = sum(len(metadata) for metadata, _ in self._in_flight)
        return max(min(BATCH_MAX, self._max_messages - self._done() - held), 1)

    def _start_batch(self, batch):
        """Apply ``batch`` here (one worker), or hand it, split by uid, to the
        worker processes (each part one transaction), to be finished by
        `_finish_batch`."""
        payloads = [payload for payload, _ in batch]
        if self._pool is None:
            outcomes = [apply_part(payloads)]
            self._in_flight.append(([metadata for _, metadata in batch], outcomes))
            return
        holders = []
        for index, part in enumerate(split_by_uid(payloads, len(self._pool))):
            if part:
                # The decoded message, not hop's wrapper: what a pipe carries.
                self._pool.send(index, [getattr(payload, "content", payload) for payload in part])
                holders.append(index)
        self._in_flight.append(([metadata for _, metadata in batch], holders))

    def _finish_batch(self, consumer):
        """Wait for the oldest batch's parts to be committed, then store its
        offsets; an error leaves it (and what follows) to be read again."""
        metadata, holders = self._in_flight[0]
        if self._pool is None:
            outcomes = holders
        else:
            outcomes = [self._pool.receive(index) for index in holders]  # a worker's failure raises
        self._in_flight.popleft()
        for part in outcomes:
            for ok, text in part:
                self._count(ok, text)
        for item in metadata:
            # Stored only now: the batch has been applied or recorded.
            consumer.mark_done(item)
        self._report(consumer)

    def _count(self, ok, text):
        if ok:
            self.progress.applied += 1
            logger.debug("applied: %s", text)
        else:
            self.progress.rejected += 1
            logger.warning("rejected: %s", text)

    def _report(self, consumer):
        now = time.monotonic()
        if now - self.progress.last_line >= self.conf.get("progress_interval_s", LOG_INTERVAL_S):
            self.progress.last_line = now
            self.on_progress(self.progress, lag_of(consumer))

    def stop(self, *_):
        self._stopped.set()
        if self._consumer is not None:
            self._consumer.stop()
