"""The one service that creates and updates events.

Every way in (``upload_event``, the REST API, ``ingest``, ``replay``) ends
here, so validation, storage and announcements are the same for all of them.
An upload is one transaction: a bad file rejects the whole upload and leaves
nothing behind; the rejection itself is recorded.
"""
import dataclasses
import logging

from django.conf import settings
from django.db import transaction

from alerts import handlers
from alerts.models import Category, Event, Rejection
from alerts.science.coinc import CoincError, PsdError, parse_coinc, parse_psd
from alerts.store import add_file, add_label, file_added_message, pending_log, save_file_version, write_logs

logger = logging.getLogger(__name__)

COINC_FILENAME = "coinc.xml"
PSD_FILENAME = "psd.xml.gz"
RANKING_DATA_FILENAME = "ranking_data.xml.gz"
GRACEID_PREFIX = {Category.PRODUCTION: "G", Category.MDC: "M", Category.TEST: "T"}
# Local IDs start here so they read like GraceDB's (G330000 ...).
GRACEID_OFFSET = 330000
REJECTION_EXCERPT_CHARS = 500
# File.name's max_length.
MAX_FILE_NAME_CHARS = 128
# Tags given to files by name when the uploader gives none.
DEFAULT_TAGS = {PSD_FILENAME: ["psd"], RANKING_DATA_FILENAME: ["ranking_data"], COINC_FILENAME: ["coinc"]}


class UploadError(ValueError):
    """Input that cannot be accepted; the message says why in one line."""


def policy():
    return settings.ORCHESTRATOR


def reject(source, reason, excerpt=b""):
    """Record refused input so that nothing disappears silently."""
    if isinstance(excerpt, bytes):
        excerpt = excerpt[:REJECTION_EXCERPT_CHARS].decode("utf-8", "replace")
    Rejection.objects.create(source=source, reason=str(reason), excerpt=str(excerpt)[:REJECTION_EXCERPT_CHARS])
    logger.warning("rejected %s input: %s", source, reason)


def validate_origin(group, pipeline, search):
    """Group, pipeline and search must be known (case-insensitive pipeline)."""
    pipelines = policy()["PIPELINES"]
    if group not in pipelines:
        raise UploadError(f"unknown group {group!r}; expected one of {', '.join(pipelines)}")
    if pipeline.lower() not in pipelines[group]:
        raise UploadError(f"unknown {group} pipeline {pipeline!r}; expected one of {', '.join(pipelines[group])}")
    if search not in policy()["SEARCHES"]:
        raise UploadError(f"unknown search {search!r}; expected one of {', '.join(policy()['SEARCHES'])}")


def category_for(search, category=None):
    if category:
        if category not in Category.values:
            raise UploadError(f"unknown category {category!r}; expected one of {', '.join(Category.values)}")
        return category
    return Category.MDC if search == "MDC" else Category.PRODUCTION


def attributes_from_coinc(summary):
    """Event fields and extra attributes from a parsed coinc.xml."""
    extra = {key: value for key, value in dataclasses.asdict(summary).items()
             if key not in {"gpstime", "far", "snr", "instruments"}}
    return {"gpstime": summary.gpstime, "far": summary.far, "snr": summary.snr,
            "instruments": list(summary.instruments), "extra_attributes": extra}


def validate_file_name(name):
    """A stored file's name is a plain name: its URL is .../files/<name>,<version>."""
    if (not isinstance(name, str) or not name or len(name) > MAX_FILE_NAME_CHARS or name in {".", ".."}
            or any(char in name for char in "/\\,") or not name.isprintable()):
        raise UploadError(f"filename {name!r} must be a plain file name "
                          f"(no '/', '\\' or ',', at most {MAX_FILE_NAME_CHARS} characters)")


def validate_file(name, data):
    """Check files whose format the orchestrator relies on."""
    validate_file_name(name)
    try:
        if name == PSD_FILENAME:
            parse_psd(data)
        elif name == COINC_FILENAME:
            parse_coinc(data)
    except (CoincError, PsdError) as error:
        raise UploadError(f"{name}: {error}") from None


def create_event(*, group, pipeline, search="AllSky", coinc=None, attributes=None, files=(),
                 offline=False, category=None, graceid=None, labels=()):
    """Create an event from a coinc.xml (CBC) or from explicit attributes.

    ``files`` is a sequence of (name, bytes) stored after the coinc, in order
    (e.g. psd.xml.gz then ranking_data.xml.gz), as a pipeline would upload
    them. Raises UploadError with a one-line reason; nothing is written then.
    """
    validate_origin(group, pipeline, search)
    category = category_for(search, category)
    if coinc is not None:
        try:
            fields = attributes_from_coinc(parse_coinc(coinc))
        except CoincError as error:
            raise UploadError(f"{COINC_FILENAME}: {error}") from None
    elif attributes is not None:
        fields = validate_attributes(attributes)
    else:
        raise UploadError("an event needs a coinc.xml or its attributes (gpstime, far, instruments)")
    for name, data in files:
        validate_file(name, data)

    with transaction.atomic():
        event = Event.objects.create(
            group=group, pipeline=pipeline.lower(), search=search, category=category, offline=offline,
            gpstime=fields["gpstime"], far=fields["far"], snr=fields.get("snr"),
            instruments=",".join(sorted(fields["instruments"])),
            extra_attributes=fields.get("extra_attributes", {}),
        )
        event.graceid = graceid or f"{GRACEID_PREFIX[category]}{GRACEID_OFFSET + event.pk}"
        event.save(update_fields=["graceid"])
        logs = [pending_log(event, f"Event uploaded by {pipeline} ({group}, {search})"
                                   + (" [offline]" if offline else ""))]
        handlers.dispatch(handlers.EVENT_CREATED, event.pk)
        if coinc is not None:
            # What add_file(..., announce=False) stores, without its lock and
            # version query: nobody sees the new event before this
            # transaction commits, so its coinc.xml is version 1.
            tags = DEFAULT_TAGS[COINC_FILENAME]
            stored = save_file_version(event, COINC_FILENAME, coinc, 1, tags=tags)
            logs.append(pending_log(event, file_added_message(stored), file=stored, tags=tags))
        write_logs(logs)  # one INSERT
        for name, data in files:
            add_file(event, name, data, tags=DEFAULT_TAGS.get(name, []))
        for label in labels:
            add_label(event, label)
    return event


def add_event_file(event, name, data, tags=None, message=None):
    """A later upload to an existing event (e.g. psd.xml.gz after coinc.xml)."""
    validate_file(name, data)
    return add_file(event, name, data, tags=DEFAULT_TAGS.get(name, []) if tags is None else tags,
                    message=message)


def validate_attributes(attributes):
    """Fields for an event given as attributes (ingested or Burst)."""
    try:
        gpstime = float(attributes["gpstime"])
        far = float(attributes["far"])
    except KeyError as missing:
        raise UploadError(f"event attributes lack {missing.args[0]!r}") from None
    except (TypeError, ValueError):
        raise UploadError("event gpstime and far must be numbers") from None
    instruments = attributes.get("instruments") or []
    if isinstance(instruments, str):
        instruments = [ifo.strip() for ifo in instruments.split(",") if ifo.strip()]
    if not instruments:
        raise UploadError("event attributes lack the instruments")
    if far < 0:
        raise UploadError(f"FAR must not be negative, got {far}")
    snr = attributes.get("snr")
    return {"gpstime": gpstime, "far": far, "snr": None if snr is None else float(snr),
            "instruments": instruments, "extra_attributes": dict(attributes.get("extra_attributes") or {})}
