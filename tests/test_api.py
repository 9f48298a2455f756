"""The REST API as pipelines and scripts use it (token authentication)."""
import gzip
import hashlib

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from alerts.vocabulary import ADVOCATES_GROUP, PIPELINES_GROUP

from alerts.models import Event, File, Label, Log, Rejection, Superevent
from tests.intake import damaged_array, superevent_manager_only  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("superevent_manager_only")]


@pytest.fixture
def client():
    user = get_user_model().objects.create_user("gstlal-uploader", password="not-used")
    for name in (ADVOCATES_GROUP, PIPELINES_GROUP):  # uploads and labels
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    token = Token.objects.create(user=user)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return api


@pytest.fixture
def source(mock_events_with_duplicates):
    """gstlal's and MBTA's detections of one loud simulated source."""
    by_pipeline = {m.pipeline: m for m in mock_events_with_duplicates if m.source_index == 1}
    return by_pipeline["gstlal"], by_pipeline["mbta"]


def upload_form(mock, **fields):
    return {"group": "CBC", "pipeline": mock.pipeline, "search": "AllSky",
            "coinc": SimpleUploadedFile("coinc.xml", mock.coinc_xml),
            "psd": SimpleUploadedFile("psd.xml.gz", mock.psd_xml_gz), **fields}


def post_event(client, mock, **fields):
    return client.post("/api/events/", upload_form(mock, **fields), format="multipart")


def assert_error(response, status, fragment=""):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str) and body["error"]
    assert "\n" not in body["error"]
    assert fragment in body["error"]
    return body["error"]


def test_upload_and_read_back_an_event_and_its_superevent(client, source):
    gstlal, mbta = source
    response = post_event(client, gstlal)
    assert response.status_code == 201, response.content
    first = response.json()
    graceid = first["graceid"]
    assert graceid.startswith("G")
    # Tasks run inline here, so the manager has grouped it before the response.
    assert first["superevent"] == Superevent.objects.get().superevent_id

    event = client.get(f"/api/events/{graceid}/").json()
    assert event["graceid"] == graceid
    assert (event["group"], event["pipeline"], event["search"], event["category"]) == (
        "CBC", "gstlal", "AllSky", "production")
    assert event["gpstime"] == pytest.approx(gstlal.gpstime, abs=1e-6)
    assert event["far"] == pytest.approx(gstlal.far, rel=1e-12)
    assert event["snr"] == pytest.approx(gstlal.snr, rel=1e-6)
    assert event["instruments"] == sorted(gstlal.instruments)
    assert event["extra_attributes"]["mass1"] > 0
    assert event["superevent"] and event["superevent"].startswith("S240517")
    superevent_id = event["superevent"]

    second = post_event(client, mbta)
    assert second.status_code == 201, second.content
    second_id = second.json()["graceid"]
    assert second_id != graceid

    listed = client.get("/api/superevents/").json()
    assert [s["superevent_id"] for s in listed["results"]] == [superevent_id]
    detail = client.get(f"/api/superevents/{superevent_id}/").json()
    assert detail["gw_events"] == sorted([graceid, second_id])
    # Same detectors; MBTA's SNR is higher, so it becomes preferred.
    assert mbta.snr > gstlal.snr and len(mbta.instruments) == len(gstlal.instruments)
    assert detail["preferred_event"] == second_id
    assert detail["labels"] == []
    assert detail["t_start"] <= min(gstlal.gpstime, mbta.gpstime) <= detail["t_end"]
    assert detail["category"] == "production"
    assert client.get(f"/api/events/{second_id}/").json()["superevent"] == superevent_id

    events = client.get("/api/events/", {"pipeline": "mbta"}).json()
    assert [e["graceid"] for e in events["results"]] == [second_id]


def test_uploaded_files_are_returned_byte_for_byte(client, source):
    gstlal, _ = source
    graceid = post_event(client, gstlal).json()["graceid"]

    listing = {f["filename"]: f for f in client.get(f"/api/events/{graceid}/files/").json()}
    assert set(listing) == {"coinc.xml,1", "psd.xml.gz,1"}
    assert listing["coinc.xml,1"]["sha256"] == hashlib.sha256(gstlal.coinc_xml).hexdigest()
    assert listing["psd.xml.gz,1"]["size"] == len(gstlal.psd_xml_gz)
    assert listing["coinc.xml,1"]["url"].endswith(f"/api/events/{graceid}/files/coinc.xml,1")

    coinc = client.get(f"/api/events/{graceid}/files/coinc.xml")
    assert coinc.status_code == 200
    assert coinc.content == gstlal.coinc_xml
    assert client.get(f"/api/events/{graceid}/files/coinc.xml,1").content == gstlal.coinc_xml

    newer_psd = gzip.compress(gzip.decompress(gstlal.psd_xml_gz), mtime=1)
    added = client.post(f"/api/events/{graceid}/files/",
                        {"file": SimpleUploadedFile("psd.xml.gz", newer_psd), "comment": "re-estimated PSD"},
                        format="multipart")
    assert added.status_code == 201, added.content
    assert added.json()["filename"] == "psd.xml.gz,2"
    assert added.json()["sha256"] == hashlib.sha256(newer_psd).hexdigest()
    assert client.get(f"/api/events/{graceid}/files/psd.xml.gz").content == newer_psd  # newest
    assert client.get(f"/api/events/{graceid}/files/psd.xml.gz,1").content == gstlal.psd_xml_gz
    assert client.get(f"/api/events/{graceid}/files/psd.xml.gz,2").content == newer_psd

    logs = client.get(f"/api/events/{graceid}/logs/").json()
    assert any(entry["message"] == "re-estimated PSD" and entry["filename"] == "psd.xml.gz,2" for entry in logs)
    assert any(entry["filename"] == "coinc.xml,1" for entry in logs)


def test_labels_are_idempotent_on_events_and_superevents(client, source):
    gstlal, _ = source
    graceid = post_event(client, gstlal).json()["graceid"]
    superevent_id = Superevent.objects.get().superevent_id

    first = client.post(f"/api/superevents/{superevent_id}/labels/", {"name": "ADVREQ"}, format="json")
    assert (first.status_code, first.json()) == (201, {"name": "ADVREQ", "created": True})
    again = client.post(f"/api/superevents/{superevent_id}/labels/", {"name": "ADVREQ"}, format="json")
    assert (again.status_code, again.json()) == (200, {"name": "ADVREQ", "created": False})
    assert Label.objects.filter(superevent__superevent_id=superevent_id, name="ADVREQ").count() == 1
    assert client.get(f"/api/superevents/{superevent_id}/").json()["labels"] == ["ADVREQ"]
    assert client.get(f"/api/superevents/{superevent_id}/labels/").json() == ["ADVREQ"]
    label_logs = [e for e in client.get(f"/api/superevents/{superevent_id}/logs/").json()
                  if e["message"] == "Label added: ADVREQ"]
    assert len(label_logs) == 1

    assert client.post(f"/api/events/{graceid}/labels/", {"name": "EMBRIGHT_READY"}).status_code == 201
    assert client.post(f"/api/events/{graceid}/labels/", {"name": "EMBRIGHT_READY"}).status_code == 200
    assert client.get(f"/api/events/{graceid}/").json()["labels"] == ["EMBRIGHT_READY"]
    assert Label.objects.get(event__graceid=graceid).creator == "gstlal-uploader"

    bad = client.post(f"/api/events/{graceid}/labels/", {"name": "not a label!"})
    assert_error(bad, 400, "label name")


# --- errors ---------------------------------------------------------------------------


def test_unauthenticated_upload_is_refused(source):
    gstlal, _ = source
    response = APIClient().post("/api/events/", upload_form(gstlal), format="multipart")
    assert_error(response, 401)
    assert not Event.objects.exists()
    wrong_token = APIClient()
    wrong_token.credentials(HTTP_AUTHORIZATION="Token 0123456789abcdef0123456789abcdef01234567")
    assert_error(wrong_token.post("/api/events/", upload_form(gstlal), format="multipart"), 401)
    assert not Event.objects.exists()


def test_unauthenticated_label_is_refused(client, source):
    graceid = post_event(client, source[0]).json()["graceid"]
    assert APIClient().post(f"/api/events/{graceid}/labels/", {"name": "DQV"}).status_code in (401, 403)
    assert not Label.objects.exists()


@pytest.mark.parametrize("coinc, fragment", [
    (b"definitely not XML", "not a LIGO-LW XML document"),
    (b"<?xml version='1.0'?><LIGO_LW></LIGO_LW>", "coinc_inspiral"),
])
def test_bad_coinc_is_refused_with_a_one_line_error(client, source, coinc, fragment):
    gstlal, _ = source
    response = post_event(client, gstlal, coinc=SimpleUploadedFile("coinc.xml", coinc))
    error = assert_error(response, 400, fragment)
    assert error.startswith("coinc.xml: ")
    assert not Event.objects.exists()
    assert not File.objects.exists()
    assert not Log.objects.exists()
    rejection = Rejection.objects.get()
    assert (rejection.source, rejection.reason) == ("api", error)
    assert rejection.excerpt == coinc.decode()


def test_bad_psd_refuses_the_whole_upload(client, source):
    gstlal, _ = source
    response = post_event(client, gstlal, psd=SimpleUploadedFile("psd.xml.gz", gstlal.psd_xml_gz[:500]))
    assert_error(response, 400, "psd.xml.gz: ")
    assert not Event.objects.exists()
    assert not File.objects.exists()
    assert Rejection.objects.count() == 1


def test_ranking_data_is_stored_on_the_event(client, source, superevent_manager_only):
    gstlal, _ = source
    ranking_data = gzip.compress(b"<?xml version='1.0'?><LIGO_LW><!-- gstlal ranking statistic --></LIGO_LW>")
    response = post_event(client, gstlal, ranking_data=SimpleUploadedFile("rankingstat.xml.gz", ranking_data))
    assert response.status_code == 201, response.content
    graceid = response.json()["graceid"]

    listing = {f["filename"]: f for f in client.get(f"/api/events/{graceid}/files/").json()}
    assert set(listing) == {"coinc.xml,1", "psd.xml.gz,1", "ranking_data.xml.gz,1"}
    assert listing["ranking_data.xml.gz,1"]["sha256"] == hashlib.sha256(ranking_data).hexdigest()
    assert "ranking_data" in listing["ranking_data.xml.gz,1"]["tags"]
    assert client.get(f"/api/events/{graceid}/files/ranking_data.xml.gz").content == ranking_data
    stored = File.objects.get(event__graceid=graceid, name="ranking_data.xml.gz")
    assert any(args == (stored.event_id, stored.pk) for _, args in superevent_manager_only)


@pytest.mark.parametrize("field, filename, attribute", [
    ("coinc", "coinc.xml", "coinc_xml"),  # a damaged SNR series
    ("psd", "psd.xml.gz", "psd_xml_gz"),  # a damaged spectrum
])
def test_damaged_array_in_an_upload_is_a_400(client, source, field, filename, attribute):
    gstlal, _ = source
    damaged = SimpleUploadedFile(filename, damaged_array(getattr(gstlal, attribute)))
    response = post_event(client, gstlal, **{field: damaged})
    error = assert_error(response, 400, "bytes were not decoded")
    assert error.startswith(f"{filename}: ")
    assert not Event.objects.exists()
    assert not File.objects.exists()
    assert (Rejection.objects.get().source, Rejection.objects.get().reason) == ("api", error)


@pytest.mark.parametrize("fields, fragment", [
    ({"far": "-1"}, "FAR must not be negative"),
    ({"far": "nan"}, "far"),
    ({"far": "inf"}, "far"),
    ({"gpstime": "nan"}, "gpstime"),
    ({"snr": "inf"}, "snr"),
    ({"snr": "-3"}, "SNR must not be negative"),
])
def test_burst_upload_with_impossible_values_is_refused(client, fields, fragment):
    good = {"group": "Burst", "pipeline": "cwb", "search": "AllSky", "gpstime": "1400000000.5",
            "far": "1e-9", "snr": "12", "instruments": "H1,L1"}
    response = client.post("/api/events/", {**good, **fields}, format="multipart")
    error = assert_error(response, 400)
    assert fragment.lower() in error.lower()
    assert not Event.objects.exists()
    assert Rejection.objects.get().source == "api"
    # The same upload with sane values is accepted: the refusal was about the value.
    assert client.post("/api/events/", good, format="multipart").status_code == 201


def test_missing_fields_are_reported_as_json(client):
    response = client.post("/api/events/", {"search": "AllSky"}, format="multipart")
    error = assert_error(response, 400)
    assert "group" in error and "pipeline" in error
    assert not Event.objects.exists()
    assert Rejection.objects.get().source == "api"


def test_unknown_pipeline_is_refused(client, source):
    response = post_event(client, source[0], pipeline="nosuchpipe")
    assert_error(response, 400, "nosuchpipe")
    assert not Event.objects.exists()


def test_bad_file_added_later_is_refused(client, source):
    graceid = post_event(client, source[0]).json()["graceid"]
    response = client.post(f"/api/events/{graceid}/files/",
                           {"file": SimpleUploadedFile("psd.xml.gz", b"\x1f\x8b\x08broken")}, format="multipart")
    assert_error(response, 400, "psd.xml.gz: ")
    assert list(File.objects.values_list("name", "version").order_by("name")) == [
        ("coinc.xml", 1), ("psd.xml.gz", 1)]
    assert Rejection.objects.count() == 1


def test_unknown_objects_are_404(client, source):
    assert_error(client.get("/api/events/G999999/"), 404)
    assert_error(client.get("/api/superevents/S000101zz/"), 404)
    assert_error(client.post("/api/events/G999999/labels/", {"name": "DQV"}), 404)
    assert_error(client.get("/api/events/G999999/files/coinc.xml"), 404)
    graceid = post_event(client, source[0]).json()["graceid"]
    assert_error(client.get(f"/api/events/{graceid}/files/skymap.fits"), 404)
    assert_error(client.get(f"/api/events/{graceid}/files/coinc.xml,7"), 404)


@pytest.mark.parametrize("filename", ["../psd.xml.gz", "sub/psd.xml.gz", ".."])
def test_file_names_with_directories_are_refused(client, source, filename):
    graceid = post_event(client, source[0]).json()["graceid"]
    response = client.post(f"/api/events/{graceid}/files/",
                           {"file": SimpleUploadedFile("notes.txt", b"hello"), "filename": filename},
                           format="multipart")
    assert_error(response, 400, "filename")
    assert File.objects.count() == 2
    assert Rejection.objects.get().source == "api"
