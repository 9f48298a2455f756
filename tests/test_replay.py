"""``manage.py replay``: simulated sources uploaded as MDC events."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from alerts.models import Event, File, Superevent
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("superevent_manager_only")]

START_GPS = 1400000000  # 2024-05-17 16:53:02 UTC
ARGS = ("--count", "2", "--seed", "3", "--start-gps", str(START_GPS), "--pipelines", "2")


def replay(*args):
    out = StringIO()
    call_command("replay", *args, stdout=out, stderr=StringIO(), verbosity=0)
    return out.getvalue()


def uploaded_values(events):
    return [(e.pipeline, e.gpstime, e.far, e.snr) for e in sorted(events, key=lambda e: (e.gpstime, e.pipeline))]


def test_replay_uploads_mdc_events_grouped_by_source():
    out = replay(*ARGS)

    events = list(Event.objects.select_related("superevent").order_by("id"))
    assert len(events) == 4
    assert out.startswith("uploaded 4 events: ")
    assert [e.graceid for e in events] == out.strip().removeprefix("uploaded 4 events: ").split(", ")
    for event in events:
        assert event.graceid.startswith("M")
        assert (event.group, event.search, event.category) == ("CBC", "MDC", "mdc")
        assert START_GPS - 1 < event.gpstime < START_GPS + 60
        assert 0 < event.far < 1 / 3600
        assert event.snr > 0 and len(event.instrument_list) >= 2
        files = File.objects.filter(event=event)
        expected = [("coinc.xml", 1), ("psd.xml.gz", 1)]
        if event.pipeline == "gstlal":  # its p_astro is triggered by the ranking data
            expected.append(("ranking_data.xml.gz", 1))
        assert sorted(files.values_list("name", "version")) == sorted(expected)

    superevents = list(Superevent.objects.order_by("t_0"))
    assert [s.superevent_id for s in superevents] == ["MS240517a", "MS240517b"]
    for superevent in superevents:
        assert superevent.category == "mdc"
        members = list(superevent.events.all())
        assert len(members) == 2
        # One source seen by two pipelines within a fraction of a second.
        assert len({e.pipeline for e in members}) == 2
        assert max(e.gpstime for e in members) - min(e.gpstime for e in members) < 0.5
        assert superevent.preferred_event in members
    assert superevents[1].t_0 - superevents[0].t_0 == pytest.approx(20, abs=1)


def test_same_seed_gives_the_same_events():
    replay(*ARGS)
    first = uploaded_values(Event.objects.all())
    first_ids = set(Event.objects.values_list("pk", flat=True))

    replay(*ARGS)
    second = uploaded_values(Event.objects.exclude(pk__in=first_ids))
    assert second == first
    # Same times: the repeats join the superevents of the first run.
    assert Superevent.objects.count() == 2
    assert sorted(s.events.count() for s in Superevent.objects.all()) == [4, 4]

    replay("--count", "1", "--seed", "4", "--start-gps", str(START_GPS + 1000), "--pipelines", "1")
    other = Event.objects.get(gpstime__gt=START_GPS + 500)
    assert other.far not in {far for _, _, far, _ in first}


@pytest.mark.parametrize("args", [("--count", "0"), ("--pipelines", "9")])
def test_bad_arguments_exit_with_status_2(args):
    with pytest.raises(CommandError) as refused:
        replay(*args)
    assert refused.value.returncode == 2
    assert not Event.objects.exists()
