"""IGWN Alert messages (GraceDB's JSON format, DESIGN.md section 5b) into the store.

A message names an event or superevent (``uid``), what happened
(``alert_type``), what changed (``data``) and the whole current object
(``object``). Messages may repeat and arrive out of order, so every action is
idempotent and an event unknown so far is created from ``object`` whenever a
message carries it. The superevent manager owns superevents: messages may
label or log known superevents but never create one.
"""
import json
import re
from pathlib import Path

from django.conf import settings
from django.db import transaction

from alerts.events import UploadError, add_event_file, create_event
from alerts.models import Category, Event, Superevent
from alerts.store import add_label, log, remove_label

SUPEREVENT_UID = re.compile(r"^(S|MS|TS)\d{6}[a-z]+$")
# The label names the API accepts (alerts.api.serializers.LabelSerializer).
LABEL_NAME = re.compile(r"^[A-Za-z0-9_]{1,32}$")
EVENT_ALERT_TYPES = {"new", "update", "label_added", "label_removed", "log"}
SUPEREVENT_ALERT_TYPES = EVENT_ALERT_TYPES | {"event_added"}
GROUP_NAMES = {"cbc": "CBC", "burst": "Burst"}


class MessageError(ValueError):
    """A message that cannot be applied; the text says why in one line."""


def split_messages(text):
    """Messages from a JSON array or from JSON lines.

    Yields each message (a dict) or a MessageError for a line that is not
    valid JSON, so one bad line never stops the stream.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as error:
            yield MessageError(f"not a valid JSON array: {error}")
            return
        yield from items
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            yield MessageError(f"line {number}: not valid JSON: {error.msg} at column {error.colno}")


def apply_message(message):
    """Apply one message; returns a short description of what was done."""
    if not isinstance(message, dict):
        raise MessageError(f"a message must be a JSON object, got {type(message).__name__}")
    uid, alert_type = message.get("uid"), message.get("alert_type")
    if not isinstance(uid, str) or not uid:
        raise MessageError("message has no 'uid'")
    data = message.get("data") or {}
    obj = message.get("object") or {}
    if not isinstance(data, dict) or not isinstance(obj, dict):
        raise MessageError(f"{uid}: 'data' and 'object' must be JSON objects")
    with transaction.atomic():
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


def ensure_event(uid, obj):
    """The event named ``uid``, created from the message's object if unknown."""
    event = Event.objects.filter(graceid=uid).first()
    if event:
        return event, False
    if not obj:
        raise MessageError(f"{uid}: unknown event and the message carries no object to create it from")
    group = GROUP_NAMES.get(str(obj.get("group", "")).lower())
    if group is None:
        raise MessageError(f"{uid}: unknown group {obj.get('group')!r}")
    search = obj.get("search") or "AllSky"
    category = Category.MDC if search == "MDC" or uid.startswith("M") else (
        Category.TEST if uid.startswith("T") else Category.PRODUCTION)
    try:
        event = create_event(
            group=group, pipeline=str(obj.get("pipeline", "")), search=search, category=category,
            offline=bool(obj.get("offline", False)), graceid=uid,
            attributes={"gpstime": obj.get("gpstime"), "far": obj.get("far"),
                        "instruments": obj.get("instruments"), "snr": snr_of(obj),
                        "extra_attributes": obj.get("extra_attributes") or {}},
            labels=obj.get("labels") or (),
        )
    except UploadError as error:
        raise MessageError(f"{uid}: {error}") from None
    return event, True


def snr_of(obj):
    """Network SNR from a GraceDB event object (CBC keeps it in CoincInspiral)."""
    extra = obj.get("extra_attributes") or {}
    coinc = extra.get("CoincInspiral") or {}
    return obj.get("snr", coinc.get("snr"))


def update_event(event, obj):
    changed = []
    for field in ("far", "gpstime"):
        if field not in obj or obj[field] is None:
            continue
        try:
            value = float(obj[field])
        except (TypeError, ValueError):
            raise MessageError(f"{event.graceid}: {field} must be a number, got {obj[field]!r}") from None
        if field == "far" and value < 0:
            raise MessageError(f"{event.graceid}: FAR must not be negative, got {value}")
        if value != getattr(event, field):
            changed.append(f"{field} {getattr(event, field)} -> {obj[field]}")
            setattr(event, field, value)
    if "offline" in obj and bool(obj["offline"]) != event.offline:
        changed.append(f"offline {event.offline} -> {bool(obj['offline'])}")
        event.offline = bool(obj["offline"])
    if not changed:
        return ""
    event.save()
    log(event, "Updated: " + "; ".join(changed))
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
    if filename and (not isinstance(filename, str) or Path(filename).name != filename
                     or filename in {".", ".."}):
        raise MessageError(f"{uid}: announced file name must be a plain file name, got {filename!r}")
    key = f"log:{data.get('N', '')}:{filename}:{data.get('file_version', '')}:{comment}"[:128]
    if owner.logs.filter(external_key=key).exists():
        return f"{uid}: log already recorded (repeated message)"
    if filename:
        local = locate_file(uid, filename)
        if local is not None and isinstance(owner, Event):
            try:
                add_event_file(owner, filename, local.read_bytes(), tags=data.get("tag_names") or None,
                               message=comment or None)
            except UploadError as error:
                raise MessageError(f"{uid}: {error}") from None
            log(owner, f"Ingested {filename} announced by IGWN Alert", external_key=key)
            return f"{uid}: file {filename} stored"
        log(owner, f"{comment} (file {filename} announced; not available locally)".strip(),
            tags=data.get("tag_names") or [], external_key=key)
        return f"{uid}: file {filename} announced, not available locally"
    log(owner, comment or "(empty log message)", tags=data.get("tag_names") or [], external_key=key)
    return f"{uid}: log recorded"


def locate_file(uid, filename):
    folder = settings.ORCHESTRATOR["INGEST_FILES_DIR"]
    if not folder:
        return None
    path = Path(folder) / uid / Path(filename).name
    return path if path.is_file() else None
