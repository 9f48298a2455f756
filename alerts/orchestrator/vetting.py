"""Vetting state: claims (each stage runs once per superevent), attempts,
retries and resumption after a worker died.

Each attempt claims the superevent with a numbered log line
(``orchestrator:vetting:N``) and marks it done (``orchestrator:vetted``)
only when the pass has ended, by an alert or a gate. An attempt that raises
records the failure (freeing the claim) and, with queued tasks, is tried
again after ``VETTING["retry_delay_s"]``, up to ``max_attempts``; a claim
whose worker died expires after ``claim_timeout_s`` (every step of a pass is
idempotent, so a takeover repeats nothing).
"""
import dataclasses
import datetime
import math

from django.db import transaction
from django.utils import timezone

from alerts import vocabulary as v
from alerts import workers
from alerts.config import policy
from alerts.models import Log, Notice, Superevent
from alerts.orchestrator import gates
from alerts.store import log
from alerts.superevents import candidate_of

VET_TASK = "alerts.orchestrator.vet_superevent"
CLEANUP_TASK = "alerts.orchestrator.cleanup_superevent"
LOG_TAGS = ("orchestrator",)
# External keys of the log lines that mark (and claim) each stage.
SCHEDULED_KEY = "orchestrator:scheduled"
WAITING_KEY = "orchestrator:waiting"
# Vetting attempt N is claimed by "<VETTING_KEY>:N", fails with
# "<VETTING_FAILED_KEY>:N" and the pass is done with VETTED_KEY.
VETTING_PREFIX = "orchestrator:vet"
VETTING_KEY = "orchestrator:vetting"
VETTING_FAILED_KEY = "orchestrator:vetting-failed"
VETTED_KEY = "orchestrator:vetted"
CLEANUP_SCHEDULED_KEY = "orchestrator:cleanup-scheduled"
CLEANUP_KEY = "orchestrator:cleanup"
# A resumed vetting waits this much past the expiry of a live-looking claim.
RESUME_MARGIN_S = 1.0


def gate_inputs(superevent, event):
    """The gates' Candidate for this superevent and preferred event."""
    retracted = Notice.objects.filter(superevent=superevent, alert_type=v.RETRACTION_ALERT).exists()
    return gates.Candidate(graceid=event.graceid, offline=event.offline, event=candidate_of(event),
                           superevent_labels=frozenset(superevent.label_names()), retracted=retracted)


def claim(superevent, key, message):
    """True the first time ``key`` is claimed for the superevent, else False.

    The claim is a log line with an external key, written under the
    superevent's row lock, so a repeated message or a handler running twice
    finds it and stops; the log doubles as the audit trail.
    """
    with transaction.atomic():
        Superevent.objects.select_for_update().filter(pk=superevent.pk).exists()
        if Log.objects.filter(superevent=superevent, external_key=key).exists():
            return False
        log(superevent, message, tags=LOG_TAGS, external_key=key)
    return True


def is_claimed(superevent, key):
    return Log.objects.filter(superevent=superevent, external_key=key).exists()


@dataclasses.dataclass
class VettingState:
    """What the vetting claims of a superevent say."""

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


def vetting_state(superevent):
    state = VettingState()
    failed = set()
    keys = Log.objects.filter(superevent=superevent, external_key__startswith=VETTING_PREFIX)
    for key, created in keys.values_list("external_key", "created"):
        name, _, number = key.rpartition(":")
        if key == VETTED_KEY:
            state.done = True
        elif name == VETTING_KEY and number.isdigit() and int(number) > state.attempt:
            state.attempt, state.claimed_at = int(number), created
        elif name == VETTING_FAILED_KEY and number.isdigit():
            failed.add(int(number))
    state.failed = state.attempt in failed
    return state


def claim_vetting(superevent, event):
    """The number of the vetting attempt this run may make, or None if the
    vetting is done or another worker's claim is still live. A claim older
    than ``claim_timeout_s`` belongs to a worker that died: taken over."""
    with transaction.atomic():
        Superevent.objects.select_for_update().filter(pk=superevent.pk).exists()
        state = vetting_state(superevent)
        now = timezone.now()
        if state.done or state.running(now):
            return None
        if state.attempt and not state.failed:
            log(superevent, f"Orchestrator: vetting attempt {state.attempt} was claimed "
                            f"{state.claim_age_s(now):.0f} s ago and never finished (worker gone?); taking over",
                tags=LOG_TAGS)
        attempt = state.attempt + 1
        log(superevent, f"Orchestrator: vetting preferred event {event.graceid}"
                        + (f" (attempt {attempt})" if attempt > 1 else ""),
            tags=LOG_TAGS, external_key=f"{VETTING_KEY}:{attempt}")
    return attempt


def vetting_done(superevent, outcome):
    log(superevent, f"Orchestrator: vetting finished ({outcome})", tags=LOG_TAGS, external_key=VETTED_KEY)


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
    log(superevent, f"Orchestrator: vetting attempt {attempt} failed ({type(error).__name__}: {error}); {then}",
        tags=LOG_TAGS, external_key=f"{VETTING_FAILED_KEY}:{attempt}")
    if retry:
        workers.enqueue(VET_TASK, superevent.pk, 0, delay_s=conf["retry_delay_s"])


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
    started = set(Log.objects.filter(external_key__startswith=f"{VETTING_KEY}:", created__gte=since,
                                     superevent__isnull=False).values_list("superevent_id", flat=True))
    done = set(Log.objects.filter(external_key=VETTED_KEY, superevent_id__in=started)
               .values_list("superevent_id", flat=True))
    for superevent in Superevent.objects.filter(pk__in=started - done).order_by("pk"):
        state = vetting_state(superevent)
        delay_s = 0.0
        if state.running(now):
            delay_s = vetting_policy()["claim_timeout_s"] - state.claim_age_s(now) + RESUME_MARGIN_S
        when = f" in {delay_s:.0f} s, when the claim of attempt {state.attempt} expires" if delay_s else ""
        log(superevent, f"Orchestrator: resuming the unfinished vetting{when}", tags=LOG_TAGS)
        workers.enqueue(VET_TASK, superevent.pk, 0, delay_s=delay_s)
    return len(started - done)


def schedule_cleanup(superevent, first_kind, event):
    """Queue the clean-up pass once per superevent, however the first pass
    ended (alert, gate or error), or say why there is none."""
    if not policy()["SECOND_PRELIMINARY"]:
        return
    if workers.run_inline():
        claim(superevent, CLEANUP_SCHEDULED_KEY, "No clean-up pass: tasks run inline and cannot wait for late events")
        return
    delay_s = policy()["PRELIMINARY_CLEANUP_DELAY_S"]
    if claim(superevent, CLEANUP_SCHEDULED_KEY, f"Orchestrator: clean-up pass in {delay_s:g} s"):
        workers.enqueue(CLEANUP_TASK, superevent.pk, first_kind or "", event.pk, delay_s=delay_s)


def cleanup_follows():
    """Whether a clean-up pass will follow the first one."""
    return policy()["SECOND_PRELIMINARY"] and not workers.run_inline()
