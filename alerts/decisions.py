"""The advocate's decisions, as one service every way in calls (REST, the
command line, labels, the dashboard): Initial, Update and Retraction alerts,
verdict labels, the preferred event by hand, labels, comments,
re-localization and delivery retries.

No HTTP here. Every call checks the role itself (:class:`NotAllowed`),
applies the rules (:class:`Refused`, whose text is the one-line reason) and
writes an :class:`alerts.models.AuditRecord`, also when refused; each act is
also logged on the superevent. Notices go through the exactly-once path of
:func:`alerts.delivery.issue_notice` (one notice per superevent and reason),
so a repeated request sends nothing new. The rules follow gwcelery's
advocate flow (Initial after vetting, Update with new products, Retraction
with no event; DESIGN.md sections 1 and 3).
"""
import base64
import dataclasses
import hashlib
import json
import logging

from django.db import transaction
from django.utils import timezone

from alerts import annotations, circulars, delivery, handlers, products, roles, store, workers
from alerts.models import AuditRecord, Category, Event, File, Log, Notice, NoticeDelivery, Superevent
from alerts.science.notices import ROLE_TEST, NoticeContent, NoticeValidationError, notice_role
from alerts.vocabulary import (ADVNO, ADVOK, COMMENT_TAG, HUMAN_ALERT_TYPES, INITIAL_ALERT, INJ,
                               PRELIMINARY_ALERT, RETRACTION_ALERT, UPDATE_ALERT, VERDICT_LABELS)
# The Preliminary's content builder, reused so Initial and Update say the
# same things the same way (one import, so it can be re-pointed in one place).
from alerts.orchestrator.alerts import copy_products, notice_content
from alerts.config import policy

logger = logging.getLogger(__name__)

DECISION_TAG = "decision"
INITIAL_REASON = "initial"
RETRACTION_REASON = "retraction"
UPDATE_REASON_PREFIX = "update-"
VERDICT_SENDS = {ADVOK: INITIAL_ALERT, ADVNO: RETRACTION_ALERT}


class Refused(Exception):
    """A request the rules refuse; ``str(exc)`` is the one-line reason."""

    status = 409

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status


class NotAllowed(Refused):
    """The user lacks the role."""

    status = 403


class BadRequest(Refused):
    """Malformed input (unknown alert type, a file spelled wrong...)."""

    status = 400


@dataclasses.dataclass
class Preview:
    """What a send would produce now."""

    alert_type: str
    serial: int
    files: list  # "name,version"
    notice: dict  # the JSON notice (skymap base64)
    avro: bytes
    voevent: bytes
    circular: str

    def as_json(self):
        """Plain JSON values (Avro as base64, VOEvent as text)."""
        return {"alert_type": self.alert_type, "serial": self.serial, "files": list(self.files),
                "notice": self.notice, "avro": base64.b64encode(self.avro).decode("ascii"),
                "voevent": self.voevent.decode("utf-8"), "circular": self.circular}


# --- auditing ----------------------------------------------------------------


def _username(user):
    return getattr(user, "username", "") or ""


def _audit(action, target, request, user, via, act):
    """Run ``act()`` and record the outcome; Refused passes through, recorded."""
    owner = target if isinstance(target, (Event, Superevent)) else None
    target_text = str(target) if target is not None else ""
    try:
        result = act()
    except Refused as refusal:
        _record(action, target_text, request, user, via, AuditRecord.Outcome.REFUSED, str(refusal), owner)
        raise
    _record(action, target_text, request, user, via, AuditRecord.Outcome.DONE, _describe(result), owner)
    return result


def _describe(result):
    if isinstance(result, Notice):
        return f"notice {result.identity}"
    return "" if result is None or isinstance(result, bool) else str(result)[:500]


def _record(action, target, request, user, via, outcome, detail, owner):
    AuditRecord.objects.create(user=user if getattr(user, "pk", None) else None, username=_username(user),
                               action=action, target=target, request=request, outcome=outcome,
                               detail=detail, via=via)
    if owner is not None:
        who = _username(user) or "anonymous"
        text = f"{action} by {who} via {via}: {outcome}" + (f" ({detail})" if detail else "")
        store.log(owner, text, tags=[DECISION_TAG])


def _require_advocate(user):
    if not roles.is_advocate(user):
        raise NotAllowed(f"only users in the group '{roles.ADVOCATES_GROUP}' may do this"
                         if hasattr(roles, "ADVOCATES_GROUP") else "only advocates may do this")


# --- alert types, files, rules ------------------------------------------------


def alert_type_of(alert_type):
    """INITIAL / UPDATE / RETRACTION from any case; BadRequest otherwise."""
    name = str(alert_type or "").upper()
    if name not in HUMAN_ALERT_TYPES:
        raise BadRequest(f"alert_type must be one of {', '.join(t.lower() for t in HUMAN_ALERT_TYPES)}, "
                         f"not {alert_type!r}")
    return name


def _parse_file(spec):
    name, sep, version = str(spec).rpartition(",")
    if not sep or not name or not version.strip().isdigit():
        raise BadRequest(f"file {spec!r} must be written 'name,version'")
    return name.strip(), int(version)


def chosen_files(superevent, files=None):
    """The File rows an alert carries: ``files`` ('name,version') or by default
    the superevent's latest sky map, source properties and p_astro, after the
    preferred event's newer products have been copied to it."""
    if files:
        if isinstance(files, str) or not isinstance(files, (list, tuple)):
            raise BadRequest("files must be a list of 'name,version' strings")
        wanted = [_parse_file(spec) for spec in files]
        found = {(f.name, f.version): f for f in File.objects.filter(superevent=superevent,
                                                                      name__in=[n for n, _ in wanted])}
        missing = [f"{n},{v}" for n, v in wanted if (n, v) not in found]
        if missing:
            raise Refused(f"{superevent} has no file {', '.join(missing)}")
        return [found[key] for key in dict.fromkeys(wanted)]
    if superevent.preferred_event is not None:
        # The preferred event's newer products first become the superevent's
        # (as the Preliminary copies them; identical files are not copied again).
        copy_products(superevent, superevent.preferred_event)
    chosen = [products.skymap_file(superevent), products.em_bright_file(superevent),
              products.p_astro_file(superevent)]
    return [f for f in chosen if f is not None]


def _skymap_of(chosen):
    maps = [f for f in chosen if f.name.endswith(products.MULTIORDER_SUFFIX)]
    return maps[-1] if maps else None


def _check_rules(superevent, alert_type, chosen):
    notices = list(Notice.objects.filter(superevent=superevent).values_list("alert_type", flat=True))
    if RETRACTION_ALERT in notices and alert_type != RETRACTION_ALERT:
        raise Refused(f"{superevent} was retracted; no {alert_type.title()} may follow")
    labels = set(superevent.label_names())
    if alert_type == INITIAL_ALERT and INJ in labels:
        raise Refused(f"{superevent} is an injection (label {INJ}); no Initial alert")
    if alert_type == UPDATE_ALERT and not {INITIAL_ALERT, PRELIMINARY_ALERT} & set(notices):
        raise Refused(f"{superevent} has no Preliminary or Initial alert to update")
    if alert_type != RETRACTION_ALERT:
        if superevent.preferred_event is None:
            raise Refused(f"{superevent} has no preferred event")
        if _skymap_of(chosen) is None:
            raise Refused(f"{superevent} has no sky map to send (name one with files)")


def _content(superevent, alert_type, chosen, serial):
    """The NoticeContent of a human alert, built like the Preliminary's."""
    if alert_type == RETRACTION_ALERT:
        injection = INJ in superevent.label_names()
        role = notice_role(superevent.superevent_id, injection)
        if superevent.category != Category.PRODUCTION:
            role = ROLE_TEST
        return NoticeContent(alert_type=RETRACTION_ALERT, superevent_id=superevent.superevent_id, serial=serial,
                             time_created=timezone.now(), urls={"gracedb": products.superevent_url(superevent)},
                             role=role, hardware_injection=injection)
    return notice_content(superevent, superevent.preferred_event, alert_type, serial, significant=True,
                          skymap_file=_skymap_of(chosen))


def _file_specs(chosen):
    return [f"{f.name},{f.version}" for f in chosen]


def _reason(alert_type, chosen, idempotency_key):
    if alert_type == INITIAL_ALERT:
        return INITIAL_REASON
    if alert_type == RETRACTION_ALERT:
        return RETRACTION_REASON
    key = idempotency_key if idempotency_key else "|".join(sorted(_file_specs(chosen)))
    return UPDATE_REASON_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def _next_serial(superevent):
    last = Notice.objects.filter(superevent=superevent).order_by("-serial").values_list("serial", flat=True).first()
    return (last or 0) + 1


# --- the service ----------------------------------------------------------------


def preview(superevent, alert_type, files=None):
    """The notices and circular a send would produce now; recorded nowhere."""
    alert_type = alert_type_of(alert_type)
    chosen = chosen_files(superevent, files) if alert_type != RETRACTION_ALERT else []
    _check_rules(superevent, alert_type, chosen)
    serial = _next_serial(superevent)
    content = _content(superevent, alert_type, chosen, serial)
    try:
        payloads = {name: build(content) for name, build in delivery.BUILDERS.items()}
    except NoticeValidationError as error:
        raise Refused(f"the notice would be invalid: {error}")
    circular = circulars.render_circular(alert_type, circulars.circular_context(superevent, alert_type))
    return Preview(alert_type=alert_type, serial=serial, files=_file_specs(chosen),
                   notice=json.loads(payloads["json"]), avro=payloads["avro"], voevent=payloads["voevent"],
                   circular=circular)


def send(superevent, alert_type, files=None, *, user, reason="", idempotency_key=None, via="api"):
    """Issue and deliver an Initial, Update or Retraction; returns the Notice
    (the first one again for a repeated request)."""
    request = {"alert_type": str(alert_type), "files": list(files or []) if not isinstance(files, str) else files,
               "reason": reason, "idempotency_key": idempotency_key}

    def act():
        _require_advocate(user)
        return _send(superevent, alert_type, files, idempotency_key)

    return _audit(f"send {str(alert_type).lower()}", superevent, request, user, via, act)


def _send(superevent, alert_type, files, idempotency_key):
    alert_type = alert_type_of(alert_type)
    chosen = chosen_files(superevent, files) if alert_type != RETRACTION_ALERT else []
    reason = _reason(alert_type, chosen, idempotency_key)
    existing = Notice.objects.filter(superevent=superevent, reason=reason).first()
    if existing is not None:
        return existing  # a repeat sends nothing new
    _check_rules(superevent, alert_type, chosen)
    try:
        notice = delivery.issue_notice(superevent, reason,
                                       lambda serial: _content(superevent, alert_type, chosen, serial))
    except NoticeValidationError as error:
        raise Refused(f"the notice is invalid, nothing was sent: {error}")
    circulars.write_circular(superevent, alert_type)
    return notice


def apply_verdict(superevent, label, *, user, reason="", via="api"):
    """ADVOK (sends the Initial) or ADVNO (sends the Retraction), exclusive;
    the sending is switched by ``ORCHESTRATOR['ADVOCATE_VERDICT_SENDS']``."""
    def act():
        _require_advocate(user)
        return _apply_verdict(superevent, label, user)

    return _audit(f"verdict {label}", superevent, {"label": label, "reason": reason}, user, via, act)


def _apply_verdict(superevent, label, user):
    if label not in VERDICT_LABELS:
        raise BadRequest(f"a verdict is one of {', '.join(VERDICT_LABELS)}, not {label!r}")
    other = ADVNO if label == ADVOK else ADVOK
    if other in superevent.label_names():
        raise Refused(f"{superevent} already has {other}; {label} and {other} exclude each other")
    sends = policy().get("ADVOCATE_VERDICT_SENDS", True)
    if sends:  # check first, so a refused alert adds no label either
        alert_type = VERDICT_SENDS[label]
        chosen = [] if alert_type == RETRACTION_ALERT else chosen_files(superevent)
        if not Notice.objects.filter(superevent=superevent, reason=_reason(alert_type, chosen, None)).exists():
            _check_rules(superevent, alert_type, chosen)
    store.add_label(superevent, label, creator=_username(user) or "advocate")
    if not sends:
        return None
    return _send(superevent, VERDICT_SENDS[label], None, None)


def set_preferred_event(superevent, event, *, user, reason="", via="api"):
    """Choose the preferred event by hand, even when frozen (the override)."""
    def act():
        _require_advocate(user)
        if event.superevent_id != superevent.pk:
            raise Refused(f"{event.graceid} is not an event of {superevent}")
        if event.category != superevent.category:
            raise Refused(f"{event.graceid} is {event.category}, {superevent} is {superevent.category}")
        if superevent.preferred_event_id == event.pk:
            return None
        with transaction.atomic():
            locked = Superevent.objects.select_for_update().get(pk=superevent.pk)
            old = locked.preferred_event.graceid if locked.preferred_event_id else "none"
            locked.preferred_event = event
            locked.far = event.far
            locked.save(update_fields=["preferred_event", "far", "updated"])
            store.log(locked, f"Preferred event set by hand: {old} -> {event.graceid}"
                              + (f" ({reason})" if reason else ""), tags=[DECISION_TAG])
        superevent.preferred_event = event
        superevent.far = event.far
        handlers.dispatch(handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk, event.pk)
        return event.graceid

    return _audit("set preferred event", superevent, {"event": event.graceid, "reason": reason}, user, via, act)


def add_label(owner, name, *, user, reason="", via="api"):
    """Add a label; a verdict label on a superevent goes through apply_verdict."""
    if isinstance(owner, Superevent) and name in VERDICT_LABELS:
        return apply_verdict(owner, name, user=user, reason=reason, via=via)

    def act():
        _require_advocate(user)
        _check_label_name(name)
        return store.add_label(owner, name, creator=_username(user) or "advocate")

    return _audit("add label", owner, _with_reason({"label": name}, reason), user, via, act)


def remove_label(owner, name, *, user, reason="", via="api"):
    def act():
        _require_advocate(user)
        _check_label_name(name)
        if not store.remove_label(owner, name):
            raise Refused(f"{owner} has no label {name}", status=404)
        return True

    return _audit("remove label", owner, _with_reason({"label": name}, reason), user, via, act)


def _with_reason(request, reason):
    """The audited request, with the reason when one was given."""
    return {**request, "reason": reason} if reason else request


def _check_label_name(name):
    from alerts import vocabulary
    known = {value for key, value in vars(vocabulary).items()
             if key.isupper() and isinstance(value, str) and value.isupper() and value.replace("_", "").isalnum()}
    if not isinstance(name, str) or name not in known:
        raise BadRequest(f"unknown label {name!r}")


def add_comment(owner, text, *, user, via="api", tags=()) -> Log:
    """A human's log message, tagged as a comment and with ``tags`` (those
    written with it through the GraceDB surface)."""
    def act():
        _require_advocate(user)
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("a comment needs some text")
        return store.log(owner, text.strip(), tags=[COMMENT_TAG, *(tag for tag in tags if tag != COMMENT_TAG)])

    return _audit("comment", owner, {"text": text if isinstance(text, str) else repr(text)}, user, via, act)


def relocalize(event, disabled_detectors, *, user, reason="", via="api"):
    def act():
        _require_advocate(user)
        try:
            annotations.relocalize(event, list(disabled_detectors or ()))
        except ValueError as error:
            raise BadRequest(str(error))
        return None

    request = {"disabled_detectors": list(disabled_detectors or ()), "reason": reason}
    return _audit("relocalize", event, request, user, via, act)


def retry_delivery(notice, *, user, reason="", via="api"):
    """Set the failed deliveries of a notice pending and deliver again."""
    def act():
        _require_advocate(user)
        count = notice.deliveries.filter(status=NoticeDelivery.Status.FAILED).update(
            status=NoticeDelivery.Status.PENDING, attempts=0)
        workers.enqueue(delivery.deliver, notice.pk)
        return f"{count} failed deliveries of {notice.identity} retried"

    return _audit("retry delivery", notice.superevent, _with_reason({"notice": notice.identity}, reason), user, via,
                  act)
