"""The orchestrator: from an uploaded event to a preliminary alert, or to a
logged reason why not. Tasks run inline, so every flow here runs to its end
inside the call that creates the event (delays are not waited for)."""
import base64
import json
from pathlib import Path

import pytest
from django.db import transaction
from lxml import etree

from alerts import orchestrator, products, workers
from alerts.models import Notice, StepRun, Superevent
from alerts.store import add_file, add_label
from tests.annotated import CBC_READY, EM_BRIGHT, P_ASTRO, TINY_PNG, annotated_event, tiny_skymap, write_frames
from tests.factories import T0, make_event

pytestmark = pytest.mark.django_db(transaction=True)

OUTBOX_EXTENSIONS = ("json", "avro", "xml")
VOEVENT_NS = {"voe": "http://www.ivoa.net/xml/VOEvent/v2.0"}
NOT_SIGNIFICANT_FAR = 1e-4  # above 2/day, below the superevent threshold of 1/hour
LESS_SIGNIFICANT_FAR = 1e-5  # below 2/day, 7 x FAR far above 1/(30 days)


@pytest.fixture(autouse=True)
def alerts_on(settings, isolated_orchestrator):
    configure(settings, PRELIMINARY_ALERTS=True)


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
        if path in (orchestrator.VET_TASK, orchestrator.CLEANUP_TASK):
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
    assert "trials factor 7 x FAR 0.0001 Hz = 0.0007 Hz is not below the significant threshold" in stops[0]
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


def test_hardware_injection_goes_out_as_test(settings, tmp_path, outbox):
    glob = write_frames(tmp_path / "frames", cleared=[("H1", "GDS-CALIB_STATE_VECTOR", 6, T0 - 0.5, T0 + 0.5)])
    configure(settings, DETCHAR_FRAME_GLOB=glob)
    superevent = superevent_of(annotated_event())
    assert {"DQOK", "INJ"} <= superevent.label_names()
    notice = Notice.objects.get(superevent=superevent)
    assert notice.role == "test"
    role, params = voevent_params(outbox, notice)
    assert role == "test" and params["HardwareInj"] == "1"


def test_mdc_event_goes_out_as_test(outbox):
    superevent = superevent_of(annotated_event(search="MDC"))
    assert superevent.superevent_id.startswith("MS")
    notice = Notice.objects.get(superevent=superevent)
    assert (notice.reason, notice.role) == ("preliminary-1", "test")
    assert voevent_params(outbox, notice)[0] == "test"


def test_early_warning_event_sends_an_earlywarning_alert_and_inline_there_is_no_clean_up(outbox):
    superevent = superevent_of(annotated_event(search="EarlyWarning"))
    assert "No clean-up pass: tasks run inline and cannot wait for late events" in messages(superevent)
    assert not {"SIGNIF_LOCKED", "LOW_SIGNIF_LOCKED"} & superevent.label_names()
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
    assert deferred == [(orchestrator.VET_TASK, (superevent.pk, 0), 5.0)]
    for _ in range(3):  # three looks, one second apart
        run_next(deferred, orchestrator.VET_TASK)
        assert deferred[0][2] == 1.0 and reasons(superevent) == []
    run_next(deferred, orchestrator.VET_TASK)  # the maximum wait is over: go
    assert reasons(superevent) == ["preliminary-1"]
    log = messages(superevent)
    assert f"Waiting up to 3 s for the annotations of {event.graceid} (missing: EMBRIGHT_READY, PASTRO_READY)" in log
    assert (f"Annotations of {event.graceid} incomplete after waiting 3 s (missing: EMBRIGHT_READY, "
            "PASTRO_READY); going on with the products that exist") in log
    notice = json_notice(outbox, Notice.objects.get(superevent=superevent))
    assert notice["event"]["classification"] == {} and notice["event"]["properties"] == {}
    assert base64.b64decode(notice["event"]["skymap"]) == tiny_skymap()
    assert deferred[0][0] == orchestrator.CLEANUP_TASK
    assert deferred[0][2] == settings.ORCHESTRATOR["PRELIMINARY_CLEANUP_DELAY_S"]


def test_annotations_arriving_during_the_wait_are_used(settings, outbox, deferred):
    configure(settings, ANNOTATION_MAX_WAIT_S=60.0, ANNOTATION_POLL_S=1.0)
    event = annotated_event(labels=("SKYMAP_READY",), products=("skymap",))
    superevent = superevent_of(event)
    run_next(deferred, orchestrator.VET_TASK)
    assert reasons(superevent) == []
    add_file(event, "em_bright.json", json.dumps(EM_BRIGHT).encode(), tags=["em_bright", "public"], announce=False)
    add_file(event, "gstlal.p_astro.json", json.dumps(P_ASTRO).encode(), tags=["p_astro", "public"], announce=False)
    for label in CBC_READY[1:]:
        add_label(event, label)
    # The label that completes the event wakes the vetting without delay.
    assert deferred[-1] == (orchestrator.VET_TASK, (superevent.pk, 0), 0.0)
    deferred[:] = deferred[-1:]
    run_next(deferred, orchestrator.VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    assert json_notice(outbox, Notice.objects.get(superevent=superevent))["event"]["classification"] == P_ASTRO
    assert not any("incomplete" in m for m in messages(superevent))


def test_second_preliminary_uses_the_reselected_preferred_event(outbox, deferred):
    first = annotated_event(snr=9.0)
    superevent = superevent_of(first)
    run_next(deferred, orchestrator.VET_TASK)
    assert reasons(superevent) == ["preliminary-1"]
    # A louder event arrives before the clean-up; the clean-up picks it.
    louder = annotated_event(snr=15.0, pipeline="pycbc", gpstime=T0 + 0.1)
    assert superevent_of(louder) == superevent
    run_next(deferred, orchestrator.CLEANUP_TASK)
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
    orchestrator.cleanup_superevent(superevent.pk, orchestrator.SIGNIFICANT, event.pk)
    run_all(deferred)
    # Even the preliminary step itself, run again, sends and copies nothing new.
    notice = orchestrator.send_preliminary(superevent, event, orchestrator.SIGNIFICANT, 1)
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
    assert [(t.func, t.args) for t in tasks] == [(orchestrator.VET_TASK, [superevent.pk, 1]),
                                                 (orchestrator.VET_TASK, [superevent.pk, 0])]
    assert [round((t.due - start).total_seconds()) for t in tasks] == [2, 15]
    assert reasons(superevent) == []
