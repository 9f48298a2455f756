"""Hostile input gets a clear 4xx (API) or exit status 2 (command line), and
nothing is stored but a Rejection record (issue 15, README "Hostile input")."""
import gzip
import json
import math
import os

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from alerts.ingest import MessageError, apply_message
from alerts.models import Event, File, Log, Rejection, Superevent
from alerts.vocabulary import ADVOCATES_GROUP, PIPELINES_GROUP
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.test_api import assert_error, upload_form
from tests.test_ingest import event_object, ingest, json_lines, log_message, message, new_event

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("superevent_manager_only")]


@pytest.fixture
def client():
    user = get_user_model().objects.create_user("hostile-uploader", password="not-used")
    for name in (ADVOCATES_GROUP, PIPELINES_GROUP):  # uploads, labels and comments
        user.groups.add(Group.objects.get_or_create(name=name)[0])
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


@pytest.fixture
def mock(mock_events):
    return mock_events[1]


def counts():
    return Event.objects.count(), File.objects.count(), Superevent.objects.count()


def assert_refused(response, fragment=""):
    """A 4xx with a one-line JSON error; nothing stored but a Rejection."""
    assert 400 <= response.status_code < 500, response.content
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"] and "\n" not in body["error"]
    assert fragment in body["error"], body["error"]
    assert counts() == (0, 0, 0)
    for rejection in Rejection.objects.all():
        assert "\x00" not in rejection.excerpt + rejection.reason


BINARY = bytes(range(256)) * 4


@pytest.mark.parametrize("data", [BINARY, gzip.compress(b"<LIGO_LW>\x00\x01</LIGO_LW>"), b"\x00" * 100])
def test_binary_or_gzip_as_event_file_is_refused_and_recorded_safely(client, mock, data):
    response = client.post("/api/events/", upload_form(mock, coinc=SimpleUploadedFile("coinc.xml", data)),
                           format="multipart")
    assert_refused(response, "coinc.xml")
    rejection = Rejection.objects.get()
    assert rejection.excerpt and "\x00" not in rejection.excerpt


@pytest.mark.parametrize("gpstime", [1e300, -5.0, 0.0, float("nan"), float("inf"), 4e9])
def test_gps_time_out_of_range_is_refused(client, gpstime):
    response = client.post("/api/events/", {"group": "Burst", "pipeline": "cwb", "search": "AllSky",
                                            "gpstime": str(gpstime), "far": "1e-9", "instruments": "H1,L1"},
                           format="multipart")
    assert_refused(response, "gpstime")


def test_gps_time_out_of_range_by_ingest(tmp_path, mock):
    obj = event_object("G900001", mock)
    obj["gpstime"] = 1e300
    out, err, code = ingest(tmp_path, json_lines(message("G900001", "new", data=obj, obj=obj)))
    assert code == 2 and "gpstime" in err and counts() == (0, 0, 0)


@pytest.mark.parametrize("uid", ["G1/../../etc", "..", "G1\x00", "G1\x1b[31m", "a/b", "G" * 40, "G1\n"])
def test_ingest_uid_with_path_or_control_characters_is_refused(tmp_path, mock, uid):
    out, err, code = ingest(tmp_path, json_lines(new_event(uid, mock)))
    assert code == 2 and "uid" in err
    assert len(err.strip().splitlines()) == 1
    assert counts() == (0, 0, 0)
    assert "\x00" not in Rejection.objects.get().excerpt


@pytest.mark.parametrize("filename", ["../coinc.xml", "a/b.xml", "psd\x00.xml.gz", "x\x07.txt", ".."])
def test_ingest_file_name_with_path_or_control_characters_is_refused(tmp_path, mock, filename):
    obj = event_object("G900002", mock)
    out, err, code = ingest(tmp_path, json_lines(log_message("G900002", 1, "file", filename=filename, obj=obj)))
    assert code == 2 and "file name" in err
    assert counts() == (0, 0, 0)


@pytest.mark.parametrize("data", [{"comment": "bad\x00text"}, {"comment": "x" * 100_000},
                                  {"comment": "ok", "tag_names": ["bad\x1btag"]},
                                  {"comment": "ok", "tag_names": ["t"] * 1000}])
def test_ingest_log_text_and_tags_with_control_characters_or_oversized(tmp_path, mock, data):
    obj = event_object("G900003", mock)
    out, err, code = ingest(tmp_path, json_lines(message("G900003", "log", data=data, obj=obj)))
    assert code == 2 and counts() == (0, 0, 0) and not Log.objects.exists()


def test_api_label_with_control_characters_or_trailing_newline(client, mock):
    response = client.post("/api/events/", upload_form(mock), format="multipart")
    assert response.status_code == 201
    graceid = response.json()["graceid"]
    before = counts()
    for name in ["EM\tREADY", "A\x00B", "A" * 100]:
        reply = client.post(f"/api/events/{graceid}/labels/", {"name": name}, format="json")
        assert_error(reply, 400, "label")
    for fields in [{"tags": "ok,bad\x01"}, {"comment": "bad\x00comment"}, {"tags": ",".join(["t"] * 500)}]:
        reply = client.post(f"/api/events/{graceid}/files/",
                            {"file": SimpleUploadedFile("notes.txt", b"hello"), **fields}, format="multipart")
        assert_error(reply, 400)
    assert counts() == before


def test_oversized_file_is_refused(client, mock, settings):
    settings.MAX_FILE_BYTES = 1000
    response = client.post("/api/events/", upload_form(mock), format="multipart")
    assert_refused(response, "larger than")


@pytest.mark.parametrize("body,content_type", [
    (b"\x00\xff garbage", "application/json"),
    (b"{not json", "application/json"),
    (json.dumps({"group": "CBC", "pipeline": "gstlal"}).encode(), "multipart/form-data; boundary=zzz"),
    (b"<xml/>", "application/xml"),
])
def test_body_that_is_not_the_declared_content_type(client, body, content_type):
    response = client.generic("POST", "/api/events/", body, content_type=content_type)
    assert_refused(response)


# --- fuzzing ---------------------------------------------------------------
TEXT = st.text(max_size=40) | st.sampled_from(["..", "/", "\x00", "G1/..", "S240101a", "CBC", "gstlal", ""])
JSONISH = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | TEXT,
                       lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                       max_leaves=12)
FUZZ = hsettings(max_examples=40, deadline=None, derandomize=True,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(coinc=st.binary(max_size=2000), fields=st.dictionaries(
    st.sampled_from(["group", "pipeline", "search", "gpstime", "far", "snr", "instruments", "category",
                     "offline"]), TEXT, max_size=9))
def test_fuzz_event_upload(client, coinc, fields):
    form = {**fields, "coinc": SimpleUploadedFile("coinc.xml", coinc)}
    response = client.post("/api/events/", form, format="multipart")
    assert response.status_code < 500
    if response.status_code >= 400:
        assert response.json()["error"]
        assert counts() == (0, 0, 0)
    Event.objects.all().delete()


@FUZZ
@given(body=st.binary(max_size=500), content_type=st.sampled_from(
    ["application/json", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "text/plain"]))
def test_fuzz_raw_bodies(client, body, content_type):
    response = client.generic("POST", "/api/events/", body, content_type=content_type)
    assert 400 <= response.status_code < 500 and response.json()["error"]
    assert counts() == (0, 0, 0)


@FUZZ
@given(msg=st.fixed_dictionaries({"uid": TEXT, "alert_type": st.sampled_from(
    ["new", "update", "label_added", "label_removed", "log", "event_added", "x"]) | TEXT,
    "data": JSONISH, "object": JSONISH}) | JSONISH)
def test_fuzz_ingest_messages(msg):
    try:
        apply_message(msg)
    except MessageError as error:
        assert str(error) and "\n" not in str(error)
    assert counts() == (0, 0, 0)
