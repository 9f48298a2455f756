"""GraceDB as the source: a second instance of this server plays the remote
GraceDB; IGWN Alert messages on librdkafka's mock cluster announce an event
and its psd.xml.gz; the orchestrator downloads both with ligo-gracedb and
annotates the event as if it had been uploaded here."""
import uuid

import pytest

from alerts import gracedb_source, gracedb_writeback, listen
from alerts.models import Event, File, Log, Notice, WriteBack
from alerts.science.coinc import parse_coinc
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.test_ingest import log_message, message
from tests.gracedb_remote import pipeline_client, remote_gracedb_server
from tests.kafka import publish
from tests.test_listen import broker, conf_for  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def remote_gracedb(tmp_path, worker_env):
    """A second instance of this server on its own database: (api url, user, password)."""
    with remote_gracedb_server(worker_env, tmp_path) as remote:
        yield remote


@pytest.fixture
def no_credential_lookup(monkeypatch):
    monkeypatch.setenv("IGWN_AUTH_UTILS_FIND_SCITOKEN", "0")
    monkeypatch.setenv("IGWN_AUTH_UTILS_FIND_X509", "0")


def test_an_event_announced_by_messages_only_is_fetched_localized_and_alerted(
        remote_gracedb, broker, mock_events, settings, no_credential_lookup):  # noqa: F811
    api, user, password = remote_gracedb
    mock = min(mock_events, key=lambda m: m.far)  # significant
    pipeline = pipeline_client(api, user, password)
    remote_event = pipeline.create_event("CBC", mock.pipeline, "coinc.xml", filecontents=mock.coinc_xml,
                                         search="AllSky").json()
    graceid = remote_event["graceid"]
    pipeline.write_log(graceid, "PSD", filename="psd.xml.gz", filecontents=mock.psd_xml_gz, tag_name=["psd"])

    settings.GRACEDB = {**settings.GRACEDB, "url": api, "username": user, "password": password,
                        "write_back": True}
    # p_astro at arrival (no ranking_data.xml.gz is announced here).
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": True, "PASTRO_FROM_RANKING_DATA": []}
    group = f"gracedb-{uuid.uuid4().hex[:6]}"
    kind = f"cbc_{mock.pipeline}"
    publish(broker, f"{group}.{kind}", [
        message(graceid, "new", data=remote_event, obj=remote_event),
        log_message(graceid, 2, "PSD", filename="psd.xml.gz", file_version=0, tags=["psd"], obj=remote_event),
    ])
    progress = listen.Listener(conf_for(broker, group, kinds=(kind,))).run(max_messages=2)
    assert (progress.applied, progress.rejected) == (2, 0)

    event = Event.objects.select_related("superevent").get(graceid=graceid)
    assert (event.gpstime, event.far) == (remote_event["gpstime"], remote_event["far"])
    assert File.objects.filter(event=event, name="psd.xml.gz").exists(), list(Log.objects.filter(event=event).values_list("message", flat=True))
    coinc, psd = (File.objects.get(event=event, name=name) for name in ("coinc.xml", "psd.xml.gz"))
    assert coinc.read() == mock.coinc_xml and psd.read() == mock.psd_xml_gz
    assert File.objects.filter(event=event, name="bayestar.multiorder.fits").exists()
    assert "SKYMAP_READY" in event.label_names()
    assert event.superevent is not None
    assert Notice.objects.filter(superevent=event.superevent, alert_type="PRELIMINARY").count() == 1

    # Written back: the sky map and labels made here are on the remote event,
    # each once; what came from GraceDB (coinc.xml, psd.xml.gz) is not sent back.
    assert not WriteBack.objects.exclude(state="done").exists(), list(WriteBack.objects.values_list("key", "last_error"))
    assert WriteBack.objects.filter(key__startswith="file:").exists(), list(WriteBack.objects.values_list("key", "state"))
    remote_files = set(pipeline.files(graceid).json())
    assert "bayestar.multiorder.fits,0" in remote_files, [(l.get("comment"), l.get("filename")) for l in pipeline.logs(graceid).json()["log"]]
    assert "bayestar.multiorder.fits,1" not in remote_files
    assert "coinc.xml,1" not in remote_files and "psd.xml.gz,1" not in remote_files
    remote_labels = {label["name"] for label in pipeline.labels(graceid).json()["labels"]}
    assert {"SKYMAP_READY", "EMBRIGHT_READY", "PASTRO_READY"} <= remote_labels

    # A task that died after the remote write but before recording it:
    # run again, it finds its write in the remote log and writes nothing.
    skymap = File.objects.get(event=event, name="bayestar.multiorder.fits")
    WriteBack.objects.filter(key=f"file:{skymap.pk}").update(state="pending", attempts=1)
    gracedb_writeback.write_back(f"file:{skymap.pk}")
    assert WriteBack.objects.get(key=f"file:{skymap.pk}").state == "done"
    assert "bayestar.multiorder.fits,1" not in set(pipeline.files(graceid).json())


def test_a_download_that_fails_for_a_while_is_retried_and_a_refusal_is_logged(monkeypatch, mock_events, settings):
    settings.GRACEDB = {**settings.GRACEDB, "url": "http://gracedb.invalid/api/",
                        "retry": {"initial_s": 0.0, "factor": 2.0, "max_attempts": 4}}
    mock = mock_events[0]
    from alerts.events import create_event

    event = create_event(group="CBC", pipeline="gstlal", attributes={
        "gpstime": mock.gpstime, "far": 1e-3, "instruments": ["H1", "L1"]})
    answers = {"coinc.xml": [gracedb_source.TransientError("GraceDB answered 503")] * 2 + [mock.coinc_xml],
               "psd.xml.gz": [mock.psd_xml_gz]}

    def download(graceid, filename):
        answer = answers[filename].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(gracedb_source, "download", download)
    monkeypatch.setattr("alerts.annotations.localize_in_turn", lambda *args: None)
    gracedb_source.fetch_announced_file(event.pk, "psd.xml.gz", ["psd"])
    assert {file.name for file in File.objects.filter(event=event)} >= {"coinc.xml", "psd.xml.gz"}
    retries = Log.objects.filter(event=event, message__contains="trying again").count()
    assert retries == 2

    # Downloading the same again (a repeated task) stores no new version.
    answers.update({"psd.xml.gz": [mock.psd_xml_gz]})
    gracedb_source.fetch_announced_file(event.pk, "psd.xml.gz", ["psd"])
    assert File.objects.filter(event=event, name="psd.xml.gz").count() == 1

    def refused(graceid, filename):
        raise RuntimeError("404 Not Found")

    monkeypatch.setattr(gracedb_source, "download", refused)
    gracedb_source.fetch_announced_file(event.pk, "ranking_data.xml.gz")
    assert Log.objects.filter(event=event, message__startswith="Could not download ranking_data.xml.gz").count() == 1


@pytest.mark.usefixtures("superevent_manager_only")
def test_an_announced_file_is_under_way_until_its_download_ends(monkeypatch, mock_events, settings):
    """From the message that announces a psd.xml.gz until its download
    stores it or gives up, the event's sky map is on its way, so an alert
    waits for it (bounded by the annotation wait); a dead GraceDB ends that."""
    from alerts import annotations, ingest
    from alerts.models import StepRun
    from tests.test_ingest import new_event

    settings.GRACEDB = {**settings.GRACEDB, "url": "http://gracedb.invalid/api/",
                        "retry": {"initial_s": 0.0, "factor": 2.0, "max_attempts": 2}}
    mock = min(mock_events, key=lambda m: m.far)
    announced = new_event("G700001", mock)
    for item in [announced, log_message("G700001", 2, "PSD", filename="psd.xml.gz", file_version=0, tags=["psd"],
                                        obj=announced["object"])]:
        ingest.apply_message(item)
    event = Event.objects.get(graceid="G700001")
    download_run = StepRun.objects.get(event=event, step="gracedb_download")
    assert (download_run.subject, download_run.status) == ("psd.xml.gz", StepRun.Status.RUNNING)
    assert "SKYMAP_READY" in annotations.expected_annotations(event)

    def dead(graceid, filename):
        raise gracedb_source.TransientError("GraceDB answered 503")

    monkeypatch.setattr(gracedb_source, "download", dead)
    gracedb_source.fetch_announced_file(event.pk, "psd.xml.gz", ["psd"], 1, download_run.pk)
    download_run.refresh_from_db()
    assert (download_run.status, download_run.attempt) == (StepRun.Status.RUNNING, 1)  # a retry is due
    assert "SKYMAP_READY" in annotations.expected_annotations(event)
    gracedb_source.fetch_announced_file(event.pk, "psd.xml.gz", ["psd"], 2, download_run.pk)
    download_run.refresh_from_db()
    assert download_run.status == StepRun.Status.FAILED and "giving up" in download_run.error
    assert "SKYMAP_READY" not in annotations.expected_annotations(event)

    # A download that works: stored as an upload, and the coinc.xml fetched
    # first gives the event what its upload would have read from it.
    assert "f_low" not in event.extra_attributes  # GraceDB's event object does not carry it
    files = {"coinc.xml": mock.coinc_xml, "psd.xml.gz": mock.psd_xml_gz}
    monkeypatch.setattr(gracedb_source, "download", lambda graceid, filename: files[filename])
    run = gracedb_source.announce(event, "psd.xml.gz", ["psd"])
    gracedb_source.fetch_announced_file(event.pk, "psd.xml.gz", ["psd"], 1, run.pk)
    run.refresh_from_db()
    assert run.status == StepRun.Status.SUCCEEDED
    assert {file.name for file in File.objects.filter(event=event)} == {"coinc.xml", "psd.xml.gz"}
    event.refresh_from_db()
    parsed = parse_coinc(mock.coinc_xml)
    assert (event.extra_attributes["f_low"], event.extra_attributes["has_psd"]) == (parsed.f_low, parsed.has_psd)
    assert event.extra_attributes["gps_nanoseconds"] == parsed.gps_nanoseconds
    assert "SingleInspiral" in event.extra_attributes  # what the message said is kept


def test_a_gracedb_that_takes_the_connection_and_never_answers_is_a_timeout_not_a_hang(settings,
                                                                                       no_credential_lookup):
    """The download gives up after GRACEDB["timeout_s"] as a transient error
    (retried with backoff), instead of holding its worker for ever."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the backlog; nothing ever answers
    try:
        settings.GRACEDB = {**settings.GRACEDB, "url": f"http://127.0.0.1:{silent.getsockname()[1]}/api/",
                            "timeout_s": 0.5}
        started = time.monotonic()
        with pytest.raises(gracedb_source.TransientError, match="Timeout"):
            gracedb_source.download("G1", "psd.xml.gz")
        assert time.monotonic() - started < 10
    finally:
        silent.close()
