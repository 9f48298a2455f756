"""Reading CBC pipeline uploads: real pipeline files, mock events, bad bytes."""

import gzip
import io
import json
from importlib.resources import files

import lal.series
import pytest
from igwn_ligolw import ligolw, lsctables
from igwn_ligolw import types as ligolw_types
from igwn_ligolw import utils as ligolw_utils

from alerts.science.coinc import (
    CoincError,
    PsdError,
    chirp_mass,
    parse_coinc,
    parse_psd,
)

#: Real uploads shipped as test data by ligo.skymap and p_astro.
SKYMAP_DATA = files("ligo.skymap.io.tests.data")
P_ASTRO_DATA = files("ligo.p_astro.tests.data")

#: Facts read off ligo.skymap's G211117_coinc.xml.gz, a gstlal upload with
#: legacy ilwd:char row IDs.
G211117 = {
    "gps_seconds": 1135136350,
    "gps_nanoseconds": 647757924,
    "far": 3.332628572265315e-11,
    "snr": 11.71034723464594,
    "instruments": ("H1", "L1"),
    "mass1": 19.924686,
    "mass2": 6.4254546,
    "likelihood": 22.59958173984415,
    "program": "gstlal_inspiral",
}

#: Relative precision of real_4 (float32) columns.
FLOAT32_RTOL = 1e-6

#: Two equal 1.4 solar-mass stars have chirp mass 1.4 / 2**(1/5).
EQUAL_MASS = 1.4
EQUAL_MASS_CHIRP_MASS = 1.2187707886


def _document(data: bytes):
    return ligolw_utils.load_fileobj(
        io.BytesIO(data), contenthandler=ligolw.LIGOLWContentHandler
    )


def _bytes(xmldoc) -> bytes:
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(xmldoc, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def coinc_xml(mock_events):
    return mock_events[0].coinc_xml


# --- real pipeline uploads ------------------------------------------------


def test_gstlal_upload_with_legacy_ids():
    summary = parse_coinc(SKYMAP_DATA.joinpath("G211117_coinc.xml.gz").read_bytes())
    assert summary.gps_seconds == G211117["gps_seconds"]
    assert summary.gps_nanoseconds == G211117["gps_nanoseconds"]
    assert summary.gpstime == pytest.approx(
        G211117["gps_seconds"] + G211117["gps_nanoseconds"] * 1e-9, abs=1e-6
    )
    assert summary.far == G211117["far"]
    assert summary.snr == G211117["snr"]
    assert summary.instruments == G211117["instruments"]
    assert summary.mass1 == pytest.approx(G211117["mass1"], rel=FLOAT32_RTOL)
    assert summary.mass2 == pytest.approx(G211117["mass2"], rel=FLOAT32_RTOL)
    assert summary.chirp_mass == pytest.approx(
        chirp_mass(G211117["mass1"], G211117["mass2"]), rel=FLOAT32_RTOL
    )
    assert summary.likelihood == G211117["likelihood"]
    assert summary.program == G211117["program"]
    assert summary.f_low is None
    assert set(summary.detector_snrs) == set(summary.instruments)


@pytest.mark.parametrize(
    "resource",
    [
        SKYMAP_DATA.joinpath("G197392_coinc.xml.gz"),
        P_ASTRO_DATA.joinpath("coinc.xml"),
        P_ASTRO_DATA.joinpath("coinc_G322589.xml"),
        P_ASTRO_DATA.joinpath("coinc_G5351.xml"),
    ],
    ids=lambda resource: resource.name,
)
def test_other_real_uploads_parse(resource):
    summary = parse_coinc(resource.read_bytes())
    assert summary.far > 0
    assert summary.snr > 0
    assert summary.mass1 >= summary.mass2 > 0
    assert set(summary.instruments) <= set(summary.detector_snrs) | {"V1"}
    assert len(summary.instruments) >= 2


def test_real_psd_upload():
    spectra = parse_psd(SKYMAP_DATA.joinpath("G211117_psd.xml.gz").read_bytes())
    assert set(spectra) == {"H1", "L1"}
    assert all(len(series.data.data) > 0 for series in spectra.values())


# --- mock uploads -----------------------------------------------------------


def test_gzip_and_plain_give_the_same_summary(coinc_xml):
    assert parse_coinc(gzip.compress(coinc_xml)) == parse_coinc(coinc_xml)


def test_summary_serializes_to_json(coinc_xml):
    summary = parse_coinc(coinc_xml)
    values = json.loads(json.dumps(summary.as_dict()))
    assert values["far"] == summary.far
    assert values["instruments"] == list(summary.instruments)
    assert values["detector_snrs"] == summary.detector_snrs


def test_embedded_psd_is_detected_and_readable(mock_events):
    event = mock_events[0]
    xmldoc = _document(event.coinc_xml)
    psd_doc = _document(gzip.decompress(event.psd_xml_gz))
    spectra = lal.series.read_psd_xmldoc(psd_doc)
    lal.series.make_psd_xmldoc(spectra, xmldoc=xmldoc.childNodes[0])
    with_psd = _bytes(xmldoc)

    assert parse_coinc(with_psd).has_psd
    assert tuple(sorted(parse_psd(with_psd))) == event.instruments


@pytest.mark.parametrize(
    ("param", "value", "expected"),
    [
        ("--low-frequency-cutoff", "20", 20.0),
        ("--flow", "15.5", 15.5),
        ("--f_low", "25", 25.0),
        ("--some-other-option", "20", None),
        ("--f-low", "not a number", None),
    ],
)
def test_f_low_from_process_params(coinc_xml, param, value, expected):
    xmldoc = _document(coinc_xml)
    for row in lsctables.ProcessParamsTable.get_table(xmldoc):
        if row.param == "--f-low":
            row.param, row.value = param, value
    assert parse_coinc(_bytes(xmldoc)).f_low == expected


def test_missing_network_snr_falls_back_to_quadrature_sum(coinc_xml):
    xmldoc = _document(coinc_xml)
    (row,) = lsctables.CoincInspiralTable.get_table(xmldoc)
    row.snr = None
    summary = parse_coinc(_bytes(xmldoc))
    assert summary.snr == pytest.approx(
        sum(snr**2 for snr in summary.detector_snrs.values()) ** 0.5
    )


def test_chirp_mass_of_equal_masses():
    assert chirp_mass(EQUAL_MASS, EQUAL_MASS) == pytest.approx(EQUAL_MASS_CHIRP_MASS)


# --- malformed uploads ------------------------------------------------------


def _without_combined_far_column(coinc_xml):
    xmldoc = _document(coinc_xml)
    table = lsctables.CoincInspiralTable.get_table(xmldoc)
    table.removeChild(table.getColumnByName("combined_far"))
    return _bytes(xmldoc)


def _with_empty_combined_far(coinc_xml):
    xmldoc = _document(coinc_xml)
    (row,) = lsctables.CoincInspiralTable.get_table(xmldoc)
    row.combined_far = None
    return _bytes(xmldoc)


def _without_table(coinc_xml, table_class):
    xmldoc = _document(coinc_xml)
    table = table_class.get_table(xmldoc)
    table.parentNode.removeChild(table)
    return _bytes(xmldoc)


def _without_sngl_rows(coinc_xml):
    xmldoc = _document(coinc_xml)
    del lsctables.SnglInspiralTable.get_table(xmldoc)[:]
    return _bytes(xmldoc)


def _with_two_candidates(coinc_xml):
    xmldoc = _document(coinc_xml)
    table = lsctables.CoincInspiralTable.get_table(xmldoc)
    table.append(table[0])
    return _bytes(xmldoc)


def _with_text_in_a_number_column(coinc_xml):
    table = lsctables.CoincInspiralTable.get_table(_document(coinc_xml))
    (row,) = table
    written_snr = ligolw_types.FormatFunc[table.validcolumns["snr"]](row.snr)
    text = coinc_xml.decode()
    assert written_snr in text
    return text.replace(written_snr, "loud", 1).encode()


def _real_psd_upload():
    return SKYMAP_DATA.joinpath("G211117_psd.xml.gz").read_bytes()


MALFORMED_COINCS = {
    "empty file": (lambda coinc: b"", "empty"),
    "not xml": (lambda coinc: b"GPS 1400000000 FAR 1e-10\n", "not a LIGO-LW"),
    "truncated xml": (lambda coinc: coinc[: len(coinc) // 2], "not a LIGO-LW"),
    "truncated gzip": (
        lambda coinc: gzip.compress(coinc)[: len(gzip.compress(coinc)) // 2],
        "gzip",
    ),
    "gzip magic then garbage": (lambda coinc: b"\x1f\x8bnot really gzip", "gzip"),
    "gzip of nothing": (lambda coinc: gzip.compress(b""), "empty"),
    "xml that is not ligo-lw": (
        lambda coinc: b"<?xml version='1.0'?><html><body>hi</body></html>",
        "not a LIGO-LW",
    ),
    "psd document instead": (
        lambda coinc: _real_psd_upload(),
        "coinc_inspiral",
    ),
    "no coinc_inspiral table": (
        lambda coinc: _without_table(coinc, lsctables.CoincInspiralTable),
        "coinc_inspiral",
    ),
    "combined_far column missing": (_without_combined_far_column, "FAR"),
    "combined_far empty": (_with_empty_combined_far, "FAR"),
    "no sngl_inspiral table": (
        lambda coinc: _without_table(coinc, lsctables.SnglInspiralTable),
        "sngl_inspiral",
    ),
    "no sngl_inspiral rows": (_without_sngl_rows, "sngl_inspiral"),
    "two candidates": (_with_two_candidates, "exactly one"),
    "text in a number column": (_with_text_in_a_number_column, "not a LIGO-LW"),
}


@pytest.mark.parametrize("case", MALFORMED_COINCS, ids=str)
def test_malformed_coinc_raises_one_line_coinc_error(coinc_xml, case):
    make_bytes, reason = MALFORMED_COINCS[case]
    with pytest.raises(CoincError) as raised:
        parse_coinc(make_bytes(coinc_xml))
    message = str(raised.value)
    assert reason in message
    assert "\n" not in message
    assert isinstance(raised.value, ValueError)


MALFORMED_PSDS = {
    "empty file": (lambda coinc: b"", "empty"),
    "not xml": (lambda coinc: b"H1 1e-46\n", "not a LIGO-LW"),
    "truncated gzip": (
        lambda coinc: _real_psd_upload()[: len(_real_psd_upload()) // 2],
        "gzip",
    ),
    "coinc without spectra": (lambda coinc: coinc, "no per-detector"),
}


@pytest.mark.parametrize("case", MALFORMED_PSDS, ids=str)
def test_malformed_psd_raises_one_line_psd_error(coinc_xml, case):
    make_bytes, reason = MALFORMED_PSDS[case]
    with pytest.raises(PsdError) as raised:
        parse_psd(make_bytes(coinc_xml))
    message = str(raised.value)
    assert reason in message
    assert "\n" not in message
