"""State-vector checks on real GWF frames written into a temporary directory."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from gwpy.io.gwf import get_channel_names
from gwpy.timeseries import StateVector

from alerts.science import detchar
from alerts.science.detchar import (
    DETECTOR_CHANNELS,
    LABEL_DQOK,
    LABEL_DQV,
    LABEL_INJ,
    STATE_BAD,
    STATE_GOOD,
    STATE_UNKNOWN,
    check_vectors,
    good_state_value,
)
from alerts.science.frames import (
    DEFAULT_STATE_VECTOR_RATE,
    parse_frame_file_name,
    state_vector_samples,
    write_state_vector_frame,
)

GPS_START = 1_400_000_000
FILE_DURATION = 4
FILES_PER_DETECTOR = 4  # frames cover [GPS_START, GPS_START + 16)
EVENT_START = GPS_START + 6.0
EVENT_END = GPS_START + 7.0
PAD = 2.0
WINDOW_START = EVENT_START - PAD  # GPS_START + 4, a file boundary
WINDOW_END = EVENT_END + PAD  # GPS_START + 9, inside the third file
SAMPLE_PERIOD = 1.0 / DEFAULT_STATE_VECTOR_RATE

GWF_MAGIC = b"IGWD"
HOFT_OK_BIT = 0
NO_CBC_HW_INJ_BIT = 6
ADC_OVERFLOW_BIT = 1

H1_CALIB = "H1:GDS-CALIB_STATE_VECTOR"
H1_DMT = "H1:DMT-DQ_VECTOR"
L1_CALIB = "L1:GDS-CALIB_STATE_VECTOR"
L1_DMT = "L1:DMT-DQ_VECTOR"
V1_ANALYSIS = "V1:DQ_ANALYSIS_STATE_VECTOR"

ROWS_PER_DETECTOR = {
    detector: sum(len(bits) for bits in channels.values())
    for detector, channels in DETECTOR_CHANNELS.items()
}


def write_detector_frames(root, detector, cleared=None, channels=None, n_files=FILES_PER_DETECTOR):
    """Write consecutive frames of ``detector`` under ``root/detector``.

    ``cleared`` maps a channel to ``(bit, start, end)`` intervals where that bit
    is low; ``channels`` restricts which channels are written.
    """
    cleared = cleared or {}
    definitions = DETECTOR_CHANNELS[detector]
    names = channels if channels is not None else list(definitions)
    directory = root / detector
    directory.mkdir(exist_ok=True)
    paths = []
    for index in range(n_files):
        file_start = GPS_START + index * FILE_DURATION
        words = {
            channel: state_vector_samples(
                good_state_value(definitions[channel]),
                file_start,
                FILE_DURATION,
                cleared_bits=cleared.get(channel, ()),
            )
            for channel in names
        }
        paths.append(write_state_vector_frame(directory, detector, words, file_start, FILE_DURATION))
    return paths


def frame_glob(root):
    return str(root / "{detector}" / "*.gwf")


def run_check(root, instruments="H1,L1,V1", **kwargs):
    kwargs.setdefault("pad_before", PAD)
    kwargs.setdefault("pad_after", PAD)
    return check_vectors(instruments, EVENT_START, EVENT_END, frame_glob(root), **kwargs)


@pytest.fixture
def all_good(tmp_path):
    for detector in ("H1", "L1", "V1"):
        write_detector_frames(tmp_path, detector)
    return tmp_path


# -- the frames are real GWF ------------------------------------------------------


def test_written_frames_are_gwf_and_read_back(tmp_path):
    good = good_state_value(DETECTOR_CHANNELS["H1"][H1_CALIB])
    hoft_low_second = [(HOFT_OK_BIT, GPS_START + 1, GPS_START + 2)]
    words = state_vector_samples(good, GPS_START, FILE_DURATION, cleared_bits=hoft_low_second)
    path = write_state_vector_frame(
        tmp_path, "H1", {H1_CALIB: words, H1_DMT: 0b110}, GPS_START, FILE_DURATION
    )

    assert path.name == f"H-H1_llhoft-{GPS_START}-{FILE_DURATION}.gwf"
    assert path.read_bytes()[: len(GWF_MAGIC)] == GWF_MAGIC
    assert sorted(get_channel_names(str(path))) == sorted([H1_CALIB, H1_DMT])
    described = parse_frame_file_name(path)
    assert (described.gps_start, described.gps_end) == (GPS_START, GPS_START + FILE_DURATION)

    read = StateVector.read(str(path), H1_CALIB, format="gwf")
    np.testing.assert_array_equal(read.value, words)
    assert float(read.t0.value) == GPS_START
    assert float(read.dt.value) == SAMPLE_PERIOD
    assert (read.value[16:32] & 1 == 0).all() and (read.value[:16] == good).all()
    dmt = StateVector.read(str(path), H1_DMT, format="gwf")
    assert (dmt.value == 0b110).all()


def test_writer_rejects_a_channel_of_another_detector(tmp_path):
    with pytest.raises(ValueError, match="does not belong"):
        write_state_vector_frame(tmp_path, "H1", {L1_CALIB: 3}, GPS_START, FILE_DURATION)


def test_frame_name_parsing():
    described = parse_frame_file_name("/data/H1/H-H1_HOFT_C00-1400000000-4096.gwf")
    assert described.observatory == "H"
    assert described.frame_type == "H1_HOFT_C00"
    assert described.overlaps(GPS_START + 4095, GPS_START + 5000)
    assert not described.overlaps(GPS_START + 4096, GPS_START + 5000)
    assert parse_frame_file_name("state_vectors.gwf") is None


# -- verdicts ---------------------------------------------------------------------


def test_all_good_is_dqok(all_good):
    result = run_check(all_good)

    assert result.verdict == LABEL_DQOK
    assert result.labels == (LABEL_DQOK,)
    assert not result.injection and not result.vetoed
    assert len(result.rows) == sum(ROWS_PER_DETECTOR.values())
    assert {row.state for row in result.rows} == {STATE_GOOD}
    assert (result.window_start, result.window_end) == (WINDOW_START, WINDOW_END)


def test_one_bad_bit_in_an_active_detector_is_dqv(tmp_path):
    write_detector_frames(tmp_path, "H1")
    overflow = [(ADC_OVERFLOW_BIT, GPS_START + 8, GPS_START + 8.5)]
    write_detector_frames(tmp_path, "L1", cleared={L1_DMT: overflow})
    write_detector_frames(tmp_path, "V1")

    result = run_check(tmp_path)

    assert result.verdict == LABEL_DQV
    assert result.vetoed
    assert result.labels == (LABEL_DQV,)
    (bad,) = result.bad_rows
    assert (bad.detector, bad.channel, bad.bit) == ("L1", L1_DMT, ADC_OVERFLOW_BIT)
    assert bad.name == "NO_OMC_DCPD_ADC_OVERFLOW"
    assert bad.bad_intervals == ((GPS_START + 8, GPS_START + 8.5),)
    other_rows = [row for row in result.rows if row is not bad]
    assert {row.state for row in other_rows} == {STATE_GOOD}

    text = result.as_text_table()
    bad_lines = [
        line for line in text.splitlines()
        if line.startswith("L1") and "NO_OMC_DCPD_ADC_OVERFLOW" in line
    ]
    assert len(bad_lines) == 1 and bad_lines[0].split()[-1] == STATE_BAD
    assert "verdict DQV" in text
    html = result.as_html_table()
    assert '<tr class="bad"><td>L1</td><td>L1:DMT-DQ_VECTOR</td><td>1</td>' in html
    assert html.count('<tr class="bad">') == 1


def test_bad_bit_in_inactive_detector_is_ignored(tmp_path):
    write_detector_frames(tmp_path, "H1")
    write_detector_frames(tmp_path, "L1")
    write_detector_frames(tmp_path, "V1", cleared={V1_ANALYSIS: [(HOFT_OK_BIT, GPS_START, GPS_START + 16)]})

    assert run_check(tmp_path, instruments="H1,L1,V1").verdict == LABEL_DQV

    result = run_check(tmp_path, instruments=["H1", "L1"])
    assert result.verdict == LABEL_DQOK
    assert {row.detector for row in result.rows} == {"H1", "L1"}


def test_low_injection_bit_flags_inj_without_veto(tmp_path):
    cbc_injection = [(NO_CBC_HW_INJ_BIT, GPS_START + 6, GPS_START + 7)]
    write_detector_frames(tmp_path, "H1", cleared={H1_CALIB: cbc_injection})
    write_detector_frames(tmp_path, "L1")

    result = run_check(tmp_path, instruments="H1,L1")

    assert result.injection
    assert not result.vetoed
    assert result.verdict == LABEL_DQOK
    assert result.labels == (LABEL_DQOK, LABEL_INJ)
    (injection,) = result.injection_rows
    assert (injection.detector, injection.name) == ("H1", "NO_CBC_HW_INJ")
    assert result.bad_rows == ()
    assert "bad (injection)" in result.as_text_table()


def test_injection_and_veto_are_reported_together(tmp_path):
    write_detector_frames(
        tmp_path,
        "H1",
        cleared={
            H1_CALIB: [
                (NO_CBC_HW_INJ_BIT, GPS_START + 6, GPS_START + 7),
                (HOFT_OK_BIT, GPS_START + 5, GPS_START + 6),
            ]
        },
    )

    result = run_check(tmp_path, instruments="H1")

    assert result.labels == (LABEL_DQV, LABEL_INJ)
    assert [row.name for row in result.bad_rows] == ["HOFT_OK"]


def test_injection_in_inactive_detector_is_not_flagged(tmp_path):
    write_detector_frames(tmp_path, "H1")
    cbc_injection = [(NO_CBC_HW_INJ_BIT, GPS_START, GPS_START + 16)]
    write_detector_frames(tmp_path, "L1", cleared={L1_CALIB: cbc_injection})

    result = run_check(tmp_path, instruments="H1")

    assert not result.injection
    assert result.labels == (LABEL_DQOK,)


# -- missing data is unknown, never a veto -----------------------------------------


def test_missing_detector_data_is_unknown_not_a_veto(tmp_path):
    write_detector_frames(tmp_path, "H1")
    write_detector_frames(tmp_path, "L1")  # no V1 frames at all

    result = run_check(tmp_path)

    v1_rows = [row for row in result.rows if row.detector == "V1"]
    assert len(v1_rows) == ROWS_PER_DETECTOR["V1"]
    assert {row.state for row in v1_rows} == {STATE_UNKNOWN}
    assert all("no frame file" in row.reason for row in v1_rows)
    assert not result.vetoed
    # Defined policy: DQOK needs every active detector known; partial -> no label.
    assert result.verdict is None
    assert result.labels == ()
    assert "unknown (not a veto): V1:DQ_ANALYSIS_STATE_VECTOR" in result.summary()


def test_missing_data_does_not_hide_a_veto_elsewhere(tmp_path):
    write_detector_frames(tmp_path, "H1", cleared={H1_CALIB: [(HOFT_OK_BIT, GPS_START + 6, GPS_START + 6.5)]})

    result = run_check(tmp_path, instruments="H1,L1")

    assert result.verdict == LABEL_DQV
    assert {row.state for row in result.rows if row.detector == "L1"} == {STATE_UNKNOWN}


def test_nothing_checkable_gives_no_verdict(tmp_path):
    result = run_check(tmp_path, instruments="H1,L1")

    assert result.verdict is None
    assert result.rows and all(row.state == STATE_UNKNOWN for row in result.rows)
    assert "verdict unknown" in result.summary()


def test_absent_channel_is_unknown(tmp_path):
    write_detector_frames(tmp_path, "H1", channels=[H1_CALIB])

    result = run_check(tmp_path, instruments="H1")

    states = {row.channel: row.state for row in result.rows}
    assert states == {H1_CALIB: STATE_GOOD, H1_DMT: STATE_UNKNOWN}
    assert {row.reason for row in result.unknown_rows} == {f"channel {H1_DMT} not found in frames"}
    assert result.verdict is None and not result.vetoed


def test_window_not_fully_covered_is_unknown(tmp_path):
    # Frames cover [GPS_START, GPS_START + 8) but the window ends at +9.
    write_detector_frames(tmp_path, "H1", n_files=2)

    result = run_check(tmp_path, instruments="H1")

    assert {row.state for row in result.rows} == {STATE_UNKNOWN}
    assert result.verdict is None


def test_gap_between_frames_is_unknown(tmp_path):
    paths = write_detector_frames(tmp_path, "H1")
    paths[1].unlink()  # data missing over [GPS_START + 4, GPS_START + 8)

    result = run_check(tmp_path, instruments="H1")

    assert {row.state for row in result.rows} == {STATE_UNKNOWN}


def test_detector_without_definitions_is_noted(all_good):
    result = run_check(all_good, instruments="H1,K1")

    assert result.verdict == LABEL_DQOK
    assert {row.detector for row in result.rows} == {"H1"}
    assert any(note.startswith("K1") for note in result.notes)


# -- the window ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_start", "bad_end", "expected"),
    [
        (WINDOW_START - 1.0, WINDOW_START, LABEL_DQOK),  # ends exactly where the window starts
        (WINDOW_START - 1.0, WINDOW_START + SAMPLE_PERIOD, LABEL_DQV),  # first sample inside
        (WINDOW_END, WINDOW_END + 1.0, LABEL_DQOK),  # starts exactly where the window ends
        (WINDOW_END - SAMPLE_PERIOD, WINDOW_END + 1.0, LABEL_DQV),  # last sample inside
    ],
)
def test_bad_sample_at_window_edges(tmp_path, bad_start, bad_end, expected):
    write_detector_frames(tmp_path, "H1", cleared={H1_CALIB: [(HOFT_OK_BIT, bad_start, bad_end)]})

    assert run_check(tmp_path, instruments="H1").verdict == expected


def test_sample_straddling_an_unaligned_window_edge_counts(tmp_path):
    # The window starts a little after a sample boundary: the sample that
    # straddles the edge is inside the window and must be checked.
    first_sample_low = [(HOFT_OK_BIT, WINDOW_START, WINDOW_START + SAMPLE_PERIOD)]
    write_detector_frames(tmp_path, "H1", cleared={H1_CALIB: first_sample_low})
    offset = SAMPLE_PERIOD / 2

    inside = run_check(tmp_path, instruments="H1", pad_before=PAD - offset)
    outside = run_check(tmp_path, instruments="H1", pad_before=PAD - SAMPLE_PERIOD - offset)

    assert inside.verdict == LABEL_DQV
    assert outside.verdict == LABEL_DQOK


def test_future_window_is_skipped(all_good):
    still_running = EVENT_END + PAD - 0.5
    skipped = run_check(all_good, now_gps=still_running)

    assert skipped.skipped
    assert "early-warning" in skipped.skipped_reason
    assert skipped.rows == ()
    assert skipped.verdict is None and skipped.labels == ()
    assert "skipped" in skipped.as_text_table()

    assert run_check(all_good, now_gps=EVENT_END + PAD + 1).verdict == LABEL_DQOK


# -- file selection -------------------------------------------------------------------


def test_files_outside_the_window_are_not_opened(all_good, monkeypatch):
    # Conventional names place these files far from the window: selecting by
    # name must keep the check from opening them (directories hold many files).
    far_away = [
        write_state_vector_frame(all_good / "H1", "H1", {H1_CALIB: 0}, GPS_START - 4096, FILE_DURATION),
        write_state_vector_frame(all_good / "H1", "H1", {H1_CALIB: 0}, GPS_START + 4096, FILE_DURATION),
    ]
    opened = []
    list_channels = detchar._channel_names

    def recording_channel_names(path):
        opened.append(path)
        return list_channels(path)

    monkeypatch.setattr(detchar, "_channel_names", recording_channel_names)

    assert run_check(all_good, instruments="H1").verdict == LABEL_DQOK
    assert opened and not set(far_away) & set(opened)
    assert {path.name for path in opened} == {
        f"H-H1_llhoft-{GPS_START + 4}-4.gwf",
        f"H-H1_llhoft-{GPS_START + 8}-4.gwf",
    }


def test_unconventional_file_names_are_still_read(tmp_path):
    words = {H1_CALIB: 0}  # every bit low
    detector_dir = tmp_path / "H1"
    detector_dir.mkdir()
    write_state_vector_frame(detector_dir / "h1_state.gwf", "H1", words, GPS_START, 16)

    result = run_check(tmp_path, instruments="H1")

    assert {row.state for row in result.rows if row.channel == H1_CALIB} == {STATE_BAD}
    assert result.verdict == LABEL_DQV


def test_other_frame_type_in_the_same_glob_is_not_mixed_in(tmp_path):
    write_detector_frames(tmp_path, "H1")
    # A second frame type overlapping the first in time, with the same
    # channels: reading both as one stream would fail as discontiguous.
    same_channels = {channel: good_state_value(bits) for channel, bits in DETECTOR_CHANNELS["H1"].items()}
    write_state_vector_frame(tmp_path / "H1", "H1", same_channels, GPS_START, 16, frame_type="H1_HOFT_C00")
    write_state_vector_frame(
        tmp_path / "H1", "H1", {"H1:OTHER-CHANNEL": 0}, GPS_START, 16, frame_type="H1_OTHER"
    )

    result = run_check(tmp_path, instruments="H1")

    assert result.verdict == LABEL_DQOK
    assert result.unknown_rows == ()


# -- outputs and speed ---------------------------------------------------------------


def test_report_dict_is_json(tmp_path):
    hoft_low = [(HOFT_OK_BIT, GPS_START + 5, GPS_START + 5.25)]
    write_detector_frames(tmp_path, "H1", cleared={H1_CALIB: hoft_low})

    report = json.loads(json.dumps(run_check(tmp_path, instruments="H1,L1").as_report_dict()))

    assert report["verdict"] == LABEL_DQV
    assert report["instruments"] == ["H1", "L1"]
    assert report["window"] == {"start": WINDOW_START, "end": WINDOW_END}
    bad = [check for check in report["checks"] if check["state"] == STATE_BAD]
    assert bad == [
        {
            "detector": "H1",
            "channel": H1_CALIB,
            "bit": HOFT_OK_BIT,
            "name": "HOFT_OK",
            "kind": detchar.KIND_QUALITY,
            "state": STATE_BAD,
            "bad_intervals": [[GPS_START + 5, GPS_START + 5.25]],
            "reason": None,
        }
    ]
    assert {check["state"] for check in report["checks"] if check["detector"] == "L1"} == {STATE_UNKNOWN}


def test_check_is_fast_enough_for_the_alert_path(all_good):
    run_check(all_good)  # first call pays one-off imports
    started = time.perf_counter()
    result = run_check(all_good)
    elapsed = time.perf_counter() - started

    assert result.verdict == LABEL_DQOK
    assert elapsed < 1.0
