"""Vetting state: claims (each stage runs once per superevent), attempts,
retries and resumption after a worker died.

The state is one ``Vetting`` row per superevent, claimed with one
conditional UPDATE per stage (the row count says who won); the log lines
are the human-readable history. An attempt that raises records the failure
(freeing the claim) and, with queued tasks, is tried again after
``VETTING["retry_delay_s"]``, up to ``max_attempts``; a claim whose worker
died expires after ``claim_timeout_s`` (every step of a pass is idempotent,
so a takeover repeats nothing).
"""
import dataclasses
import datetime
import math

from django.db import transaction
from django.utils import timezone

from alerts import vocabulary as v
from alerts import workers
from alerts.config import policy
from django.db.models import Q

from alerts.models import Notice, Vetting
from alerts.orchestrator import gates
from alerts.store import log
from alerts.superevents import candidate_of

LOG_TAGS = ("orchestrator",)
State = Vetting.State
# A resumed vetting waits this much past the expiry of a live-looking claim.
RESUME_MARGIN_S = 1.0


def _flow():
    from alerts.orchestrator import flow  # the tasks this module queues; flow imports this module

    return flow


def gate_inputs(superevent, event):
    """The gates' Candidate for this superevent and preferred event."""
    retracted = Notice.objects.filter(superevent=superevent, alert_type=v.RETRACTION_ALERT).exists()
    return gates.Candidate(graceid=event.graceid, offline=event.offline, event=candidate_of(event),
                           superevent_labels=frozenset(superevent.label_names()), retracted=retracted)


def row(superevent):
    """The superevent's Vetting row, made on first use."""
    return Vetting.objects.get_or_create(superevent_id=superevent.pk)[0]


def claim(superevent, flag, message):
    """True the first time the stage ``flag`` (``scheduled``,
    ``cleanup_scheduled``, ``cleanup_done``) is claimed, else False; the
    winner logs ``message``."""
    with transaction.atomic():
        won = Vetting.objects.filter(pk=row(superevent).pk, **{flag: False}).update(**{flag: True})
        if won:
            log(superevent, message, tags=LOG_TAGS)
    return bool(won)


def claim_waiting(superevent, message):
    """True the first time the vetting starts waiting for annotations."""
    with transaction.atomic():
        won = Vetting.objects.filter(pk=row(superevent).pk, state=State.SCHEDULED).update(state=State.WAITING)
        if won:
            log(superevent, message, tags=LOG_TAGS)
    return bool(won)


def is_settling(superevent):
    """The vetting is scheduled and has not started waiting or running."""
    return Vetting.objects.filter(superevent_id=superevent.pk, state=State.SCHEDULED, scheduled=True).exists()


def is_waiting(superevent):
    return Vetting.objects.filter(superevent_id=superevent.pk, state=State.WAITING).exists()


@dataclasses.dataclass
class VettingState:
    """What the superevent's Vetting row says."""

    done: bool = False
    attempt: int = 0  # the latest attempt claimed (0: vetting never started)
    claimed_at: object = None  # when it was claimed
    failed: bool = False  # the latest attempt ended with an error

    def claim_age_s(self, now):
        return (now - self.claimed_at).total_seconds() if self.claimed_at else math.inf

    def running(self, now):
        """An attempt holds a live claim: started, not ended, not expired."""
        return bool(self.attempt) and not self.done and not self.failed \
            and self.claim_age_s(now) < vetting_policy()["claim_timeout_s"]


def vetting_policy():
    return policy()["VETTING"]


def state_of(vetting):
    return VettingState(done=vetting.state == State.DONE, attempt=vetting.attempt, claimed_at=vetting.claimed_at,
                        failed=vetting.state == State.FAILED)


def vetting_state(superevent):
    vetting = Vetting.objects.filter(superevent_id=superevent.pk).first()
    return state_of(vetting) if vetting else VettingState()


def claim_vetting(superevent, event):
    """The number of the vetting attempt this run may make, or None if the
    vetting is done or another worker's claim is still live. A claim older
    than ``claim_timeout_s`` belongs to a worker that died: taken over.
    One conditional UPDATE claims it: of two workers, one wins."""
    seen = row(superevent)
    now = timezone.now()
    expired = now - datetime.timedelta(seconds=vetting_policy()["claim_timeout_s"])
    claimable = Q(state__in=[State.SCHEDULED, State.WAITING, State.FAILED]) | Q(state=State.RUNNING,
                                                                               claimed_at__lt=expired)
    attempt = seen.attempt + 1
    with transaction.atomic():
        won = Vetting.objects.filter(claimable, pk=seen.pk, attempt=seen.attempt).update(
            state=State.RUNNING, attempt=attempt, claimed_at=now, reason="")
        if not won:
            return None
        if seen.state == State.RUNNING:
            log(superevent, f"Orchestrator: vetting attempt {seen.attempt} was claimed "
                            f"{state_of(seen).claim_age_s(now):.0f} s ago and never finished (worker gone?); "
                            f"taking over", tags=LOG_TAGS)
        log(superevent, f"Orchestrator: vetting preferred event {event.graceid}"
                        + (f" (attempt {attempt})" if attempt > 1 else ""), tags=LOG_TAGS)
    return attempt


def vetting_done(superevent, outcome):
    Vetting.objects.filter(superevent_id=superevent.pk).update(state=State.DONE, finished_at=timezone.now(),
                                                               outcome=outcome[:200])
    log(superevent, f"Orchestrator: vetting finished ({outcome})", tags=LOG_TAGS)


def vetting_failed(superevent, attempt, error):
    """Free the claim of a failed attempt and, with queued tasks, try again
    later (bounded); the failure is in the log either way."""
    conf = vetting_policy()
    retry = not workers.run_inline() and attempt < conf["max_attempts"]
    if retry:
        then = f"trying again in {conf['retry_delay_s']:g} s"
    else:
        then = ("no automatic retry left; it resumes when the workers restart (manage.py qcluster) "
                "or when vet_superevent runs again")
    reason = f"{type(error).__name__}: {error}"
    Vetting.objects.filter(superevent_id=superevent.pk, attempt=attempt, state=State.RUNNING).update(
        state=State.FAILED, reason=reason)
    log(superevent, f"Orchestrator: vetting attempt {attempt} failed ({reason}); {then}", tags=LOG_TAGS)
    if retry:
        workers.enqueue(_flow().vet_superevent, superevent.pk, 0, delay_s=conf["retry_delay_s"])


def resume_vetting(now=None):
    """Queue ``vet_superevent`` for every superevent whose vetting started
    within ``VETTING["resume_window_s"]`` and never finished (at worker
    start: a worker may have died mid-pass, or a retry been lost); a claim
    that still looks live is looked at again just after it expires. Returns
    how many were queued."""
    if not policy()["PRELIMINARY_ALERTS"]:
        return 0
    now = now or timezone.now()
    since = now - datetime.timedelta(seconds=vetting_policy()["resume_window_s"])
    unfinished = Vetting.objects.filter(state__in=[State.RUNNING, State.FAILED], claimed_at__gte=since) \
        .select_related("superevent").order_by("superevent_id")
    for vetting in unfinished:
        superevent, state = vetting.superevent, state_of(vetting)
        delay_s = 0.0
        if state.running(now):
            delay_s = vetting_policy()["claim_timeout_s"] - state.claim_age_s(now) + RESUME_MARGIN_S
        when = f" in {delay_s:.0f} s, when the claim of attempt {state.attempt} expires" if delay_s else ""
        log(superevent, f"Orchestrator: resuming the unfinished vetting{when}", tags=LOG_TAGS)
        workers.enqueue(_flow().vet_superevent, superevent.pk, 0, delay_s=delay_s)
    return len(unfinished) + resume_lost_stages(since)


def resume_lost_stages(since):
    """Queue again the stages whose task a killed worker may have taken with
    it (a broker hands a task out once; one popped and not yet started is
    gone): a superevent never vetted, a vetting settling or waiting with no
    look pending, a clean-up scheduled, never run and not pending. Every
    stage is claimed, so a task that was not lost after all runs once.
    Returns how many were queued."""
    from alerts.models import DelayedTask, Superevent

    flow = _flow()
    pending = {(row.func, row.args[0]) for row in DelayedTask.objects.filter(fired__isnull=True, created__gte=since)
               if row.args}
    queued = 0
    never = Q(vetting__isnull=True) | Q(vetting__scheduled=False)
    for superevent in Superevent.objects.filter(never, created__gte=since).order_by("pk"):
        workers.enqueue(flow.handle_superevent, superevent.pk)
        queued += 1
    vet, cleanup = workers.task_path(flow.vet_superevent), workers.task_path(flow.cleanup_superevent)
    for vetting in Vetting.objects.filter(superevent__created__gte=since).filter(
            Q(state__in=[State.SCHEDULED, State.WAITING], scheduled=True)
            | Q(cleanup_scheduled=True, cleanup_done=False)).select_related("superevent").order_by("superevent_id"):
        superevent = vetting.superevent
        if vetting.state in (State.SCHEDULED, State.WAITING) and (vet, superevent.pk) not in pending:
            workers.enqueue(flow.vet_superevent, superevent.pk, 0)
            queued += 1
        elif vetting.cleanup_scheduled and not vetting.cleanup_done and (cleanup, superevent.pk) not in pending:
            from alerts.orchestrator.alerts import issued_kind

            workers.enqueue(flow.cleanup_superevent, superevent.pk, issued_kind(superevent) or "",
                            superevent.preferred_event_id)
            queued += 1
    return queued


def schedule_cleanup(superevent, first_kind, event):
    """Queue the clean-up pass once per superevent, however the first pass
    ended (alert, gate or error), or say why there is none."""
    if not policy()["SECOND_PRELIMINARY"]:
        return
    if workers.run_inline():
        claim(superevent, "cleanup_scheduled", "No clean-up pass: tasks run inline and cannot wait for late events")
        return
    delay_s = policy()["PRELIMINARY_CLEANUP_DELAY_S"]
    if claim(superevent, "cleanup_scheduled", f"Orchestrator: clean-up pass in {delay_s:g} s"):
        workers.enqueue(_flow().cleanup_superevent, superevent.pk, first_kind or "", event.pk, delay_s=delay_s)


def cleanup_follows():
    """Whether a clean-up pass will follow the first one."""
    return policy()["SECOND_PRELIMINARY"] and not workers.run_inline()


def cleanup_over(superevent):
    """Whether no clean-up pass is still to come for the superevent (it
    claimed its run, or none follows): an alert sent now freezes the
    preferred event itself."""
    return not cleanup_follows() or Vetting.objects.filter(superevent_id=superevent.pk, cleanup_done=True).exists()
