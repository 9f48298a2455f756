"""State-vector checks of superevents: labels, log table, report file.

Events here are below the alert thresholds, so the orchestrator (on here)
runs the check, as it does for every new superevent, and stops; what it
recorded is asserted."""
import json

import pytest

from alerts import detchar_task
from alerts.models import Superevent
from alerts.store import add_label
from tests.annotated import write_frames
from tests.factories import T0, make_event

pytestmark = pytest.mark.django_db(transaction=True)

NOT_SIGNIFICANT_FAR = 1e-4


@pytest.fixture(autouse=True)
def alerts_on(settings, isolated_orchestrator):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": True}


@pytest.fixture
def frames_glob(settings, isolated_orchestrator, tmp_path):
    def configure(**write_kwargs):
        glob = write_frames(tmp_path / "frames", **write_kwargs)
        settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DETCHAR_FRAME_GLOB": glob}
        return glob
    return configure


def checked(**event_kwargs):
    event = make_event(far=NOT_SIGNIFICANT_FAR, **event_kwargs)
    event.refresh_from_db()
    superevent = Superevent.objects.get(pk=event.superevent_id)
    report = json.loads(superevent.files.get(name="data_quality_report.json").read())
    log = superevent.logs.get(file__name="data_quality_report.json").message
    return superevent, report, log


def test_no_frames_configured_is_unknown_not_a_veto():
    superevent, report, log = checked()
    assert report["verdict"] is None and "DETCHAR_FRAME_GLOB is empty" in report["skipped_reason"]
    assert not {"DQOK", "DQV", "INJ"} & superevent.label_names()
    assert "unknown, not a veto" in log
    assert superevent.files.get(name="data_quality_report.json").tags == ["data_quality"]


def test_good_bits_give_dqok_with_the_table_in_the_log(frames_glob):
    glob = frames_glob()
    superevent, report, log = checked()
    assert superevent.label_names() >= {"DQOK"} and not {"DQV", "INJ"} & superevent.label_names()
    assert report["verdict"] == "DQOK" and report["frame_glob"] == glob
    # CBC: 2 s either side of the superevent window [T0 - 1, T0 + 1].
    assert report["window"] == {"start": T0 - 3, "end": T0 + 3}
    assert {row["state"] for row in report["checks"]} == {"good"}
    assert "H1:GDS-CALIB_STATE_VECTOR" in log and "L1:DMT-DQ_VECTOR" in log and "OBSERVATION_INTENT" in log


def test_bad_bit_gives_dqv_and_injection_bit_gives_inj(frames_glob):
    frames_glob(cleared=[("H1", "DMT-DQ_VECTOR", 1, T0 + 0.5, T0 + 0.6),
                         ("L1", "GDS-CALIB_STATE_VECTOR", 7, T0 - 2.5, T0 - 2.0)])
    superevent, report, log = checked()
    assert {"DQV", "INJ"} <= superevent.label_names() and "DQOK" not in superevent.label_names()
    bad = {(row["channel"], row["name"]) for row in report["checks"] if row["state"] == "bad"}
    assert bad == {("H1:DMT-DQ_VECTOR", "NO_OMC_DCPD_ADC_OVERFLOW"), ("L1:GDS-CALIB_STATE_VECTOR", "NO_BURST_HW_INJ")}
    assert "bad (injection)" in log


def test_missing_detector_data_is_unknown_and_logged(frames_glob):
    frames_glob(detectors=("H1",))
    superevent, report, log = checked(instruments=("H1", "L1", "V1"))
    assert not {"DQOK", "DQV"} & superevent.label_names()
    states = {row["detector"]: set() for row in report["checks"]}
    for row in report["checks"]:
        states[row["detector"]].add(row["state"])
    assert states == {"H1": {"good"}, "L1": {"unknown"}, "V1": {"unknown"}}
    assert "unknown (not a veto)" in log


def test_burst_padding_and_pipeline_override(frames_glob, settings):
    frames_glob()
    _, report, _ = checked(group="Burst", pipeline="cwb", snr=None)
    assert report["padding_s"] == {"before": 1.5, "after": 1.5}
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DETCHAR_PAD_S": {"CBC": (2, 2), "Burst": (1.5, 1.5),
                                                                         "olib": (0.5, 1.0)}}
    _, report, _ = checked(group="Burst", pipeline="olib", snr=None, gpstime=T0 + 100)
    assert report["window"] == {"start": T0 + 100 - 1 - 0.5, "end": T0 + 100 + 1 + 1.0}


def test_candidate_ending_in_the_future_is_skipped(frames_glob, monkeypatch):
    frames_glob()
    monkeypatch.setattr(detchar_task, "now_gps", lambda: T0 + 2.0)  # before the window ends (T0 + 3)
    superevent, report, log = checked(search="EarlyWarning")
    assert report["verdict"] is None and "early-warning" in report["skipped_reason"]
    assert not {"DQOK", "DQV"} & superevent.label_names()


def test_a_recheck_replaces_the_verdict_labels_it_added_but_keeps_inj_and_human_labels(frames_glob, settings,
                                                                                       tmp_path):
    """The clean-up re-checks a new preferred event: the labels must follow
    the fresh result, never leave an old DQV vetoing or DQOK beside DQV."""
    frames_glob(cleared=[("L1", "GDS-CALIB_STATE_VECTOR", 0, T0 + 0.2, T0 + 0.4),
                         ("H1", "GDS-CALIB_STATE_VECTOR", 6, T0 - 0.5, T0 + 0.5)])
    superevent, _, _ = checked()
    event = superevent.preferred_event
    assert {"DQV", "INJ"} <= superevent.label_names() and "DQOK" not in superevent.label_names()

    good = write_frames(tmp_path / "good-frames")
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DETCHAR_FRAME_GLOB": good}
    assert detchar_task.check_superevent(superevent, event).verdict == "DQOK"
    labels = superevent.label_names()
    assert "DQOK" in labels and "DQV" not in labels
    assert "INJ" in labels  # an injection seen in the window never goes away
    assert "Label removed: DQV" in {entry.message for entry in superevent.logs.all()}

    # Unknown quality (no frames): no verdict stands any more.
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DETCHAR_FRAME_GLOB": ""}
    detchar_task.check_superevent(superevent, event)
    assert not {"DQOK", "DQV"} & superevent.label_names()

    # A DQV a human applied is theirs: a good check never removes it.
    add_label(superevent, "DQV", creator="advocate")
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "DETCHAR_FRAME_GLOB": good}
    detchar_task.check_superevent(superevent, event)
    assert {"DQOK", "DQV"} <= superevent.label_names()
