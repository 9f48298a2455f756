"""The one service that creates and updates events.

Every way in (``upload_event``, the REST API, ``ingest``, ``replay``) ends
here, so validation, storage and announcements are the same for all of them.
An upload is one transaction: a bad file rejects the whole upload and leaves
nothing behind; the rejection itself is recorded.
"""
import dataclasses
import json
import logging
import math
import re

from django.conf import settings
from django.db import connection, transaction

from alerts import handlers, superevents
from alerts import vocabulary as v
from alerts.config import policy
from alerts.models import Category, Event, File, Rejection
from alerts.prepared import insert
from alerts.science.coinc import CoincError, PsdError, parse_coinc, parse_psd
from alerts.store import add_file, add_label, file_added_message, pending_log, stage_file_version, write_logs
from alerts.vocabulary import COINC_FILENAME, PSD_FILENAME, RANKING_DATA_FILENAME  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

GRACEID_PREFIX = {Category.PRODUCTION: "G", Category.MDC: "M", Category.TEST: "T"}
# Local IDs start here so they read like GraceDB's (G330000 ...).
GRACEID_OFFSET = 330000
REJECTION_EXCERPT_CHARS = 500
# File.name's max_length.
MAX_FILE_NAME_CHARS = 128
# Tags given to files by name when the uploader gives none.
DEFAULT_TAGS = {PSD_FILENAME: [v.PSD_TAG], RANKING_DATA_FILENAME: [v.RANKING_DATA_TAG], COINC_FILENAME: [v.COINC_TAG]}
# Label names the store accepts (Label.name's max_length; the API's LabelSerializer).
LABEL_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}\Z")
# Detector prefixes as LAL and GraceDB write them (H1, L1, V1, K1 ...).
INSTRUMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]\Z")
# Event.instruments' max_length.
MAX_INSTRUMENTS_CHARS = 64
# Event and superevent ids given by a client (ingest): no '/', '..', NUL or control characters.
PLAIN_ID = re.compile(r"^[A-Za-z0-9_-]+\Z")
# How much of an odd value an error message quotes.
QUOTED_VALUE_CHARS = 40


class UploadError(ValueError):
    """Input that cannot be accepted; the message says why in one line."""


def safe_excerpt(value, limit=REJECTION_EXCERPT_CHARS):
    """``value`` (text or bytes) as printable text: control characters and
    undecodable bytes escaped (PostgreSQL text refuses NUL), cut to ``limit``."""
    if isinstance(value, bytes):
        value = value[:limit].decode("utf-8", "backslashreplace")
    text = str(value)[:limit]
    return "".join(char if char.isprintable() or char in "\n\t" else ascii(char)[1:-1] for char in text)[:limit]


def reject(source, reason, excerpt=b""):
    """Record refused input so that nothing disappears silently (binary
    input too: the excerpt is escaped, see `safe_excerpt`)."""
    reason = safe_excerpt(reason, 2000)
    Rejection.objects.create(source=source, reason=reason, excerpt=safe_excerpt(excerpt))
    logger.warning("rejected %s input: %s", source, reason)


def validate_text(value, what, max_chars=None, multiline=False):
    """A text field (tag, comment, name): a string of printable characters
    (new lines and tabs too if ``multiline``), at most ``max_chars``."""
    max_chars = max_chars or settings.MAX_FIELD_CHARS
    if not isinstance(value, str):
        raise UploadError(f"{what} must be text, got {quoted(value)}")
    if len(value) > max_chars:
        raise UploadError(f"{what} is longer than {max_chars} characters ({len(value)})")
    allowed = "\n\t" if multiline else ""
    if not all(char.isprintable() or char in allowed for char in value):
        raise UploadError(f"{what} holds control characters: {quoted(value)}")
    return value


def validate_tags(tags):
    """Tag names: a list of short printable names, at most MAX_LABELS of them."""
    if tags is None:
        return None
    if not isinstance(tags, (list, tuple)):
        raise UploadError(f"tags must be a list of names, got {quoted(tags)}")
    if len(tags) > settings.MAX_LABELS:
        raise UploadError(f"too many tags ({len(tags)}; at most {settings.MAX_LABELS})")
    for tag in tags:
        validate_text(tag, "tag name")
        if "," in tag or not tag.strip():
            raise UploadError(f"tag name must be a non-empty name without ',', got {quoted(tag)}")
    return list(tags)


def validate_gpstime(value):
    """A GPS time inside settings.GPS_TIME_RANGE (after the GPS epoch, before 2100)."""
    gpstime = finite_number(value, "gpstime")
    low, high = settings.GPS_TIME_RANGE
    if not low < gpstime < high:
        raise UploadError(f"gpstime {gpstime} is outside the accepted range ({low:.0f}, {high:.0f}): "
                          "after the GPS epoch and before 2100")
    return gpstime


def validate_origin(group, pipeline, search):
    """Group, pipeline and search must be known (case-insensitive pipeline)."""
    pipelines = policy()["PIPELINES"]
    for what, value in (("group", group), ("pipeline", pipeline), ("search", search)):
        if not isinstance(value, str):
            raise UploadError(f"{what} must be a string, got {quoted(value)}")
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
    return Category.MDC if search == v.MDC else Category.PRODUCTION


def attributes_from_coinc(summary):
    """Event fields and extra attributes from a parsed coinc.xml."""
    extra = {key: value for key, value in dataclasses.asdict(summary).items()
             if key not in {"gpstime", "far", "snr", "instruments"}}
    return {"gpstime": summary.gpstime, "far": summary.far, "snr": summary.snr,
            "instruments": list(summary.instruments), "extra_attributes": extra}


def quoted(value):
    """``repr(value)`` cut short, for one-line error messages."""
    text = repr(value)
    return text if len(text) <= QUOTED_VALUE_CHARS else text[:QUOTED_VALUE_CHARS] + "..."


def finite_number(value, what, non_negative=False):
    """``value`` as a float; UploadError unless a finite number (>= 0 if asked).

    NaN and infinities pass ``float()`` (JSON messages may even spell them)
    but break the superevent manager's windows and every comparison of FARs.
    """
    if value is None or isinstance(value, bool):
        raise UploadError(f"{what} must be a number, got {quoted(value)}")
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UploadError(f"{what} must be a number, got {quoted(value)}") from None
    if not math.isfinite(number):
        raise UploadError(f"{what} must be finite, got {number}")
    if non_negative and number < 0:
        raise UploadError(f"{what} must not be negative, got {number}")
    return number


def validate_labels(labels):
    """Label names given with a new event (e.g. an ingested GraceDB object)."""
    if not isinstance(labels, (list, tuple, set, frozenset)):
        raise UploadError(f"labels must be a list of label names, got {quoted(labels)}")
    if len(labels) > settings.MAX_LABELS:
        raise UploadError(f"too many labels ({len(labels)}; at most {settings.MAX_LABELS})")
    for name in labels:
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            raise UploadError(f"label name must be 1-32 letters, digits or underscores, got {quoted(name)}")
    return list(labels)


def validate_instruments(instruments):
    """Detector names, from a list or a comma-separated string; sorted, without repeats."""
    if isinstance(instruments, str):
        instruments = [ifo.strip() for ifo in instruments.split(",") if ifo.strip()]
    if not isinstance(instruments, (list, tuple)):
        raise UploadError(f"instruments must be a list or a comma-separated string, got {quoted(instruments)}")
    if not instruments:
        raise UploadError("event attributes lack the instruments")
    for ifo in instruments:
        if not isinstance(ifo, str) or not INSTRUMENT_NAME.match(ifo):
            raise UploadError(f"instrument names are detector prefixes such as H1 or V1, got {quoted(ifo)}")
    instruments = sorted(set(instruments))
    if len(",".join(instruments)) > MAX_INSTRUMENTS_CHARS:
        raise UploadError(f"too many instruments ({len(instruments)})")
    return instruments


def validate_extra_attributes(extra):
    """Extra attributes are a JSON object of plain JSON values.

    PostgreSQL's jsonb refuses NaN and Infinity, which Python's json module
    reads and writes; refusing them here keeps the reason one clear line.
    """
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise UploadError(f"extra_attributes must be a JSON object, got {quoted(extra)}")
    try:
        json.dumps(extra, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise UploadError(f"extra_attributes must hold plain JSON values (no NaN or Infinity): {error}") from None
    return dict(extra)


def validate_file_name(name):
    """A stored file's name is a plain name: its URL is .../files/<name>,<version>."""
    if (not isinstance(name, str) or not name or len(name) > MAX_FILE_NAME_CHARS or name in {".", ".."}
            or any(char in name for char in "/\\,") or not name.isprintable()):
        raise UploadError(f"filename {name!r} must be a plain file name "
                          f"(no '/', '\\' or ',', at most {MAX_FILE_NAME_CHARS} characters)")


def validate_file(name, data):
    """Check files whose format the orchestrator relies on."""
    validate_file_name(name)
    if not isinstance(data, bytes):
        raise UploadError(f"{name}: file content must be bytes")
    if len(data) > settings.MAX_FILE_BYTES:
        raise UploadError(f"{name} is larger than {settings.MAX_FILE_BYTES} bytes ({len(data)})")
    try:
        if name == PSD_FILENAME:
            parse_psd(data)
        elif name == COINC_FILENAME:
            parse_coinc(data)
    except (CoincError, PsdError) as error:
        raise UploadError(f"{name}: {error}") from None


def create_event(*, group, pipeline, search=v.ALLSKY, coinc=None, attributes=None, files=(),
                 offline=False, category=None, graceid=None, labels=()):
    """Create an event from a coinc.xml (CBC) or from explicit attributes.

    ``files`` is a sequence of (name, bytes) stored after the coinc, in order
    (e.g. psd.xml.gz then ranking_data.xml.gz), as a pipeline would upload
    them. Raises UploadError with a one-line reason; nothing is written then.
    """
    validate_origin(group, pipeline, search)
    category = category_for(search, category)
    labels = validate_labels(labels)
    graceid_chars = Event._meta.get_field("graceid").max_length
    if graceid is not None and (not isinstance(graceid, str) or not 0 < len(graceid) <= graceid_chars
                                or not PLAIN_ID.match(graceid)):
        raise UploadError(f"event id must be 1-{graceid_chars} letters, digits, '_' or '-', got {quoted(graceid)}")
    if coinc is not None:
        try:
            if len(coinc) > settings.MAX_FILE_BYTES:
                raise UploadError(f"larger than {settings.MAX_FILE_BYTES} bytes ({len(coinc)})")
            fields = attributes_from_coinc(parse_coinc(coinc))
            fields["gpstime"] = validate_gpstime(fields["gpstime"])
            fields["instruments"] = validate_instruments(fields["instruments"])
            fields["extra_attributes"] = validate_extra_attributes(fields["extra_attributes"])
        except (CoincError, UploadError) as error:
            raise UploadError(f"{COINC_FILENAME}: {error}") from None
    elif attributes is not None:
        fields = validate_attributes(attributes)
    else:
        raise UploadError("an event needs a coinc.xml or its attributes (gpstime, far, instruments)")
    for name, data in files:
        validate_file(name, data)

    with transaction.atomic():
        event = Event(
            group=group, pipeline=pipeline.lower(), search=search, category=category, offline=offline,
            gpstime=fields["gpstime"], far=fields["far"], snr=fields.get("snr"),
            instruments=",".join(fields["instruments"]),
            extra_attributes=fields.get("extra_attributes", {}),
        )
        # Grouped first (GROUP_AT_UPLOAD), so that its announcements run first
        # after the commit, as when the EVENT_CREATED task groups it. Labels
        # given with the event come after, and re-apply the preferred-event
        # order as any later label does (superevents.reconsider_on_label).
        grouped = write_new_event(event, graceid, coinc, f"Event uploaded by {pipeline} ({group}, {search})"
                                                         + (" [offline]" if offline else ""),
                                  group=policy()["GROUP_AT_UPLOAD"])
        # The manager's task would only find the event done (a re-read).
        handlers.dispatch(handlers.EVENT_CREATED, event.pk, done=[superevents.process_event] if grouped else [])
        for name, data in files:
            add_file(event, name, data, tags=DEFAULT_TAGS.get(name, []))
        for label in labels:
            add_label(event, label)
    return event


def write_new_event(event, graceid, coinc, message, group=False):
    """INSERT ``event`` with its final id (``graceid``, or one made from its
    pk), its coinc.xml (if any), its superevent (if ``group``) and their log
    messages. Returns True if the event was grouped.

    What ``add_file(..., announce=False)`` stores, without its lock and
    version query: nobody sees the new event before this transaction
    commits, so its coinc.xml is version 1.

    On PostgreSQL the event's pk is drawn from its sequence first, so the
    event is grouped before its row goes in, with its final id, superevent
    and done flag (foreign keys are checked at commit). Inserting a
    placeholder id and updating it would make concurrent uploads queue on
    the unique index until the first one commits, serialising the workers.
    SQLite serialises writers anyway, so there the event is inserted, then
    grouped, and its id and grouping filled in afterwards.
    """
    def made_graceid(pk):
        return graceid or f"{GRACEID_PREFIX[event.category]}{GRACEID_OFFSET + pk}"

    grouping = None
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # Raw SQL: the ORM cannot draw a pk before the INSERT (see above).
            cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s))",
                           [connection.ops.quote_name(Event._meta.db_table), Event._meta.pk.column])
            event.pk = cursor.fetchone()[0]
        event.graceid = made_graceid(event.pk)
        grouping = superevents.group_at_upload(event) if group else None
        insert([event])  # as save(force_insert=True), without its signals
    else:
        event.save(force_insert=True)
        event.graceid = made_graceid(event.pk)
        grouping = superevents.group_at_upload(event) if group else None
        event.save(update_fields=["graceid", "superevent", "grouping_done"])
    logs = [pending_log(event, message)]
    if coinc is not None:
        tags = DEFAULT_TAGS[COINC_FILENAME]
        stored = stage_file_version(event, COINC_FILENAME, coinc, 1, tags=tags)
        insert([stored])  # as save(force_insert=True), without its signals
        logs.append(pending_log(event, file_added_message(stored), file=stored, tags=tags))
    write_logs(logs + (grouping.logs if grouping else []))  # one INSERT
    if grouping:
        superevents.finish_at_upload(grouping)
    return grouping is not None


def add_event_file(event, name, data, tags=None, message=None):
    """A later upload to an existing event (e.g. psd.xml.gz after coinc.xml)."""
    validate_file(name, data)
    tags = validate_tags(tags)
    if message is not None:
        validate_text(message, "comment", settings.MAX_TEXT_CHARS, multiline=True)
    return add_file(event, name, data, tags=DEFAULT_TAGS.get(name, []) if tags is None else tags,
                    message=message)


def validate_attributes(attributes):
    """Fields for an event given as attributes (ingested or Burst).

    Raises UploadError for any value the store or the superevent manager
    could not use: a missing or non-finite time, a negative or non-finite
    FAR or SNR, odd instruments, extra attributes that are not plain JSON.
    """
    for key in ("gpstime", "far"):
        if attributes.get(key) is None:
            raise UploadError(f"event attributes lack {key!r}")
    snr = attributes.get("snr")
    return {
        "gpstime": validate_gpstime(attributes["gpstime"]),
        "far": finite_number(attributes["far"], "FAR", non_negative=True),
        "snr": None if snr is None else finite_number(snr, "SNR", non_negative=True),
        "instruments": validate_instruments(attributes.get("instruments") or []),
        "extra_attributes": validate_extra_attributes(attributes.get("extra_attributes")),
    }
