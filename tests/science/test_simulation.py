"""Mock CBC events: physically sensible, parseable, reproducible, usable."""

import io
import logging
import math

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import SkyCoord
from igwn_ligolw import lsctables
from ligo.skymap.bayestar import localize
from ligo.skymap.io import events as skymap_events
from ligo.skymap.postprocess.crossmatch import crossmatch

from alerts.mockdata import simulation
from alerts.science.coinc import parse_coinc, parse_psd
from alerts.mockdata.simulation import (
    DUPLICATE_MAX_TIME_OFFSET_S,
    F_LOW_HZ,
    INSIGNIFICANT_FAR_RANGE_HZ,
    NETWORK_SNR_THRESHOLD,
    PIPELINES,
    SIGNIFICANT_FAR_RANGE_HZ,
    SINGLE_DETECTOR_SNR_THRESHOLD,
    SOURCE_CLASSES,
    TEMPLATE_WAVEFORM,
    make_mock_events,
)

from .conftest import MOCK_SOURCE_COUNT, MOCK_START_GPS

#: Largest arrival-time difference between the geocentre and a detector on
#: Earth's surface (Earth radius / c), s.
MAX_GEOCENTRE_DELAY_S = 0.0213

#: Relative precision of real_4 (float32) columns such as sngl_inspiral.snr.
FLOAT32_RTOL = 1e-6

#: A calibrated sky map puts the true position outside its 99% credible
#: region only 1% of the time; a broken one (wrong times, phases or PSDs)
#: misses by far more.
CREDIBLE_LEVEL = 0.99

#: Program name ligo.skymap's event reader needs for its phase convention.
REALIZE_PROGRAM = "bayestar-realize-coincs"

#: Sub-sample tolerance when comparing SNR-series peaks with trigger times:
#: two samples of the 8192 Hz series.
PEAK_TIME_TOLERANCE_S = 2 / 8192


def test_mock_events_count_order_and_spacing(mock_events):
    assert len(mock_events) == MOCK_SOURCE_COUNT
    assert [event.source_index for event in mock_events] == list(range(4))
    spacing = simulation.DEFAULT_SPACING_S
    for index, event in enumerate(mock_events):
        slot_start = MOCK_START_GPS + index * spacing
        assert slot_start <= event.source.geocent_time < slot_start + 1
        assert event.pipeline == PIPELINES[0]


def test_mock_events_mix_classes_significance_and_networks(mock_events):
    """The shared fixture covers what downstream tests need to tell apart."""
    assert {event.source.source_class for event in mock_events} == set(SOURCE_CLASSES)
    significant = [event.far <= SIGNIFICANT_FAR_RANGE_HZ[1] for event in mock_events]
    assert any(significant) and not all(significant)
    assert {len(event.instruments) for event in mock_events} == {2, 3}


def test_parsed_coinc_matches_simulated_truth(mock_events):
    for event in mock_events:
        summary = parse_coinc(event.coinc_xml)
        source = event.source
        assert summary.mass1 == pytest.approx(source.mass1, rel=FLOAT32_RTOL)
        assert summary.mass2 == pytest.approx(source.mass2, rel=FLOAT32_RTOL)
        assert summary.spin1z == pytest.approx(source.spin1z, rel=FLOAT32_RTOL)
        assert summary.spin2z == pytest.approx(source.spin2z, rel=FLOAT32_RTOL)
        assert summary.gpstime == event.gpstime
        assert summary.far == event.far
        assert summary.snr == event.snr
        assert summary.instruments == event.instruments
        assert summary.detector_snrs == event.detector_snrs
        assert summary.f_low == F_LOW_HZ
        assert summary.program == REALIZE_PROGRAM
        assert summary.likelihood == pytest.approx(event.snr**2 / 2)
        assert not summary.has_psd


def test_sources_are_physical(mock_events):
    for event in mock_events:
        source = event.source
        limits = SOURCE_CLASSES[source.source_class]
        assert source.mass1 >= source.mass2
        assert limits.mass1_range[0] <= source.mass1 <= limits.mass1_range[1]
        assert limits.mass2_range[0] <= source.mass2 <= limits.mass2_range[1]
        assert abs(source.spin1z) <= limits.max_spin1
        assert abs(source.spin2z) <= limits.max_spin2
        assert 0 <= source.ra < 2 * math.pi
        assert -math.pi / 2 <= source.dec <= math.pi / 2
        assert 0 <= source.inclination <= math.pi
        assert source.distance > 0
        assert abs(event.gpstime - source.geocent_time) < MAX_GEOCENTRE_DELAY_S


def test_realized_events_pass_the_detection_thresholds(mock_events):
    for event in mock_events:
        assert event.snr >= NETWORK_SNR_THRESHOLD
        assert len(event.detector_snrs) >= simulation.MIN_TRIGGERS
        assert min(event.detector_snrs.values()) >= SINGLE_DETECTOR_SNR_THRESHOLD
        assert event.snr == pytest.approx(
            math.sqrt(sum(snr**2 for snr in event.detector_snrs.values())),
            rel=FLOAT32_RTOL,
        )


def test_psd_file_holds_the_event_detectors(mock_events):
    for event in mock_events:
        spectra = parse_psd(event.psd_xml_gz)
        assert tuple(sorted(spectra)) == event.instruments


def test_coinc_holds_the_tables_of_a_pipeline_upload(mock_events):
    upload_tables = {
        lsctables.ProcessTable,
        lsctables.ProcessParamsTable,
        lsctables.CoincTable,
        lsctables.CoincMapTable,
        lsctables.CoincInspiralTable,
        lsctables.SnglInspiralTable,
        lsctables.TimeSlideTable,
        lsctables.CoincDefTable,
    }
    event = mock_events[0]
    text = event.coinc_xml.decode()
    for table in upload_tables:
        assert f'Name="{table.tableName}:table"' in text
    assert "sim_inspiral" not in text
    assert text.count('Name="COMPLEX8TimeSeries"') == len(event.instruments)
    assert "/tmp" not in text


def test_same_seed_gives_identical_bytes_and_different_seed_does_not():
    first = make_mock_events(1, seed=11, start_gps=MOCK_START_GPS)
    again = make_mock_events(1, seed=11, start_gps=MOCK_START_GPS)
    other = make_mock_events(1, seed=12, start_gps=MOCK_START_GPS)
    assert first == again
    assert first[0].coinc_xml == again[0].coinc_xml
    assert first[0].source != other[0].source
    assert first[0].coinc_xml != other[0].coinc_xml


def test_tools_leave_no_process_wide_side_effects():
    root = logging.getLogger()
    handlers_before, level_before = list(root.handlers), root.level
    np.random.seed(0)
    expected_draw = np.random.uniform()
    np.random.seed(0)
    next_id_before = lsctables.CoincTable.next_id

    make_mock_events(1, seed=13, start_gps=MOCK_START_GPS)

    assert np.random.uniform() == expected_draw
    assert root.handlers == handlers_before and root.level == level_before
    assert lsctables.CoincTable.next_id == next_id_before


def test_duplicates_land_within_a_superevent_window(mock_events_with_duplicates):
    by_source = {}
    for event in mock_events_with_duplicates:
        by_source.setdefault(event.source_index, []).append(event)
    assert len(by_source) == 2
    for detections in by_source.values():
        assert [event.pipeline for event in detections] == list(PIPELINES)
        # A duplicate that drops a detector also moves its mean trigger time
        # by up to an inter-detector light travel time.
        for event in detections[1:]:
            assert abs(event.gpstime - detections[0].gpstime) <= (
                DUPLICATE_MAX_TIME_OFFSET_S + 2 * MAX_GEOCENTRE_DELAY_S
            )
        assert len({event.far for event in detections}) == len(detections)
        assert len({event.snr for event in detections}) == len(detections)
        masses = {parse_coinc(event.coinc_xml).mass1 for event in detections}
        assert len(masses) == 1
    first, second = (by_source[index][0] for index in (0, 1))
    assert second.gpstime - first.gpstime > 1


def test_some_duplicate_drops_its_weakest_detector(mock_events_with_duplicates):
    realized = {
        event.source_index: event
        for event in mock_events_with_duplicates
        if event.pipeline == PIPELINES[0]
    }
    dropped = [
        event
        for event in mock_events_with_duplicates
        if set(event.instruments) < set(realized[event.source_index].instruments)
    ]
    assert dropped
    for event in dropped:
        full = realized[event.source_index].detector_snrs
        (missing,) = set(full) - set(event.instruments)
        assert full[missing] == min(full.values())
        assert parse_psd(event.psd_xml_gz).keys() == set(event.instruments)


def test_duplicate_snr_series_move_with_their_triggers(mock_events_with_duplicates):
    """ligo.skymap reads each series; its peak sits at the trigger time."""
    for event in mock_events_with_duplicates:
        source = skymap_events.ligolw.open(
            io.BytesIO(event.coinc_xml), psd_file=io.BytesIO(event.psd_xml_gz)
        )
        (candidate,) = source.values()
        for single in candidate.singles:
            series = single.snr_series
            peak = np.argmax(np.abs(series.data.data))
            peak_time = float(series.epoch) + peak * series.deltaT
            assert peak_time == pytest.approx(single.time, abs=PEAK_TIME_TOLERANCE_S)
            assert np.abs(series.data.data[peak]) == pytest.approx(single.snr, rel=0.05)


@pytest.mark.parametrize(
    ("insignificant_fraction", "far_range"),
    [(0.0, SIGNIFICANT_FAR_RANGE_HZ), (1.0, INSIGNIFICANT_FAR_RANGE_HZ)],
)
def test_far_follows_the_requested_significance(insignificant_fraction, far_range):
    detections = make_mock_events(
        2,
        seed=17,
        start_gps=MOCK_START_GPS,
        pipelines_per_source=2,
        insignificant_fraction=insignificant_fraction,
    )
    low, high = far_range
    assert all(low <= event.far <= high for event in detections)


def test_network_choice_is_respected():
    events = make_mock_events(
        2, seed=19, start_gps=MOCK_START_GPS, detectors=("H1", "V1")
    )
    assert all(event.instruments == ("H1", "V1") for event in events)


def test_sources_below_threshold_are_replaced(monkeypatch):
    """With no SNR margin noise drops sources; each slot is filled again."""
    realizations = []
    original_realize = simulation._realize

    def counting_realize(*args, **kwargs):
        realizations.append(args[0])
        return original_realize(*args, **kwargs)

    monkeypatch.setattr(simulation, "_realize", counting_realize)
    monkeypatch.setattr(simulation, "EXPECTED_SNR_MARGIN", 0.8)
    events = make_mock_events(3, seed=23, start_gps=MOCK_START_GPS)

    assert len(realizations) > 1
    assert [event.source_index for event in events] == [0, 1, 2]
    for event in events:
        assert event.snr >= NETWORK_SNR_THRESHOLD
        assert parse_coinc(event.coinc_xml).mass1 == pytest.approx(
            event.source.mass1, rel=FLOAT32_RTOL
        )


@pytest.mark.parametrize(
    "arguments",
    [
        {"count": -1},
        {"pipelines_per_source": 0},
        {"pipelines_per_source": len(PIPELINES) + 1},
        {"insignificant_fraction": 1.5},
        {"spacing": 0},
        {"detectors": ("H1",)},
        {"detectors": ("H1", "X9")},
    ],
)
def test_bad_arguments_are_refused(arguments):
    call = {"count": 1, "seed": 1, "start_gps": MOCK_START_GPS, **arguments}
    with pytest.raises(ValueError):
        make_mock_events(**call)


def test_bayestar_localizes_a_mock_event(mock_events):
    """The coinc + psd pair is a valid BAYESTAR input and the map is sane.

    Uses the fixture's two-detector event: BAYESTAR's cost grows with the
    number of detectors.
    """
    event = next(event for event in mock_events if len(event.instruments) == 2)
    source = skymap_events.ligolw.open(
        io.BytesIO(event.coinc_xml), psd_file=io.BytesIO(event.psd_xml_gz)
    )
    (candidate,) = source.values()
    assert sorted(single.detector for single in candidate.singles) == list(
        event.instruments
    )

    sky_map = localize(candidate, waveform=TEMPLATE_WAVEFORM, f_low=F_LOW_HZ)

    truth = event.source
    result = crossmatch(
        sky_map,
        SkyCoord(truth.ra * u.rad, truth.dec * u.rad, truth.distance * u.Mpc),
    )
    assert result.searched_prob < CREDIBLE_LEVEL
    assert result.searched_prob_dist < CREDIBLE_LEVEL
