"""``manage.py ingest``: IGWN Alert messages in GraceDB's JSON format (DESIGN.md 5b).

Messages are built as GraceDB sends them (uid, alert_type, data, object),
with times, FARs and SNRs of the simulated ``mock_events``.
"""
import hashlib
import io
import json
import sys
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from alerts.models import Event, File, Label, Log, Rejection, Superevent
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("superevent_manager_only")]

BAD_INPUT_STATUS = 2


def event_object(graceid, mock, pipeline="gstlal", labels=(), search="AllSky", offline=False):
    """An event as GraceDB's REST API (and so the ``object`` of a message) shows it."""
    return {
        "submitter": f"{pipeline}_online",
        "created": "2024-05-17 16:54:44 UTC",
        "group": "CBC",
        "graceid": graceid,
        "pipeline": pipeline,
        "gpstime": mock.gpstime,
        "reporting_latency": 1.9,
        "instruments": "H1,L1",
        "nevents": 2,
        "offline": offline,
        "search": search,
        "far": mock.far,
        "far_is_upper_limit": False,
        "likelihood": 21.3,
        "labels": list(labels),
        "extra_attributes": {
            "CoincInspiral": {"ifos": "H1,L1", "end_time": int(mock.gpstime), "snr": mock.snr,
                              "combined_far": mock.far, "mchirp": 1.19, "mass": 2.8},
            "SingleInspiral": [{"ifo": ifo, "snr": mock.detector_snrs[ifo], "mass1": 1.4, "mass2": 1.4}
                               for ifo in ("H1", "L1")],
        },
        "superevent": None,
        "superevent_neighbours": {},
        "links": {"self": f"https://gracedb.invalid/api/events/{graceid}"},
    }


def message(uid, alert_type, data=None, obj=None):
    return {"uid": uid, "alert_type": alert_type, "data": data or {}, "object": obj or {}}


def new_event(graceid, mock, **kwargs):
    obj = event_object(graceid, mock, **kwargs)
    return message(graceid, "new", data=obj, obj=obj)


def label_added(uid, name, obj=None):
    return message(uid, "label_added", data={"name": name, "creator": "emfollow", "created": "2024-05-17"},
                   obj=obj)


def log_message(uid, number, comment, filename="", file_version=None, tags=(), obj=None):
    data = {"N": number, "comment": comment, "filename": filename, "file_version": file_version,
            "tag_names": list(tags), "issuer": "gstlal_online", "created": "2024-05-17 16:54:50 UTC",
            "self": f"https://gracedb.invalid/api/events/{uid}/logs/{number}"}
    return message(uid, "log", data=data, obj=obj)


def json_lines(*messages):
    return "".join(json.dumps(m) + "\n" for m in messages)


def ingest(tmp_path, text, name="messages.jsonl"):
    """Run ingest on a file; returns (stdout, stderr, returncode)."""
    path = tmp_path / name
    path.write_text(text)
    return run_ingest(str(path))


def run_ingest(source):
    out, err = StringIO(), StringIO()
    try:
        call_command("ingest", source, stdout=out, stderr=err)
        code = 0
    except CommandError as error:
        code = error.returncode
    return out.getvalue(), err.getvalue(), code


@pytest.fixture
def source(mock_events):
    return mock_events[1]  # significant: forms a superevent


def test_new_event_messages_create_events_and_the_manager_groups_them(tmp_path, source):
    stream = json_lines(
        new_event("G330100", source, labels=["EMBRIGHT_READY"]),
        new_event("G330101", source, pipeline="pycbc"),
    )
    out, err, code = ingest(tmp_path, stream)
    assert (code, err) == (0, "")
    assert "G330100: created" in out and "G330101: created" in out
    assert out.splitlines()[-1] == "2 applied, 0 rejected"

    event = Event.objects.select_related("superevent").get(graceid="G330100")
    assert (event.group, event.pipeline, event.search, event.category) == ("CBC", "gstlal", "AllSky", "production")
    assert event.gpstime == source.gpstime
    assert event.far == source.far
    assert event.snr == source.snr  # from extra_attributes.CoincInspiral
    assert event.instrument_list == ["H1", "L1"]
    assert event.offline is False
    assert event.extra_attributes["CoincInspiral"]["mchirp"] == 1.19
    assert event.label_names() == {"EMBRIGHT_READY"}

    superevent = event.superevent
    assert superevent is not None
    assert superevent.superevent_id.startswith("S240517")
    assert set(superevent.events.values_list("graceid", flat=True)) == {"G330100", "G330101"}
    assert Superevent.objects.count() == 1


def test_json_array_from_standard_input(monkeypatch, source):
    mdc = new_event("M330200", source, search="MDC", offline=True)
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps([mdc, label_added("M330200", "DQV")])))
    out, err, code = run_ingest("-")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "2 applied, 0 rejected"
    event = Event.objects.select_related("superevent").get()
    assert (event.graceid, event.category, event.search, event.offline) == ("M330200", "mdc", "MDC", True)
    assert event.label_names() == {"DQV"}
    assert event.superevent.superevent_id.startswith("MS240517")


def test_json_lines_from_standard_input_is_the_default(monkeypatch, source):
    monkeypatch.setattr(sys, "stdin", io.StringIO(json_lines(new_event("G330100", source))))
    out = StringIO()
    call_command("ingest", stdout=out, stderr=StringIO())
    assert "G330100: created" in out.getvalue()
    assert Event.objects.get().graceid == "G330100"


def test_repeated_messages_are_applied_once(tmp_path, source):
    obj = event_object("G330100", source)
    stream = json_lines(
        new_event("G330100", source),
        label_added("G330100", "EMBRIGHT_READY", obj=obj),
        log_message("G330100", 4, "Pipeline finished ranking", obj=obj),
    )
    ingest(tmp_path, stream)
    counts = [model.objects.count() for model in (Event, Superevent, Label, Log, File)]

    out, err, code = ingest(tmp_path, stream + stream, name="again.jsonl")
    assert (code, err) == (0, "")
    assert [model.objects.count() for model in (Event, Superevent, Label, Log, File)] == counts
    assert out.count("G330100: already known (repeated message)") == 2
    assert out.count("label EMBRIGHT_READY already present") == 2
    assert out.count("log already recorded (repeated message)") == 2
    assert Log.objects.filter(message="Pipeline finished ranking").count() == 1
    assert Label.objects.get().name == "EMBRIGHT_READY"


def test_label_before_new_creates_the_event_from_the_object(tmp_path, source):
    # GraceDB's object already shows the label; the 'new' message arrives late.
    obj = event_object("G330100", source, labels=["EMBRIGHT_READY"])
    stream = json_lines(label_added("G330100", "EMBRIGHT_READY", obj=obj), new_event("G330100", source))
    out, err, code = ingest(tmp_path, stream)
    assert (code, err) == (0, "")
    event = Event.objects.select_related("superevent").get()
    assert event.graceid == "G330100"
    assert event.far == source.far
    assert event.label_names() == {"EMBRIGHT_READY"}
    assert Label.objects.count() == 1
    assert event.superevent is not None
    assert "G330100: already known (repeated message)" in out


def test_label_added_to_an_event_created_without_it(tmp_path, source):
    obj = event_object("G330100", source)  # object without the label
    out, err, code = ingest(tmp_path, json_lines(label_added("G330100", "DQV", obj=obj)))
    assert (code, err) == (0, "")
    assert "G330100: label DQV added" in out
    assert Event.objects.get().label_names() == {"DQV"}


def test_label_and_log_on_a_superevent_the_manager_made(tmp_path, source):
    ingest(tmp_path, json_lines(new_event("G330100", source)))
    superevent_id = Superevent.objects.get().superevent_id
    superevent_object = {"superevent_id": superevent_id, "preferred_event": "G330100",
                         "gw_events": ["G330100"], "labels": ["ADVREQ"], "far": source.far, "category": "Production"}
    stream = json_lines(
        label_added(superevent_id, "ADVREQ", obj=superevent_object),
        label_added(superevent_id, "ADVREQ", obj=superevent_object),
        log_message(superevent_id, 7, "Advocate paged", obj=superevent_object),
        message(superevent_id, "label_removed", data={"name": "ADVREQ"}, obj=superevent_object),
        label_added(superevent_id, "ADVOK", obj=superevent_object),
    )
    out, err, code = ingest(tmp_path, stream, name="superevent.jsonl")
    assert (code, err) == (0, "")
    superevent = Superevent.objects.get()
    assert superevent.label_names() == {"ADVOK"}
    assert f"{superevent_id}: label ADVREQ added" in out
    assert f"{superevent_id}: label ADVREQ already present" in out
    assert f"{superevent_id}: label ADVREQ removed" in out
    assert superevent.logs.filter(message="Advocate paged").count() == 1
    assert Superevent.objects.count() == 1


def test_event_update_changes_far_once(tmp_path, source):
    ingest(tmp_path, json_lines(new_event("G330100", source)))
    updated = event_object("G330100", source)
    updated["far"] = source.far / 10
    update = message("G330100", "update", data=updated, obj=updated)
    out, err, code = ingest(tmp_path, json_lines(update, update), name="update.jsonl")
    assert (code, err) == (0, "")
    assert Event.objects.get().far == source.far / 10
    assert "G330100: updated" in out and "G330100: no change" in out
    assert Log.objects.filter(event__graceid="G330100", message__startswith="Updated: far").count() == 1


def test_announced_file_available_locally_is_stored(tmp_path, settings, source):
    files_dir = tmp_path / "gracedb-files"
    (files_dir / "G330100").mkdir(parents=True)
    (files_dir / "G330100" / "psd.xml.gz").write_bytes(source.psd_xml_gz)
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "INGEST_FILES_DIR": str(files_dir)}
    obj = event_object("G330100", source)
    announcement = log_message("G330100", 2, "strain spectral densities", filename="psd.xml.gz",
                               file_version=0, tags=["psd"], obj=obj)
    stream = json_lines(new_event("G330100", source), announcement, announcement,
                        log_message("G330100", 3, "ranking data", filename="ranking_data.xml.gz",
                                    file_version=0, tags=["p_astro"], obj=obj))
    out, err, code = ingest(tmp_path, stream)
    assert (code, err) == (0, "")
    assert "G330100: file psd.xml.gz stored" in out
    assert "log already recorded (repeated message)" in out
    assert "G330100: file ranking_data.xml.gz announced, not available locally" in out

    stored = File.objects.get()
    assert (stored.event.graceid, stored.filename) == ("G330100", "psd.xml.gz,1")
    assert stored.sha256 == hashlib.sha256(source.psd_xml_gz).hexdigest()
    assert stored.read() == source.psd_xml_gz
    assert stored.tags == ["psd"]
    assert Log.objects.filter(file=stored, message="strain spectral densities").count() == 1
    assert Log.objects.filter(message__contains="ranking_data.xml.gz announced").count() == 1


def test_announced_file_that_is_not_a_psd_is_rejected(tmp_path, settings, source):
    files_dir = tmp_path / "gracedb-files"
    (files_dir / "G330100").mkdir(parents=True)
    (files_dir / "G330100" / "psd.xml.gz").write_bytes(source.psd_xml_gz[:300])
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "INGEST_FILES_DIR": str(files_dir)}
    stream = json_lines(new_event("G330100", source),
                        log_message("G330100", 2, "psd", filename="psd.xml.gz", file_version=0))
    out, err, code = ingest(tmp_path, stream)
    assert code == BAD_INPUT_STATUS
    assert err.startswith("rejected: G330100: psd.xml.gz: ")
    assert not File.objects.exists()
    assert Event.objects.filter(graceid="G330100").exists()
    assert Rejection.objects.get().source == "ingest"


def test_bad_messages_are_rejected_and_the_good_ones_around_them_applied(tmp_path, source):
    obj = event_object("G330100", source)
    stream = "".join([
        json.dumps(new_event("G330100", source)) + "\n",
        '{"uid": "G330100", "alert_type": "label_added", "data": {"name": \n',  # malformed line
        json.dumps({"alert_type": "new", "data": obj, "object": obj}) + "\n",  # no uid
        json.dumps(message("G330100", "exploded", obj=obj)) + "\n",  # unknown alert_type
        json.dumps(label_added("S240101zz", "ADVOK")) + "\n",  # unknown superevent, no object
        json.dumps(label_added("G999999", "DQV")) + "\n",  # unknown event, no object to create it
        json.dumps(label_added("G330100", "DQV", obj=obj)) + "\n",
    ])
    out, err, code = ingest(tmp_path, stream)

    assert code == BAD_INPUT_STATUS
    errors = err.splitlines()
    assert len(errors) == 5, err
    assert all(line.startswith("rejected: ") for line in errors)
    assert "line 2" in errors[0] and "not valid JSON" in errors[0]
    assert "no 'uid'" in errors[1]
    assert "exploded" in errors[2]
    assert errors[3].startswith("rejected: S240101zz: unknown superevent")
    assert errors[4].startswith("rejected: G999999: unknown event")
    assert out.splitlines()[-1] == "2 applied, 5 rejected"

    event = Event.objects.get()
    assert event.graceid == "G330100"
    assert event.label_names() == {"DQV"}
    assert not Superevent.objects.filter(superevent_id="S240101zz").exists()
    rejections = Rejection.objects.all()
    assert [r.source for r in rejections] == ["ingest"] * 5
    assert {r.reason for r in rejections} == {line.removeprefix("rejected: ") for line in errors}
    assert any("S240101zz" in r.excerpt for r in rejections)


def test_invalid_json_array_is_rejected_as_a_whole(tmp_path):
    out, err, code = ingest(tmp_path, '[{"uid": "G1", "alert_type": "new"}, {oops}]')
    assert code == BAD_INPUT_STATUS
    assert err.startswith("rejected: not a valid JSON array")
    assert len(err.splitlines()) == 1
    assert Rejection.objects.count() == 1
    assert not Event.objects.exists()


def test_unreadable_source_exits_with_status_2(tmp_path):
    out, err, code = run_ingest(str(tmp_path / "missing.jsonl"))
    assert code == BAD_INPUT_STATUS


def test_odd_values_in_messages_are_rejected_without_stopping_the_stream(tmp_path, settings, source):
    """Values GraceDB would never send still cost one message, not the stream."""
    files_dir = tmp_path / "gracedb-files"
    (files_dir / "G330100").mkdir(parents=True)
    (files_dir / "G330100" / "psd.xml.gz").write_bytes(source.psd_xml_gz)
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "INGEST_FILES_DIR": str(files_dir)}
    obj = event_object("G330100", source)
    bad_update = {**obj, "far": "very low"}
    stream = json_lines(
        new_event("G330100", source),
        message("G330100", "update", data=bad_update, obj=bad_update),  # FAR not a number
        message("G330100", "update", data={**obj, "far": -1.0}, obj={**obj, "far": -1.0}),
        label_added("G330100", "X" * 40, obj=obj),  # longer than a label name may be
        label_added("G330100", "not a label", obj=obj),
        log_message("G330100", 2, "psd", filename="../G330100/psd.xml.gz", file_version=0, obj=obj),
        label_added("G330100", "DQV", obj=obj),
    )
    out, err, code = ingest(tmp_path, stream)
    assert code == BAD_INPUT_STATUS
    errors = err.splitlines()
    assert len(errors) == 5, err
    assert all(line.startswith("rejected: G330100: ") for line in errors)
    assert out.splitlines()[-1] == "2 applied, 5 rejected"
    event = Event.objects.get()
    assert event.far == source.far
    assert event.label_names() == {"DQV"}
    assert not File.objects.exists()
    assert Rejection.objects.count() == 5
