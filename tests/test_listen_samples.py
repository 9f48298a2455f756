"""The real IGWN Alert sample messages of GWCelery's test data flow through.

GWCelery (the LVK's alert pipeline) ships the IGWN Alert messages its own
tests use in ``gwcelery/tests/data`` (``igwn_alert_*.json`` and the older
``lvalert_event_creation.json``): events of every group (CBC, External,
Test), superevents, labels, log messages announcing files, a VOEvent.
``make install`` installs the gwcelery wheel without its dependencies for
these files only; nothing here imports gwcelery (its package imports Celery).

Each message is applied or rejected with a recorded reason; none crashes
the stream, and a repeat changes nothing. What this orchestrator does not
handle is refused with its reason: External and Test group events (no
RAVEN here), superevents it did not make, messages about an event it does
not know that carry no usable object (GWCelery's trimmed objects lack
``gpstime``).
"""
import json
import uuid
from importlib.metadata import distribution

import pytest

from alerts import ingest, listen
from alerts.events import create_event
from alerts.models import Category, Event, File, Label, Log, Rejection, Superevent
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.kafka import publish
from tests.test_listen import broker, conf_for  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("superevent_manager_only")]

SAMPLE_DIR = "gwcelery/tests/data"


def sample_files():
    files = [path for path in distribution("gwcelery").files or ()
             if str(path).startswith(SAMPLE_DIR + "/")
             and (path.name.startswith("igwn_alert_") or path.name == "lvalert_event_creation.json")]
    return sorted(files, key=lambda path: path.name)


def samples():
    """(file name, message) of every sample, in file-name order."""
    return [(path.name, json.loads(path.read_text())) for path in sample_files()]


# What each sample does here, on an orchestrator that knows nothing yet:
# True (applied) or a piece of the recorded rejection reason.
ON_AN_EMPTY_ORCHESTRATOR = {
    "igwn_alert_detchar.json": "T250822: unknown search 'allsky'",
    "igwn_alert_exttrig_creation.json": "E1234: unknown group 'External'",
    "igwn_alert_exttrig_subgrb_targeted_creation.json": "E1234: unknown group 'External'",
    "igwn_alert_fits.json": "T250822: unknown event and the message carries no object",
    "igwn_alert_frb_creation.json": "E1234: unknown group 'External'",
    "igwn_alert_hen_creation.json": "E1234: unknown group 'External'",
    "igwn_alert_label_dqv.json": "T251135: unknown event and the message carries no object",
    "igwn_alert_psd.json": "T250822: event attributes lack 'gpstime'",
    "igwn_alert_snews_creation.json": "E1235: unknown group 'External'",
    "igwn_alert_snews_test_creation.json": "E1236: unknown group 'Test'",
    "igwn_alert_subgrb_creation.json": "E1234: unknown group 'External'",
    "igwn_alert_superevent_burst_bbh_creation.json": "S180616h: unknown superevent",
    "igwn_alert_superevent_creation.json": "S180616h: unknown superevent",
    "igwn_alert_superevent_label.json": "S180616h: unknown superevent",
    "igwn_alert_voevent.json": "M297123: unknown group",
    "lvalert_event_creation.json": True,
}


def outcomes(messages):
    """{file name: (applied, what was done or why not)} through ingest's stream."""
    return dict(zip((name for name, _ in messages),
                    ingest.ingest_stream(json.dumps(message) + "\n" for _, message in messages)))


def state():
    return (Event.objects.count(), Superevent.objects.count(), Label.objects.count(), Log.objects.count(),
            File.objects.count())


def test_the_sample_messages_are_there():
    names = {path.name for path in sample_files()}
    assert names == set(ON_AN_EMPTY_ORCHESTRATOR), names ^ set(ON_AN_EMPTY_ORCHESTRATOR)


def test_each_sample_is_applied_or_refused_with_its_reason_and_repeats_change_nothing():
    messages = samples()
    results = outcomes(messages)
    for name, expected in ON_AN_EMPTY_ORCHESTRATOR.items():
        applied, what = results[name]
        if expected is True:
            assert applied, (name, what)
        else:
            assert not applied and expected in what, (name, what)
    reasons = list(Rejection.objects.values_list("reason", flat=True))
    assert len(reasons) == sum(expected is not True for expected in ON_AN_EMPTY_ORCHESTRATOR.values())

    # lvalert_event_creation.json: GraceDB's gstlal MDC event M394156, its
    # template read from the SingleInspiral rows, grouped into a superevent.
    event = Event.objects.select_related("superevent").get(graceid="M394156")
    assert (event.group, event.pipeline, event.search, event.category) == ("CBC", "gstlal", "MDC", Category.MDC)
    assert (event.gpstime, event.far, event.instruments) == (1338924113.077977, 9.110699364861297e-14, "H1,L1")
    assert event.snr == pytest.approx(15.1563299467438)
    extra = event.extra_attributes
    assert extra["chirp_mass"] == pytest.approx(1.3401653, rel=1e-6)
    assert set(extra["detector_snrs"]) == {"H1", "L1"}
    superevent = event.superevent
    assert superevent is not None and superevent.superevent_id.startswith("MS220610")
    assert superevent.preferred_event_id == event.pk
    assert superevent.t_start < event.gpstime < superevent.t_end

    # The same messages again: the same answers, nothing new stored.
    before = state()
    again = outcomes(messages)
    assert {name: applied for name, (applied, _) in again.items()} == \
        {name: expected is True for name, expected in ON_AN_EMPTY_ORCHESTRATOR.items()}
    assert "already known" in again["lvalert_event_creation.json"][1]
    assert state() == before


def test_once_the_events_they_name_are_known_the_samples_label_log_and_bring_files(tmp_path, settings, mock_events):
    """GWCelery's samples about T250822 and T251135 trim their objects; on
    an orchestrator that has these events, they apply: the detchar log, the
    announced psd.xml.gz (from the local files folder, as ingest takes it
    without GraceDB), the announced flattened sky map that is nowhere here,
    the DQV label."""
    mock = mock_events[0]
    files = tmp_path / "files"
    (files / "T250822").mkdir(parents=True)
    (files / "T250822" / "psd.xml.gz").write_bytes(mock.psd_xml_gz)
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "INGEST_FILES_DIR": str(files)}
    for graceid, gpstime in (("T250822", mock.gpstime), ("T251135", mock.gpstime + 1000)):
        create_event(group="CBC", pipeline="gstlal", coinc=None, category=Category.TEST, graceid=graceid,
                     attributes={"gpstime": gpstime, "far": 1e-8, "instruments": ["H1", "L1", "V1"]})
    wanted = ["igwn_alert_detchar.json", "igwn_alert_psd.json", "igwn_alert_fits.json", "igwn_alert_label_dqv.json"]
    messages = [(name, message) for name, message in samples() if name in wanted]
    results = outcomes(messages)
    assert all(applied for applied, _ in results.values()), results

    first, second = Event.objects.get(graceid="T250822"), Event.objects.get(graceid="T251135")
    detchar = Log.objects.get(event=first, message="V1 detchar analysis finished")
    assert detchar.tags == ["data_quality"]
    psd = File.objects.get(event=first, name="psd.xml.gz")
    assert (psd.read(), psd.tags) == (mock.psd_xml_gz, ["psd"])
    assert Log.objects.filter(event=first, message__contains="bayestar.fits.gz announced; not available").exists()
    assert second.label_names() == {"DQV"}

    before = state()
    again = outcomes(messages)
    assert all(applied for applied, _ in again.values())
    assert state() == before
    assert File.objects.filter(event=first, name="psd.xml.gz").count() == 1


def kind_of(message):
    """The IGWN Alert topic kind GraceDB publishes a message on."""
    if ingest.SUPEREVENT_UID.match(message["uid"]):
        return "superevent"
    obj = message.get("object") or {}
    group, pipeline = obj.get("group"), obj.get("pipeline")
    return f"{group}_{pipeline}".lower() if group and pipeline else "cbc_gstlal"


def test_the_samples_flow_through_listen_from_kafka(broker):  # noqa: F811
    messages = samples()
    group = f"gracedb-{uuid.uuid4().hex[:6]}"
    by_kind = {}
    for _, message in messages:
        by_kind.setdefault(kind_of(message), []).append(message)
    for kind, batch in by_kind.items():
        publish(broker, f"{group}.{kind}", batch)
    assert {"superevent", "cbc_gstlal", "external_fermi", "external_snews"} <= set(by_kind)
    progress = listen.Listener(conf_for(broker, group, kinds=sorted(by_kind))).run(max_messages=len(messages))
    rejected = sum(expected is not True for expected in ON_AN_EMPTY_ORCHESTRATOR.values())
    assert (progress.applied, progress.rejected) == (len(messages) - rejected, rejected)
    assert Event.objects.filter(graceid="M394156", superevent__isnull=False).exists()
    assert Rejection.objects.filter(reason__contains="E1234: unknown group 'External'").count() == 5
