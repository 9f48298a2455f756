"""The alert orchestrator: from a new superevent to its preliminary alert.

The flow of the seed's ``handle_superevent`` and
``earlywarning_preliminary_alert``, with the later operating practice of
DESIGN.md section 3:

1. ``handle_superevent`` (on SUPEREVENT_CREATED) waits
   ``ORCHESTRATOR_TIMEOUT_S`` for the choice of preferred event to settle
   (at 0, it vets at once, in its own task).
2. ``vet_superevent`` takes the preferred event. If its annotations are not
   complete (``COMPLETE_ANNOTATIONS``: SKYMAP_READY, and for CBC
   EMBRIGHT_READY and PASTRO_READY) and it could make an alert, it looks
   again every ``ANNOTATION_POLL_S`` (a delayed task each time; a worker
   never sleeps), for at most ``ANNOTATION_MAX_WAIT_S``; then it goes on
   with what exists and the log says what was missing. The preferred event
   is re-read at every look, as annotations may change it; and the label
   that completes it wakes the vetting at once (``annotations_arrived``).
3. It checks the state vectors (:mod:`alerts.detchar_task`: DQOK / DQV /
   INJ), then gates in the seed's order, each stop logged with its reason:
   offline event; ``trials_factor * FAR`` not below the threshold of its
   group and search (or, failing that, FAR above the looser less-significant
   threshold); vetoed by the state vectors (DQV); then a hardware injection
   (INJ), which is never published (see below).
4. The preliminary alert (``send_preliminary``): the preferred event's sky
   maps, source properties and p_astro (files tagged
   ``PRELIMINARY_PRODUCT_TAGS``) are copied to the superevent as new
   versions with their tags (a file already there with the same bytes is not
   copied again); plots are copied too; the notice is issued; this task
   writes it to the local destinations (the outbox) at once, while the
   deliver task queued by ``issue_notice`` sends it over the network (Kafka),
   so a broker that is down never holds up the rest; then plots the event
   had none of are made, for significant alerts the GCN Circular draft is
   written (from the same preferred event as the notice) and ADVREQ asks for
   an advocate; GCN_PRELIM_SENT is added. With no clean-up pass to follow,
   the preferred event is frozen as soon as the notice is issued.
5. ``cleanup_superevent``, ``PRELIMINARY_CLEANUP_DELAY_S`` after the first
   pass (whether it sent an alert, stopped or failed), re-selects the
   preferred event under the superevent lock and freezes it (SIGNIF_LOCKED or
   LOW_SIGNIF_LOCKED: at once if an alert went out, otherwise just before
   one does), re-checks the state vectors if the preferred event changed
   (the DQ labels then follow the fresh result), gates again and may send a
   second preliminary (or a first one, for a candidate that became alertable
   late).

Vetting is never silently lost. Each attempt claims the superevent with a
numbered log line (``orchestrator:vetting:N``) and marks it done
(``orchestrator:vetted``) only when the pass has ended, by an alert or a
gate. An attempt that raises records the failure (freeing the claim) and,
with queued tasks, is tried again after ``VETTING["retry_delay_s"]``, up to
``max_attempts``; a claim whose worker died expires after
``claim_timeout_s`` (every step of a pass is idempotent, so a takeover
repeats nothing). ``manage.py qcluster`` resumes at start-up the superevents
whose vetting began within ``resume_window_s`` and never finished
(:func:`resume_vetting`). The clean-up pass is scheduled however the first
pass ends.

Alert kinds and notice reasons (``alerts.delivery.issue_notice`` is
idempotent on the reason, so a repeated task never sends twice):

- ``preliminary-N``: significant, alert type PRELIMINARY, with circular;
- ``earlywarning-N``: significant candidate of the EarlyWarning search,
  alert type EARLYWARNING, with circular;
- ``less-significant-N``: passes only the looser threshold, PRELIMINARY
  with ``significant`` false, no circular, no ADVREQ.

Second-preliminary policy (N = 2): for significant and early-warning alerts
it is always sent, as GWCelery does after its ``superevent_clean_up_timeout``
(consumers expect it, and it carries the frozen preferred event). For
less-significant alerts it is sent only if something changed: another
preferred event, or new products copied. If the clean-up finds a candidate
of a higher kind than the first alert (less-significant or early warning
becoming significant), that kind's first alert goes out instead (N = 1);
a lower kind never follows a higher one. The clean-up pass is the last
automatic preliminary; Initial, Update and Retraction need a human.

Never a public observation (DESIGN.md section 4: INJ is "never public"):

- hardware injections (INJ) are not published at all, as GWCelery's
  ``should_publish`` refuses them: the vetting stops before anything is
  copied or issued, with the reason in the log, so no JSON, Avro or VOEvent
  payload of an injection is ever built or sent, and no advocate is asked
  for (no ADVREQ);
- MDC and test candidates (``MS`` / ``TS`` superevents) are alerted like the
  others, but with role "test" (the VOEvent role; JSON and Avro carry the
  ``MS`` / ``TS`` identifier), and go only to destinations whose ``roles``
  include "test" (``NOTICE_DESTINATIONS``, see :mod:`alerts.delivery`). They
  keep ADVREQ and the circular draft: advocates rehearse on MDC events.

Tasks run inline (``TASKS_INLINE``: tests, one-shot commands) cannot wait:
delays are skipped, so vetting starts as soon as the superevent exists; it
goes on when the annotations are complete (woken by their label), with no
maximum wait, since nothing can time out; there is no clean-up pass (it
exists to catch late events), so the first alert freezes the preferred event
(as with ``SECOND_PRELIMINARY`` off); and a failed vetting is not retried by
itself. ``PRELIMINARY_ALERTS`` off disables the flow.
"""
import dataclasses
import datetime
import logging
import math

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts import annotations, circulars, delivery, detchar_task, handlers, products, workers
from alerts import superevent_rules as rules
from alerts.handlers import handles
from alerts.models import Category, Event, Log, Notice, Superevent
from alerts.science.notices import CLASSIFICATION_NAMES, PROPERTY_NAMES, ROLE_TEST, NoticeContent, notice_role
from alerts.steps import StepSkipped, record_step
from alerts.store import add_file, add_label, latest_file, log
from alerts.superevents import candidate_of, reselect_preferred

logger = logging.getLogger(__name__)

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

SIGNIFICANT = "preliminary"
EARLY_WARNING = "earlywarning"
LESS_SIGNIFICANT = "less-significant"
ALERT_TYPES = {SIGNIFICANT: "PRELIMINARY", EARLY_WARNING: "EARLYWARNING", LESS_SIGNIFICANT: "PRELIMINARY"}
# A clean-up never sends a kind ranked below the first alert's kind.
KIND_RANK = {LESS_SIGNIFICANT: 0, EARLY_WARNING: 1, SIGNIFICANT: 2}
KIND_TITLES = {SIGNIFICANT: "Preliminary", EARLY_WARNING: "EarlyWarning",
               LESS_SIGNIFICANT: "Less-significant preliminary"}

EARLY_WARNING_SEARCH = "EarlyWarning"
LABEL_PRELIM_SENT = "GCN_PRELIM_SENT"
LABEL_ADVREQ = "ADVREQ"
LABEL_DQV = "DQV"
LABEL_INJ = "INJ"
LABEL_DQR_REQUEST = "DQR_REQUEST"

PLOT_TITLES = {"em_bright": "Source properties", "p_astro": "Source classification"}


def policy():
    return settings.ORCHESTRATOR


# --- claims: each stage runs once per superevent ------------------------------


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


@dataclasses.dataclass
class VettingState:
    """What the vetting claims of a superevent say (see the module docstring)."""

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


# --- the gates ----------------------------------------------------------------


def missing_annotations(event):
    needed = annotations.expected_annotations(event)
    labels = event.label_names()
    return [name for name in needed if name not in labels]


def significance_kind(event):
    """SIGNIFICANT / EARLY_WARNING / LESS_SIGNIFICANT by FAR alone, or None."""
    if rules.is_significant(candidate_of(event), policy()):
        return EARLY_WARNING if event.search == EARLY_WARNING_SEARCH else SIGNIFICANT
    if rules.is_less_significant(candidate_of(event), policy()):
        return LESS_SIGNIFICANT
    return None


def not_significant_reason(event):
    candidate = candidate_of(event)
    where = f"{event.group} {rules.significance_search(candidate, policy())}"
    rule = rules.significance_rule(candidate, policy())
    if rule is None:
        significant = f"no significant-alert threshold is set for {where}"
    else:
        trials, threshold = rule
        significant = (f"trials factor {trials} x FAR {event.far:.3g} Hz = {trials * event.far:.3g} Hz "
                       f"is above the significant threshold {threshold:.3g} Hz of {where}")
    looser = policy()["LESS_SIGNIFICANT_FAR"].get((event.group, event.search))
    if looser is None:
        less = f"less-significant alerts are disabled for {event.group} {event.search}"
    else:
        less = f"FAR {event.far:.3g} Hz is above the less-significant threshold {looser:.3g} Hz"
    return f"{event.graceid} is not significant: {significant}; {less}"


INJECTION_REASON = f"hardware injection ({LABEL_INJ}): injections are never published"


def alert_kind(superevent, event):
    """(kind, None) if the seed's gates pass, else (None, why) — in order:
    offline event, FAR thresholds, state-vector veto; then a hardware
    injection, which is never published."""
    if event.offline:
        return None, f"{event.graceid} is an offline event"
    kind = significance_kind(event)
    if kind is None:
        return None, not_significant_reason(event)
    labels = superevent.label_names()
    if LABEL_DQV in labels:
        return None, f"vetoed by the detector state vectors ({LABEL_DQV})"
    if LABEL_INJ in labels:
        return None, INJECTION_REASON
    return kind, None


def worth_waiting(superevent, event):
    """Whether annotations matter: the gates known without them pass."""
    return not event.offline and significance_kind(event) is not None \
        and not {LABEL_DQV, LABEL_INJ} & superevent.label_names()


def cleanup_follows():
    """Whether a clean-up pass will follow the first one."""
    return policy()["SECOND_PRELIMINARY"] and not workers.run_inline()


def issued_kind(superevent):
    """The highest kind of preliminary alert issued so far, or None."""
    kinds = {reason.rsplit("-", 1)[0] for reason in
             Notice.objects.filter(superevent=superevent).values_list("reason", flat=True)}
    return max(kinds & set(KIND_RANK), key=KIND_RANK.get, default=None)


# --- the handlers and tasks -----------------------------------------------------


@handles(handlers.SUPEREVENT_CREATED)
def handle_superevent(superevent_pk):
    """A new superevent: vet it once the preferred event has settled."""
    if not policy()["PRELIMINARY_ALERTS"]:
        return
    superevent = Superevent.objects.get(pk=superevent_pk)
    timeout = policy()["ORCHESTRATOR_TIMEOUT_S"]
    if claim(superevent, SCHEDULED_KEY,
             f"Orchestrator: vetting in {timeout:g} s, once the preferred event has settled"):
        if timeout > 0:
            workers.enqueue(VET_TASK, superevent_pk, 0, delay_s=timeout)
        else:  # nothing to wait for: vet in this task, not after another trip through the queue
            vet_superevent(superevent_pk, 0)


def vet_superevent(superevent_pk, polls=0):
    """Wait for annotations (bounded), check state vectors, gate, alert."""
    superevent = Superevent.objects.select_related("preferred_event").get(pk=superevent_pk)
    event = superevent.preferred_event
    if event is None:
        log(superevent, "Orchestrator: no preferred event, nothing to vet", tags=LOG_TAGS)
        return
    state = vetting_state(superevent)
    if state.done:
        return
    missing = missing_annotations(event)
    max_wait, poll = policy()["ANNOTATION_MAX_WAIT_S"], policy()["ANNOTATION_POLL_S"]
    max_polls = math.ceil(max_wait / poll) if poll > 0 else 0
    # Waiting happens once, before the first attempt; a retry goes straight on.
    if missing and worth_waiting(superevent, event) and max_polls and not state.attempt:
        if workers.run_inline():
            claim(superevent, WAITING_KEY, f"Waiting for the annotations of {event.graceid} (missing: "
                                           f"{', '.join(missing)}); tasks run inline and cannot time out, so "
                                           f"the alert goes out when they are complete")
            return
        if polls < max_polls:
            claim(superevent, WAITING_KEY, f"Waiting up to {max_wait:g} s for the annotations of "
                                           f"{event.graceid} (missing: {', '.join(missing)})")
            workers.enqueue(VET_TASK, superevent_pk, polls + 1, delay_s=poll)
            return
    attempt = claim_vetting(superevent, event)
    if attempt is None:
        return
    if missing and worth_waiting(superevent, event) and attempt == 1:
        log(superevent, f"Annotations of {event.graceid} incomplete after waiting {polls * poll:g} s "
                        f"(missing: {', '.join(missing)}); going on with the products that exist", tags=LOG_TAGS)
    first_kind = None
    try:
        with record_step("preliminary_alert", superevent=superevent) as run:
            detchar_task.check_superevent(superevent, event)
            kind, why = alert_kind(superevent, event)
            if kind is None:
                stop(superevent, why)
            send_preliminary(superevent, event, kind, 1, lock=not cleanup_follows())
            first_kind = kind
    except Exception as error:  # recorded as a failed step; the claim is freed for a retry
        vetting_failed(superevent, attempt, error)
        raise
    else:
        outcome = f"{KIND_TITLES[first_kind]} alert" if first_kind else f"stopped: {run.error}"
        log(superevent, f"Orchestrator: vetting finished ({outcome})", tags=LOG_TAGS, external_key=VETTED_KEY)
    finally:
        schedule_cleanup(superevent, first_kind, event)


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


@handles(handlers.EVENT_LABEL_ADDED)
def annotations_arrived(event_pk, label_name):
    """Go on at once when the preferred event the vetting waits for becomes
    complete, rather than at the next look (which remains the fallback).
    The vetting runs in this task, not a queued one: one queue hop less
    between the last annotation and the notice (claims keep it to one run)."""
    if not policy()["PRELIMINARY_ALERTS"] or label_name not in annotation_labels():
        return
    event = Event.objects.select_related("superevent").get(pk=event_pk)
    superevent = event.superevent
    if superevent is None or superevent.preferred_event_id != event.pk or missing_annotations(event):
        return
    waiting = Log.objects.filter(superevent=superevent, external_key=WAITING_KEY).exists()
    if waiting and not vetting_state(superevent).attempt:
        vet_superevent(superevent.pk, 0)


def annotation_labels():
    return {name for names in policy()["COMPLETE_ANNOTATIONS"].values() for name in names}


def stop(superevent, why, prefix="No preliminary alert"):
    """Log why the flow stops here and end the step as skipped."""
    log(superevent, f"{prefix}: {why}", tags=LOG_TAGS)
    raise StepSkipped(why)


def cleanup_superevent(superevent_pk, first_kind, first_event_pk):
    """Re-select and freeze the preferred event; maybe a second preliminary."""
    superevent = Superevent.objects.get(pk=superevent_pk)
    if not claim(superevent, CLEANUP_KEY, "Orchestrator: clean-up of the preferred event"):
        return
    # The first pass may have failed after issuing its notice: what was
    # issued counts, whatever the first pass could report.
    first_kind = first_kind or issued_kind(superevent)
    with record_step("preliminary_cleanup", superevent=superevent):
        # Freeze at once if an alert went out; otherwise only once one will.
        superevent, event, _ = reselect_and_lock(superevent_pk, lock=bool(first_kind))
        if event is None:
            stop(superevent, "no preferred event", prefix="No second preliminary alert")
        if event.pk != first_event_pk:
            detchar_task.check_superevent(superevent, event)
        kind, why = alert_kind(superevent, event)
        if kind is None:
            stop(superevent, why, prefix="No second preliminary alert")
        if first_kind and KIND_RANK[kind] < KIND_RANK[first_kind]:
            stop(superevent, f"{event.graceid} only qualifies for a {KIND_TITLES[kind]} alert, after a "
                             f"{KIND_TITLES[first_kind]} alert was sent", prefix="No second preliminary alert")
        number = 2 if kind == first_kind else 1
        copied = copy_products(superevent, event)
        if number == 2 and kind == LESS_SIGNIFICANT and event.pk == first_event_pk and not copied:
            stop(superevent, "same preferred event and products as the first less-significant alert",
                 prefix="No second preliminary alert")
        freeze(superevent, event)
        send_preliminary(superevent, event, kind, number, copied=copied)
        if kind != LESS_SIGNIFICANT:
            add_label(superevent, LABEL_DQR_REQUEST)


def freeze_now(superevent_pk, event):
    """Freeze the preferred event under the superevent lock (the first
    alert, when no clean-up pass will follow to do it)."""
    with transaction.atomic():
        freeze(Superevent.objects.select_for_update().get(pk=superevent_pk), event)


def freeze(superevent, event):
    """Lock the preferred event: SIGNIF_LOCKED for a significant candidate,
    LOW_SIGNIF_LOCKED for a less-significant one (idempotent)."""
    kind = significance_kind(event)
    locks = policy()["LOCK_LABELS"]
    if kind in (SIGNIFICANT, EARLY_WARNING):
        add_label(superevent, locks["significant"])
    elif kind == LESS_SIGNIFICANT:
        add_label(superevent, locks["less_significant"])


def reselect_and_lock(superevent_pk, lock=True):
    """Apply the preferred-event order under the superevent lock and, with
    ``lock``, freeze the result in the same transaction."""
    with transaction.atomic():
        superevent = Superevent.objects.select_for_update().get(pk=superevent_pk)
        previous = superevent.preferred_event
        changed = reselect_preferred(superevent)
        if changed:
            superevent.save()
        event = superevent.preferred_event
        if event is not None:
            if lock:
                freeze(superevent, event)
            log(superevent, "Superevent cleaned up: preferred event "
                            + (f"changed from {previous.graceid if previous else 'none'} to {event.graceid}"
                               if changed else f"is still {event.graceid}"), tags=LOG_TAGS)
    if changed:
        handlers.dispatch(handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk, superevent.preferred_event_id)
    return superevent, event, changed


# --- the preliminary alert ---------------------------------------------------------


def preliminary_sources(event):
    """The event's files a preliminary alert may copy: the newest version of
    each, except p_astro, where the version notices quote is taken
    (``products.p_astro_file``), so an invalid upload newer than a valid
    p_astro never hides it."""
    sources = [f for f in products.latest_files(event) if not f.name.endswith(products.P_ASTRO_SUFFIX)]
    chosen = products.p_astro_file(event)
    return sources + ([chosen] if chosen is not None else [])


def copy_products(superevent, event):
    """Copy the event's products (tags PRELIMINARY_PRODUCT_TAGS, newest
    versions) to the superevent as new versions with their tags; a file whose
    newest superevent version has the same bytes is skipped. Returns the new
    superevent files."""
    wanted = set(policy()["PRELIMINARY_PRODUCT_TAGS"])
    copied = []
    for source in preliminary_sources(event):
        if not wanted & set(source.tags):
            continue
        current = latest_file(superevent, source.name)
        if current is not None and current.sha256 == source.sha256:
            continue
        copied.append(add_file(superevent, source.name, source.read(), tags=source.tags,
                               message=f"Copied {source.filename} from {event.graceid}"))
    return copied


def _plot(file):
    from alerts.science import plots

    if file.name.endswith(products.MULTIORDER_SUFFIX):
        return plots.plot_allsky(file.read())
    if file.name == products.EM_BRIGHT_FILENAME:
        values = products.probabilities_in(file, PROPERTY_NAMES)
        return plots.plot_bars(values, PLOT_TITLES["em_bright"]) if values else None
    if file.name.endswith(products.P_ASTRO_SUFFIX):
        values = products.probabilities_in(file, CLASSIFICATION_NAMES)
        return plots.plot_bars(values, PLOT_TITLES["p_astro"]) if values else None
    return None


def make_plots(superevent, copied):
    """Plots for the newly copied products that came without their own."""
    copied_names = {file.name for file in copied}
    made = []
    for file in copied:
        target = products.plot_name(file.name)
        if file.name.endswith(products.PNG_SUFFIX) or file.name.endswith(products.FLAT_SUFFIX) \
                or target is None or target in copied_names:
            continue
        try:
            png = _plot(file)
        except Exception as error:  # a figure must never hold up an alert
            logger.exception("cannot plot %s", file)
            log(superevent, f"Could not plot {file.filename}: {type(error).__name__}: {error}", tags=LOG_TAGS)
            continue
        if png:
            made.append(add_file(superevent, target, png, tags=file.tags, message=f"Plot of {file.filename}"))
    return made


def _copy_on_superevent(superevent, source):
    """The superevent's version of an event file (same name and bytes)."""
    if source is None:
        return None
    current = latest_file(superevent, source.name)
    return current if current is not None and current.sha256 == source.sha256 else None


def notice_content(superevent, event, kind, serial):
    """The NoticeContent of a preliminary alert: the event's facts and the
    products copied from it."""
    skymap_source = products.skymap_file(event)
    skymap = _copy_on_superevent(superevent, skymap_source)
    injection = LABEL_INJ in superevent.label_names()
    role = notice_role(superevent.superevent_id, injection)
    if superevent.category != Category.PRODUCTION:
        role = ROLE_TEST
    extra = event.extra_attributes or {}
    is_burst = event.group == "Burst"
    return NoticeContent(
        alert_type=ALERT_TYPES[kind],
        superevent_id=superevent.superevent_id,
        serial=serial,
        time_created=timezone.now(),
        event_time_gps=event.gpstime,
        far=event.far,
        significant=kind != LESS_SIGNIFICANT,
        instruments=tuple(event.instrument_list),
        group=event.group,
        pipeline=event.pipeline,
        search=event.search,
        properties=products.properties(event),
        classification=products.classification(event) if event.group == "CBC" else None,
        skymap=skymap.read() if skymap else None,
        skymap_filename=skymap.filename if skymap else None,
        skymap_url=products.file_url(skymap) if skymap else None,
        duration=extra.get("duration") if is_burst else None,
        central_frequency=extra.get("central_frequency", extra.get("central_freq")) if is_burst else None,
        urls={"gracedb": products.superevent_url(superevent)},
        role=role,
        hardware_injection=injection,
    )


def send_preliminary(superevent, event, kind, number, copied=None, lock=False):
    """Copy products, issue and deliver the notice, then make plots, write the
    circular and label; with ``lock``, freeze the preferred event as soon as
    the notice is issued.

    The notice needs only the copied products (the sky map it carries), so it
    goes out before the plots and the circular, which take longer. This task
    writes it to the local destinations at once (the outbox: a disk write);
    the deliver task that ``issue_notice`` queues sends it over the network
    (Kafka, which may wait seconds for a broker) and picks up whatever this
    run could not write, as claims keep each delivery to one sender. So the
    circular draft and the labels never wait for a slow broker.
    """
    if copied is None:
        copied = copy_products(superevent, event)
    reason = f"{kind}-{number}"
    notice = delivery.issue_notice(superevent, reason,
                                   lambda serial: notice_content(superevent, event, kind, serial))
    if not workers.run_inline():  # inline, issue_notice delivered it already
        try:
            delivery.deliver(notice.pk, local_only=True)
        except Exception:  # the queued deliver task will send it
            logger.exception("could not deliver %s from the vetting task", notice.identity)
    if lock:
        freeze_now(superevent.pk, event)
    make_plots(superevent, copied)
    if kind != LESS_SIGNIFICANT:
        circulars.write_circular(superevent, ALERT_TYPES[kind], event=event)
    add_label(superevent, LABEL_PRELIM_SENT)
    if kind != LESS_SIGNIFICANT:
        add_label(superevent, LABEL_ADVREQ)
    log(superevent, f"{KIND_TITLES[kind]} alert {notice.identity} ({reason}) for preferred event {event.graceid}"
                    f" (role {notice.role})", tags=LOG_TAGS)
    return notice
