"""IGWN Alert messages (GraceDB's JSON format) into the store.

A message names an event or superevent (``uid``), what happened
(``alert_type``), what changed (``data``) and the whole current object
(``object``). Messages may repeat and arrive out of order, so every action is
idempotent and an event unknown so far is created from ``object`` whenever a
message carries it. The superevent manager owns superevents: messages may
label or log known superevents but never create one.
"""
import contextlib
import contextvars
import json
import logging
import re
from pathlib import Path

from django.conf import settings
from django.db import transaction

from alerts import gracedb_source, gracedb_writeback
from alerts.events import (LABEL_NAME, PLAIN_ID, UploadError, add_event_file, create_event, finite_number, quoted,
                           reject, validate_tags, validate_text)
from alerts.models import Category, Event, Log, Superevent
from alerts.prepared import Param, PreparedSelect
from alerts.science.coinc import chirp_mass
from alerts.store import add_label, log, log_once, remove_label
from alerts import vocabulary as v
from alerts.config import policy

logger = logging.getLogger(__name__)

SUPEREVENT_UID = re.compile(r"^(S|MS|TS)\d{6}[a-z]+$")
EVENT_ALERT_TYPES = {"new", "update", "label_added", "label_removed", "log"}
SUPEREVENT_ALERT_TYPES = EVENT_ALERT_TYPES | {"event_added"}
GROUP_NAMES = {"cbc": v.CBC, "burst": v.BURST}
# Rejection.source of refused messages.
INGEST_SOURCE = "ingest"
# GraceDB's per-pipeline tables inside an event's extra_attributes.
SINGLE_INSPIRAL, COINC_INSPIRAL, MULTI_BURST = "SingleInspiral", "CoincInspiral", "MultiBurst"
# GraceDB splits times into seconds and nanoseconds.
NS_PER_S = 1e9
# Event.graceid's and Superevent.superevent_id's max_length.
UID_MAX_CHARS = 32
# Set by `all_or_nothing`.
_all_or_nothing = contextvars.ContextVar("all_or_nothing", default=False)


class MessageError(ValueError):
    """A message that cannot be applied; the text says why in one line.

    ``excerpt`` is the input it is about when that is not a parsed message
    (a line that is not JSON).
    """

    def __init__(self, reason, excerpt=None):
        super().__init__(reason)
        self.excerpt = excerpt


def split_messages(source):
    """Messages from JSON lines or a JSON array, each as soon as it is read.

    ``source`` is a string or an iterable of lines (str or bytes: a file,
    standard input). JSON lines are parsed one at a time as they arrive, so
    a live stream is applied while it flows; a JSON array (first non-blank
    character ``[``) is read whole. Yields each message or a MessageError for
    a line that is not valid JSON (or UTF-8), so one bad line never stops
    the stream.
    """
    lines = iter(source.splitlines(keepends=True) if isinstance(source, str) else source)
    first = True
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if first and line.lstrip()[:1] in ("[", b"["):
            yield from split_array(line + line[:0].join(lines))
            return
        first = False
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            yield MessageError(f"line {number}: not valid JSON: {error.msg} at column {error.colno}", line)
        except UnicodeDecodeError:
            yield MessageError(f"line {number}: not valid UTF-8 text", line)


def split_array(text):
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        yield MessageError(f"not a valid JSON array: {error}", text)
        return
    except UnicodeDecodeError:
        yield MessageError("not a valid JSON array: not valid UTF-8 text", text)
        return
    yield from items if isinstance(items, list) else [items]


def ingest_stream(source):
    """Apply every message of ``source`` in turn (see `split_messages`).

    Yields ``(True, what was done)`` or ``(False, reason)`` per message, as
    each is applied. A message that cannot be applied, for whatever reason,
    is recorded as a Rejection with a one-line reason and the stream goes on.
    """
    return apply_each(split_messages(source))


@contextlib.contextmanager
def all_or_nothing():
    """Inside the caller's transaction, messages are applied without a
    savepoint each (two statements fewer per message) and the first one
    that fails raises instead of being recorded: the caller rolls back and
    applies them again outside this, each in its savepoint (``listen``'s
    batches, where a bad message is rare)."""
    token = _all_or_nothing.set(True)
    try:
        yield
    finally:
        _all_or_nothing.reset(token)


def all_or_nothing_active():
    return _all_or_nothing.get()


def apply_each(items):
    """`ingest_stream` for messages already parsed (``listen`` gets them
    decoded from Kafka): each item a message, or a MessageError for input
    that could not be read as one."""
    for item in items:
        try:
            if isinstance(item, MessageError):
                raise item
            outcome = apply_message(item)
        except MessageError as error:
            if _all_or_nothing.get():
                raise
            reason, excerpt = str(error), item if error.excerpt is None else error.excerpt
        except Exception as error:  # noqa: BLE001 - last resort: a bug costs one message, not the stream
            if _all_or_nothing.get():
                raise
            logger.debug("unexpected failure applying an IGWN Alert message", exc_info=True)
            reason, excerpt = unexpected_failure(item, error), item
        else:
            yield True, outcome
            continue
        reject(INGEST_SOURCE, reason, excerpt=excerpt_of(excerpt))
        yield False, reason


def unexpected_failure(message, error):
    """One line for an error no check foresaw (a bug, a database refusal)."""
    uid = message.get("uid") if isinstance(message, dict) else None
    detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = f"could not apply the message ({type(error).__name__}{': ' + detail if detail else ''})"
    return f"{uid}: {reason}" if isinstance(uid, str) and uid else reason


def excerpt_of(item):
    if isinstance(item, (str, bytes)):
        return item
    try:
        return json.dumps(item)
    except (TypeError, ValueError):
        return repr(item)


def apply_message(message):
    """Apply one message; returns a short description of what was done."""
    if not isinstance(message, dict):
        raise MessageError(f"a message must be a JSON object, got {type(message).__name__}")
    uid, alert_type = message.get("uid"), message.get("alert_type")
    if not isinstance(uid, str) or not uid:
        raise MessageError("message has no 'uid'")
    if len(uid) > UID_MAX_CHARS or not PLAIN_ID.match(uid):
        named = uid if uid.isprintable() and len(uid) <= 100 else quoted(uid)
        raise MessageError(f"{named}: uid must be 1-{UID_MAX_CHARS} letters, digits, '_' or '-'")
    data = message.get("data") or {}
    obj = message.get("object") or {}
    if not isinstance(data, dict) or not isinstance(obj, dict):
        raise MessageError(f"{uid}: 'data' and 'object' must be JSON objects")
    with transaction.atomic(savepoint=not _all_or_nothing.get()):
        if SUPEREVENT_UID.match(uid):
            if alert_type not in SUPEREVENT_ALERT_TYPES:
                raise MessageError(f"{uid}: unknown superevent alert_type {alert_type!r}")
            return apply_to_superevent(uid, alert_type, data)
        if alert_type not in EVENT_ALERT_TYPES:
            raise MessageError(f"{uid}: unknown event alert_type {alert_type!r}")
        return apply_to_event(uid, alert_type, data, obj)


def apply_to_event(uid, alert_type, data, obj):
    event, created = ensure_event(uid, obj)
    if alert_type == "new":
        return f"{uid}: created" if created else f"{uid}: already known (repeated message)"
    if alert_type == "update":
        return update_event(event, obj) or f"{uid}: no change"
    return apply_common(event, uid, alert_type, data)


def apply_common(owner, uid, alert_type, data):
    """Labels and logs, the same for events and superevents."""
    if alert_type in {"label_added", "label_removed"}:
        name = data.get("name")
        if not name:
            raise MessageError(f"{uid}: {alert_type} message without a label name")
        if not isinstance(name, str) or not LABEL_NAME.match(name):
            raise MessageError(f"{uid}: label name must be 1-32 letters, digits or underscores, got {name!r}")
        if alert_type == "label_added":
            return f"{uid}: label {name} " + ("added" if add_label(owner, name, creator="igwn-alert") else "already present")
        return f"{uid}: label {name} " + ("removed" if remove_label(owner, name) else "was not present")
    if alert_type == "log":
        return apply_log(owner, uid, data)
    raise MessageError(f"{uid}: alert_type {alert_type!r} does not apply here")


# The two reads of every label or log message, compiled once per process.
_event_named = PreparedSelect(lambda _: Event.objects.filter(graceid=Param("graceid", Event._meta.get_field("graceid")))[:1],
                              server_prepared=True)
_logged = PreparedSelect(lambda owner_model: Log.objects.filter(
    **{"event" if owner_model is Event else "superevent": Param("owner", owner_model._meta.pk),
       "external_key": Param("external_key", Log._meta.get_field("external_key"))}).values_list("pk")[:1],
    server_prepared=True)


def ensure_event(uid, obj):
    """The event named ``uid``, created from the message's object if unknown."""
    found = _event_named(None, graceid=uid)
    if found:
        return found[0], False
    if not obj:
        raise MessageError(f"{uid}: unknown event and the message carries no object to create it from")
    group = GROUP_NAMES.get(str(obj.get("group", "")).lower())
    if group is None:
        raise MessageError(f"{uid}: unknown group {obj.get('group')!r}")
    search = obj.get("search") or v.ALLSKY
    category = Category.MDC if search == v.MDC or uid.startswith("M") else (
        Category.TEST if uid.startswith("T") else Category.PRODUCTION)
    try:
        extra = canonical_extra_attributes(obj.get("extra_attributes"))
        event = create_event(
            group=group, pipeline=str(obj.get("pipeline", "")), search=search, category=category,
            offline=bool(obj.get("offline", False)), graceid=uid,
            attributes={"gpstime": obj.get("gpstime"), "far": obj.get("far"),
                        "instruments": obj.get("instruments"), "snr": snr_of(obj),
                        "extra_attributes": extra},
            labels=obj.get("labels") or (),
        )
    except UploadError as error:
        raise MessageError(f"{uid}: {error}") from None
    return event, True


def snr_of(obj):
    """Network SNR from a GraceDB event object (CoincInspiral or MultiBurst keeps it)."""
    if obj.get("snr") is not None:
        return obj["snr"]
    extra = obj.get("extra_attributes")
    for table in (COINC_INSPIRAL, MULTI_BURST):
        row = extra.get(table) if isinstance(extra, dict) else None
        if isinstance(row, dict) and row.get("snr") is not None:
            return row["snr"]
    return None


def canonical_extra_attributes(extra):
    """GraceDB's nested pipeline tables plus the flat keys the orchestrator reads.

    GraceDB keeps a CBC template in ``SingleInspiral`` (one row per detector)
    and a Burst's extent in ``MultiBurst``; a coinc.xml upload gives flat keys
    (``alerts.events.attributes_from_coinc``), which the annotations
    (mass1, mass2, spin1z, spin2z) and the superevent manager (start_time,
    duration) read. This adds those keys, computed as a coinc.xml upload
    would (the loudest detector's template), plus ``detector_snrs``,
    ``chirp_mass``, ``central_frequency`` and ``bandwidth``. The nested
    tables are kept as they are; flat keys already present are left alone.
    Raises UploadError when a value it needs is not a usable number.
    """
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise UploadError(f"extra_attributes must be a JSON object, got {quoted(extra)}")
    derived = {**cbc_template_of(extra.get(SINGLE_INSPIRAL)), **burst_extent_of(extra.get(MULTI_BURST))}
    return {**derived, **extra}


def cbc_template_of(rows):
    """Flat template keys from GraceDB's SingleInspiral rows (empty if none)."""
    what = SINGLE_INSPIRAL
    if rows is None:
        return {}
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise UploadError(f"extra_attributes.{what} must be a list of objects, got {quoted(rows)}")
    snrs = [None if row.get("snr") is None else finite_number(row["snr"], f"{what} snr", non_negative=True)
            for row in rows]
    values = {}
    detector_snrs = {row["ifo"]: snr for row, snr in zip(rows, snrs)
                     if isinstance(row.get("ifo"), str) and snr is not None}
    if detector_snrs:
        values["detector_snrs"] = detector_snrs
    with_masses = [index for index, row in enumerate(rows)
                   if row.get("mass1") is not None and row.get("mass2") is not None]
    if not with_masses:
        return values
    # All detectors share one template; like a coinc.xml upload, believe the
    # loudest (rows without an SNR last, the first on ties).
    template = rows[max(with_masses, key=lambda index: (snrs[index] is not None, snrs[index] or 0.0))]
    mass1, mass2 = (finite_number(template[key], f"{what} {key}", non_negative=True) for key in ("mass1", "mass2"))
    if mass1 == 0 or mass2 == 0:
        raise UploadError(f"{what} template masses must be positive, got {mass1} and {mass2}")
    spins = {key: 0.0 if template.get(key) is None else finite_number(template[key], f"{what} {key}")
             for key in ("spin1z", "spin2z")}
    return {**values, "mass1": mass1, "mass2": mass2, **spins, "chirp_mass": chirp_mass(mass1, mass2)}


def burst_extent_of(row):
    """Flat start_time, duration, central_frequency, bandwidth from GraceDB's MultiBurst."""
    what = MULTI_BURST
    if row is None:
        return {}
    if not isinstance(row, dict):
        raise UploadError(f"extra_attributes.{what} must be an object, got {quoted(row)}")
    values = {}
    if row.get("start_time") is not None:
        nanoseconds = row.get("start_time_ns")
        values["start_time"] = finite_number(row["start_time"], f"{what} start_time") + (
            0.0 if nanoseconds is None else finite_number(nanoseconds, f"{what} start_time_ns") / NS_PER_S)
    for key, name in (("duration", "duration"), ("central_freq", "central_frequency"), ("bandwidth", "bandwidth")):
        if row.get(key) is not None:
            values[name] = finite_number(row[key], f"{what} {key}", non_negative=True)
    return values


def update_event(event, obj):
    changed = []
    for field in ("far", "gpstime"):
        if field not in obj or obj[field] is None:
            continue
        try:
            value = (finite_number(obj[field], "FAR", non_negative=True) if field == "far"
                     else finite_number(obj[field], field))
        except UploadError as error:
            raise MessageError(f"{event.graceid}: {error}") from None
        if value != getattr(event, field):
            changed.append(f"{field} {getattr(event, field)} -> {obj[field]}")
            setattr(event, field, value)
    if "offline" in obj and bool(obj["offline"]) != event.offline:
        changed.append(f"offline {event.offline} -> {bool(obj['offline'])}")
        event.offline = bool(obj["offline"])
    if not changed:
        return ""
    event.save()
    log(event, "Updated: " + "; ".join(changed), announce=False)
    return f"{event.graceid}: updated ({'; '.join(changed)})"


def apply_to_superevent(uid, alert_type, data):
    superevent = Superevent.objects.filter(superevent_id=uid).first()
    if superevent is None:
        raise MessageError(f"{uid}: unknown superevent (superevents are made by this orchestrator's manager)")
    if alert_type in {"new", "update", "event_added"}:
        return f"{uid}: known; the manager keeps its own grouping"
    return apply_common(superevent, uid, alert_type, data)


def apply_log(owner, uid, data):
    """A log entry; a file announcement stores the file if it is available locally."""
    filename = data.get("filename") or ""
    comment = data.get("comment") or ""
    tag_names = data.get("tag_names") or []
    if not isinstance(comment, str):
        raise MessageError(f"{uid}: log comment must be text, got {quoted(comment)}")
    if not isinstance(tag_names, list) or not all(isinstance(tag, str) for tag in tag_names):
        raise MessageError(f"{uid}: tag_names must be a list of strings, got {quoted(tag_names)}")
    try:
        validate_text(comment, "log comment", settings.MAX_TEXT_CHARS, multiline=True)
        validate_tags(tag_names)
    except UploadError as error:
        raise MessageError(f"{uid}: {error}") from None
    if filename and (not isinstance(filename, str) or Path(filename).name != filename
                     or filename in {".", ".."} or not filename.isprintable()):
        raise MessageError(f"{uid}: announced file name must be a plain file name, got {filename!r}")
    echoed = gracedb_writeback.echo_key(owner, comment, filename)
    if echoed:
        return f"{uid}: our own write-back {echoed} (not recorded again)"
    key = f"log:{data.get('N', '')}:{filename}:{data.get('file_version', '')}:{comment}"[:128]
    if not filename:
        if not log_once(owner, comment or "(empty log message)", tags=tag_names, external_key=key):
            return f"{uid}: log already recorded (repeated message)"
        return f"{uid}: log recorded"
    if _logged(type(owner), owner=owner.pk, external_key=key):
        return f"{uid}: log already recorded (repeated message)"
    local = locate_file(uid, filename)
    if local is not None and isinstance(owner, Event):
        try:
            add_event_file(owner, filename, local.read_bytes(), tags=tag_names or None, message=comment or None)
        except UploadError as error:
            raise MessageError(f"{uid}: {error}") from None
        log(owner, f"Ingested {filename} announced by IGWN Alert", external_key=key, repeat_checked=True,
            announce=False)
        return f"{uid}: file {filename} stored"
    if isinstance(owner, Event) and gracedb_source.enabled():
        log(owner, f"{comment} (file {filename} announced; downloading it from GraceDB)".strip(),
            tags=tag_names, external_key=key, repeat_checked=True, announce=False)
        gracedb_source.announce(owner, filename, tag_names or None)
        return f"{uid}: file {filename} announced, downloading it from GraceDB"
    log(owner, f"{comment} (file {filename} announced; not available locally)".strip(),
        tags=tag_names, external_key=key, repeat_checked=True, announce=False)
    return f"{uid}: file {filename} announced, not available locally"


def locate_file(uid, filename):
    folder = policy()["INGEST_FILES_DIR"]
    if not folder:
        return None
    path = Path(folder) / uid / Path(filename).name
    return path if path.is_file() else None
