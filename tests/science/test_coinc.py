"""Reading CBC pipeline uploads: real pipeline files, mock events, bad bytes."""

import dataclasses
import gc
import gzip
import io
import json
import math
import re
from importlib.resources import files
from xml.sax.xmlreader import AttributesImpl

import lal.series
import pytest
from igwn_ligolw import ligolw, lsctables
from igwn_ligolw import types as ligolw_types
from igwn_ligolw import utils as ligolw_utils
from ligo.skymap.util import ilwd

from alerts.science import coinc as coinc_module
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


def _edited_text(data: bytes, pattern: str, replacement: str) -> bytes:
    """``data`` (plain or gzip) with the first match of ``pattern`` replaced."""
    compressed = data[:2] == coinc_module.GZIP_MAGIC
    text = (gzip.decompress(data) if compressed else data).decode()
    edited, count = re.subn(pattern, replacement, text, count=1)
    assert count == 1, pattern
    return gzip.compress(edited.encode()) if compressed else edited.encode()


#: An Array whose Stream bytes do not fit its declared Type: igwn-ligolw
#: raises RuntimeError ("... bytes were not decoded").
DAMAGED_ARRAY = (r'<Array Type="real_8"', '<Array Type="lstring"')
#: A <Time> element that is not a GPS time: lal raises RuntimeError.
DAMAGED_TIME = (r'(<Time Type="GPS" Name="epoch">)[^<]*', r"\1yesterday")
#: A PSD unit lal cannot parse: read_psd_xmldoc raises RuntimeError.
DAMAGED_PSD_UNIT = (
    r'(<Array Type="real_8" Name="PSD:array" Unit=")[^"]*"',
    r'\1bogus^^"',
)


def _with_coinc_value(column, value):
    def edit(coinc_xml):
        xmldoc = _document(coinc_xml)
        (row,) = lsctables.CoincInspiralTable.get_table(xmldoc)
        setattr(row, column, value)
        return _bytes(xmldoc)

    return edit


def _with_zero_masses(coinc_xml):
    xmldoc = _document(coinc_xml)
    for row in lsctables.SnglInspiralTable.get_table(xmldoc):
        row.mass1 = 0.0
    return _bytes(xmldoc)


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
    "damaged snr series array": (
        lambda coinc: _edited_text(coinc, *DAMAGED_ARRAY),
        "bytes were not decoded",
    ),
    "damaged time element": (
        lambda coinc: _edited_text(coinc, *DAMAGED_TIME),
        "not a LIGO-LW",
    ),
    "negative far": (_with_coinc_value("combined_far", -1.0), "combined_far: -1.0"),
    "nan far": (_with_coinc_value("combined_far", math.nan), "combined_far: nan"),
    "infinite far": (_with_coinc_value("combined_far", math.inf), "combined_far: inf"),
    "nan snr": (_with_coinc_value("snr", math.nan), "coinc_inspiral.snr: nan"),
    "zero template mass": (_with_zero_masses, "mass1: 0.0"),
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
    "damaged time element": (
        lambda coinc: _edited_text(_real_psd_upload(), *DAMAGED_TIME),
        "not a LIGO-LW",
    ),
    "unit lal cannot read": (
        lambda coinc: _edited_text(_real_psd_upload(), *DAMAGED_PSD_UNIT),
        "malformed frequency series",
    ),
}


@pytest.mark.parametrize("case", MALFORMED_PSDS, ids=str)
def test_malformed_psd_raises_one_line_psd_error(coinc_xml, case):
    make_bytes, reason = MALFORMED_PSDS[case]
    with pytest.raises(PsdError) as raised:
        parse_psd(make_bytes(coinc_xml))
    message = str(raised.value)
    assert reason in message
    assert "\n" not in message


def test_psd_with_a_damaged_binary_array_raises_one_line_psd_error(mock_events):
    # The mock PSDs (lal.series) store each spectrum as a base64 Array stream,
    # whose bytes igwn-ligolw decodes by the Array's Type.
    damaged = _edited_text(mock_events[0].psd_xml_gz, *DAMAGED_ARRAY)
    with pytest.raises(PsdError) as raised:
        parse_psd(damaged)
    message = str(raised.value)
    assert "bytes were not decoded" in message
    assert "\n" not in message


# --- the quick loader against igwn-ligolw's stock loader ---------------------
#
# parse_coinc and parse_psd load documents through private subclasses of the
# igwn-ligolw elements that skip repeated bookkeeping (alerts.science.coinc,
# "a quicker load").  These tests hold them to the stock loader: the same
# tree, the same summary field by field, the same error for a malformed
# column list.

REAL_COINCS = {
    "G211117 (gstlal, legacy ilwd:char IDs)": SKYMAP_DATA.joinpath("G211117_coinc.xml.gz"),
    "G197392 (pycbc)": SKYMAP_DATA.joinpath("G197392_coinc.xml.gz"),
    "p_astro coinc.xml": P_ASTRO_DATA.joinpath("coinc.xml"),
    "G322589": P_ASTRO_DATA.joinpath("coinc_G322589.xml"),
    "G5351": P_ASTRO_DATA.joinpath("coinc_G5351.xml"),
}

#: What parse_coinc says before igwn-ligolw's own reason.
NOT_LIGO_LW = "coinc file is not a LIGO-LW XML document: "


def _stock_content_handler():
    """igwn-ligolw's stock handler with ligo.skymap's legacy-ID adapter.

    A new class per load, like the module's own loader: the adapter keeps
    per-class state that a failed load can leave behind.
    """
    return ilwd.use_in(type("StockContentHandler", (ligolw.LIGOLWContentHandler,), {}))


def _stock_load(data: bytes):
    return ligolw_utils.load_fileobj(io.BytesIO(data), contenthandler=_stock_content_handler())


def _quick_load(data: bytes):
    return coinc_module._load_document(data, CoincError, "coinc file")


def _xml_of(xmldoc) -> bytes:
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(xmldoc, buffer)
    return buffer.getvalue()


def _assert_same_as_stock(data: bytes):
    """parse_coinc(data) equals the summary of igwn-ligolw's full stock load."""
    quick = parse_coinc(data)
    stock = coinc_module._summarize_coinc(_stock_load(data))
    for summary_field in dataclasses.fields(coinc_module.CoincSummary):
        name = summary_field.name
        assert getattr(quick, name) == getattr(stock, name), name
        assert type(getattr(quick, name)) is type(getattr(stock, name)), name
    assert quick == stock

    quick_doc, stock_doc = _quick_load(data), _stock_load(data)
    assert _xml_of(quick_doc) == _xml_of(stock_doc)
    quick_elements = list(ligolw.WalkChildren(quick_doc))
    stock_elements = list(ligolw.WalkChildren(stock_doc))
    assert len(quick_elements) == len(stock_elements)
    for quick_element, stock_element in zip(quick_elements, stock_elements):
        assert isinstance(quick_element, type(stock_element))
        assert repr(type(quick_element)) == repr(type(stock_element))
        assert quick_element.attributes.items() == stock_element.attributes.items()
        if isinstance(stock_element, ligolw.Table):
            assert quick_element.columnnames == stock_element.columnnames
            assert [vars(row) if hasattr(row, "__dict__") else row.__getstate__()
                    for row in quick_element] == [
                vars(row) if hasattr(row, "__dict__") else row.__getstate__()
                for row in stock_element
            ]
    return quick


@pytest.mark.parametrize("name", REAL_COINCS, ids=str)
def test_real_upload_parses_as_with_the_stock_loader(name):
    _assert_same_as_stock(REAL_COINCS[name].read_bytes())


@pytest.mark.parametrize("index", range(4))
def test_mock_coinc_parses_as_with_the_stock_loader(mock_events, index):
    coinc_xml = mock_events[index].coinc_xml
    _assert_same_as_stock(coinc_xml)
    _assert_same_as_stock(gzip.compress(coinc_xml))


def test_coinc_with_embedded_psd_parses_as_with_the_stock_loader(mock_events):
    event = mock_events[0]
    xmldoc = _document(event.coinc_xml)
    spectra = lal.series.read_psd_xmldoc(_document(gzip.decompress(event.psd_xml_gz)))
    lal.series.make_psd_xmldoc(spectra, xmldoc=xmldoc.childNodes[0])
    assert _assert_same_as_stock(_bytes(xmldoc)).has_psd


def _rename_table(text: str, old: str, new: str) -> str:
    """Give a table (and its Stream) a name lsctables does not know."""
    return text.replace(f'Name="{old}:table"', f'Name="{new}:table"')


def test_unknown_tables_and_comments_load_as_with_the_stock_loader(coinc_xml):
    text = _rename_table(coinc_xml.decode(), "time_slide", "not_an_lsc_table")
    text = text.replace(
        '<Table Name="coinc_definer:table">',
        '<Table Name="coinc_definer:table"><Comment>made by hand</Comment>',
    )
    _assert_same_as_stock(text.encode())


def _sngl_inspiral(text: str) -> tuple[str, list[str]]:
    table = re.search(r'<Table Name="sngl_inspiral:table">.*?</Table>', text, re.S)[0]
    return table, re.findall(r"<Column [^>]*/>", table)


def _edit_sngl_inspiral(coinc_xml: bytes, edit) -> bytes:
    text = coinc_xml.decode()
    table, columns = _sngl_inspiral(text)
    return text.replace(table, edit(table, columns)).encode()


def _after(table: str, column: str, addition: str) -> str:
    return table.replace(column, column + addition, 1)


MALFORMED_COLUMN_LISTS = {
    "duplicate column": lambda table, cols: _after(table, cols[20], cols[5]),
    "duplicate last column": lambda table, cols: _after(table, cols[-1], cols[-1]),
    "column of another type": lambda table, cols: table.replace(
        cols[3], re.sub(r'Type="\w+"', 'Type="int_4s"', cols[3]), 1
    ),
    "column of an unknown type": lambda table, cols: table.replace(
        cols[3], re.sub(r'Type="\w+"', 'Type="real_16"', cols[3]), 1
    ),
    "column the table does not have": lambda table, cols: _after(
        table, cols[8], '<Column Name="not_a_column" Type="real_8"/>'
    ),
    "column without a type": lambda table, cols: table.replace(
        cols[7], re.sub(r'Type="\w+"', "", cols[7]), 1
    ),
    "column without a name or type": lambda table, cols: _after(table, cols[7], "<Column/>"),
    "column after the stream": lambda table, cols: table.replace(
        "</Stream>", "</Stream>" + cols[2], 1
    ),
    "comment after the columns": lambda table, cols: _after(
        table, cols[2], "<Comment>late</Comment>"
    ),
    "two streams": lambda table, cols: table.replace(
        "</Stream>", '</Stream><Stream Name="sngl_inspiral:table"></Stream>', 1
    ),
    "column nested in a column, named again later": lambda table, cols: table.replace(
        cols[4], cols[4].replace("/>", ">" + cols[10] + "</Column>"), 1
    ),
}


@pytest.mark.parametrize("case", MALFORMED_COLUMN_LISTS, ids=str)
def test_malformed_column_list_fails_as_with_the_stock_loader(coinc_xml, case):
    data = _edit_sngl_inspiral(coinc_xml, MALFORMED_COLUMN_LISTS[case])
    with pytest.raises(Exception) as stock:
        _stock_load(data)
    with pytest.raises(CoincError) as quick:
        parse_coinc(data)
    assert str(quick.value) == NOT_LIGO_LW + str(stock.value).splitlines()[0]


@pytest.mark.parametrize(
    "column",
    ['<Column Name="x" Type="real_16"/>', "<Column/>", '<Column Name="x"/>'],
    ids=["unknown type", "no name or type", "no type"],
)
def test_bad_column_of_an_unknown_table_fails_as_with_the_stock_loader(coinc_xml, column):
    text = _rename_table(coinc_xml.decode(), "time_slide", "not_an_lsc_table")
    table = re.search(r'<Table Name="not_an_lsc_table:table">.*?</Table>', text, re.S)[0]
    last_column = re.findall(r"<Column [^>]*/>", table)[-1]
    data = text.replace(last_column, last_column + column, 1).encode()
    with pytest.raises(Exception) as stock:
        _stock_load(data)
    with pytest.raises(CoincError) as quick:
        parse_coinc(data)
    assert str(quick.value) == NOT_LIGO_LW + str(stock.value).splitlines()[0]


@pytest.mark.parametrize(
    ("element_class", "names"),
    [
        (ligolw.Column, ["snr", "process:process_id", "sngl_inspiral:event_id",
                         "a:b:c", "Gamma0", "Bad-Name", ""]),
        (ligolw.Table, ["sngl_inspiral:table", "sngl_inspiral", "x:y:table", "Bad-Name:table", ""]),
    ],
    ids=["Column", "Table"],
)
def test_quick_elements_read_and_write_names_like_stock_ones(element_class, names):
    quick_class = coinc_module._quick(element_class)
    for name in names * 2:  # the second round reads memoized decodings
        quick = quick_class(AttributesImpl({"Name": name}))
        stock = element_class(AttributesImpl({"Name": name}))
        assert quick.Name == stock.Name
        assert type(quick.Name) is type(stock.Name)
    assert quick_class.validattributes() == element_class.validattributes()
    quick, stock = quick_class(), element_class()
    quick.Name = stock.Name = "snr"
    assert quick.getAttribute("Name") == stock.getAttribute("Name")
    with pytest.raises(AttributeError):
        del quick.Name
        quick.Name  # noqa: B018


def test_failed_legacy_id_upload_does_not_spoil_later_uploads(coinc_xml):
    """A load that fails between a legacy ilwd:char Column and its Stream.

    ligo.skymap's adapter files the column's conversion under the table's
    id() and drops it at the Stream; with one adapter class for every load,
    the entry outlived the failed document and a later document whose table
    reused the id() had its integer IDs rejected as "not formatted like an
    ilwd".
    """
    text = coinc_xml.decode()
    table = re.search(r'<Table Name="process:table">.*?</Table>', text, re.S)[0]
    columns = re.findall(r"<Column [^>]*/>", table)
    (id_column,) = [column for column in columns if 'Name="process_id"' in column]
    broken = table.replace(id_column, id_column.replace("int_8s", "ilwd:char"))
    broken = broken.replace(columns[-1], columns[-1] * 2)
    bad = text.replace(table, broken).encode()
    expected = parse_coinc(coinc_xml)
    for _ in range(30):
        with pytest.raises(CoincError, match="duplicate Column"):
            parse_coinc(bad)
        gc.collect()
        assert parse_coinc(coinc_xml) == expected
