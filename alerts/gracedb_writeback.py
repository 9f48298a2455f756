"""Write-back: the products, labels and log messages this orchestrator
makes, written to the source GraceDB (``GRACEDB["write_back"]``, off by
default).

Each write is its own worker task, queued by the file, label and log
handlers, so it never holds up an alert. Exactly once: a ``WriteBack`` row
is claimed before the remote write (its attempt counted and committed),
held locked while the remote write runs, so a second worker with the same
key waits and then finds it done, and marked done after it. The remote log
message carries the row's key (``... [file:12]``), so a task that died
between the remote write and marking it done finds its write in the remote
log and does not make a second file version or log message.

What goes back: sky maps, plots, em_bright.json, a computed p_astro.json, the
data-quality report and circular drafts (with GraceDB's tags), the labels
added here (not those that came from GraceDB) and the log messages written
here (``store.log``, with the GraceDB tags among theirs). Not written back:
what came from GraceDB (ingested log messages and labels, downloaded files,
notes on the exchange with GraceDB), the log row that goes with a file or a
label (the file or label is written itself), and the rows an upload or the
superevent manager writes in bulk (GraceDB records its own). Superevent
products go to the remote superevent that holds the preferred event. When
GraceDB announces a write-back of ours, :func:`echo_key` recognizes it, so
ingest does not record it as news.
"""
import logging
import re

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts import gracedb_source, handlers
from alerts.handlers import handles
from alerts.models import Event, File, Label, Log, WriteBack
from alerts.vocabulary import (ANALYST_COMMENTS_TAG, BAYESTAR_FLAT, BAYESTAR_MULTIORDER, COMMENT_TAG, COMPUTED_TAG,
                               DATA_QUALITY_REPORT, EM_BRIGHT_FILENAME, GRACEDB_LOG_TAGS, P_ASTRO_SUFFIX,
                               PNG_SUFFIX)

logger = logging.getLogger(__name__)

INGESTED_LABEL_CREATOR = "igwn-alert"
CIRCULAR_SUFFIX = "-circular.txt"
RECORDS = {"file": File, "label": Label, "log": Log}
# The key at the end of a remote log message this orchestrator wrote.
KEY_MARK = re.compile(r" \[((?:file|log):\d+)\]$")


def enabled():
    return gracedb_source.enabled() and settings.GRACEDB.get("write_back", False)


def is_own_product(file):
    """Files made here (not a pipeline's upload or download)."""
    name = file.name
    if file.superevent_id:
        return True
    return (name in {BAYESTAR_MULTIORDER, BAYESTAR_FLAT, EM_BRIGHT_FILENAME, DATA_QUALITY_REPORT}
            or name.endswith(PNG_SUFFIX) or name.endswith(CIRCULAR_SUFFIX)
            or (name.endswith(P_ASTRO_SUFFIX) and COMPUTED_TAG in file.tags))


@handles(handlers.EVENT_FILE_ADDED)
def event_file_added(event_pk, file_pk):
    if enabled() and is_own_product(File.objects.get(pk=file_pk)):
        queue(f"file:{file_pk}")


@handles(handlers.SUPEREVENT_FILE_ADDED)
def superevent_file_added(superevent_pk, file_pk):
    if enabled():
        queue(f"file:{file_pk}")


@handles(handlers.EVENT_LABEL_ADDED, when=lambda *_: enabled())
def event_label_added(event_pk, name):
    """The label, and the event's own products: some are stored without an
    announcement of their own (the sky map comes with SKYMAP_READY)."""
    label = Label.objects.filter(event_id=event_pk, name=name).first()
    if not enabled() or label is None or label.creator == INGESTED_LABEL_CREATOR:
        return
    queue(f"label:{label.pk}")
    own = [f"file:{file.pk}" for file in File.objects.filter(event_id=event_pk).order_by("pk") if is_own_product(file)]
    written = set(WriteBack.objects.filter(key__in=own).values_list("key", flat=True))
    for key in own:
        if key not in written:
            queue(key)


@handles(handlers.SUPEREVENT_LABEL_ADDED, when=lambda *_: enabled())
def superevent_label_added(superevent_pk, name):
    label = Label.objects.filter(superevent_id=superevent_pk, name=name).first()
    if enabled() and label is not None and label.creator != INGESTED_LABEL_CREATOR:
        queue(f"label:{label.pk}")


@handles(handlers.LOGS_ADDED, when=lambda *_: enabled())
def logs_added(log_pks):
    """The orchestrator's own log messages (not an ingested one, not one
    that goes with a file)."""
    for pk in Log.objects.filter(pk__in=log_pks, external_key="", file__isnull=True).order_by("pk") \
            .values_list("pk", flat=True):
        queue(f"log:{pk}")


def queue(key):
    from alerts import workers

    workers.enqueue(write_back, key)


def remote_target(owner):
    """The remote object a write goes to: the event's graceid, or the
    remote superevent of the superevent's preferred event (None if unknown)."""
    if isinstance(owner, Event):
        return owner.graceid
    event = owner.preferred_event
    if event is None:
        return None
    return gracedb_source.client().event(event.graceid).json().get("superevent") or None


def claim(key):
    """The WriteBack row for ``key`` if this run may write it, else None.
    The attempt is counted in a transaction of its own, so a run that dies
    in the remote write leaves a count above 1 for the next to see."""
    with transaction.atomic():
        row, _ = WriteBack.objects.select_for_update().get_or_create(key=key)
        if row.state == WriteBack.State.DONE:
            return None
        row.attempts += 1
        row.save(update_fields=["attempts"])
    return row


def marked(text, key):
    """The remote log message: ``text`` and the key that identifies the write."""
    return f"{text} [{key}]"


def written_already(client, target, key):
    """Whether a remote log message carries ``key`` (a write whose task died
    before it could record it)."""
    logs = client.logs(target).json().get("log", [])
    return any(f"[{key}]" in (entry.get("comment") or "") for entry in logs)


def echo_key(owner, comment, filename=""):
    """The key of our write-back that a GraceDB log message on ``owner``
    (an event, or a remote superevent) announces, or None: then it is news."""
    found = KEY_MARK.search(comment or "")
    if not found or not WriteBack.objects.filter(key=found.group(1)).exists():
        return None
    key = found.group(1)
    kind, _, pk = key.partition(":")
    record = RECORDS[kind].objects.filter(pk=pk).first()
    if record is None or (isinstance(owner, Event) and record.event_id != owner.pk):
        return None
    ours = comment == marked(record.message, key) if kind == "log" else filename == record.name
    return key if ours else None


def remote_tags(record):
    """GraceDB's tags among a log message's (a comment is GraceDB's analyst_comments)."""
    tags = [ANALYST_COMMENTS_TAG if tag == COMMENT_TAG else tag for tag in record.tags]
    return sorted({tag for tag in tags if tag in GRACEDB_LOG_TAGS})


def write_back(key):
    """Write one file, label or log message to the source GraceDB, exactly once."""
    kind, _, pk = key.partition(":")
    record = RECORDS[kind].objects.filter(pk=pk).first() if kind in RECORDS else None
    if record is None:
        return
    row = claim(key)
    if row is None:
        return
    client = gracedb_source.client()
    try:
        with transaction.atomic():
            # Held until marked done: a second run of the same key waits here.
            row = WriteBack.objects.select_for_update().get(pk=row.pk)
            if row.state == WriteBack.State.DONE:
                return
            owner = record.event or record.superevent
            target = row.target or remote_target(owner)
            if target is None:
                finish(row, WriteBack.State.FAILED, error=f"{owner} has no remote counterpart")
                return
            if row.attempts > 1 and kind != "label" and written_already(client, target, key):
                finish(row, WriteBack.State.DONE, target=target)
                return
            if kind == "file":
                client.write_log(target, marked(f"{record.filename} from the alert orchestrator", key),
                                 filename=record.name, filecontents=record.read(), tag_name=list(record.tags))
            elif kind == "log":
                client.write_log(target, marked(record.message, key), tag_name=remote_tags(record))
            else:
                write_label(client, target, record.name)
            finish(row, WriteBack.State.DONE, target=target)
    except Exception as error:  # noqa: BLE001 - recorded on the row and tried again later, bounded
        retry_later(row, key, f"{type(error).__name__}: {error}")


def retry_later(row, key, error):
    from alerts import workers

    retry = settings.GRACEDB["retry"]
    logger.warning("write-back of %s failed (attempt %d): %s", key, row.attempts, error)
    if row.attempts >= retry["max_attempts"]:
        finish(row, WriteBack.State.FAILED, error=error[:2000])
        return
    WriteBack.objects.filter(pk=row.pk).update(last_error=error[:2000])
    workers.enqueue(write_back, key, delay_s=retry["initial_s"] * retry["factor"] ** (row.attempts - 1))


def write_label(client, target, name):
    """Add a label remotely; one that is there already counts as written."""
    from ligo.gracedb.exceptions import HTTPError

    try:
        client.write_label(target, name)
    except HTTPError as error:
        if error.response.status_code not in (400, 409) or "already" not in error.response.text.lower():
            raise


def finish(row, state, target="", error=""):
    WriteBack.objects.filter(pk=row.pk).update(state=state, target=target or row.target, last_error=error,
                                               done_at=timezone.now())
