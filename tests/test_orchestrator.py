"""The orchestrator: from an uploaded event to a preliminary alert, or to a
logged reason why not. Tasks run inline, so every flow here runs to its end
inside the call that creates the event (delays are not waited for)."""
import base64
import datetime
import json
import time
from pathlib import Path

import pytest
from django.db import connections, transaction
from django.utils import timezone
from lxml import etree

from alerts import delivery, detchar_task, orchestrator, products, transports, workers
from alerts.orchestrator import alerts as orchestrator_alerts
from alerts.orchestrator import flow, gates, vetting
from alerts.models import Log, Notice, Vetting, NoticeDelivery, NoticePayload, StepRun, Superevent
from alerts.store import add_file, add_label
from tests.annotated import CBC_READY, EM_BRIGHT, P_ASTRO, TINY_PNG, annotated_event, tiny_skymap, write_frames
from tests.factories import T0, make_event
from tests.racing import race, record_send

pytestmark = pytest.mark.django_db(transaction=True)

OUTBOX_EXTENSIONS = ("json", "avro", "xml")
VOEVENT_NS = {"voe": "http://www.ivoa.net/xml/VOEvent/v2.0"}
NOT_SIGNIFICANT_FAR = 1e-4  # above 2/day, below the superevent threshold of 1/hour
LESS_SIGNIFICANT_FAR = 1e-5  # below 2/day, 7 x FAR far above 1/(30 days)
ALL_ROLES = ["observation", "test"]
ALL_FORMATS = ["json", "avro", "voevent"]
# Racing workers hold the vetting (and each send) this long, so they overlap.
RACE_HOLD_S = 0.3


@pytest.fixture(autouse=True)
def alerts_on(settings, isolated_orchestrator):
    # The private outbox takes MDC (test-role) notices, as the default one does.
    outbox = {**isolated_orchestrator["NOTICE_DESTINATIONS"][0], "roles": ALL_ROLES}
    configure(settings, PRELIMINARY_ALERTS=True, NOTICE_DESTINATIONS=[outbox])


VET_TASK = workers.task_path(orchestrator.vet_superevent)
CLEANUP_TASK = workers.task_path(orchestrator.cleanup_superevent)
SETTLE_TASK = workers.task_path(flow.settle_look)


def configure(settings, **changes):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, **changes}


@pytest.fixture
def outbox(isolated_orchestrator):
    return Path(isolated_orchestrator["NOTICE_DESTINATIONS"][0]["directory"])


@pytest.fixture
def deferred(monkeypatch):
    """Hold the orchestrator's own (delayed) tasks instead of running them,
    so a test can step through the waits as a worker would; everything else
    runs inline."""
    held = []

    def enqueue(path, *args, delay_s=0.0):
        path = workers.task_path(path)
        if path in (VET_TASK, CLEANUP_TASK, SETTLE_TASK):
            held.append((path, args, delay_s))
            return
        transaction.on_commit(lambda: workers.resolve(path)(*args))

    monkeypatch.setattr(workers, "enqueue", enqueue)
    monkeypatch.setattr(workers, "run_inline", lambda: False)
    return held


def run_next(held, path):
    found, args, delay_s = held.pop(0)
    assert found == path
    workers.resolve(found)(*args)
    return delay_s


def run_all(held):
    """Run the held tasks, and those they schedule, in order."""
    while held:
        path, args, _ = held.pop(0)
        workers.resolve(path)(*args)


def superevent_of(event):
    return Superevent.objects.get(pk=event.superevent_id)


def messages(superevent):
    return [entry.message for entry in superevent.logs.order_by("id")]


def reasons(superevent):
    return list(Notice.objects.filter(superevent=superevent).order_by("serial").values_list("reason", flat=True))


def json_notice(outbox, notice):
    return json.loads((outbox / notice.superevent.superevent_id / f"{notice.identity}.json").read_bytes())


def voevent_params(outbox, notice):
    root = etree.fromstring((outbox / notice.superevent.superevent_id / f"{notice.identity}.xml").read_bytes())
    params = {p.get("name"): p.get("value") for p in root.iter("Param")}
    return root.get("role"), params


def files(superevent):
    return {(f.name, f.version): f for f in superevent.files.all()}


def test_significant_cbc_event_sends_preliminary_with_copied_products_plots_and_circular(outbox, deferred):
    event = annotated_event()
    run_all(deferred)
    superevent = superevent_of(event)
    stored = files(superevent)

    # Products copied as new versions with their tags; the event's own sky
    # map plot copied, the two bar charts made here.
    assert stored[("bayestar.multiorder.fits", 1)].tags == ["public", "sky_loc"]
    assert stored[("bayestar.multiorder.fits", 1)].read() == tiny_skymap()
    assert stored[("em_bright.json", 1)].tags == ["em_bright", "public"]
    assert stored[("gstlal.p_astro.json", 1)].tags == ["p_astro", "public"]
    assert stored[("bayestar.png", 1)].read() == TINY_PNG
    for plot in ("em_bright.png", "gstlal.p_astro.png"):
        assert stored[(plot, 1)].read().startswith(b"\x89PNG")
    assert ("data_quality_report.json", 1) in stored
    assert stored[("preliminary-circular.txt", 1)].tags == ["em_follow"]
    # The second preliminary found nothing new: nothing copied twice.
    assert all(version == 1 for _, version in stored)

    # Preliminary notices: the first, then the second after the clean-up.
    assert reasons(superevent) == ["preliminary-1", "preliminary-2"]
    first = Notice.objects.get(superevent=superevent, reason="preliminary-1")
    for extension in OUTBOX_EXTENSIONS:
        assert (outbox / superevent.superevent_id / f"{first.identity}.{extension}").is_file()
    notice = json_notice(outbox, first)
    assert notice["alert_type"] == "PRELIMINARY"
    assert notice["superevent_id"] == superevent.superevent_id
    assert notice["event"]["significant"] is True
    assert notice["event"]["pipeline"] == "gstlal"
    assert notice["event"]["instruments"] == ["H1", "L1"]
    assert notice["event"]["classification"] == P_ASTRO
    assert notice["event"]["properties"] == EM_BRIGHT
    assert base64.b64decode(notice["event"]["skymap"]) == tiny_skymap()
    role, params = voevent_params(outbox, first)
    assert role == "observation"
    assert params["AlertType"] == "Preliminary" and params["HardwareInj"] == "0"
    assert params["skymap_fits"].endswith(f"/superevents/{superevent.superevent_id}/files/bayestar.multiorder.fits,1")

    circular = stored[("preliminary-circular.txt", 1)].read().decode()
    assert circular.startswith(f"LIGO/Virgo/KAGRA {superevent.superevent_id}: Identification of a GW compact "
                               "binary merger candidate")
    assert "2019-04-25 08:18:05.000 UTC" in circular
    assert "about one in 320 years" in circular
    assert "BNS (95%)" in circular

    labels = superevent.label_names()
    assert {"GCN_PRELIM_SENT", "ADVREQ", "SIGNIF_LOCKED", "DQR_REQUEST"} <= labels
    assert not {"DQV", "DQOK", "LOW_SIGNIF_LOCKED"} & labels  # no frames configured: quality unknown
    log = messages(superevent)
    assert f"Copied bayestar.multiorder.fits,1 from {event.graceid}" in log
    assert any("DETCHAR_FRAME_GLOB is empty" in m for m in log)
    assert StepRun.objects.get(step="preliminary_alert", superevent=superevent).status == "succeeded"


def test_insignificant_event_sends_nothing_and_logs_why(outbox, deferred):
    event = annotated_event(far=NOT_SIGNIFICANT_FAR)
    run_all(deferred)
    superevent = superevent_of(event)
    assert reasons(superevent) == []
    assert not outbox.exists()
    assert {f.name for f in superevent.files.all()} == {"data_quality_report.json"}
    stops = [m for m in messages(superevent) if m.startswith("No preliminary alert")]
    assert len(stops) == 1
    assert "trials factor 7 x FAR 0.0001 Hz = 0.0007 Hz is above the significant threshold" in stops[0]
    assert "above the less-significant threshold" in stops[0]
    assert any(m.startswith("No second preliminary alert") and "is not significant" in m
               for m in messages(superevent))
    run = StepRun.objects.get(step="preliminary_alert", superevent=superevent)
    assert run.status == "skipped" and "is not significant" in run.error
    assert "GCN_PRELIM_SENT" not in superevent.label_names()


def test_less_significant_event_sends_a_less_significant_alert_without_circular(outbox, deferred):
    event = annotated_event(far=LESS_SIGNIFICANT_FAR)
    run_all(deferred)
    superevent = superevent_of(event)
    # Nothing changed by the clean-up: no second less-significant alert.
    assert reasons(superevent) == ["less-significant-1"]
    notice = Notice.objects.get(superevent=superevent)
    assert notice.significant is False
    assert json_notice(outbox, notice)["event"]["significant"] is False
    assert json_notice(outbox, notice)["alert_type"] == "PRELIMINARY"
    assert not superevent.files.filter(name__endswith="-circular.txt").exists()
    labels = superevent.label_names()
    assert {"GCN_PRELIM_SENT", "LOW_SIGNIF_LOCKED"} <= labels
    assert not {"ADVREQ", "SIGNIF_LOCKED"} & labels
    assert any("same preferred event and products" in m for m in messages(superevent))


def test_offline_event_stops_with_its_reason(outbox):
    event = annotated_event(offline=True)
    superevent = superevent_of(event)
    assert reasons(superevent) == []
    assert f"No preliminary alert: {event.graceid} is an offline event" in messages(superevent)
    assert not superevent.files.filter(name="bayestar.multiorder.fits").exists()


def test_state_vector_veto_stops_the_alert(settings, tmp_path, outbox):
    glob = write_frames(tmp_path / "frames", cleared=[("L1", "GDS-CALIB_STATE_VECTOR", 0, T0 + 0.2, T0 + 0.4)])
    configure(settings, DETCHAR_FRAME_GLOB=glob)
    event = annotated_event()
    superevent = superevent_of(event)
    assert "DQV" in superevent.label_names()
    assert reasons(superevent) == []
    log = messages(superevent)
    assert "No preliminary alert: vetoed by the detector state vectors (DQV)" in log
    assert any("L1:GDS-CALIB_STATE_VECTOR" in m and "HOFT_OK" in m and "bad" in m for m in log)
    report = json.loads(superevent.files.get(name="data_quality_report.json").read())
    assert report["verdict"] == "DQV"


def fake_kafka(monkeypatch, sent, roles=ALL_ROLES):
    """A Kafka destination whose transport records instead of producing."""
    monkeypatch.setitem(transports.TRANSPORTS, "kafka", lambda destination, identity, format, payload, **kwargs:
                        sent.append((destination["name"], identity, format)))
    monkeypatch.delitem(transports.SEND_MARKS, "kafka")  # no broker to read back either
    return {"name": "kafka", "transport": "kafka", "formats": ALL_FORMATS, "bootstrap_servers": "unused:9092",
            "roles": roles}


def test_hardware_injection_is_never_published(settings, tmp_path, outbox, deferred, monkeypatch):
    """INJ is never public (GWCelery's should_publish): no payload of any
    format is built or sent to any destination, even one taking test
    notices, in the first pass or the clean-up; no advocate is asked for."""
    sent = []
    glob = write_frames(tmp_path / "frames", cleared=[("H1", "GDS-CALIB_STATE_VECTOR", 6, T0 - 0.5, T0 + 0.5)])
    configure(settings, DETCHAR_FRAME_GLOB=glob,
              NOTICE_DESTINATIONS=settings.ORCHESTRATOR["NOTICE_DESTINATIONS"] + [fake_kafka(monkeypatch, sent)])
    real_send = transports.send
    monkeypatch.setattr(transports, "send", lambda *args, **kwargs: sent.append(args[:3]) or real_send(*args, **kwargs))
    superevent = superevent_of(annotated_event())
    run_all(deferred)

    labels = superevent.label_names()
    assert {"DQOK", "INJ"} <= labels
    assert sent == [] and not outbox.exists()
    assert not Notice.objects.exists() and not NoticePayload.objects.exists()
    log = messages(superevent)
    assert "No preliminary alert: hardware injection (INJ): injections are never published" in log
    assert "No second preliminary alert: hardware injection (INJ): injections are never published" in log
    assert not {"ADVREQ", "GCN_PRELIM_SENT"} & labels
    assert not superevent.files.filter(name__endswith="-circular.txt").exists()


def test_mdc_notices_have_role_test_and_go_only_to_destinations_taking_test(settings, tmp_path, outbox):
    public = {"name": "public", "transport": "outbox", "formats": ALL_FORMATS, "directory": str(tmp_path / "public"),
              "roles": ["observation"]}
    configure(settings, NOTICE_DESTINATIONS=settings.ORCHESTRATOR["NOTICE_DESTINATIONS"] + [public])
    superevent = superevent_of(annotated_event(search="MDC"))
    assert superevent.superevent_id.startswith("MS")
    notice = Notice.objects.get(superevent=superevent)
    assert (notice.reason, notice.role) == ("preliminary-1", "test")
    assert voevent_params(outbox, notice)[0] == "test"
    assert json_notice(outbox, notice)["superevent_id"] == superevent.superevent_id
    assert set(NoticeDelivery.objects.filter(notice=notice).values_list("destination", flat=True)) == {"outbox"}
    assert not (tmp_path / "public").exists()
    assert "ADVREQ" in superevent.label_names()  # advocates rehearse on MDC candidates

    real = superevent_of(annotated_event(gpstime=T0 + 100))
    notice = Notice.objects.get(superevent=real)
    assert notice.role == "observation"
    assert len(list((tmp_path / "public" / real.superevent_id).iterdir())) == len(OUTBOX_EXTENSIONS)


@pytest.mark.parametrize(("offline", "far", "labels", "reason"), [
    (True, 1e-10, ["DQV"], "is an offline event"),
    (False, NOT_SIGNIFICANT_FAR, ["DQV"], "is not significant"),
    (True, NOT_SIGNIFICANT_FAR, [], "is an offline event"),
    (False, 1e-10, ["DQV", "INJ"], "vetoed by the detector state vectors (DQV)"),
], ids=["offline+DQV", "insignificant+DQV", "offline+insignificant", "DQV+INJ"])
def test_with_two_failing_gates_the_first_in_the_seed_order_is_the_reason(settings, offline, far, labels, reason):
    configure(settings, PRELIMINARY_ALERTS=False)
    event = annotated_event(offline=offline, far=far)
    superevent = superevent_of(event)
    for label in labels:  # as a human would apply them: no state-vector check removes them
        add_label(superevent, label, creator="advocate")
    configure(settings, PRELIMINARY_ALERTS=True)
    orchestrator.vet_superevent(superevent.pk)
    [stop] = [m for m in messages(superevent) if m.startswith("No preliminary alert")]
    assert reason in stop
    assert reasons(superevent) == []


def test_early_warning_event_sends_an_earlywarning_alert_and_inline_there_is_no_clean_up(outbox):
    superevent = superevent_of(annotated_event(search="EarlyWarning"))
    assert "No clean-up pass: tasks run inline and cannot wait for late events" in messages(superevent)
    # No clean-up pass will freeze the preferred event: the first alert did.
    assert "SIGNIF_LOCKED" in superevent.label_names()
    notice = Notice.objects.get(superevent=superevent)
    assert (notice.reason, notice.alert_type) == ("earlywarning-1", "EARLYWARNING")
    assert json_notice(outbox, notice)["alert_type"] == "EARLYWARNING"
    circular = superevent.files.get(name="earlywarning-circular.txt").read().decode()
    assert "Early-warning identification" in circular.splitlines()[0]


def test_burst_event_alert_carries_its_own_sky_map_and_no_classification(outbox):
    with transaction.atomic():
        event = make_event(group="Burst", pipeline="cwb", snr=None,
                           extra_attributes={"duration": 0.1, "central_frequency": 150.0})
        add_file(event, "cwb.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"], announce=False)
        add_label(event, "SKYMAP_READY")
    event.refresh_from_db()
    superevent = superevent_of(event)
    notice = json_notice(outbox, Notice.objects.get(superevent=superevent))
    assert notice["event"]["group"] == "Burst"
    assert notice["event"]["classification"] == {}
    assert notice["event"]["central_frequency"] == 150.0
    assert base64.b64decode(notice["event"]["skymap"]) == tiny_skymap()
    assert superevent.files.filter(name="cwb.png").exists()  # made here: the event had no plot
    assert "GW burst candidate" in superevent.files.get(name="preliminary-circular.txt").read().decode()


def test_incomplete_annotations_are_awaited_then_the_alert_goes_out_with_what_exists(
        settings, outbox, deferred):
    configure(settings, ORCHESTRATOR_TIMEOUT_S=5.0, ANNOTATION_MAX_WAIT_S=3.0, ANNOTATION_POLL_S=1.0)
    event = annotated_event(labels=("SKYMAP_READY",), products=("skymap",))
    superevent = superevent_of(event)
    assert deferred == [(VET_TASK, (superevent.pk, 0), 5.0)]
    for _ in range(3):  # three looks, one second apart
        run_next(deferred, VET_TASK)
        assert deferred[0][2] == 1.0 and reasons(superevent) == []
    run_next(deferred, VET_TASK)  # the maximum wait is over: go
    assert reasons(superevent) == ["preliminary-1"]
    log = messages(superevent)
    assert f"Waiting up to 3 s for the annotations of {event.graceid} (missing: EMBRIGHT_READY, PASTRO_READY)" in log
    assert (f"Annotations of {event.graceid} incomplete after waiting 3 s (missing: EMBRIGHT_READY, "
            "PASTRO_READY); going on with the products that exist") in log
    notice = json_notice(outbox, Notice.objects.get(superevent=superevent))
    assert notice["event"]["classification"] == {} and notice["event"]["properties"] == {}
    assert base64.b64decode(notice["event"]["skymap"]) == tiny_skymap()
    assert deferred[0][0] == CLEANUP_TASK
    assert deferred[0][2] == settings.ORCHESTRATOR["PRELIMINARY_CLEANUP_DELAY_S"]


def test_annotations_arriving_during_the_wait_are_used(settings, outbox, deferred):
    configure(settings, ANNOTATION_MAX_WAIT_S=60.0, ANNOTATION_POLL_S=1.0)
    event = annotated_event(labels=("SKYMAP_READY",), products=("skymap",))
    superevent = superevent_of(event)
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == []
    add_file(event, "em_bright.json", json.dumps(EM_BRIGHT).encode(), tags=["em_bright", "public"], announce=False)
    add_file(event, "gstlal.p_astro.json", json.dumps(P_ASTRO).encode(), tags=["p_astro", "public"], announce=False)
    for label in CBC_READY[1:]:
        add_label(event, label)
    # The label that completes the event vets at once, in its own task, not
    # at the next look; that look, still held, then finds nothing to do.
    assert reasons(superevent) == ["preliminary-1"]
    assert [path for path, _, _ in deferred] == [VET_TASK, CLEANUP_TASK]
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    assert json_notice(outbox, Notice.objects.get(superevent=superevent))["event"]["classification"] == P_ASTRO
    assert not any("incomplete" in m for m in messages(superevent))


def held(deferred):
    return [(path, delay) for path, _, delay in deferred]


def test_a_complete_preferred_event_ends_the_settle_wait_early(settings, outbox, deferred):
    """The BAYESTAR case: the sky map lands after the shortest settle wait,
    and the alert goes out then, not at the end of the settle wait."""
    configure(settings, ORCHESTRATOR_TIMEOUT_S=15.0, ORCHESTRATOR_MIN_SETTLE_S=5.0)
    event = annotated_event(labels=("EMBRIGHT_READY", "PASTRO_READY"), products=("em_bright", "p_astro"))
    superevent = superevent_of(event)
    assert held(deferred) == [(VET_TASK, 15.0), (SETTLE_TASK, 5.0)]
    Superevent.objects.filter(pk=superevent.pk).update(created=timezone.now() - datetime.timedelta(seconds=6))
    add_file(event, "bayestar.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"], announce=False)
    assert reasons(superevent) == []  # a file alone completes nothing
    add_label(event, "SKYMAP_READY")
    assert reasons(superevent) == ["preliminary-1"]
    assert (f"Orchestrator: the annotations of the preferred event {event.graceid} are complete; vetting now "
            "rather than after the 15 s settle wait") in messages(superevent)
    run_all(deferred)  # the settle look and the timer find the vetting done; the clean-up pass runs
    assert reasons(superevent) == ["preliminary-1", "preliminary-2"]


def test_the_settle_wait_lasts_at_least_its_shortest_time(settings, outbox, deferred):
    """An event complete on arrival is vetted by the settle look at the
    shortest wait, so that other pipelines' uploads can still take over."""
    configure(settings, ORCHESTRATOR_TIMEOUT_S=15.0, ORCHESTRATOR_MIN_SETTLE_S=5.0)
    event = annotated_event()
    superevent = superevent_of(event)
    assert reasons(superevent) == []
    louder = annotated_event(snr=15.0, pipeline="pycbc", gpstime=T0 + 0.1)
    assert superevent_of(louder) == superevent
    assert held(deferred) == [(VET_TASK, 15.0), (SETTLE_TASK, 5.0)]
    deferred.reverse()
    run_next(deferred, SETTLE_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    assert json_notice(outbox, Notice.objects.get(superevent=superevent))["event"]["pipeline"] == "pycbc"


def test_an_incomplete_preferred_event_keeps_the_whole_settle_wait(settings, outbox, deferred):
    configure(settings, ORCHESTRATOR_TIMEOUT_S=15.0, ORCHESTRATOR_MIN_SETTLE_S=5.0, ANNOTATION_POLL_S=1.0)
    event = annotated_event(labels=("SKYMAP_READY",), products=("skymap",))
    superevent = superevent_of(event)
    Superevent.objects.filter(pk=superevent.pk).update(created=timezone.now() - datetime.timedelta(seconds=6))
    assert held(deferred) == [(VET_TASK, 15.0), (SETTLE_TASK, 5.0)]
    deferred.reverse()
    run_next(deferred, SETTLE_TASK)
    assert reasons(superevent) == [] and Vetting.objects.get(superevent=superevent).state == "scheduled"
    run_next(deferred, VET_TASK)  # the settle wait is over: wait for the annotations, as before
    assert Vetting.objects.get(superevent=superevent).state == "waiting"
    assert held(deferred) == [(VET_TASK, 1.0)]


def test_second_preliminary_uses_the_reselected_preferred_event(outbox, deferred):
    first = annotated_event(snr=9.0)
    superevent = superevent_of(first)
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    # A louder event arrives before the clean-up; the clean-up picks it.
    louder = annotated_event(snr=15.0, pipeline="pycbc", gpstime=T0 + 0.1)
    assert superevent_of(louder) == superevent
    run_next(deferred, CLEANUP_TASK)
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == louder.pk
    assert reasons(superevent) == ["preliminary-1", "preliminary-2"]
    second = json_notice(outbox, Notice.objects.get(superevent=superevent, reason="preliminary-2"))
    assert second["event"]["pipeline"] == "pycbc"
    assert superevent.files.filter(name="pycbc.p_astro.json").exists()
    assert "SIGNIF_LOCKED" in superevent.label_names()
    assert "PyCBC Live" in superevent.files.filter(name="preliminary-circular.txt").latest("version").read().decode()


def test_repeated_handlers_and_steps_send_each_notice_once(outbox, deferred):
    event = annotated_event()
    run_all(deferred)
    superevent = superevent_of(event)
    before = sorted((f.name, f.version) for f in superevent.files.all())
    orchestrator.handle_superevent(superevent.pk)  # a repeated SUPEREVENT_CREATED
    orchestrator.vet_superevent(superevent.pk)
    orchestrator.cleanup_superevent(superevent.pk, gates.SIGNIFICANT, event.pk)
    run_all(deferred)
    # Even the preliminary step itself, run again, sends and copies nothing new.
    notice = orchestrator_alerts.send_preliminary(superevent, event, gates.SIGNIFICANT, 1)
    assert notice.reason == "preliminary-1"
    assert reasons(superevent) == ["preliminary-1", "preliminary-2"]
    assert sorted((f.name, f.version) for f in superevent.files.all()) == before
    assert len(list((outbox / superevent.superevent_id).iterdir())) == 2 * len(OUTBOX_EXTENSIONS)
    assert sum(m.startswith("Orchestrator: vetting preferred") for m in messages(superevent)) == 1


def test_uploaded_significant_cbc_event_with_psd_is_alerted_without_human_action(settings, outbox, mock_events):
    """The issue's definition of done, end to end and inline: the upload's
    own annotations (BAYESTAR, source properties, p_astro) complete the event,
    which wakes the waiting vetting."""
    from alerts.events import create_event

    configure(settings, PASTRO_FROM_RANKING_DATA=[])  # p_astro at once, whatever the pipeline
    mock = min((m for m in mock_events if 7 * m.far < 1 / (30 * 86400)), key=lambda m: len(m.instruments))
    event = create_event(group="CBC", pipeline=mock.pipeline, coinc=mock.coinc_xml,
                         files=[("psd.xml.gz", mock.psd_xml_gz)])
    event.refresh_from_db()
    superevent = superevent_of(event)
    assert {"SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"} <= event.label_names()
    log = messages(superevent)
    assert any(m.startswith(f"Waiting for the annotations of {event.graceid}") for m in log)
    assert reasons(superevent) == ["preliminary-1"]
    notice = Notice.objects.get(superevent=superevent)
    assert sorted(p.name for p in (outbox / superevent.superevent_id).iterdir()) == sorted(
        f"{notice.identity}.{extension}" for extension in OUTBOX_EXTENSIONS)
    content = json_notice(outbox, notice)
    assert content["event"]["significant"] is True
    assert set(content["event"]["classification"]) == {"BNS", "NSBH", "BBH", "Terrestrial"}
    assert set(content["event"]["properties"]) == {"HasNS", "HasRemnant", "HasMassGap"}
    skymap = superevent.files.get(name="bayestar.multiorder.fits")
    assert base64.b64decode(content["event"]["skymap"]) == skymap.read()
    names = {f.name for f in superevent.files.all()}
    assert {"bayestar.multiorder.fits", "bayestar.fits.gz", "em_bright.json", f"{mock.pipeline}.p_astro.json",
            "bayestar.png", "preliminary-circular.txt"} <= names
    circular = superevent.files.get(name="preliminary-circular.txt").read().decode()
    area_90 = products.skymap_summary(skymap)["area_90_deg2"]
    assert f"90% credible region covers {round(area_90)} deg2" in circular
    assert {"GCN_PRELIM_SENT", "ADVREQ"} <= superevent.label_names()


def test_queued_mode_waits_with_delayed_tasks(settings):
    """With a worker cluster, the waits are DelayedTask rows due at the
    configured times (fired by the timer), never a sleeping worker."""
    from django.utils import timezone

    from alerts.models import DelayedTask

    configure(settings, PRELIMINARY_ALERTS=False)
    event = annotated_event(labels=("SKYMAP_READY",), products=("skymap",))
    superevent = superevent_of(event)
    configure(settings, PRELIMINARY_ALERTS=True, TASKS_INLINE=False, ORCHESTRATOR_TIMEOUT_S=15.0,
              ANNOTATION_POLL_S=2.0)
    start = timezone.now()
    orchestrator.handle_superevent(superevent.pk)
    orchestrator.vet_superevent(superevent.pk, 0)  # as the timer would, 15 s later
    tasks = list(DelayedTask.objects.order_by("due"))
    assert [(t.func, t.args) for t in tasks] == [(VET_TASK, [superevent.pk, 1]),
                                                 (VET_TASK, [superevent.pk, 0])]
    assert [round((t.due - start).total_seconds()) for t in tasks] == [2, 15]
    assert reasons(superevent) == []


# --- vetting is never silently lost ----------------------------------------------------


def fail_once(monkeypatch, owner, name):
    real = getattr(owner, name)
    calls = []

    def failing(*args, **kwargs):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("worker hiccup")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, failing)


@pytest.mark.parametrize("fails", ["issue_notice", "make_plots"],
                         ids=["before the notice is issued", "after the notice went out"])
def test_a_vetting_that_fails_once_is_tried_again_and_the_notice_goes_out_once(settings, outbox, deferred,
                                                                              monkeypatch, fails):
    event = annotated_event()
    superevent = superevent_of(event)
    fail_once(monkeypatch, delivery if fails == "issue_notice" else orchestrator_alerts, fails)

    with pytest.raises(RuntimeError, match="worker hiccup"):
        run_next(deferred, VET_TASK)
    retry_s = settings.ORCHESTRATOR["VETTING"]["retry_delay_s"]
    assert (f"Orchestrator: vetting attempt 1 failed (RuntimeError: worker hiccup); trying again in {retry_s:g} s"
            in messages(superevent))
    assert StepRun.objects.get(step="preliminary_alert", superevent=superevent).status == "failed"
    assert "GCN_PRELIM_SENT" not in superevent.label_names()
    # The retry and the clean-up pass are both queued, however the pass ended.
    assert [(path, delay) for path, _, delay in deferred] == [
        (VET_TASK, retry_s),
        (CLEANUP_TASK, settings.ORCHESTRATOR["PRELIMINARY_CLEANUP_DELAY_S"])]

    run_next(deferred, VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    notice = Notice.objects.get(superevent=superevent)
    assert sorted(path.name for path in (outbox / superevent.superevent_id).iterdir()) == sorted(
        f"{notice.identity}.{extension}" for extension in OUTBOX_EXTENSIONS)
    assert set(NoticeDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}
    assert {"GCN_PRELIM_SENT", "ADVREQ"} <= superevent.label_names()
    assert superevent.files.filter(name="preliminary-circular.txt").count() == 1
    log = messages(superevent)
    assert f"Orchestrator: vetting preferred event {event.graceid} (attempt 2)" in log
    assert sum(m.startswith("Orchestrator: vetting finished") for m in log) == 1

    orchestrator.vet_superevent(superevent.pk)  # a later rerun: the vetting is done
    run_all(deferred)  # the clean-up pass: the second preliminary, with the same event
    assert reasons(superevent) == ["preliminary-1", "preliminary-2"]
    assert messages(superevent).count(f"Orchestrator: vetting preferred event {event.graceid} (attempt 2)") == 1


def test_a_vetting_whose_worker_died_is_resumed_once_its_claim_expires(settings, outbox, deferred):
    event = annotated_event()
    superevent = superevent_of(event)
    deferred.clear()  # the vetting task was taken by a worker ...
    assert vetting.claim_vetting(superevent, event) == 1  # ... that died after claiming
    timeout_s = settings.ORCHESTRATOR["VETTING"]["claim_timeout_s"]

    # qcluster starts: the claim still looks live, so it is looked at again
    # just after it expires; until then, no second vetting runs.
    assert orchestrator.resume_vetting() == 1
    [(path, args, delay_s)] = deferred
    assert path == VET_TASK and timeout_s < delay_s <= timeout_s + vetting.RESUME_MARGIN_S
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == [] and deferred == []

    Vetting.objects.filter(superevent=superevent).update(
        claimed_at=timezone.now() - datetime.timedelta(seconds=timeout_s + 1))
    assert orchestrator.resume_vetting() == 1
    assert deferred[0][2] == 0.0
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    assert any("never finished (worker gone?); taking over" in m for m in messages(superevent))

    # Finished vettings, and those begun before the resume window, stay as they are.
    deferred.clear()
    old = annotated_event(gpstime=T0 + 100)
    deferred.clear()
    assert vetting.claim_vetting(superevent_of(old), old) == 1
    Vetting.objects.filter(superevent=superevent_of(old)).update(
        claimed_at=timezone.now() - datetime.timedelta(seconds=settings.ORCHESTRATOR["VETTING"]["resume_window_s"] + 1))
    # Only the first superevent's clean-up pass, whose held task was dropped
    # above (as a killed worker would lose it), is queued again.
    assert orchestrator.resume_vetting() == 1
    assert [(path, args[0]) for path, args, _ in deferred] == [(CLEANUP_TASK, superevent.pk)]


# --- workers racing on one superevent ----------------------------------------------------


def race_vetting(target, superevent_pk, record, barrier, failures):
    """One racing worker: every send is recorded in a file shared by the
    processes; the state-vector check and each send take a while."""
    connections.close_all()  # never share the parent's connection
    real_send, real_check = transports.send, detchar_task.check_superevent

    def recording_send(destination, identity, format, payload, **kwargs):
        record_send(record, destination, identity, format)
        time.sleep(RACE_HOLD_S)
        return real_send(destination, identity, format, payload, **kwargs)

    def slow_check(*args, **kwargs):
        time.sleep(RACE_HOLD_S)
        return real_check(*args, **kwargs)

    transports.send, detchar_task.check_superevent = recording_send, slow_check
    barrier.wait()
    try:
        if target == "vet_superevent":
            orchestrator.vet_superevent(superevent_pk)
        else:
            superevent = Superevent.objects.select_related("preferred_event").get(pk=superevent_pk)
            orchestrator_alerts.send_preliminary(superevent, superevent.preferred_event, gates.SIGNIFICANT, 1)
    except Exception as error:  # reported to the parent, which fails the test
        failures.put(f"{type(error).__name__}: {error}")
    finally:
        connections.close_all()


@pytest.mark.parametrize("target", ["vet_superevent", "send_preliminary"])
def test_workers_racing_on_one_superevent_send_each_notice_once(settings, outbox, tmp_path, target):
    configure(settings, PRELIMINARY_ALERTS=False)
    superevent = superevent_of(annotated_event())
    configure(settings, PRELIMINARY_ALERTS=True)
    record = tmp_path / "sends.txt"

    race(race_vetting, target, superevent.pk, record)

    notice = Notice.objects.get(superevent=superevent)
    sent = sorted(line.rsplit(" ", 1)[0] for line in record.read_text().splitlines())
    assert sent == sorted(f"outbox {notice.identity} {format}" for format in ALL_FORMATS)
    assert sorted(path.name for path in (outbox / superevent.superevent_id).iterdir()) == sorted(
        f"{notice.identity}.{extension}" for extension in OUTBOX_EXTENSIONS)
    if target == "vet_superevent":
        assert sum(m.startswith("Orchestrator: vetting preferred") for m in messages(superevent)) == 1


# --- freezing, fresh state vectors, the circular's event, slow brokers ----------------------


@pytest.mark.parametrize(("far", "lock"), [(1e-10, "SIGNIF_LOCKED"), (LESS_SIGNIFICANT_FAR, "LOW_SIGNIF_LOCKED")])
def test_without_a_clean_up_pass_the_first_alert_freezes_the_preferred_event(settings, outbox, deferred, far, lock):
    configure(settings, SECOND_PRELIMINARY=False)
    event = annotated_event(far=far)
    superevent = superevent_of(event)
    run_next(deferred, VET_TASK)
    assert len(reasons(superevent)) == 1 and deferred == []  # no clean-up pass will follow
    assert lock in superevent.label_names()
    louder = annotated_event(far=far, snr=15.0, pipeline="pycbc", gpstime=T0 + 0.1)
    assert superevent_of(louder) == superevent
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == event.pk


def test_the_clean_up_gates_on_the_fresh_state_vector_check(settings, tmp_path, outbox, deferred):
    # L1 is bad; a later, louder event seen by H1 and V1 does not use L1.
    glob = write_frames(tmp_path / "frames", detectors=("H1", "L1", "V1"),
                        cleared=[("L1", "GDS-CALIB_STATE_VECTOR", 0, T0 + 0.2, T0 + 0.4)])
    configure(settings, DETCHAR_FRAME_GLOB=glob)
    superevent = superevent_of(annotated_event(snr=9.0))
    run_next(deferred, VET_TASK)
    assert "DQV" in superevent.label_names() and reasons(superevent) == []

    louder = annotated_event(snr=15.0, pipeline="pycbc", gpstime=T0 + 0.1, instruments=("H1", "V1"))
    assert superevent_of(louder) == superevent
    run_next(deferred, CLEANUP_TASK)
    labels = superevent.label_names()
    assert "DQOK" in labels and "DQV" not in labels
    assert reasons(superevent) == ["preliminary-1"]
    assert json_notice(outbox, Notice.objects.get(superevent=superevent))["event"]["instruments"] == ["H1", "V1"]


def test_the_circular_describes_the_event_of_the_notice_even_if_the_preferred_event_changed(
        settings, outbox, monkeypatch):
    configure(settings, PRELIMINARY_ALERTS=False)
    first = annotated_event(snr=12.0)
    other = annotated_event(snr=8.0, pipeline="pycbc", gpstime=T0 + 0.1)
    superevent = superevent_of(first)
    assert superevent.preferred_event_id == first.pk and superevent_of(other) == superevent
    real_make_plots = orchestrator_alerts.make_plots

    def preferred_changes(superevent, copied):  # between the notice and the circular
        Superevent.objects.filter(pk=superevent.pk).update(preferred_event=other)
        superevent.preferred_event = other
        return real_make_plots(superevent, copied)

    monkeypatch.setattr(orchestrator_alerts, "make_plots", preferred_changes)
    configure(settings, PRELIMINARY_ALERTS=True)
    orchestrator.vet_superevent(superevent.pk)
    assert json_notice(outbox, Notice.objects.get(superevent=superevent))["event"]["pipeline"] == "gstlal"
    circular = superevent.files.get(name="preliminary-circular.txt").read().decode()
    assert "found by the GstLAL [1] and PyCBC Live [2] pipelines" in circular


def test_a_slow_broker_never_holds_up_the_circular_and_labels(settings, outbox, deferred, monkeypatch):
    network = []
    configure(settings, NOTICE_DESTINATIONS=settings.ORCHESTRATOR["NOTICE_DESTINATIONS"] +
              [fake_kafka(monkeypatch, network)])
    superevent = superevent_of(annotated_event())
    queued_deliveries = []
    others = workers.enqueue  # the deferred fixture's

    def enqueue(path, *args, delay_s=0.0):
        if workers.task_path(path) == delivery.DELIVER_TASK:
            queued_deliveries.append(args)
        else:
            others(path, *args, delay_s=delay_s)

    monkeypatch.setattr(workers, "enqueue", enqueue)
    run_next(deferred, VET_TASK)
    notice = Notice.objects.get(superevent=superevent)
    # The vetting task wrote the outbox and went on; Kafka is the queued task's.
    statuses = dict(NoticeDelivery.objects.filter(notice=notice).values_list("destination", "status").distinct())
    assert statuses == {"outbox": "sent", "kafka": "pending"} and network == []
    assert superevent.files.filter(name="preliminary-circular.txt").exists()
    assert {"GCN_PRELIM_SENT", "ADVREQ"} <= superevent.label_names()
    assert set(queued_deliveries) == {(notice.pk,)}
    delivery.deliver(notice.pk)
    assert sorted(format for _, _, format in network) == sorted(ALL_FORMATS)


def test_an_invalid_p_astro_newer_than_a_valid_one_is_not_what_the_superevent_gets(outbox, deferred):
    # The pipeline's valid p_astro (version 1), then a broken re-upload
    # (version 2) that validation never accepted (no p_astro tag).
    with transaction.atomic():
        event = annotated_event()
        add_file(event, f"{event.pipeline}.p_astro.json", b"{not json", tags=["public"], announce=False)
    run_all(deferred)
    event.refresh_from_db()
    superevent = superevent_of(event)
    copied = products.latest_files(superevent)
    p_astro = [f for f in copied if f.name == f"{event.pipeline}.p_astro.json"]
    assert len(p_astro) == 1
    assert json.loads(p_astro[0].read()) == P_ASTRO
    notice = json_notice(outbox, Notice.objects.get(superevent=superevent, reason="preliminary-1"))
    assert notice["event"]["classification"] == pytest.approx(P_ASTRO)


# --- a human verdict wins over the automation (issue 15) --------------------------


def test_advno_before_the_vetting_stops_every_automatic_preliminary(settings, outbox, deferred):
    event = annotated_event()
    superevent = superevent_of(event)
    add_label(superevent, "ADVNO")
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == []
    assert "No preliminary alert: an advocate rejected the candidate (ADVNO)" in messages(superevent)
    run_next(deferred, CLEANUP_TASK)
    assert reasons(superevent) == []
    assert "No second preliminary alert: an advocate rejected the candidate (ADVNO)" in messages(superevent)


def test_after_advok_the_cleanup_sends_no_second_preliminary(settings, outbox, deferred):
    event = annotated_event()
    superevent = superevent_of(event)
    run_next(deferred, VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    add_label(superevent, "ADVOK")
    run_next(deferred, CLEANUP_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    assert any(m.startswith("No second preliminary alert: an advocate confirmed the candidate (ADVOK)")
               for m in messages(superevent))


def test_gates_are_pure_and_a_verdict_comes_first(settings):
    from alerts.superevents import candidate_of

    event = make_event(far=1e-12)
    base = gates.Candidate(graceid="G1", offline=False, event=candidate_of(event, labels=()))
    policy = settings.ORCHESTRATOR
    assert gates.alert_kind(base, policy) == (gates.SIGNIFICANT, None)
    retracted = gates.Candidate(**{**base.__dict__, "retracted": True})
    assert gates.alert_kind(retracted, policy) == (None, "a Retraction notice was issued")
    advok = gates.Candidate(**{**base.__dict__, "superevent_labels": frozenset({"ADVOK"})})
    assert gates.alert_kind(advok, policy) == (gates.SIGNIFICANT, None)
    assert gates.alert_kind(advok, policy, cleanup=True)[0] is None
    vetoed = gates.Candidate(**{**base.__dict__, "superevent_labels": frozenset({"DQV", "ADVNO"})})
    assert "ADVNO" in gates.alert_kind(vetoed, policy)[1]


# --- the Vetting row: claims and the migration from log keys ------------------------


def test_of_two_claims_of_one_vetting_one_wins(settings, outbox, deferred):
    event = annotated_event()
    superevent = superevent_of(event)
    deferred.clear()
    row = vetting.row(superevent)
    # Both workers read the row as it is, then both try the conditional UPDATE.
    claimable = dict(pk=row.pk, attempt=row.attempt, state__in=["scheduled", "waiting", "failed"])
    now = timezone.now()
    first = Vetting.objects.filter(**claimable).update(state="running", attempt=row.attempt + 1, claimed_at=now)
    second = Vetting.objects.filter(**claimable).update(state="running", attempt=row.attempt + 1, claimed_at=now)
    assert (first, second) == (1, 0)
    # Through the orchestrator: a live claim keeps a second worker out.
    Vetting.objects.filter(pk=row.pk).update(state="scheduled", attempt=0, claimed_at=None)
    assert vetting.claim_vetting(superevent, event) == 1
    assert vetting.claim_vetting(superevent, event) is None
    stored = Vetting.objects.get(pk=row.pk)
    assert (stored.state, stored.attempt) == ("running", 1) and stored.claimed_at is not None


def test_the_migration_builds_vetting_rows_from_the_log_keys(settings):
    import importlib

    from django.apps import apps

    migration = importlib.import_module("alerts.migrations.0008_vetting")
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": False}
    done, failed, waiting = (superevent_of(make_event(gpstime=T0 + 100 * i)) for i in range(3))
    Vetting.objects.all().delete()
    for superevent, keys in ((done, ["scheduled", "vetting:1", "vetting-failed:1", "vetting:2", "vetted",
                                     "cleanup-scheduled", "cleanup"]),
                             (failed, ["scheduled", "vetting:1", "vetting-failed:1"]),
                             (waiting, ["scheduled", "waiting"])):
        for key in keys:
            Log.objects.create(superevent=superevent, message=key, external_key=f"orchestrator:{key}")
    migration.vetting_from_logs(apps, None)
    rows = {row.superevent_id: row for row in Vetting.objects.all()}
    assert (rows[done.pk].state, rows[done.pk].attempt, rows[done.pk].cleanup_done) == ("done", 2, True)
    assert rows[done.pk].finished_at is not None and rows[done.pk].cleanup_scheduled
    assert (rows[failed.pk].state, rows[failed.pk].attempt, rows[failed.pk].cleanup_done) == ("failed", 1, False)
    assert (rows[waiting.pk].state, rows[waiting.pk].attempt, rows[waiting.pk].scheduled) == ("waiting", 0, True)
