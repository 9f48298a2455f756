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
from django.db import connection
from ligo.gracedb.exceptions import HTTPError
from ligo.gracedb.rest import GraceDb
from rest_framework.authtoken.models import Token

from alerts import vocabulary
from alerts.events import create_event
from alerts.models import AuditRecord, Event, File, Label, Rejection, Superevent
from tests import gracedb_reference as ref
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Every request checks a password; the default hasher costs ~0.3 s."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def live_server_connections_closed(monkeypatch):
    """The live server's request threads close their database connections
    after each request (no persistent connections), so none is left open
    on the test database when it is dropped."""
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)


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

def test_a_pipeline_uploads_an_event_and_its_psd_and_the_sky_map_comes_back(connect, mock_events, users, settings):
    """Create from coinc.xml, psd.xml.gz through write_log, the superevent,
    BAYESTAR's sky map downloadable from the event and (with the preliminary
    alert) from the superevent, its VOEvent, labels, an ADV signoff."""
    # Preliminary alerts on; p_astro at arrival (no ranking_data.xml.gz here).
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": True, "PASTRO_FROM_RANKING_DATA": []}
    mock = min(mock_events, key=lambda m: m.far)  # significant: a preliminary alert goes out
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
    # The preliminary alert went out at upload, before the PSD came: nothing
    # had announced it, so nothing waited for it. It copied what existed then.
    superevent_files = pipeline.files(superevent_id).json()
    assert vocabulary.EM_BRIGHT_FILENAME in superevent_files
    assert pipeline.files(superevent_id, vocabulary.EM_BRIGHT_FILENAME).read() == \
        File.objects.filter(superevent=stored.superevent, name=vocabulary.EM_BRIGHT_FILENAME).get().read()
    voevents = pipeline.voevents(superevent_id).json()
    assert_shape(voevents, ref.VOEVENT_LIST)
    assert [voevent["voevent_type"] for voevent in voevents["voevents"]] == ["PR"]
    assert_shape(voevents["voevents"][0], ref.VOEVENT)
    assert voevents["voevents"][0]["ivorn"].startswith("ivo://")

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


def test_an_adv_no_signoff_is_the_advno_verdict(connect, stored_events):
    superevent_id = stored_events[0].superevent.superevent_id
    signed = connect("advocate").create_signoff(superevent_id, "ADV", "NO", "glitch")
    assert signed.status_code == 201 and signed.json()["status"] == "NO"
    assert set(Label.objects.filter(superevent__superevent_id=superevent_id).values_list("name", flat=True)) \
        >= {vocabulary.ADVNO}
    assert connect("reader").signoffs(superevent_id, "ADV").json()["comment"] == "glitch"
    assert not Label.objects.filter(name=vocabulary.ADVOK).exists()
    # Through the decision service, which records who decided and by which way in.
    assert AuditRecord.objects.filter(username="advocate", via="gracedb", outcome="done").exists()


# --- queries and paging ------------------------------------------------------------

@pytest.fixture
def stored_events(mock_events, superevent_manager_only):
    """The four mock events, uploaded natively (the manager groups them)."""
    events = [create_event(group="CBC", pipeline=m.pipeline, search="AllSky", coinc=m.coinc_xml)
              for m in mock_events]
    create_event(group="Burst", pipeline="cwb", search="AllSky",
                 attributes={"gpstime": mock_events[0].gpstime + 0.01, "far": 1e-9, "instruments": "H1,L1"})
    return [Event.objects.get(pk=event.pk) for event in events]


def graceids(iterator):
    return sorted(item["graceid"] for item in iterator)


def test_queries_return_exactly_the_expected_events(connect, stored_events):
    client = connect("reader")
    by_time = sorted(stored_events, key=lambda e: e.gpstime)
    first, second = by_time[0], by_time[1]
    burst = Event.objects.get(group="Burst")
    window = f"gpstime: {first.gpstime - 1} .. {second.gpstime + 1}"
    assert graceids(client.events(window)) == sorted([first.graceid, second.graceid, burst.graceid])
    assert graceids(client.events(f"{window} group: CBC")) == sorted([first.graceid, second.graceid])
    assert graceids(client.events(f"{window} Burst")) == [burst.graceid]
    assert graceids(client.events("pipeline: CWB")) == [burst.graceid]
    threshold = sorted(e.far for e in stored_events)[1]
    assert graceids(client.events(f"far < {threshold}")) == sorted(
        e.graceid for e in Event.objects.filter(far__lt=threshold))
    assert graceids(client.events("far < 1e-8")) == sorted(e.graceid for e in Event.objects.filter(far__lt=1e-8))
    assert graceids(client.events(f"far <= {threshold} CBC search: AllSky")) == sorted(
        e.graceid for e in stored_events if e.far <= threshold)
    assert client.num_events(f"far < {threshold} CBC") == 1

    create_label = Label.objects.create(event=second, name="INJ")
    assert graceids(client.events("label: INJ")) == [create_label.event.graceid]
    assert graceids(client.events(f"{second.graceid}")) == [second.graceid]

    superevents = list(client.superevents(f"t_0: {first.gpstime - 1} .. {first.gpstime + 1}"))
    assert [s["superevent_id"] for s in superevents] == [first.superevent.superevent_id]
    assert sorted(superevents[0]["gw_events"]) == sorted([first.graceid, burst.graceid])
    everything = {s.superevent_id for s in Superevent.objects.all()}
    assert {s["superevent_id"] for s in client.superevents("category: Production")} == everything
    assert list(client.superevents("category: MDC")) == []
    assert {s["superevent_id"] for s in client.superevents("pipeline: cwb")} == {first.superevent.superevent_id}


def test_paging_follows_the_links_as_the_client_does(connect, stored_events, api_url):
    client = connect("reader")
    everything = sorted(e.graceid for e in Event.objects.all())
    assert graceids(client.events("", count=2)) == everything  # three pages, through links.next
    first_page = client.get(api_url + "events/?count=2").json()
    assert_shape(first_page, ref.EVENT_PAGE)
    assert (first_page["numRows"], len(first_page["events"]), first_page["start"]) == (5, 2, 0)
    assert "start=4" in first_page["links"]["last"] and "start=2" in first_page["links"]["next"]
    last_page = client.get(first_page["links"]["last"]).json()
    assert len(last_page["events"]) == 1 and "next" not in last_page["links"]
    superevent_page = client.get(api_url + "superevents/?count=1").json()
    assert_shape(superevent_page, ref.SUPEREVENT_PAGE)
    assert superevent_page["numRows"] == Superevent.objects.count()
    assert len(list(client.superevents("", count=1))) == Superevent.objects.count()


@pytest.mark.parametrize("term", ["submitter: albert", "created: 2024-01-01 .. 2024-01-02", "snr > 5",
                                  "pipeline: nosuch", "category: Exotic", "t_end: 1 .. 2", "is_gw: true",
                                  "gpstime: soon"])
def test_an_unsupported_query_term_answers_400_naming_it(connect, stored_events, term):
    client = connect("reader")
    error = expect_http_error(400, lambda: list(client.events(term)))
    assert term.split(":")[0].split(" ")[0] in error


# --- Burst uploads ------------------------------------------------------------------

CWB_TRIGGER = b"""# cWB trigger
time: 1400000123.500 1400000123.507
ifo: H1 L1
far: 2.5e-09
rho: 7.1 6.9
duration: 0.12
frequency: 180.5
bandwidth: 64
"""


@pytest.mark.parametrize("pipeline, filename, content, expected", [
    ("CWB", "trigger.txt", CWB_TRIGGER, (1400000123.5, 2.5e-9, "H1,L1", 7.1)),
    ("oLIB", "olib.json", json.dumps({"gpstime": 1400000223.25, "FAR": 3e-8, "instruments": ["L1", "H1", "V1"],
                                      "duration": 0.05, "hrss": 1e-22}).encode(),
     (1400000223.25, 3e-8, "H1,L1,V1", None)),
])
def test_burst_pipelines_upload_their_own_formats(connect, superevent_manager_only, pipeline, filename, content,
                                                  expected):
    client = connect("gstlal-robot")
    event = client.create_event("Burst", pipeline, filename, filecontents=content, search="AllSky").json()
    assert_shape(event, ref.EVENT)
    stored = Event.objects.get(graceid=event["graceid"])
    assert (stored.gpstime, stored.far, stored.instruments, stored.snr) == expected
    assert stored.group == "Burst" and stored.pipeline == pipeline.lower()
    assert stored.extra_attributes["duration"] in (0.12, 0.05)
    assert client.files(event["graceid"], filename).read() == content
    assert event["superevent"] == stored.superevent.superevent_id


# --- decisions: preferred event, refusals --------------------------------------------

def test_an_advocate_changes_the_preferred_event(connect, mock_events, superevent_manager_only):
    source = min(mock_events, key=lambda m: m.far)
    first = create_event(group="CBC", pipeline="gstlal", coinc=source.coinc_xml)
    second = create_event(group="CBC", pipeline="pycbc", coinc=source.coinc_xml)
    superevent = Superevent.objects.get(pk=Event.objects.get(pk=first.pk).superevent_id)
    assert {e.pk for e in superevent.events.all()} == {first.pk, second.pk}
    other = second if superevent.preferred_event_id == first.pk else first

    expect_http_error(403, connect("reader").update_superevent, superevent.superevent_id,
                      preferred_event=other.graceid)
    answer = connect("advocate").update_superevent(superevent.superevent_id, preferred_event=other.graceid)
    assert answer.status_code == 200 and answer.json()["preferred_event"] == other.graceid
    assert Superevent.objects.get(pk=superevent.pk).preferred_event_id == other.pk
    error = expect_http_error(501, connect("advocate").update_superevent, superevent.superevent_id, t_0=12.0)
    assert "t_0" in error


# --- errors ------------------------------------------------------------------------------

def test_errors_are_graceDB_status_codes_with_a_json_reason(connect, mock_events, superevent_manager_only,
                                                             api_url):
    pipeline, reader, advocate = connect("gstlal-robot"), connect("reader"), connect("advocate")
    assert "G999999" in expect_http_error(404, pipeline.event, "G999999")
    assert "S991231zz" in expect_http_error(404, pipeline.superevent, "S991231zz")

    error = expect_http_error(400, pipeline.create_event, "CBC", "gstlal", "coinc.xml",
                              filecontents=b"<LIGO_LW>not a coinc</LIGO_LW>")
    assert error.startswith("coinc.xml: ")
    assert Rejection.objects.filter(source="gracedb_api").exists()
    assert not Event.objects.exists()
    error = expect_http_error(400, pipeline.create_event, "Burst", "CWB", "trigger.txt",
                              filecontents=b"nothing useful")
    assert "trigger.txt" in error

    # The client checks the group itself; a raw request meets the server's check.
    error = expect_http_error(400, pipeline.post, api_url + "events/", data={"group": "Test", "pipeline": "gstlal"},
                              files={"eventFile": ("coinc.xml", mock_events[0].coinc_xml)})
    assert "unknown group 'Test'" in error

    graceid = pipeline.create_event("CBC", "gstlal", "coinc.xml", filecontents=mock_events[0].coinc_xml).json()[
        "graceid"]
    bad_psd = gzip.compress(b"<LIGO_LW>no spectra</LIGO_LW>")
    assert expect_http_error(400, pipeline.write_log, graceid, "PSD", filename="psd.xml.gz",
                             filecontents=bad_psd).startswith("psd.xml.gz: ")
    assert expect_http_error(404, pipeline.files, graceid, "nothing.txt")

    assert "pipelines" in expect_http_error(403, reader.create_event, "CBC", "gstlal", "coinc.xml",
                                            filecontents=mock_events[0].coinc_xml)
    assert "pipelines" in expect_http_error(403, advocate.write_log, graceid, "PSD", filename="psd.xml.gz",
                                            filecontents=mock_events[0].psd_xml_gz)
    assert "advocates" in expect_http_error(403, pipeline.write_label, graceid, "DQV")
    superevent_id = Event.objects.get(graceid=graceid).superevent.superevent_id
    assert "advocates" in expect_http_error(403, pipeline.create_signoff, superevent_id, "ADV", "OK", "fine")
    assert not Label.objects.filter(name__in=vocabulary.VERDICT_LABELS).exists()
    assert "JSON object" in expect_http_error(400, advocate.post, api_url + f"superevents/{superevent_id}/signoffs/",
                                              json=["ADV", "OK"])
    assert "OK or NO" in expect_http_error(400, advocate.post, api_url + f"superevents/{superevent_id}/signoffs/",
                                           data={"signoff_type": "ADV", "status": "MAYBE"})

    # Anonymous, or a wrong password: 401.
    anonymous = GraceDb(service_url=api_url, force_noauth=True, retries=0)
    expect_http_error(401, anonymous.event, graceid)
    expect_http_error(401, connect("reader", "wrong-password").event, graceid)

    # GraceDB endpoints not served here: 501 naming the endpoint.
    assert "emobservation" in expect_http_error(501, pipeline.emobservations, graceid)
    assert "POST" in expect_http_error(501, pipeline.create_superevent, 1.0, 2.0, 3.0, graceid)
    assert "tag" in expect_http_error(501, advocate.add_tag, graceid, 1, "public")
    assert "OP" in expect_http_error(501, advocate.create_signoff, superevent_id, "OP", "OK", "", instrument="H1")


def test_an_api_token_works_as_the_password(connect, users, mock_events, superevent_manager_only):
    token = Token.objects.create(user=users["gstlal-robot"])
    client = connect("gstlal-robot", token.key)
    created = client.create_event("CBC", "gstlal", "coinc.xml", filecontents=mock_events[2].coinc_xml)
    assert created.status_code == 201
    expect_http_error(401, connect("reader", token.key).event, created.json()["graceid"])


# --- the gracedb command line ----------------------------------------------------------

def test_the_gracedb_command_line_creates_an_event_and_uploads_a_file(api_url, tmp_path, users, mock_events,
                                                                      superevent_manager_only):
    mock = mock_events[3]
    (tmp_path / "coinc.xml").write_bytes(mock.coinc_xml)
    (tmp_path / "psd.xml.gz").write_bytes(mock.psd_xml_gz)
    env = {**os.environ, **netrc_env(tmp_path, api_url, "gstlal-robot", PASSWORD)}
    command = [str(Path(sys.executable).with_name("gracedb")), "--service-url", api_url]

    created = subprocess.run(command + ["create", "event", "CBC", "gstlal", "coinc.xml", "AllSky"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr
    graceid = json.loads(created.stdout)["graceid"]
    event = Event.objects.get(graceid=graceid)
    assert event.gpstime == pytest.approx(mock.gpstime) and event.superevent_id is not None

    uploaded = subprocess.run(command + ["create", "log", graceid, "PSD from the command line", "psd.xml.gz",
                                         "--tag-name", "psd"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert uploaded.returncode == 0, uploaded.stderr
    assert json.loads(uploaded.stdout)["filename"] == "psd.xml.gz"
    stored = File.objects.get(event=event, name="psd.xml.gz")
    assert stored.read() == mock.psd_xml_gz and stored.tags == ["psd"]
    # The same annotation as a native upload was triggered (held back here: BAYESTAR).
    assert ("alerts.annotations.on_event_file", (event.pk, stored.pk)) in [
        (path, tuple(args)) for path, args in superevent_manager_only]
