"""Write-back: the products and labels this orchestrator makes, written to
the source GraceDB (``GRACEDB["write_back"]``, off by default).

Each write is its own worker task, queued by the file and label handlers,
so it never holds up an alert. Exactly once: a ``WriteBack`` row is claimed
before the remote write and marked done after it; the remote log message
carries the row's key, so a task that died between the two finds its write
in the remote log and does not make a second file version.

What goes back: sky maps, plots, em_bright.json, a computed p_astro.json, the
data-quality report and circular drafts (with GraceDB's tags), and the labels
added here (not those that came from GraceDB). Superevent products go to the
remote superevent that holds the preferred event.
"""
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts import gracedb_source, handlers
from alerts.handlers import handles
from alerts.models import Event, File, Label, WriteBack
from alerts.vocabulary import (BAYESTAR_FLAT, BAYESTAR_MULTIORDER, COMPUTED_TAG, DATA_QUALITY_REPORT,
                               EM_BRIGHT_FILENAME, P_ASTRO_SUFFIX, PNG_SUFFIX)

logger = logging.getLogger(__name__)

INGESTED_LABEL_CREATOR = "igwn-alert"
CIRCULAR_SUFFIX = "-circular.txt"


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


@handles(handlers.EVENT_LABEL_ADDED)
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


@handles(handlers.SUPEREVENT_LABEL_ADDED)
def superevent_label_added(superevent_pk, name):
    label = Label.objects.filter(superevent_id=superevent_pk, name=name).first()
    if enabled() and label is not None and label.creator != INGESTED_LABEL_CREATOR:
        queue(f"label:{label.pk}")


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
    """The WriteBack row for ``key`` if this run may write it, else None."""
    with transaction.atomic():
        row, _ = WriteBack.objects.select_for_update().get_or_create(key=key)
        if row.state == WriteBack.State.DONE:
            return None
        row.attempts += 1
        row.save(update_fields=["attempts"])
    return row


def written_already(client, target, key):
    """Whether a remote log message carries ``key`` (a write whose task died
    before it could record it)."""
    logs = client.logs(target).json().get("log", [])
    return any(f"[{key}]" in (entry.get("comment") or "") for entry in logs)


def write_back(key):
    """Write one file or label to the source GraceDB, exactly once."""
    kind, _, pk = key.partition(":")
    record = File.objects.filter(pk=pk).first() if kind == "file" else Label.objects.filter(pk=pk).first()
    if record is None:
        return
    row = claim(key)
    if row is None:
        return
    owner = record.event or record.superevent
    client = gracedb_source.client()
    try:
        target = row.target or remote_target(owner)
        if target is None:
            finish(row, WriteBack.State.FAILED, error=f"{owner} has no remote counterpart")
            return
        if row.attempts > 1 and kind == "file" and written_already(client, target, key):
            finish(row, WriteBack.State.DONE, target=target)
            return
        if kind == "file":
            client.write_log(target, f"{record.filename} from the alert orchestrator [{key}]",
                             filename=record.name, filecontents=record.read(), tag_name=list(record.tags))
        else:
            write_label(client, target, record.name)
    except Exception as error:  # noqa: BLE001 - recorded on the row and tried again later, bounded
        retry_later(row, key, f"{type(error).__name__}: {error}")
        return
    finish(row, WriteBack.State.DONE, target=target)


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
