"""The orchestrator's flow, in the order of the seed's steps.

1. ``handle_superevent`` (SUPEREVENT_CREATED): wait ``ORCHESTRATOR_TIMEOUT_S``
   for the preferred event to settle, then vet. The wait ends early, but not
   before ``ORCHESTRATOR_MIN_SETTLE_S``, once the preferred event's
   annotations are complete (``settled_early``): the alert would wait for
   nothing else, and a later, better event is reconsidered anyway.
2. ``vet_superevent``: wait (bounded, by delayed tasks, never sleeping) for
   the annotations ``COMPLETE_ANNOTATIONS``; check the state vectors; pass
   the gates (:mod:`.gates`); send the preliminary alert (:mod:`.alerts`).
   ``annotations_arrived`` wakes it when the last annotation lands.
3. ``cleanup_superevent``, ``PRELIMINARY_CLEANUP_DELAY_S`` later however the
   first pass ended: re-select and freeze the preferred event, gate again,
   maybe a second preliminary (always for significant and early-warning
   alerts, as GWCelery does; for less-significant ones only if something
   changed), or the first one of a higher kind.

Claims, retries and resumption are in :mod:`.vetting`. Tasks run inline
(``TASKS_INLINE``) cannot wait: no delays, no maximum wait, no clean-up pass
(the first alert freezes the preferred event), no automatic retry.
"""
import math

from django.utils import timezone

from alerts import annotations, detchar_task, handlers, workers
from alerts import vocabulary as v
from alerts.config import policy
from alerts.handlers import handles
from alerts.models import Event, Superevent
from alerts.orchestrator import alerts, gates, vetting
from alerts.orchestrator.vetting import LOG_TAGS
from alerts.steps import StepSkipped, record_step
from alerts.store import add_label, log
from alerts.superevents import candidate_of


@handles(handlers.SUPEREVENT_CREATED)
def handle_superevent(superevent_pk):
    """A new superevent: vet it once the preferred event has settled."""
    if not policy()["PRELIMINARY_ALERTS"]:
        return
    superevent = Superevent.objects.get(pk=superevent_pk)
    timeout = policy()["ORCHESTRATOR_TIMEOUT_S"]
    if vetting.claim(superevent, "scheduled",
                     f"Orchestrator: vetting in {timeout:g} s, once the preferred event has settled"):
        if timeout > 0:
            workers.enqueue(vet_superevent, superevent_pk, 0, delay_s=timeout)
            min_settle = min_settle_s()
            if min_settle is not None and not workers.run_inline():
                workers.enqueue(settle_look, superevent_pk, delay_s=min_settle)
        else:  # nothing to wait for: vet in this task, not after another trip through the queue
            vet_superevent(superevent_pk, 0)


def min_settle_s():
    """The shortest settle wait, or None when the settle always lasts
    ``ORCHESTRATOR_TIMEOUT_S``."""
    least, timeout = policy().get("ORCHESTRATOR_MIN_SETTLE_S"), policy()["ORCHESTRATOR_TIMEOUT_S"]
    return None if least is None or least < 0 or least >= timeout else least


def settle_look(superevent_pk):
    """``ORCHESTRATOR_MIN_SETTLE_S`` after a superevent was made: vet it now
    if its preferred event's annotations are already complete."""
    superevent = Superevent.objects.select_related("preferred_event").get(pk=superevent_pk)
    if superevent.preferred_event is not None:
        settled_early(superevent, superevent.preferred_event, at_least=False)


def settled_early(superevent, event, at_least=True):
    """End a settling vetting now if ``event``'s annotations are complete
    (and, with ``at_least``, the shortest settle wait is over). True if the
    vetting ran."""
    least = min_settle_s()
    if least is None or workers.run_inline() or not vetting.is_settling(superevent):
        return False
    if at_least and (timezone.now() - superevent.created).total_seconds() < least:
        return False  # the settle look, due at the shortest wait, takes it
    if gates.missing_annotations(candidate_of(event), policy(), annotations.expected_annotations(event)):
        return False
    log(superevent, f"Orchestrator: the annotations of the preferred event {event.graceid} are complete; "
                    f"vetting now rather than after the {policy()['ORCHESTRATOR_TIMEOUT_S']:g} s settle wait",
        tags=LOG_TAGS)
    vet_superevent(superevent.pk, 0)
    return True


def vet_superevent(superevent_pk, polls=0):
    """Wait for annotations (bounded), check state vectors, gate, alert."""
    superevent = Superevent.objects.select_related("preferred_event").get(pk=superevent_pk)
    event = superevent.preferred_event
    if event is None:
        log(superevent, "Orchestrator: no preferred event, nothing to vet", tags=LOG_TAGS)
        return
    state = vetting.vetting_state(superevent)
    if state.done:
        return
    missing = gates.missing_annotations(candidate_of(event), policy(), annotations.expected_annotations(event))
    if missing and gates.worth_waiting(vetting.gate_inputs(superevent, event), policy()):
        if not state.attempt and wait_for_annotations(superevent, event, polls, missing):
            return
    else:
        missing = []
    attempt = vetting.claim_vetting(superevent, event)
    if attempt is None:
        return
    if missing and attempt == 1:
        log(superevent, f"Annotations of {event.graceid} incomplete after waiting "
                        f"{polls * policy()['ANNOTATION_POLL_S']:g} s (missing: {', '.join(missing)}); "
                        f"going on with the products that exist", tags=LOG_TAGS)
    first_kind = None
    try:
        with record_step("preliminary_alert", superevent=superevent) as run:
            detchar_task.check_superevent(superevent, event)
            kind, why = gates.alert_kind(vetting.gate_inputs(superevent, event), policy())
            if kind is None:
                stop(superevent, why)
            alerts.send_preliminary(superevent, event, kind, 1, lock=not vetting.cleanup_follows())
            first_kind = kind
    except Exception as error:  # recorded as a failed step; the claim is freed for a retry
        vetting.vetting_failed(superevent, attempt, error)
        raise
    else:
        vetting.vetting_done(superevent, f"{gates.KIND_TITLES[first_kind]} alert" if first_kind
                             else f"stopped: {run.error}")
    finally:
        vetting.schedule_cleanup(superevent, first_kind, event)


def wait_for_annotations(superevent, event, polls, missing):
    """True if the vetting waits for ``missing`` annotations: a later look is
    queued, or (inline) the label that completes them will wake it."""
    max_wait, poll = policy()["ANNOTATION_MAX_WAIT_S"], policy()["ANNOTATION_POLL_S"]
    max_polls = math.ceil(max_wait / poll) if poll > 0 else 0
    if not max_polls:
        return False
    if workers.run_inline():
        vetting.claim_waiting(superevent, f"Waiting for the annotations of {event.graceid} (missing: "
                                          f"{', '.join(missing)}); tasks run inline and cannot time out, so "
                                          f"the alert goes out when they are complete")
        return True
    if polls < max_polls:
        vetting.claim_waiting(superevent, f"Waiting up to {max_wait:g} s for the annotations of "
                                          f"{event.graceid} (missing: {', '.join(missing)})")
        workers.enqueue(vet_superevent, superevent.pk, polls + 1, delay_s=poll)
        return True
    return False


# Superevent labels whose arrival or removal can change the decision.
DECISION_LABELS = frozenset({v.DQV, v.INJ, *v.VERDICT_LABELS})
# A change seen while a pass runs is looked at again this much later, at most
# RELOOKS times (the pass read the state before the change).
RELOOK_S = 1.0
RELOOKS = 30


def _decides(event_pk, label_name):
    return label_name in gates.annotation_labels(policy()) or label_name in DECISION_LABELS


@handles(handlers.EVENT_LABEL_ADDED, when=_decides)
def annotations_arrived(event_pk, label_name):
    """A READY label (or DQV, INJ) on a preferred event: take the decision
    again at once, rather than at the next look (which remains the fallback)."""
    if _decides(event_pk, label_name):
        _reconsider_for_event(event_pk, f"{label_name} on")


@handles(handlers.EVENT_FILE_ADDED)
def event_file_added(event_pk, file_pk):
    """A new file (version) of a preferred event: it may announce or
    complete what the decision waits for."""
    _reconsider_for_event(event_pk, "a new file of")


def _reconsider_for_event(event_pk, what):
    superevent_pk = Superevent.objects.filter(preferred_event_id=event_pk).values_list("pk", flat=True).first()
    if superevent_pk is not None and policy()["PRELIMINARY_ALERTS"]:
        graceid = Event.objects.filter(pk=event_pk).values_list("graceid", flat=True).first()
        reconsider_superevent(superevent_pk, f"{what} {graceid}", None)


@handles(handlers.SUPEREVENT_PREFERRED_CHANGED)
def preferred_event_changed(superevent_pk, event_pk):
    """A new preferred event (a late, more significant one included)."""
    if policy()["PRELIMINARY_ALERTS"]:
        graceid = Event.objects.filter(pk=event_pk).values_list("graceid", flat=True).first()
        reconsider_superevent(superevent_pk, f"preferred event {graceid}", 0)


def _superevent_decides(superevent_pk, label_name):
    return label_name in DECISION_LABELS and policy()["PRELIMINARY_ALERTS"]


@handles(handlers.SUPEREVENT_LABEL_ADDED, when=_superevent_decides)
def superevent_label_added(superevent_pk, label_name):
    if _superevent_decides(superevent_pk, label_name):
        reconsider_superevent(superevent_pk, f"label {label_name} added", 0)


@handles(handlers.SUPEREVENT_LABEL_REMOVED, when=_superevent_decides)
def superevent_label_removed(superevent_pk, label_name):
    if _superevent_decides(superevent_pk, label_name):
        reconsider_superevent(superevent_pk, f"label {label_name} removed", 0)


def reconsider_superevent(superevent_pk, what, looks=0):
    """Take the preliminary decision again because ``what`` changed.

    Before the first pass: a waiting vetting goes on at once if nothing it
    waits for is missing any more (or a label stops it); a settling one
    goes on once the preferred event is complete (``settled_early``), else
    it is left to its timer. During a pass: looked at again ``RELOOK_S`` later.
    After it (and after the clean-up pass too): the first alert of a kind
    above what was sent goes out (``gates.promotion``), once the preferred
    event's annotations are in, waited for by delayed looks when ``looks``
    is a count (None: this trigger only looks once; the READY label, or the
    chain of the trigger that started waiting, goes on).
    """
    superevent = Superevent.objects.select_related("preferred_event").get(pk=superevent_pk)
    event = superevent.preferred_event
    if event is None or not policy()["PRELIMINARY_ALERTS"]:
        return
    state = vetting.vetting_state(superevent)
    if not state.attempt:
        if vetting.is_waiting(superevent) and not awaited_annotations(superevent, event):
            vet_superevent(superevent_pk, 0)
        else:
            settled_early(superevent, event)
        return
    if state.failed:
        return  # its retry is queued and reads the new state
    if not state.done:
        relooks = looks or 0
        if relooks < RELOOKS:
            workers.enqueue(reconsider_superevent, superevent_pk, what, relooks + 1, delay_s=RELOOK_S)
        return
    promote(superevent, event, what, looks)


def awaited_annotations(superevent, event):
    """The annotations of ``event`` worth waiting for: missing, announced,
    and the gates known without them pass."""
    missing = gates.missing_annotations(candidate_of(event), policy(), annotations.expected_annotations(event))
    return missing if missing and gates.worth_waiting(vetting.gate_inputs(superevent, event), policy()) else []


def promote(superevent, event, what, looks):
    """After the first pass: send the first alert of a higher kind, or log
    the human verdict that stops it."""
    kind, why = gates.promotion(vetting.gate_inputs(superevent, event), policy(), alerts.issued_kind(superevent))
    if why:
        log(superevent, f"No preliminary alert after {what}: {why}", tags=LOG_TAGS)
        return
    if kind is None:
        return
    missing = awaited_annotations(superevent, event)
    if missing:
        max_wait, poll = policy()["ANNOTATION_MAX_WAIT_S"], policy()["ANNOTATION_POLL_S"]
        max_looks = math.ceil(max_wait / poll) if poll > 0 else 0
        if looks is None or (workers.run_inline() and max_looks):
            return  # inline, the READY label that completes them takes the decision again
        if looks < max_looks:
            if looks == 0:
                log(superevent, f"Orchestrator: {event.graceid} now qualifies for a {gates.KIND_TITLES[kind]} "
                                f"alert ({what}); waiting up to {max_wait:g} s for its annotations (missing: "
                                f"{', '.join(missing)})", tags=LOG_TAGS)
            workers.enqueue(reconsider_superevent, superevent.pk, what, looks + 1, delay_s=poll)
            return
    with record_step("preliminary_reconsidered", superevent=superevent):
        detchar_task.check_superevent(superevent, event)
        candidate = vetting.gate_inputs(superevent, event)
        kind, why = gates.alert_kind(candidate, policy(), cleanup=True)
        if kind is None:
            stop(superevent, why, prefix=f"No preliminary alert after {what}")
        if not gates.outranks(kind, alerts.issued_kind(superevent)):
            raise StepSkipped(f"a {gates.KIND_TITLES[kind]} alert was sent meanwhile")
        log(superevent, f"Orchestrator: decision taken again after {what}: {gates.KIND_TITLES[kind]} alert for "
                        f"{event.graceid}" + (f" (annotations still missing: {', '.join(missing)})"
                                              if missing else ""), tags=LOG_TAGS)
        over = vetting.cleanup_over(superevent)
        alerts.send_preliminary(superevent, event, kind, 1, lock=over)
        if over and kind != gates.LESS_SIGNIFICANT:
            add_label(superevent, v.DQR_REQUEST)


def stop(superevent, why, prefix="No preliminary alert"):
    """Log why the flow stops here and end the step as skipped."""
    log(superevent, f"{prefix}: {why}", tags=LOG_TAGS)
    raise StepSkipped(why)


def cleanup_superevent(superevent_pk, first_kind, first_event_pk):
    """Re-select and freeze the preferred event; maybe a second preliminary."""
    superevent = Superevent.objects.get(pk=superevent_pk)
    if not vetting.claim(superevent, "cleanup_done", "Orchestrator: clean-up of the preferred event"):
        return
    # The first pass may have failed after issuing its notice: what was
    # issued counts, whatever the first pass could report.
    # An alert sent after a change (``promote``) counts too.
    first_kind = alerts.issued_kind(superevent) or first_kind
    prefix = "No second preliminary alert"
    with record_step("preliminary_cleanup", superevent=superevent):
        # Freeze at once if an alert went out; otherwise only once one will.
        superevent, event, _ = alerts.reselect_and_lock(superevent_pk, lock=bool(first_kind))
        if event is None:
            stop(superevent, "no preferred event", prefix=prefix)
        if event.pk != first_event_pk:
            detchar_task.check_superevent(superevent, event)
        kind, why = gates.alert_kind(vetting.gate_inputs(superevent, event), policy(), cleanup=True)
        why = why or gates.cleanup_kind_stop(kind, first_kind, event.graceid)
        if why:
            stop(superevent, why, prefix=prefix)
        number = 2 if kind == first_kind else 1
        copied = alerts.copy_products(superevent, event)
        if number == 2 and kind == gates.LESS_SIGNIFICANT and event.pk == first_event_pk and not copied:
            stop(superevent, "same preferred event and products as the first less-significant alert", prefix=prefix)
        alerts.freeze(superevent, event)
        alerts.send_preliminary(superevent, event, kind, number, copied=copied)
        if kind != gates.LESS_SIGNIFICANT:
            add_label(superevent, v.DQR_REQUEST)
