"""The orchestrator's flow, in the order of the seed's steps.

1. ``handle_superevent`` (SUPEREVENT_CREATED): wait ``ORCHESTRATOR_TIMEOUT_S``
   for the preferred event to settle, then vet.
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
        else:  # nothing to wait for: vet in this task, not after another trip through the queue
            vet_superevent(superevent_pk, 0)


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


@handles(handlers.EVENT_LABEL_ADDED)
def annotations_arrived(event_pk, label_name):
    """Go on at once when the preferred event the vetting waits for becomes
    complete, rather than at the next look (which remains the fallback)."""
    if not policy()["PRELIMINARY_ALERTS"] or label_name not in gates.annotation_labels(policy()):
        return
    event = Event.objects.select_related("superevent").get(pk=event_pk)
    superevent = event.superevent
    if superevent is None or superevent.preferred_event_id != event.pk \
            or gates.missing_annotations(candidate_of(event), policy(), annotations.expected_annotations(event)):
        return
    if vetting.is_waiting(superevent):
        vet_superevent(superevent.pk, 0)


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
    first_kind = first_kind or alerts.issued_kind(superevent)
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
