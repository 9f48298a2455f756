"""The decision is taken again when something that can change it happens:
a new preferred event (a late, significant one included), a verdict or
veto label, a READY label, a new file. Tasks are stepped through as a
worker would run them (``deferred``: the vetting and clean-up passes are
held; everything else, the re-taken decision included, runs at once)."""
import types
from io import StringIO

import pytest
from django.core.management import call_command

from alerts import workers
from alerts.management.commands import replay as replay_command
from alerts.mockdata.simulation import LATE_SCENARIO_EARLY_FAR_HZ, LATE_SCENARIO_LATE_FAR_HZ
from alerts.models import Event, Notice, StepRun, Superevent
from alerts.orchestrator import flow, gates
from alerts.science import localization
from alerts.store import add_file, add_label, remove_label
from tests.annotated import annotated_event, tiny_skymap
from tests.factories import T0, make_event
from tests.test_orchestrator import (CLEANUP_TASK, LESS_SIGNIFICANT_FAR, NOT_SIGNIFICANT_FAR, VET_TASK,  # noqa: F401
                                     alerts_on, configure, deferred, messages, outbox, reasons, run_all, run_next,
                                     superevent_of)

pytestmark = pytest.mark.django_db(transaction=True)
RECONSIDER_TASK = workers.task_path(flow.reconsider_superevent)


def late_event(**kwargs):
    """A louder, significant detection of the same source by another pipeline."""
    return annotated_event(snr=20.0, far=1e-12, pipeline="pycbc", gpstime=T0 + 0.05, **kwargs)


@pytest.mark.parametrize("first_far, first_reasons", [(LESS_SIGNIFICANT_FAR, ["less-significant-1"]),
                                                      (NOT_SIGNIFICANT_FAR, [])])
def test_a_significant_event_after_the_clean_up_gets_its_alert_at_once(outbox, deferred, first_far, first_reasons):
    first = annotated_event(far=first_far)
    superevent = superevent_of(first)
    run_all(deferred)  # first pass and clean-up pass
    assert reasons(superevent) == first_reasons
    assert StepRun.objects.filter(superevent=superevent, step="preliminary_cleanup").exists()

    late = late_event()
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == late.pk
    # Sent by the task the preferred-event change queued: no timer, no held task.
    assert deferred == []
    assert reasons(superevent) == first_reasons + ["preliminary-1"]
    assert any(m.startswith(f"Orchestrator: decision taken again after preferred event {late.graceid}: "
                            f"Preliminary alert") for m in messages(superevent))
    assert "SIGNIF_LOCKED" in superevent.label_names()  # no clean-up pass is left to freeze it
    assert (outbox / superevent.superevent_id / f"{superevent.superevent_id}-{len(first_reasons) + 1}-Preliminary"
            ".json").exists()
    # The same change seen again sends nothing new.
    flow.reconsider_superevent(superevent.pk, "a repeated message", 0)
    assert reasons(superevent) == first_reasons + ["preliminary-1"]


def test_a_significant_event_before_the_clean_up_is_alerted_at_once_and_the_clean_up_follows_it(outbox, deferred):
    first = annotated_event(far=LESS_SIGNIFICANT_FAR)
    superevent = superevent_of(first)
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == ["less-significant-1"]
    late = late_event()
    assert reasons(superevent) == ["less-significant-1", "preliminary-1"]
    run_next(deferred, CLEANUP_TASK)
    # The clean-up pass counts what was sent meanwhile: a second Preliminary, not a repeat.
    assert reasons(superevent) == ["less-significant-1", "preliminary-1", "preliminary-2"]
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == late.pk


def test_an_incomplete_late_event_is_alerted_when_its_ready_label_makes_it_preferred(outbox, deferred):
    first = annotated_event(far=NOT_SIGNIFICANT_FAR)
    superevent = superevent_of(first)
    run_all(deferred)
    late = late_event(labels=("EMBRIGHT_READY", "PASTRO_READY"), products=("em_bright", "p_astro"))
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == first.pk  # a complete event is preferred
    assert reasons(superevent) == []
    add_file(late, "bayestar.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"], announce=False)
    add_label(late, "SKYMAP_READY")
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == late.pk
    assert reasons(superevent) == ["preliminary-1"]


def test_a_late_preferred_event_waits_for_its_announced_sky_map(settings, outbox, deferred, monkeypatch):
    incomplete = {"labels": ("EMBRIGHT_READY", "PASTRO_READY"), "products": ("em_bright", "p_astro")}
    first = annotated_event(far=NOT_SIGNIFICANT_FAR, **incomplete)
    superevent = superevent_of(first)
    run_all(deferred)
    looks = []
    enqueue = workers.enqueue

    def hold_looks(path, *args, delay_s=0.0):
        if workers.task_path(path) == RECONSIDER_TASK:
            looks.append((args, delay_s))
        else:
            enqueue(path, *args, delay_s=delay_s)

    monkeypatch.setattr(workers, "enqueue", hold_looks)
    # A PSD is announced: the sky map is on its way, so the decision waits for it.
    late = late_event(extra_attributes={"has_psd": True}, **incomplete)
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == late.pk
    assert reasons(superevent) == []
    assert looks == [((superevent.pk, f"preferred event {late.graceid}", 1),
                      settings.ORCHESTRATOR["ANNOTATION_POLL_S"])]
    assert any("waiting up to" in m and "SKYMAP_READY" in m for m in messages(superevent))
    # The READY label takes the decision again at once, not at the next look.
    add_file(late, "bayestar.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"], announce=False)
    add_label(late, "SKYMAP_READY")
    assert reasons(superevent) == ["preliminary-1"]
    flow.reconsider_superevent(*looks[0][0])  # the pending look finds it sent
    assert reasons(superevent) == ["preliminary-1"]


def test_a_veto_label_ends_the_wait_for_annotations_at_once(settings, outbox, deferred):
    event = annotated_event(labels=("EMBRIGHT_READY",), products=("em_bright",))
    superevent = superevent_of(event)
    run_next(deferred, VET_TASK)  # starts waiting for PASTRO_READY
    assert deferred and deferred[0][0] == VET_TASK
    add_label(superevent, "DQV")
    assert "No preliminary alert: vetoed by the detector state vectors (DQV)" in messages(superevent)
    assert superevent.vetting.state == "done"
    run_next(deferred, VET_TASK)  # the pending look finds the vetting over
    assert reasons(superevent) == []


def test_advno_stops_the_alert_of_a_late_significant_event_and_says_why(outbox, deferred):
    first = annotated_event(far=LESS_SIGNIFICANT_FAR)
    superevent = superevent_of(first)
    run_all(deferred)
    add_label(superevent, "ADVNO")
    late = late_event()
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == late.pk
    assert reasons(superevent) == ["less-significant-1"]
    assert (f"No preliminary alert after preferred event {late.graceid}: an advocate rejected the candidate "
            f"(ADVNO)") in messages(superevent)


def test_removing_a_veto_takes_the_decision_again(outbox, deferred):
    event = annotated_event()
    superevent = superevent_of(event)
    add_label(superevent, "DQV")
    run_all(deferred)
    assert reasons(superevent) == []
    remove_label(superevent, "DQV")
    assert reasons(superevent) == ["preliminary-1"]
    assert any(m.startswith("Orchestrator: decision taken again after label DQV removed")
               for m in messages(superevent))


def test_promotion_is_pure_and_only_news_or_a_verdict_speaks(settings):
    from alerts.superevents import candidate_of

    policy = settings.ORCHESTRATOR
    significant = candidate_of(make_event(far=1e-12))

    def candidate(labels=(), retracted=False):
        return gates.Candidate(graceid="G1", offline=False, event=significant, superevent_labels=frozenset(labels),
                               retracted=retracted)

    assert gates.promotion(candidate(), policy, None) == (gates.SIGNIFICANT, None)
    assert gates.promotion(candidate(), policy, gates.LESS_SIGNIFICANT) == (gates.SIGNIFICANT, None)
    assert gates.promotion(candidate(), policy, gates.SIGNIFICANT) == (None, None)
    assert gates.promotion(candidate(["ADVNO"]), policy, gates.LESS_SIGNIFICANT)[1].endswith("(ADVNO)")
    assert "Retraction" in gates.promotion(candidate(retracted=True), policy, None)[1]
    assert gates.promotion(candidate(["ADVOK"]), policy, None)[1].startswith("an advocate confirmed")
    assert gates.promotion(candidate(["ADVNO"]), policy, gates.SIGNIFICANT) == (None, None)  # nothing was coming
    assert gates.promotion(candidate(["DQV"]), policy, None) == (None, None)


def test_replay_late_after_the_clean_up_gets_its_alert(settings, outbox, deferred, monkeypatch):
    """``manage.py replay --late-after``: each source's significant detection
    arrives after the superevent's clean-up pass, and is alerted at once."""
    tiny = tiny_skymap()
    monkeypatch.setattr(localization, "localize", lambda *a, **k: localization.SkymapProducts(
        multiorder_fits=tiny, summary=localization.summarize_skymap(tiny), bayestar_seconds=0.0,
        instruments=("H1", "L1"), f_low=30.0))
    late_pause = []

    def sleep(seconds):  # the replay's pause before the late uploads: the passes run then
        late_pause.append(seconds)
        run_all(deferred)

    monkeypatch.setattr(replay_command, "time", types.SimpleNamespace(sleep=sleep, monotonic=lambda: 0.0))
    call_command("replay", "--count", "2", "--pipelines", "2", "--seed", "3", "--start-gps", "1400000000",
                 "--late-after", "300", stdout=StringIO(), stderr=StringIO(), verbosity=0)
    assert late_pause == [300.0]
    superevents = list(Superevent.objects.order_by("t_0"))
    assert len(superevents) == 2
    for superevent in superevents:
        fars = sorted(superevent.events.values_list("far", flat=True))
        assert fars == [pytest.approx(LATE_SCENARIO_LATE_FAR_HZ), pytest.approx(LATE_SCENARIO_EARLY_FAR_HZ)]
        cleanup = StepRun.objects.get(superevent=superevent, step="preliminary_cleanup")
        # MDC events get no less-significant alerts: the late event's is the first.
        assert reasons(superevent) == ["preliminary-1"]
        preliminary = Notice.objects.get(superevent=superevent, reason="preliminary-1")
        assert superevent.preferred_event.far == pytest.approx(LATE_SCENARIO_LATE_FAR_HZ)
        assert preliminary.created > cleanup.finished
    assert deferred == []
