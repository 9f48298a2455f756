"""The GraceDB-compatible surface driven by the real ``ligo-gracedb`` client
(and its ``gracedb`` command line) against a live test server.

How the client authenticates here: the released client's ``cred`` argument
is for X.509 certificates only. With SciToken lookup off
(``IGWN_AUTH_UTILS_FIND_SCITOKEN=0``; ``IGWN_AUTH_UTILS_FIND_X509=0`` skips
the certificate search) it sends HTTP basic credentials: those of a netrc
file for the server's host, read at every request (the command line test
uses that), else the session's ``auth`` (a requests.Session attribute), which
``connect`` sets so that several users can talk to one host from one process.
"""
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from ligo.gracedb.exceptions import HTTPError
from ligo.gracedb.rest import GraceDb
from rest_framework.authtoken.models import Token

from alerts import vocabulary
from alerts.events import create_event
from alerts.models import Event, File, Label, Rejection, Superevent
from tests import gracedb_reference as ref
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct-horse-battery-staple"
OTHER_HOST_CRED = ("nobody", "nothing")


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Every request checks a password; the default hasher costs ~0.3 s."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def users(db):
    made = {}
    for name, group in (("gstlal-robot", vocabulary.PIPELINES_GROUP), ("advocate", vocabulary.ADVOCATES_GROUP),
                        ("reader", None)):
        user = get_user_model().objects.create_user(name, password=PASSWORD)
        if group:
            user.groups.add(Group.objects.get_or_create(name=group)[0])
        made[name] = user
    return made


@pytest.fixture
def api_url(live_server):
    return live_server.url + "/gracedb/api/"


def netrc_env(tmp_path, url, user, password):
    """The environment that makes ligo-gracedb send basic credentials."""
    netrc = tmp_path / f"netrc-{user}"
    host = url.split("//", 1)[1].split(":", 1)[0].split("/", 1)[0]
    netrc.write_text(f"machine {host} login {user} password {password}\n")
    netrc.chmod(0o600)
    return {"NETRC": str(netrc), "IGWN_AUTH_UTILS_FIND_SCITOKEN": "0", "IGWN_AUTH_UTILS_FIND_X509": "0"}


@pytest.fixture
def connect(api_url, tmp_path, monkeypatch, users):
    """``connect(user)``: the real client, authenticated as ``user``."""
    empty_netrc = tmp_path / "netrc-empty"
    empty_netrc.write_text("")
    empty_netrc.chmod(0o600)
    for key, value in {"NETRC": str(empty_netrc), "IGWN_AUTH_UTILS_FIND_SCITOKEN": "0",
                       "IGWN_AUTH_UTILS_FIND_X509": "0"}.items():
        monkeypatch.setenv(key, value)

    def connect(user, password=PASSWORD):
        client = GraceDb(service_url=api_url, retries=0)
        client.auth = (user, password)
        return client
    return connect


def assert_shape(document, reference):
    assert ref.mismatches(document, reference) == []


def expect_http_error(status, call, *args, **kwargs):
    with pytest.raises(HTTPError) as caught:
        call(*args, **kwargs)
    response = caught.value.response
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


# --- the API root ------------------------------------------------------------------

def test_the_root_document_is_what_the_client_reads(connect, api_url):
    client = connect("reader")
    assert_shape(client.service_info, ref.ROOT)
    assert ref.ROOT_LINKS <= set(client.links)
    assert ref.ROOT_TEMPLATES <= set(client.templates)
    assert client.links["events"] == api_url + "events/"
    assert set(client.groups) == {"CBC", "Burst"}
    assert {"gstlal", "pycbc", "MBTA", "spiir", "CWB", "oLIB", "MLy"} <= set(client.pipelines)
    assert "AllSky" in client.searches and "EarlyWarning" in client.searches
    assert {"ADVOK", "ADVNO", "DQV", "INJ", "SKYMAP_READY"} <= set(client.allowed_labels)
    assert set(client.superevent_categories.values()) == ref.SUPEREVENT_CATEGORIES
    assert "ADV" in client.signoff_types and "H1" in client.instruments
    assert client.ping().status_code == 200


# --- create, annotate, decide: the whole path with BAYESTAR -------------------------

def test_a_pipeline_uploads_an_event_and_its_psd_and_the_sky_map_comes_back(connect, mock_events, users):
    """Create from coinc.xml, psd.xml.gz through write_log, the superevent,
    BAYESTAR's sky map downloadable, labels, an ADV signoff."""
    mock = mock_events[0]
    pipeline, advocate = connect("gstlal-robot"), connect("advocate")

    created = pipeline.create_event("CBC", mock.pipeline, "coinc.xml", filecontents=mock.coinc_xml,
                                    search="AllSky")
    assert created.status_code == 201
    event = created.json()
    assert_shape(event, ref.EVENT)
    assert ref.EVENT_LINKS <= set(event["links"])
    assert_shape(event["extra_attributes"]["CoincInspiral"], ref.COINC_INSPIRAL)
    assert [assert_shape(single, ref.SINGLE_INSPIRAL) for single in event["extra_attributes"]["SingleInspiral"]]
    graceid = event["graceid"]
    stored = Event.objects.get(graceid=graceid)
    assert (event["gpstime"], event["far"], event["pipeline"]) == (stored.gpstime, stored.far, "gstlal")
    assert event["instruments"] == stored.instruments
    superevent_id = event["superevent"]
    assert superevent_id == stored.superevent.superevent_id

    superevent = pipeline.superevent(superevent_id).json()
    assert_shape(superevent, ref.SUPEREVENT)
    assert ref.SUPEREVENT_LINKS <= set(superevent["links"])
    assert superevent["gw_events"] == [graceid] and superevent["preferred_event"] == graceid
    assert superevent["category"] == "Production"

    logged = pipeline.write_log(graceid, "PSD", filename="psd.xml.gz", filecontents=mock.psd_xml_gz,
                                tag_name=["psd"])
    assert logged.status_code == 201
    log = logged.json()
    assert_shape(log, ref.LOG)
    assert (log["filename"], log["file_version"], log["comment"], log["tag_names"]) == ("psd.xml.gz", 0, "PSD",
                                                                                         ["psd"])

    # The upload triggered the same annotations as a native one: BAYESTAR ran.
    skymap = File.objects.get(event=stored, name=vocabulary.BAYESTAR_MULTIORDER)
    listing = pipeline.files(graceid).json()
    assert {"coinc.xml", "coinc.xml,0", "psd.xml.gz,0", vocabulary.BAYESTAR_MULTIORDER,
            vocabulary.BAYESTAR_MULTIORDER + ",0"} <= set(listing)
    downloaded = pipeline.files(graceid, vocabulary.BAYESTAR_MULTIORDER).read()
    assert downloaded == skymap.read() and downloaded.startswith(b"SIMPLE")
    assert pipeline.files(graceid, "psd.xml.gz,0").read() == mock.psd_xml_gz
    assert "SKYMAP_READY" in pipeline.event(graceid).json()["labels"]

    logs = pipeline.logs(graceid).json()
    assert_shape(logs, ref.EVENT_LOG_LIST)
    [assert_shape(entry, ref.LOG) for entry in logs["log"]]
    assert [entry["N"] for entry in logs["log"]] == list(range(1, len(logs["log"]) + 1))
    assert pipeline.logs(graceid, log["N"]).json()["comment"] == "PSD"
    assert pipeline.tags(graceid, log["N"]).json() == {"tags": [{"name": "psd", "displayName": "psd"}]}

    # Labels, written by an advocate and read back.
    assert advocate.write_label(superevent_id, "DQOK").status_code == 201
    assert advocate.write_label(graceid, "INJ").status_code == 201
    labels = advocate.labels(superevent_id).json()
    assert_shape(labels, ref.LABEL_LIST)
    assert_shape(labels["labels"][0], ref.LABEL)
    assert "DQOK" in {label["name"] for label in labels["labels"]}
    assert advocate.labels(superevent_id, "DQOK").json()["creator"] == "advocate"
    assert "INJ" in {label["name"] for label in advocate.labels(graceid).json()["labels"]}
    assert advocate.remove_label(graceid, "INJ").status_code == 204
    assert "INJ" not in pipeline.event(graceid).json()["labels"]

    # The advocate's signoff is the ADVOK verdict.
    signed = advocate.create_signoff(superevent_id, "ADV", "OK", "looks astrophysical")
    assert signed.status_code == 201
    assert_shape(signed.json(), ref.SIGNOFF)
    assert Label.objects.filter(superevent__superevent_id=superevent_id, name=vocabulary.ADVOK).exists()
    signoffs = advocate.signoffs(superevent_id).json()
    assert_shape(signoffs, ref.SIGNOFF_LIST)
    assert [(s["signoff_type"], s["status"], s["comment"]) for s in signoffs["signoffs"]] == [
        ("ADV", "OK", "looks astrophysical")]
    assert vocabulary.ADVOK in pipeline.superevent(superevent_id).json()["labels"]
    voevents = pipeline.voevents(superevent_id).json()
    assert_shape(voevents, ref.VOEVENT_LIST)
    [assert_shape(voevent, ref.VOEVENT) for voevent in voevents["voevents"]]
