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
from django.utils.module_loading import import_string

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


def with_changes(obj, **changes):
    """A copy of a GraceDB object with some values replaced."""
    return {**obj, **changes}


def test_odd_values_in_messages_are_rejected_without_stopping_the_stream(tmp_path, settings, source):
    """Values GraceDB would never send still cost one message, not the stream."""
    files_dir = tmp_path / "gracedb-files"
    (files_dir / "G330100").mkdir(parents=True)
    (files_dir / "G330100" / "psd.xml.gz").write_bytes(source.psd_xml_gz)
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "INGEST_FILES_DIR": str(files_dir)}
    obj = event_object("G330100", source)
    nan, inf = float("nan"), float("inf")

    def new(uid, **changes):
        changed = with_changes(event_object(uid, source), **changes)
        return message(uid, "new", data=changed, obj=changed)

    def extra_with(table, **values):
        extra = event_object("G0", source)["extra_attributes"]
        if table == "SingleInspiral":
            return {**extra, table: [{**row, **values} for row in extra[table]]}
        return {**extra, table: {**extra[table], **values}}

    long_uid = "G" + "3" * 40
    bad = [  # (message, the uid its error names, a fragment of the reason)
        (message("G330100", "update", data=with_changes(obj, far="very low"), obj=with_changes(obj, far="very low")),
         "G330100", "FAR must be a number"),
        (message("G330100", "update", data=with_changes(obj, far=-1.0), obj=with_changes(obj, far=-1.0)),
         "G330100", "must not be negative"),
        (message("G330100", "update", data=with_changes(obj, gpstime=nan), obj=with_changes(obj, gpstime=nan)),
         "G330100", "gpstime must be finite"),
        (label_added("G330100", "X" * 40, obj=obj), "G330100", "label name"),  # longer than a label name may be
        (label_added("G330100", "not a label", obj=obj), "G330100", "label name"),
        (log_message("G330100", 2, "psd", filename="../G330100/psd.xml.gz", file_version=0, obj=obj),
         "G330100", "plain file name"),
        (new("G330101", extra_attributes=extra_with("CoincInspiral", snr="loud")), "G330101", "SNR must be a number"),
        (new("G330102", extra_attributes="x"), "G330102", "extra_attributes must be a JSON object"),
        (new("G330103", instruments=5), "G330103", "instruments must be a list"),
        (new("G330104", instruments=["H1", 7]), "G330104", "detector prefixes"),
        (new("G330105", labels=["EMBRIGHT_READY", "X" * 40]), "G330105", "label name"),
        (new("G330106", labels="DQV"), "G330106", "labels must be a list"),
        (new("G330107", gpstime=nan), "G330107", "gpstime must be finite"),
        (new("G330108", gpstime=10 ** 400), "G330108", "gpstime must be a number"),
        (new("G330109", far=nan), "G330109", "FAR must be finite"),
        (new("G330110", far=inf), "G330110", "FAR must be finite"),
        (new("G330111", far=-1.0), "G330111", "FAR must not be negative"),
        (new("G330112", extra_attributes=extra_with("CoincInspiral", snr=-4.0)), "G330112", "SNR must not be negative"),
        (new("G330113", extra_attributes=extra_with("CoincInspiral", snr=nan)), "G330113", "SNR must be finite"),
        (new("G330114", extra_attributes=extra_with("CoincInspiral", chisq=nan, snr=9.0)), "G330114", "no NaN"),
        (new("G330115", extra_attributes=extra_with("SingleInspiral", mass1="heavy")), "G330115", "mass1"),
        (new("G330116", extra_attributes=extra_with("SingleInspiral", mass2=0.0)), "G330116", "positive"),
        (new("G330117", extra_attributes={"MultiBurst": "wide"}), "G330117", "MultiBurst must be an object"),
        (new(long_uid), long_uid, "uid must be 1-32"),
        (log_message("G330100", 3, {"text": "not a string"}, obj=obj), "G330100", "comment must be text"),
        (log_message("G330100", 4, "tagged", tags="psd", obj=obj), "G330100", "tag_names must be a list"),
    ]
    bad[-1][0]["data"]["tag_names"] = "psd"  # a string, where GraceDB sends a list
    stream = json_lines(new_event("G330100", source), *(m for m, _, _ in bad),
                        new_event("G330199", source), label_added("G330100", "DQV", obj=obj))
    out, err, code = ingest(tmp_path, stream)

    assert code == BAD_INPUT_STATUS
    errors = err.splitlines()
    assert len(errors) == len(bad), err
    for line, (_, uid, fragment) in zip(errors, bad):
        assert line.startswith(f"rejected: {uid}: "), line
        assert fragment in line, line
    assert out.splitlines()[-1] == f"3 applied, {len(bad)} rejected"
    # The good messages after the bad ones were applied.
    assert set(Event.objects.values_list("graceid", flat=True)) == {"G330100", "G330199"}
    event = Event.objects.get(graceid="G330100")
    assert event.far == source.far and event.gpstime == source.gpstime
    assert event.label_names() == {"DQV"}
    assert not File.objects.exists()
    assert not Label.objects.filter(name__startswith="X").exists()
    rejections = Rejection.objects.all()
    assert len(rejections) == len(bad)
    assert {r.reason for r in rejections} == {line.removeprefix("rejected: ") for line in errors}
    assert all(r.source == "ingest" and "\n" not in r.reason and r.excerpt for r in rejections)


def test_a_failure_no_check_foresaw_costs_one_message(tmp_path, monkeypatch, source):
    """A bug (or the database refusing a value) rejects that message; the rest flows."""
    def broken_update(event, obj):
        raise RuntimeError("unforeseen failure\nwith a second line")

    monkeypatch.setattr("alerts.ingest.update_event", broken_update)
    obj = event_object("G330100", source)
    stream = json_lines(new_event("G330100", source), message("G330100", "update", data=obj, obj=obj),
                        label_added("G330100", "DQV", obj=obj), new_event("G330101", source))
    out, err, code = ingest(tmp_path, stream)

    assert code == BAD_INPUT_STATUS
    assert err.splitlines() == ["rejected: G330100: could not apply the message (RuntimeError: unforeseen failure)"]
    assert out.splitlines()[-1] == "3 applied, 1 rejected"
    assert Event.objects.get(graceid="G330100").label_names() == {"DQV"}
    assert Event.objects.filter(graceid="G330101").exists()
    rejection = Rejection.objects.get()
    assert (rejection.source, rejection.reason) == ("ingest", err.splitlines()[0].removeprefix("rejected: "))
    assert '"alert_type": "update"' in rejection.excerpt


def test_a_line_that_is_not_utf8_is_rejected_alone(tmp_path, source):
    path = tmp_path / "messages.jsonl"
    path.write_bytes(json_lines(new_event("G330100", source)).encode() + b'{"uid": "G\xff\xfe"}\n'
                     + json_lines(new_event("G330101", source)).encode())
    out, err, code = run_ingest(str(path))
    assert code == BAD_INPUT_STATUS
    assert err.splitlines() == ["rejected: line 2: not valid UTF-8 text"]
    assert set(Event.objects.values_list("graceid", flat=True)) == {"G330100", "G330101"}
    assert Rejection.objects.get().excerpt.startswith('{"uid": "G')


class TrickleStdin:
    """Standard input that hands out one line at a time, as a live stream does.

    Before handing out each next line it notes whether the event of the
    previous line already exists: a reader that waits for the end of the
    input (or reads it whole) sees False there.
    """

    def __init__(self, lines_and_uids):
        self.lines_and_uids = lines_and_uids
        self.applied_before_next_line = []

    def __iter__(self):
        previous = None
        for line, uid in self.lines_and_uids:
            if previous:
                self.applied_before_next_line.append(Event.objects.filter(graceid=previous).exists())
            previous = uid
            yield line.encode()


def test_json_lines_from_standard_input_are_applied_as_they_arrive(monkeypatch, source):
    stdin = TrickleStdin([(json.dumps(new_event(uid, source)) + "\n", uid)
                          for uid in ("G330100", "G330101", "G330102")])
    monkeypatch.setattr(sys, "stdin", stdin)
    out, err, code = run_ingest("-")
    assert (code, err) == (0, "")
    assert stdin.applied_before_next_line == [True, True]
    assert out.splitlines()[-1] == "3 applied, 0 rejected"


def burst_object(graceid, gpstime, far, start_time, duration):
    """A cWB event as GraceDB shows it: its time-frequency extent in MultiBurst."""
    seconds = int(start_time)
    return {
        "submitter": "cwb_online", "group": "Burst", "graceid": graceid, "pipeline": "CWB",
        "search": "AllSky", "gpstime": gpstime, "far": far, "instruments": "H1,L1", "offline": False,
        "labels": [], "likelihood": 140.0,
        "extra_attributes": {"MultiBurst": {
            "ifos": "H1,L1", "start_time": seconds, "start_time_ns": round((start_time - seconds) * 1e9),
            "duration": duration, "peak_time": int(gpstime), "central_freq": 150.5, "bandwidth": 64.0,
            "snr": 14.2, "false_alarm_rate": far, "amplitude": 5.1,
        }},
    }


def test_ingested_burst_event_claims_its_multiburst_extent(tmp_path, settings, source):
    start_time, duration = source.gpstime - 1.5, 4.0  # much wider than a CBC window
    obj = burst_object("G330300", source.gpstime, source.far, start_time, duration)
    out, err, code = ingest(tmp_path, json_lines(message("G330300", "new", data=obj, obj=obj)))
    assert (code, err) == (0, "")

    event = Event.objects.select_related("superevent").get()
    assert (event.group, event.pipeline, event.snr) == ("Burst", "cwb", 14.2)
    extra = event.extra_attributes
    assert extra["MultiBurst"] == obj["extra_attributes"]["MultiBurst"]  # kept as GraceDB sent it
    assert extra["start_time"] == pytest.approx(start_time, abs=1e-6)
    assert (extra["duration"], extra["central_frequency"], extra["bandwidth"]) == (4.0, 150.5, 64.0)
    pad = settings.ORCHESTRATOR["BURST_WINDOW_PAD_S"]
    superevent = event.superevent
    assert superevent.t_start == pytest.approx(start_time - pad, abs=1e-6)
    assert superevent.t_end == pytest.approx(start_time + duration + pad, abs=1e-6)


def test_ingested_cbc_event_gets_em_bright_and_p_astro_from_its_single_inspiral_rows(
        tmp_path, settings, source, superevent_manager_only):
    files_dir = tmp_path / "gracedb-files"
    (files_dir / "G330100").mkdir(parents=True)
    (files_dir / "G330100" / "ranking_data.xml.gz").write_bytes(b"gstlal ranking statistic")
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "INGEST_FILES_DIR": str(files_dir)}
    obj = event_object("G330100", source)
    stream = json_lines(new_event("G330100", source),
                        log_message("G330100", 3, "ranking data", filename="ranking_data.xml.gz",
                                    file_version=0, tags=["p_astro"], obj=obj))
    out, err, code = ingest(tmp_path, stream)
    assert (code, err) == (0, "")

    event = Event.objects.get()
    extra = event.extra_attributes
    assert (extra["mass1"], extra["mass2"], extra["spin1z"], extra["spin2z"]) == (1.4, 1.4, 0.0, 0.0)
    assert extra["detector_snrs"] == {ifo: source.detector_snrs[ifo] for ifo in ("H1", "L1")}
    assert extra["chirp_mass"] == pytest.approx(1.4 / 2 ** 0.2)
    assert extra["SingleInspiral"] == obj["extra_attributes"]["SingleInspiral"]  # kept as GraceDB sent it

    # Run the annotation steps that intake announced (classification for the new
    # event, p_astro for gstlal's ranking data) as the workers would.
    ranking = File.objects.get(name="ranking_data.xml.gz")
    wanted = {("alerts.annotations.classify_source", (event.pk,)),
              ("alerts.annotations.on_event_file", (event.pk, ranking.pk))}
    assert wanted <= set(superevent_manager_only)
    for path, args in sorted(wanted):
        import_string(path)(*args)

    em_bright = json.loads(File.objects.get(event=event, name="em_bright.json").read())
    assert set(em_bright) == {"HasNS", "HasRemnant", "HasMassGap"}
    assert em_bright["HasNS"] == 1.0  # two 1.4 solar-mass stars
    p_astro = json.loads(File.objects.get(event=event, name="gstlal.p_astro.json").read())
    assert set(p_astro) == {"BNS", "NSBH", "BBH", "Terrestrial"}
    assert sum(p_astro.values()) == pytest.approx(1.0)
    assert max(("BNS", "NSBH", "BBH"), key=p_astro.get) == "BNS"
    assert {"EMBRIGHT_READY", "PASTRO_READY"} <= event.label_names()


def test_a_label_no_handler_acts_on_queues_no_task_and_an_annotation_label_queues_its_own(monkeypatch):
    """dispatch asks each handler's ``when`` first: a label that every
    handler would ignore costs no queued task; an annotation label still
    reaches the handlers that act on it."""
    from django.db import transaction

    from alerts import handlers, workers
    from alerts.store import add_label
    from alerts.vocabulary import EMBRIGHT_READY
    from tests.factories import make_event

    event = make_event()
    queued = []
    monkeypatch.setattr(workers, "enqueue", lambda task, *args, **kwargs: queued.append(workers.task_path(task)))
    with transaction.atomic():
        assert add_label(event, "SOME_OTHER_LABEL", creator="igwn-alert")
    assert queued == []
    with transaction.atomic():
        assert add_label(event, EMBRIGHT_READY, creator="igwn-alert")
    assert set(queued) == {"alerts.orchestrator.flow.annotations_arrived", "alerts.superevents.reconsider_on_label"}
    assert set(handlers.subscribers(handlers.EVENT_LABEL_ADDED)) > set(queued)  # write-back is off here


def test_a_repeated_label_inside_a_transaction_is_refused_without_breaking_it():
    """The label's single INSERT ... ON CONFLICT DO NOTHING: a second add of
    the same label returns False and the transaction goes on."""
    from django.db import transaction

    from alerts.store import add_label
    from tests.factories import make_event

    event = make_event()
    with transaction.atomic():
        assert add_label(event, "DQOK") is True
        assert add_label(event, "DQOK") is False
        assert add_label(event, "DQV") is True
    assert Label.objects.filter(event=event, name="DQOK").count() == 1
    assert event.label_names() >= {"DQOK", "DQV"}
    assert Log.objects.filter(event=event, message="Label added: DQOK").count() == 1
