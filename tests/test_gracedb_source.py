"""GraceDB as the source: a second instance of this server plays the remote
GraceDB; IGWN Alert messages on librdkafka's mock cluster announce an event
and its psd.xml.gz; the orchestrator downloads both with ligo-gracedb and
annotates the event as if it had been uploaded here."""
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from django.db import connection
from ligo.gracedb.rest import GraceDb

from alerts import gracedb_source, gracedb_writeback, listen
from alerts.models import Event, File, Log, Notice, WriteBack
from tests.test_ingest import log_message, message
from tests.test_listen import broker, conf_for, publish  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "remote-pipeline-password"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def remote_database_url(tmp_path):
    """A database of its own for the remote instance."""
    if connection.vendor != "postgresql":
        return f"sqlite:///{tmp_path / 'remote.sqlite3'}"
    params = connection.settings_dict
    name = f"orch_remote_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    host, port, user = params.get("HOST") or "127.0.0.1", params.get("PORT") or 5432, params.get("USER") or "postgres"
    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"postgres://{user}@{host}:{port}/{name}", (host, port, user, name)


@pytest.fixture
def remote_gracedb(tmp_path, worker_env):
    """A second instance of this server on its own database: (api url, user, password)."""
    made = remote_database_url(tmp_path)
    url, database = (made, None) if isinstance(made, str) else made
    env = {**worker_env, "DATABASE_URL": url, "MEDIA_ROOT": str(tmp_path / "remote-media"),
           "ORCHESTRATOR_PRELIMINARY_ALERTS": "0", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    env.pop("REDIS_URL", None)  # its queued tasks stay in its own database; no worker runs them
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([*manage, "shell", "-c",
                    "from django.contrib.auth.models import Group, User;"
                    f"u = User.objects.create_user('gstlal-robot', password='{PASSWORD}');"
                    "u.groups.add(Group.objects.get_or_create(name='pipelines')[0],"
                    "             Group.objects.get_or_create(name='advocates')[0])"],
                   cwd=ROOT, env=env, check=True)
    port = free_port()
    server = subprocess.Popen([*manage, "runserver", "--noreload", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/gracedb/api/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(api, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield api, "gstlal-robot", PASSWORD
    finally:
        server.terminate()
        server.wait(10)
        if database:
            host, port_, user, name = database
            with psycopg.connect(host=host, port=port_, user=user, dbname="postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def no_credential_lookup(monkeypatch):
    monkeypatch.setenv("IGWN_AUTH_UTILS_FIND_SCITOKEN", "0")
    monkeypatch.setenv("IGWN_AUTH_UTILS_FIND_X509", "0")


def test_an_event_announced_by_messages_only_is_fetched_localized_and_alerted(
        remote_gracedb, broker, mock_events, settings, no_credential_lookup):  # noqa: F811
    api, user, password = remote_gracedb
    mock = min(mock_events, key=lambda m: m.far)  # significant
    pipeline = GraceDb(service_url=api, force_noauth=True, retries=0)
    pipeline.auth = (user, password)
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
