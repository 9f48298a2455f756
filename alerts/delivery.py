"""Issuing notices and delivering them, each notice exactly once where a
database can promise it, and always under one identity where it cannot.

**Issuing** (:func:`issue_notice`). A notice exists for a reason, such as
``preliminary-1``, ``initial``, ``update-3`` or ``retraction``; there is at
most one notice per (superevent, reason), enforced by a unique constraint.
Issuing locks the superevent row, returns the existing notice if that reason
was already issued (a repeated message, a handler running twice), and
otherwise picks the next serial number, derives the identity
(``S190425a-2-Preliminary``: superevent, serial, type), builds *every*
payload (JSON, Avro, VOEvent) with the science builders, which validate them,
and only then records the notice, its payloads and one delivery row per
(destination, format). An invalid notice raises ``NoticeValidationError``,
is logged on the superevent, and leaves nothing recorded and nothing sent.
Delivery starts after the transaction commits.

Call :func:`issue_notice` outside any enclosing transaction (as handlers
are): inside one, a failure would also roll back its log line.

**Roles.** Each destination lists the notice roles it takes (``roles``:
'observation', 'test'); a notice gets delivery rows only for destinations
that take its role, and a destination without ``roles`` takes only
'observation' notices, so MDC and test notices (role 'test') reach a
destination only if it says so. The issuing log line names the destinations
left out. A destination whose roles change after issuing refuses the notice
at send time (a permanent failure), never sends it.

**Delivering** (:func:`deliver`, a worker task). Each unsent delivery is
claimed before it is sent: in a short transaction its row is locked
(``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite every
transaction is ``BEGIN IMMEDIATE`` and so holds the database's write lock)
and set to 'sending' with ``claimed_at`` and this run's ``claim_token``. Two
workers racing on the same notice therefore never send the same delivery
both: the second one skips rows the first has claimed. After the send the
row becomes 'sent' (``sent_at``), or, on a failure, 'pending' again with the
error, retried by a delayed task after ``initial_s * factor**(attempts-1)``
seconds (``ORCHESTRATOR["DELIVERY_RETRY"]``), or 'failed' after
``max_attempts`` attempts or a permanent error (logged loudly on the
superevent). ``attempts`` counts claims, so it includes sends cut short.

**The window no database can close.** If a worker dies after the broker
accepted a message (or the outbox file was renamed into place) but before
the database recorded 'sent', the delivery stays 'sending' under a claim
nobody will finish. A claim older than ``claim_timeout_s`` is taken to
belong to a dead worker and may be taken over: every claim schedules a
delayed ``deliver`` just after its timeout (a watchdog, when tasks are
queued), and any later ``deliver`` or repeated ``issue_notice`` picks up
stale claims too. The delivery is then sent *again*, and that resend is the
same notice: the same stored, byte-identical payload, the same identity as
Kafka message key and ``identity`` header, the same VOEvent IVORN and the
same serial number. Where the transport can be read back (Kafka), the
resend is not made at all: a first attempt records where the topic ends
before sending (``send_mark``), and a later attempt reads the topic from
there and marks the delivery sent if the message is on it
(:func:`_sent_before`). Consumers would otherwise see a notice twice in this
one case and dedupe on (identity, format); they never see two different
notices for one event. ``claim_timeout_s`` must exceed the longest transport
send (Kafka waits at most ``timeout_s`` + 5 s), or a slow but living worker
could be taken over and the notice sent twice (again with one identity).
The outbox is idempotent by itself: a resend rewrites the same file name
with the same bytes.

**A stop.** A claim names the process holding it (``alerts.liveness``).
When that process has certainly ended (this machine, and its pid gone or a
zombie), :func:`release_dead_claims` puts the delivery back to 'pending' at
once: ``manage.py qcluster`` calls it after a stop has ended its workers and
again at start, so a delivery cut by a stop goes out on the next start
rather than after ``claim_timeout_s``. A process that may still be alive
(or one on another machine) keeps its claim until the timeout.
"""
import dataclasses
import datetime
import hashlib
import logging

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from alerts import liveness, store, transports, workers
from alerts.models import Notice, NoticeDelivery, NoticePayload, Superevent
from alerts.science.notices import (ROLE_OBSERVATION, ROLES, NoticeContent, NoticeValidationError,
                                    build_avro_notice, build_json_notice, notice_identity)
from alerts.science.voevent import build_voevent
from alerts.steps import MAX_ERROR_CHARS, StepSkipped, record_step
from alerts.config import policy

logger = logging.getLogger(__name__)

DELIVER_TASK = "alerts.delivery.deliver"
BUILDERS = {"json": build_json_notice, "avro": build_avro_notice, "voevent": build_voevent}
FORMATS = tuple(BUILDERS)
UNSENT = (NoticeDelivery.Status.PENDING, NoticeDelivery.Status.SENDING)
REASON_MAX_CHARS = Notice._meta.get_field("reason").max_length
# The watchdog of a claim runs this long after the claim has gone stale.
WATCHDOG_MARGIN_S = 5.0
# Roles a destination takes when its settings name none.
DEFAULT_ROLES = (ROLE_OBSERVATION,)
NOTICE_TAG = "notice"
ERROR_TAG = "error"


class DeliveryIncomplete(Exception):
    """Some deliveries of a notice failed in this run (recorded on the rows)."""

    def __init__(self, message, retry_delay_s=None):
        super().__init__(message)
        self.retry_delay_s = retry_delay_s


# --- settings ----------------------------------------------------------------


def retry_policy():
    return policy()["DELIVERY_RETRY"]


def retry_delay_s(attempts):
    """Wait before the next attempt after ``attempts`` failed ones."""
    policy = retry_policy()
    return min(policy["initial_s"] * policy["factor"] ** max(attempts - 1, 0), policy["max_delay_s"])


def destinations():
    """The configured destinations, checked: unique names, known transports
    and formats. A mistake here must stop issuing, not lose notices."""
    configured = policy().get("NOTICE_DESTINATIONS", [])
    names = set()
    for destination in configured:
        name = destination.get("name")
        if not name or name in names:
            raise ImproperlyConfigured(f"NOTICE_DESTINATIONS: missing or repeated name {name!r}")
        names.add(name)
        if destination.get("transport") not in transports.TRANSPORTS:
            raise ImproperlyConfigured(f"NOTICE_DESTINATIONS[{name!r}]: unknown transport "
                                       f"{destination.get('transport')!r}")
        unknown = set(destination.get("formats", ())) - set(FORMATS)
        if unknown or not destination.get("formats"):
            raise ImproperlyConfigured(f"NOTICE_DESTINATIONS[{name!r}]: formats must be some of "
                                       f"{', '.join(FORMATS)}, not {destination.get('formats')!r}")
        roles = destination.get("roles", DEFAULT_ROLES)
        if isinstance(roles, str) or not roles or set(roles) - set(ROLES):
            raise ImproperlyConfigured(f"NOTICE_DESTINATIONS[{name!r}]: roles must be a list of some of "
                                       f"{', '.join(ROLES)}, not {roles!r}")
    return list(configured)


def accepted_roles(destination):
    """The notice roles a destination takes (``DEFAULT_ROLES`` if unset)."""
    return tuple(destination.get("roles", DEFAULT_ROLES))


def local_destination_names():
    """Destinations whose transport only writes to this machine's disk."""
    return [destination["name"] for destination in policy().get("NOTICE_DESTINATIONS", [])
            if destination.get("transport") in transports.LOCAL_TRANSPORTS]


# --- issuing -----------------------------------------------------------------


def issue_notice(superevent, reason, content, formats=None):
    """Record a notice for ``reason`` and start delivering it; returns the Notice.

    ``content`` is a :class:`NoticeContent` (its ``serial`` is replaced by the
    one chosen here) or a callable taking the serial and returning one.
    ``formats`` limits the payloads built and sent (default all: json, avro,
    voevent). Idempotent on (superevent, reason): a second call returns the
    first notice, builds nothing and only re-queues deliveries still unsent.
    Raises ``NoticeValidationError`` (after logging it on the superevent) if
    any payload is invalid; then nothing is recorded or sent.
    """
    formats = _check_formats(formats)
    if not isinstance(reason, str) or not reason or len(reason) > REASON_MAX_CHARS:
        raise ValueError(f"reason must be a non-empty string of at most {REASON_MAX_CHARS} characters, "
                         f"not {reason!r}")
    superevent_pk = superevent.pk if isinstance(superevent, Superevent) else superevent
    configured = destinations()
    try:
        with transaction.atomic():
            locked = _lock_superevent(superevent_pk)
            existing = Notice.objects.filter(superevent=locked, reason=reason).first()
            if existing is not None:
                return _issued_already(existing, content)
            notice = _record_notice(locked, reason, content, formats, configured)
    except NoticeValidationError as error:
        owner = Superevent.objects.get(pk=superevent_pk)
        logger.error("notice %r of %s NOT issued: %s", reason, owner.superevent_id, error)
        store.log(owner, f"Notice '{reason}' NOT issued (nothing sent): invalid content: {error}",
                  tags=[NOTICE_TAG, ERROR_TAG])
        raise
    except IntegrityError:
        # Only possible if a notice was written without the superevent lock.
        existing = Notice.objects.filter(superevent_id=superevent_pk, reason=reason).first()
        if existing is None:
            raise
        return existing
    return notice


def _check_formats(formats):
    if formats is None:
        return FORMATS
    formats = tuple(dict.fromkeys(formats))
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"formats must be some of {', '.join(FORMATS)}, not {formats!r}")
    return formats


def _lock_superevent(superevent_pk):
    return Superevent.objects.select_for_update().get(pk=superevent_pk)


def _issued_already(existing, content):
    if isinstance(content, NoticeContent) and content.alert_type != existing.alert_type:
        raise ValueError(f"reason {existing.reason!r} of {existing.superevent} was issued as "
                         f"{existing.alert_type}, not {content.alert_type}")
    if existing.deliveries.filter(status__in=UNSENT).exists():
        workers.enqueue(deliver, existing.pk)
    return existing


def _content_with_serial(content, serial):
    if isinstance(content, NoticeContent):
        return dataclasses.replace(content, serial=serial)
    if callable(content):
        built = content(serial)
        if not isinstance(built, NoticeContent):
            raise TypeError(f"the content callable returned {type(built).__name__}, not NoticeContent")
        if built.serial != serial:
            raise NoticeValidationError(f"serial: the content callable gave {built.serial!r}, expected {serial}")
        return built
    raise TypeError(f"content must be a NoticeContent or a callable taking the serial, not {type(content).__name__}")


def _record_notice(superevent, reason, content, formats, configured):
    """Inside the locked transaction: build and validate everything, then write."""
    previous = Notice.objects.filter(superevent=superevent).order_by("-serial").first()
    serial = (previous.serial if previous else 0) + 1
    content = _content_with_serial(content, serial)
    if content.superevent_id != superevent.superevent_id:
        raise NoticeValidationError(f"superevent_id: {content.superevent_id!r} is not {superevent.superevent_id}")
    identity = notice_identity(content.superevent_id, content.alert_type, serial)
    payloads = {name: BUILDERS[name](content) for name in formats}  # raises before any write

    if isinstance(content.significant, bool):
        significant = content.significant
    else:  # a retraction carries no event: keep what was announced before
        significant = previous.significant if previous else True
    notice = Notice.objects.create(superevent=superevent, reason=reason, alert_type=content.alert_type,
                                   serial=serial, identity=identity, role=content.role, significant=significant)
    NoticePayload.objects.bulk_create(
        NoticePayload(notice=notice, format=name, content=data, sha256=hashlib.sha256(data).hexdigest())
        for name, data in payloads.items())
    taking = [destination for destination in configured if content.role in accepted_roles(destination)]
    targets = [(destination["name"], name) for destination in taking
               for name in destination["formats"] if name in payloads]
    NoticeDelivery.objects.bulk_create(
        NoticeDelivery(notice=notice, destination=destination, format=name) for destination, name in targets)
    where = ", ".join(f"{destination}/{name}" for destination, name in targets) or "no destination"
    left_out = [destination["name"] for destination in configured if destination not in taking]
    why_not = (f"; not to {', '.join(left_out)}, which take no {content.role} notices" if left_out else "")
    store.log(superevent, f"Notice {identity} ({reason}, role {content.role}) issued; delivering to {where}{why_not}",
              tags=[NOTICE_TAG])
    if targets:
        workers.enqueue(deliver, notice.pk)
    else:
        logger.warning("notice %s (role %s) has no destination taking it (ORCHESTRATOR['NOTICE_DESTINATIONS'])",
                       identity, content.role)
    return notice


# --- delivering --------------------------------------------------------------


def deliver(notice_pk, local_only=False):
    """Send every unsent delivery of a notice (worker task; safe to run twice
    or concurrently); with ``local_only``, only those to local destinations
    (``transports.LOCAL_TRANSPORTS``), leaving the networked ones to the
    queued task."""
    notice = Notice.objects.select_related("superevent").filter(pk=notice_pk).first()
    if notice is None:
        logger.warning("deliver: notice %s does not exist", notice_pk)
        return
    names = local_destination_names() if local_only else None
    unsent = notice.deliveries.filter(status__in=UNSENT)
    if names is not None:
        unsent = unsent.filter(destination__in=names)
    if not unsent.exists():
        return  # all done (a watchdog or a repeated task)
    retry_delay = None
    try:
        with record_step("deliver_notice", superevent=notice.superevent):
            _deliver_unsent(notice, names)
    except DeliveryIncomplete as incomplete:  # recorded on the step, the rows and the superevent
        retry_delay = incomplete.retry_delay_s
    if retry_delay is not None:
        workers.enqueue(deliver, notice.pk, delay_s=retry_delay)


def _deliver_unsent(notice, names=None):
    token = liveness.process_token()
    payloads = {payload.format: bytes(payload.content) for payload in notice.payloads.all()}
    configured = {destination["name"]: destination
                  for destination in policy().get("NOTICE_DESTINATIONS", [])}
    tried, delays, failed = [], [], []
    while (delivery := _claim_next(notice, token, exclude=tried, names=names)) is not None:
        tried.append(delivery.pk)
        try:
            destination = configured.get(delivery.destination)
            if destination is None:
                raise transports.PermanentTransportError(f"destination {delivery.destination!r} is not configured")
            if notice.role not in accepted_roles(destination):
                raise transports.PermanentTransportError(
                    f"destination {delivery.destination!r} takes no {notice.role} notices (its roles changed)")
            if delivery.format not in payloads:
                raise transports.PermanentTransportError(f"notice has no {delivery.format} payload")
            if _sent_before(notice, delivery, token, destination):
                _record_sent(notice, delivery, token, found=True)
                continue
            transports.send(destination, notice.identity, delivery.format, payloads[delivery.format],
                            superevent_id=notice.superevent.superevent_id, serial=notice.serial)
        except Exception as error:  # every failure is recorded and retried or marked failed
            if not isinstance(error, transports.TransportError):
                logger.exception("unexpected error sending %s to %s", notice.identity, delivery.destination)
            delay = _record_failure(notice, delivery, token, error)
            failed.append(f"{delivery.destination}/{delivery.format}")
            if delay is not None:
                delays.append(delay)
        else:
            _record_sent(notice, delivery, token)
    if not tried:
        raise StepSkipped("every unsent delivery is claimed by another worker")
    if failed:
        raise DeliveryIncomplete(f"{notice.identity}: not delivered to {', '.join(failed)}",
                                 retry_delay_s=min(delays) if delays else None)


def _claim_next(notice, token, exclude, names=None):
    """Claim one unsent delivery (pending, or with a stale claim) for this
    run, among the destinations ``names`` (default all)."""
    policy = retry_policy()
    now = timezone.now()
    stale_before = now - datetime.timedelta(seconds=policy["claim_timeout_s"])
    claimable = Q(status=NoticeDelivery.Status.PENDING) | Q(status=NoticeDelivery.Status.SENDING,
                                                            claimed_at__lt=stale_before)
    with transaction.atomic():
        candidates = NoticeDelivery.objects.filter(claimable, notice=notice).exclude(pk__in=exclude).order_by("pk")
        if names is not None:
            candidates = candidates.filter(destination__in=names)
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        delivery = candidates.first()
        if delivery is None:
            return None
        previous_claim = delivery.claim_token if delivery.status == NoticeDelivery.Status.SENDING else ""
        delivery.status = NoticeDelivery.Status.SENDING
        delivery.claimed_at = now
        delivery.claim_token = token
        delivery.attempts += 1
        delivery.save(update_fields=["status", "claimed_at", "claim_token", "attempts", "updated"])
        if not workers.run_inline():
            # Recovers this delivery if this worker dies before recording it.
            workers.enqueue(deliver, notice.pk, delay_s=policy["claim_timeout_s"] + WATCHDOG_MARGIN_S)
        if previous_claim:
            store.log(notice.superevent,
                      f"Notice {notice.identity}: claim {previous_claim} on {delivery.destination}/{delivery.format} "
                      f"expired (worker gone?); sending again with the same identity", tags=[NOTICE_TAG])
    return delivery


def _finish_claim(delivery, token, **fields):
    """Write the outcome if this run still holds the claim; returns whether it did."""
    now = timezone.now()
    return bool(NoticeDelivery.objects.filter(pk=delivery.pk, status=NoticeDelivery.Status.SENDING,
                                              claim_token=token).update(updated=now, **fields))


def _sent_before(notice, delivery, token, destination):
    """Check-before-send. A first attempt records where the destination
    stands (``transports.send_mark``) before it sends; any later attempt
    looks from there for what an earlier one may have sent and not recorded
    (its worker killed in between), so it is not sent twice."""
    if delivery.send_mark is not None:
        return transports.already_sent(destination, notice.identity, delivery.format, delivery.send_mark)
    mark = transports.send_mark(destination, delivery.format)
    if mark is not None and not NoticeDelivery.objects.filter(
            pk=delivery.pk, status=NoticeDelivery.Status.SENDING, claim_token=token, send_mark__isnull=True).update(
            send_mark=mark):
        raise transports.TransportError("the claim was taken over before the send")
    return False


def _record_sent(notice, delivery, token, found=False):
    where = f"{delivery.destination}/{delivery.format}"
    with transaction.atomic():
        if _finish_claim(delivery, token, status=NoticeDelivery.Status.SENT, sent_at=timezone.now(), last_error=""):
            how = (" already (an earlier attempt got it there before its worker died): not sent again"
                   if found else "")
            store.log(notice.superevent, f"Notice {notice.identity} sent to {where}{how}", tags=[NOTICE_TAG])
            return
    # Slower than the claim timeout: another worker took over and may have
    # sent it too, with the same identity.
    logger.warning("notice %s sent to %s after its claim was taken over", notice.identity, where)
    store.log(notice.superevent, f"Notice {notice.identity} sent to {where} after its claim expired; "
              f"another worker may have sent it again with the same identity", tags=[NOTICE_TAG])


def _record_failure(notice, delivery, token, error):
    """Record a failed attempt; returns the retry delay, or None if it is final."""
    where = f"{delivery.destination}/{delivery.format}"
    message = f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]
    max_attempts = retry_policy()["max_attempts"]
    final = isinstance(error, transports.PermanentTransportError) or delivery.attempts >= max_attempts
    status = NoticeDelivery.Status.FAILED if final else NoticeDelivery.Status.PENDING
    with transaction.atomic():
        if not _finish_claim(delivery, token, status=status, last_error=message):
            return None  # taken over by another worker, which now owns the retries
        if final:
            logger.error("notice %s FAILED to reach %s after %d attempt(s): %s",
                         notice.identity, where, delivery.attempts, message)
            store.log(notice.superevent, f"Notice {notice.identity} FAILED to reach {where} after "
                      f"{delivery.attempts} attempt(s), giving up: {message}", tags=[NOTICE_TAG, ERROR_TAG])
            return None
        delay = retry_delay_s(delivery.attempts)
        logger.warning("notice %s: attempt %d to %s failed (%s); retrying in %.1f s",
                       notice.identity, delivery.attempts, where, message, delay)
        store.log(notice.superevent, f"Notice {notice.identity}: attempt {delivery.attempts}/{max_attempts} to "
                  f"{where} failed: {message}; retrying in {delay:g} s", tags=[NOTICE_TAG])
    return delay


def release_dead_claims():
    """Put back to 'pending' every delivery claimed by a process of this
    machine that has ended (killed by a stop, say); returns how many. Never
    touches a claim whose process may be alive."""
    released = 0
    sending = NoticeDelivery.objects.filter(status=NoticeDelivery.Status.SENDING).select_related(
        "notice__superevent")
    for delivery in sending:
        if not liveness.holder_is_dead(delivery.claim_token):
            continue
        with transaction.atomic():
            if not NoticeDelivery.objects.filter(pk=delivery.pk, status=NoticeDelivery.Status.SENDING,
                                                 claim_token=delivery.claim_token).update(
                    status=NoticeDelivery.Status.PENDING, updated=timezone.now()):
                continue  # finished or taken over meanwhile
            notice = delivery.notice
            store.log(notice.superevent, f"Notice {notice.identity}: claim {delivery.claim_token} on "
                      f"{delivery.destination}/{delivery.format} released (its worker process has ended); "
                      f"it will be sent with the same identity", tags=[NOTICE_TAG])
        released += 1
    return released


def resume_deliveries():
    """Queue ``deliver`` for every notice with unsent deliveries (e.g. at
    worker start, in case a watchdog task was lost); returns how many."""
    pks = list(Notice.objects.filter(deliveries__status__in=UNSENT).values_list("pk", flat=True).distinct())
    for pk in pks:
        workers.enqueue(deliver, pk)
    return len(pks)
