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
database transaction per batch and worker thread, and their offsets are
stored after that commit.

Broker trouble is librdkafka's to retry (with its reconnect backoff); its
errors are logged at most once per ``LOG_INTERVAL_S``, and a fatal error
reopens the stream after a growing pause, never a crash loop.
"""
import dataclasses
import datetime
import json
import logging
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections, connections, transaction

from alerts.ingest import INGEST_SOURCE, ingest_stream
from alerts.events import reject

logger = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0
BATCH_TIMEOUT = datetime.timedelta(seconds=0.2)
BATCH_MAX = 200  # messages applied in one transaction (per worker) at most
REOPEN_BACKOFF_S = (1.0, 60.0)  # first and longest pause before reopening a failed stream


def topic_names(group, kinds):
    """GraceDB's topic names: ``<group>.<kind>`` for each kind."""
    return [f"{group}.{kind}" for kind in kinds]


def kafka_url(broker, topics, username=""):
    """hop's URL for reading ``topics`` from ``broker`` (host:port)."""
    user = f"{username}@" if username else ""
    return f"kafka://{user}{broker}/{','.join(topics)}"


def message_text(payload):
    """The JSON text of a message as hop hands it over (a JSONBlob, a Blob of
    bytes, or an already decoded object), or raise ValueError."""
    content = getattr(payload, "content", payload)
    if isinstance(content, (bytes, bytearray)):
        content = bytes(content).decode("utf-8")
    if isinstance(content, str):
        content = json.loads(content)
    # One line, so that ingest reads it as one message whatever its layout.
    return json.dumps(content)


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
        text = message_text(payload)
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        reason = f"not a JSON message: {error}"
        raw = getattr(payload, "content", payload)
        reject(INGEST_SOURCE, reason, excerpt=raw if isinstance(raw, (bytes, str)) else repr(raw))
        return False, reason
    return next(iter(ingest_stream([text])))


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


def close_worker_connections(pool, workers):
    """Close the database connection of each of the pool's threads (each
    runs one of these calls: they wait for one another)."""
    if workers < 2:
        return
    barrier = threading.Barrier(workers)

    def close():
        try:
            barrier.wait(timeout=30)
        finally:
            connections.close_all()

    for future in [pool.submit(close) for _ in range(workers)]:
        future.exception()


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
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="igwn-alert-apply") as pool:
            self._pool = pool
            try:
                self._run_streams(pause)
            finally:
                close_worker_connections(pool, self.workers)
        return self.progress

    def _run_streams(self, pause):
        while not self._stopped.is_set():
            try:
                self._consumer = self.open()
                with self._consumer as consumer:
                    self._consume(consumer)
            except Exception as error:  # noqa: BLE001 - never a crash loop: reopen after a pause
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
            if not batch:
                continue
            self._apply_batch([payload for payload, _ in batch])
            for _, metadata in batch:
                # Stored only now: the batch has been applied or recorded.
                consumer.mark_done(metadata)
            self._report(consumer)
            if self._max_messages and self.progress.applied + self.progress.rejected >= self._max_messages:
                self._stopped.set()

    def _room(self):
        """How many messages the next batch may hold."""
        if not self._max_messages:
            return BATCH_MAX
        return max(min(BATCH_MAX, self._max_messages - self.progress.applied - self.progress.rejected), 1)

    def _apply_batch(self, payloads):
        """Apply ``payloads``: split by uid over the worker threads (a uid's
        messages stay in order on one of them), each part in one transaction
        (each message in a savepoint of its own), so a batch costs one commit
        per worker instead of one per message. Returns once all parts are
        committed; an error leaves the batch to be read again."""
        parts = [[] for _ in range(self.workers)]
        for payload in payloads:
            parts[zlib.crc32(uid_of(payload).encode()) % self.workers].append(payload)
        if self.workers == 1:
            outcomes = [self._apply_part(payloads)]
        else:
            futures = [self._pool.submit(self._apply_part, part) for part in parts if part]
            outcomes = [future.result() for future in futures]  # re-raises a part's failure
        for part in outcomes:
            for ok, text in part:
                self._count(ok, text)

    @staticmethod
    def _apply_part(payloads):
        try:
            with transaction.atomic():
                return [apply_payload(payload) for payload in payloads]
        finally:
            close_old_connections()

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
