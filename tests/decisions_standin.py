"""A stand-in for alerts.decisions with its interface (COMMON interface of
the decision service), used by the dashboard tests only while that module is
not on this branch: verdicts issue real notices through alerts.delivery so
the outbox can be checked. Once alerts.decisions exists the tests use it."""
import dataclasses
import importlib

from alerts import delivery, orchestrator, store
from alerts.roles import is_advocate
from alerts.vocabulary import (ADVNO, ADVOK, INITIAL_ALERT, RETRACTION_ALERT, VERDICT_LABELS, circular_filename)


class Refused(Exception):
    status = 409


class NotAllowed(Refused):
    status = 403


@dataclasses.dataclass
class Preview:
    alert_type: str
    serial: int
    files: list
    notice: dict
    avro: bytes
    voevent: bytes
    circular: str


def _content(superevent, alert_type, serial):
    content = orchestrator.notice_content(superevent, superevent.preferred_event, orchestrator.SIGNIFICANT, serial)
    return dataclasses.replace(content, alert_type=alert_type)


def preview(superevent, alert_type, files=None):
    serial = superevent.notices.count() + 1
    content = _content(superevent, alert_type, serial)
    return Preview(alert_type, serial, list(files or []),
                   {"alert_type": alert_type, "superevent_id": superevent.superevent_id,
                    "event": {"far": content.far, "instruments": list(content.instruments)}},
                   b"", b"", f"{circular_filename(alert_type)}: {superevent.superevent_id} draft")


def apply_verdict(superevent, label, *, user, reason="", via="api"):
    if not is_advocate(user):
        raise NotAllowed("only advocates may do this")
    if label not in VERDICT_LABELS:
        raise Refused(f"{label} is not a verdict label")
    if set(VERDICT_LABELS) & superevent.label_names():
        raise Refused("a verdict was given already")
    store.add_label(superevent, label)
    alert_type = {ADVOK: INITIAL_ALERT, ADVNO: RETRACTION_ALERT}[label]
    return delivery.issue_notice(superevent, alert_type.lower(), lambda serial: _content(superevent, alert_type, serial))


def module():
    """alerts.decisions when it exists, else this stand-in."""
    try:
        return importlib.import_module("alerts.decisions")
    except ImportError:
        return importlib.import_module(__name__)
