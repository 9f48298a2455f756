"""The superevent manager against the database: grouping, IDs, preferred event."""
import pytest

from alerts import superevents
from alerts.models import Event, Superevent
from alerts.store import add_label
from tests.factories import T0, make_event

pytestmark = pytest.mark.django_db(transaction=True)

# GPS of 2019-04-25 23:59:59 UTC and of the next UTC day's first second.
LAST_SECOND_OF_DAY = T0 + (23 * 3600 + 59 * 60 + 59) - (8 * 3600 + 18 * 60 + 5)


def refreshed(event):
    return Event.objects.select_related("superevent").get(pk=event.pk)


def test_events_within_the_window_share_one_superevent_and_it_grows():
    first = make_event(gpstime=T0, snr=9)
    second = make_event(gpstime=T0 + 0.6, snr=12, pipeline="pycbc")
    third = make_event(gpstime=T0 + 1.5, snr=8, pipeline="mbta")
    superevent = refreshed(first).superevent
    assert superevent is not None
    assert {e.superevent_id for e in map(refreshed, (first, second, third))} == {superevent.pk}
    superevent.refresh_from_db()
    assert superevent.superevent_id == "S190425a"
    assert (superevent.t_start, superevent.t_end) == (T0 - 1, T0 + 2.5)
    # Highest SNR wins among equally annotated significant CBC events.
    assert superevent.preferred_event_id == second.pk
    assert superevent.t_0 == second.gpstime
    messages = list(superevent.logs.values_list("message", flat=True))
    assert any("Preferred event changed" in m for m in messages)
    assert any(f"Added event {third.graceid}" in m for m in messages)


def test_separate_events_get_consecutive_ids():
    ids = [refreshed(make_event(gpstime=T0 + 10 * i)).superevent.superevent_id for i in range(3)]
    assert ids == ["S190425a", "S190425b", "S190425c"]


def test_27th_superevent_of_a_day_gets_aa():
    for i in range(27):
        make_event(gpstime=T0 + 10 * i)
    latest = Superevent.objects.order_by("-day_index").first()
    assert latest.superevent_id == "S190425aa"
    assert Superevent.objects.count() == 27


def test_day_boundary_restarts_the_suffix():
    before = refreshed(make_event(gpstime=LAST_SECOND_OF_DAY + 0.5)).superevent
    after = refreshed(make_event(gpstime=LAST_SECOND_OF_DAY + 10)).superevent
    assert before.superevent_id == "S190425a"
    assert after.superevent_id == "S190426a"


def test_mdc_and_production_are_separate_streams():
    production = refreshed(make_event(gpstime=T0)).superevent
    mdc = refreshed(make_event(gpstime=T0, search="MDC")).superevent
    assert production.superevent_id == "S190425a"
    assert mdc.superevent_id == "MS190425a"
    assert mdc.category == "mdc"


def test_event_above_far_threshold_forms_no_superevent_and_says_why():
    event = make_event(far=1e-3)
    assert refreshed(event).superevent is None
    assert Superevent.objects.count() == 0
    assert event.logs.filter(message__contains="above the superevent threshold").exists()


def test_repeated_manager_task_changes_nothing():
    event = make_event()
    superevents.process_event(event.pk)
    superevents.process_event(event.pk)
    assert Superevent.objects.count() == 1
    assert Superevent.objects.get().events.count() == 1


def test_lock_label_freezes_preferred_event():
    first = make_event(snr=9)
    superevent = refreshed(first).superevent
    add_label(superevent, "SIGNIF_LOCKED")
    make_event(gpstime=T0 + 0.2, snr=30)
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == first.pk
    assert superevent.logs.filter(message__contains="superevent is locked").exists()


def test_completed_annotations_make_an_event_preferred():
    loud = make_event(snr=30)
    quiet = make_event(gpstime=T0 + 0.1, snr=8, pipeline="pycbc")
    superevent = refreshed(loud).superevent
    assert superevent.preferred_event_id == loud.pk
    for label in ("SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"):
        add_label(quiet, label)
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == quiet.pk


def test_growth_stops_at_a_neighbouring_superevent():
    left = refreshed(make_event(gpstime=T0)).superevent
    right = refreshed(make_event(gpstime=T0 + 2.5)).superevent
    assert left.pk != right.pk
    # Overlaps only the left window; growing would reach into the right one.
    make_event(gpstime=T0 + 0.9, snr=5)
    left.refresh_from_db()
    right.refresh_from_db()
    assert left.t_end <= right.t_start
    assert left.events.count() == 2
