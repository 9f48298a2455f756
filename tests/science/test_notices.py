"""Notice builders: JSON and Avro per igwn-gwalert-schema, VOEvent 2.0 per
the IVOA schema, identities and the human-readable FAR."""
import base64
import dataclasses
import datetime
import io
import json
from importlib import resources

import fastavro
import numpy as np
import pytest
from astropy.table import Table
from astropy.time import Time
from jsonschema import Draft202012Validator
from ligo.skymap.io.fits import write_sky_map
from lxml import etree

from alerts.science.notices import (
    ALERT_TYPES,
    NoticeContent,
    NoticeValidationError,
    alert_record,
    build_avro_notice,
    build_json_notice,
    far_to_human,
    notice_identity,
    notice_role,
    skymap_from_json_notice,
    validate_avro_record,
)
from alerts.science.voevent import build_voevent, validate_voevent

VOEVENT_NS = {"voe": "http://www.ivoa.net/xml/VOEvent/v2.0"}
SECONDS_PER_DAY = 86400.0
SECONDS_PER_YEAR = 365.25 * SECONDS_PER_DAY
HEALPIX_BASE_PIXELS = 12
ORDER_ZERO_FIRST_UNIQ = 4  # NUNIQ = 4 * 4**order + ipix
GW170817_GPS = 1187008882.4
GW170817_UTC = "2017-08-17T12:41:04.400000Z"
ALL_BUILDERS = (build_json_notice, build_avro_notice, build_voevent)


@pytest.fixture(scope="module")
def skymap_bytes():
    """A real multi-order FITS sky map: uniform over the 12 order-0 pixels."""
    table = Table(
        {
            "UNIQ": np.arange(ORDER_ZERO_FIRST_UNIQ, ORDER_ZERO_FIRST_UNIQ + HEALPIX_BASE_PIXELS, dtype=np.int64),
            "PROBDENSITY": np.full(HEALPIX_BASE_PIXELS, 1 / (4 * np.pi)),
        }
    )
    buffer = io.BytesIO()
    write_sky_map(buffer, table, moc=True)
    return buffer.getvalue()


@pytest.fixture
def make_content(skymap_bytes):
    def make(**overrides):
        values = dict(
            alert_type="PRELIMINARY",
            superevent_id="S170817a",
            serial=1,
            time_created="2017-08-17T12:41:30Z",
            event_time_gps=GW170817_GPS,
            far=1.2e-13,
            significant=True,
            instruments=["H1", "L1", "V1"],
            group="CBC",
            pipeline="gstlal",
            search="AllSky",
            properties={"HasNS": 1.0, "HasRemnant": 0.95, "HasMassGap": 0.0},
            classification={"BNS": 0.99, "NSBH": 0.0, "BBH": 0.0, "Terrestrial": 0.01},
            skymap=skymap_bytes,
            skymap_filename="bayestar.multiorder.fits,0",
            skymap_url="https://gracedb.example.org/api/superevents/S170817a/files/bayestar.multiorder.fits,0",
            urls={"gracedb": "https://gracedb.example.org/superevents/S170817a/view/"},
        )
        values.update(overrides)
        return NoticeContent(**values)

    return make


def package_json_schema_validator():
    text = resources.files("igwn_gwalert_schema").joinpath("igwn.alerts.Alert.schema.json").read_text()
    return Draft202012Validator(json.loads(text), format_checker=Draft202012Validator.FORMAT_CHECKER)


def voevent_xsd():
    xsd = resources.files("comet").joinpath("schema/VOEvent-v2.0.xsd")
    return etree.XMLSchema(etree.parse(str(xsd)))


def read_avro(payload):
    records = list(fastavro.reader(io.BytesIO(payload)))
    assert len(records) == 1
    return records[0]


def voevent_params(xml_bytes):
    root = etree.fromstring(xml_bytes)
    return {param.get("name"): param.get("value") for param in root.iter("Param")}


# --- JSON ----------------------------------------------------------------------


def test_json_notice_validates_against_package_schema_and_round_trips(make_content, skymap_bytes):
    payload = build_json_notice(make_content())
    notice = json.loads(payload)

    assert list(package_json_schema_validator().iter_errors(notice)) == []
    assert notice["alert_type"] == "PRELIMINARY"
    assert notice["superevent_id"] == "S170817a"
    assert notice["time_created"] == "2017-08-17T12:41:30Z"
    assert notice["urls"] == {"gracedb": "https://gracedb.example.org/superevents/S170817a/view/"}
    assert notice["external_coinc"] is None
    event = notice["event"]
    assert event["far"] == 1.2e-13
    assert event["significant"] is True
    assert event["instruments"] == ["H1", "L1", "V1"]
    assert (event["group"], event["pipeline"], event["search"]) == ("CBC", "gstlal", "AllSky")
    assert event["classification"] == {"BNS": 0.99, "NSBH": 0.0, "BBH": 0.0, "Terrestrial": 0.01}
    assert event["properties"] == {"HasNS": 1.0, "HasRemnant": 0.95, "HasMassGap": 0.0}
    assert base64.b64decode(event["skymap"]) == skymap_bytes
    assert skymap_from_json_notice(notice) == skymap_bytes


def test_event_time_is_converted_from_gps_with_leap_seconds(make_content):
    notice = json.loads(build_json_notice(make_content()))
    assert notice["event"]["time"] == GW170817_UTC


@pytest.mark.parametrize(
    "time_created",
    [
        "2017-08-17T12:41:30Z",
        "2017-08-17T12:41:30",
        "2017-08-17T14:41:30+02:00",
        datetime.datetime(2017, 8, 17, 12, 41, 30, tzinfo=datetime.timezone.utc),
        Time("2017-08-17T12:41:30", scale="utc"),
    ],
)
def test_time_created_accepts_strings_datetimes_and_astropy_times(make_content, time_created):
    notice = json.loads(build_json_notice(make_content(time_created=time_created)))
    assert notice["time_created"] == "2017-08-17T12:41:30Z"


def test_burst_notice_carries_duration_and_central_frequency(make_content):
    content = make_content(
        group="Burst", pipeline="cwb", classification=None, properties=None, duration=0.02, central_frequency=150.5
    )
    event = json.loads(build_json_notice(content))["event"]
    assert (event["duration"], event["central_frequency"]) == (0.02, 150.5)
    assert event["classification"] == {} and event["properties"] == {}

    params = voevent_params(build_voevent(content))
    assert float(params["Duration"]) == 0.02
    assert float(params["CentralFreq"]) == 150.5
    assert "BNS" not in params


def test_same_content_gives_identical_payloads(make_content):
    for build in ALL_BUILDERS:
        assert build(make_content()) == build(make_content())


# --- Avro ----------------------------------------------------------------------


def test_avro_notice_round_trips_with_fastavro(make_content, skymap_bytes):
    content = make_content()
    payload = build_avro_notice(content)

    record = read_avro(payload)
    assert record == alert_record(content)
    assert record["event"]["skymap"] == skymap_bytes
    assert record["event"]["time"] == GW170817_UTC
    assert record["event"]["classification"]["BNS"] == 0.99
    assert record["urls"]["gracedb"] == content.urls["gracedb"]


def test_avro_notice_uses_the_package_schema(make_content):
    reader = fastavro.reader(io.BytesIO(build_avro_notice(make_content())))
    assert reader.writer_schema["name"] == "igwn.alerts.Alert"


def test_json_and_avro_say_the_same_thing(make_content):
    notice = json.loads(build_json_notice(make_content()))
    record = read_avro(build_avro_notice(make_content()))
    record["event"]["skymap"] = base64.b64encode(record["event"]["skymap"]).decode("ascii")
    assert notice == record


# --- VOEvent -------------------------------------------------------------------

PACKET_TYPES = {"EARLYWARNING": 163, "PRELIMINARY": 150, "INITIAL": 151, "UPDATE": 152, "RETRACTION": 164}
ALERT_TYPE_TITLES = {
    "EARLYWARNING": "EarlyWarning",
    "PRELIMINARY": "Preliminary",
    "INITIAL": "Initial",
    "UPDATE": "Update",
    "RETRACTION": "Retraction",
}


@pytest.mark.parametrize("alert_type", ALERT_TYPES)
def test_voevent_validates_and_has_packet_type(make_content, alert_type):
    xml_bytes = build_voevent(make_content(alert_type=alert_type, serial=2))

    document = etree.fromstring(xml_bytes)
    assert voevent_xsd().validate(document)
    params = voevent_params(xml_bytes)
    assert params["Packet_Type"] == str(PACKET_TYPES[alert_type])
    assert params["AlertType"] == ALERT_TYPE_TITLES[alert_type]
    assert params["Pkt_Ser_Num"] == "2"
    assert params["GraceID"] == "S170817a"
    assert document.get("ivorn") == f"ivo://gwnet/LVC#S170817a-2-{ALERT_TYPE_TITLES[alert_type]}"
    assert document.get("role") == "observation"


def test_voevent_carries_event_params_groups_and_time(make_content):
    xml_bytes = build_voevent(make_content())
    document = etree.fromstring(xml_bytes)
    params = voevent_params(xml_bytes)

    assert float(params["FAR"]) == 1.2e-13
    assert params["Instruments"] == "H1,L1,V1"
    assert params["Significant"] == "1"
    assert params["HardwareInj"] == "0"
    assert (params["Group"], params["Pipeline"], params["Search"]) == ("CBC", "gstlal", "AllSky")
    assert params["EventPage"] == "https://gracedb.example.org/superevents/S170817a/view/"
    assert params["skymap_fits"].endswith("/files/bayestar.multiorder.fits,0")
    classification = document.find(".//Group[@type='Classification']")
    assert {p.get("name"): float(p.get("value")) for p in classification.iter("Param")} == {
        "BNS": 0.99, "NSBH": 0.0, "BBH": 0.0, "Terrestrial": 0.01,
    }
    properties = document.find(".//Group[@type='Properties']")
    assert {p.get("name") for p in properties.iter("Param")} == {"HasNS", "HasRemnant", "HasMassGap"}
    assert document.findtext(".//WhereWhen//ISOTime") == GW170817_UTC.rstrip("Z")
    assert document.findtext("Who/Date") == "2017-08-17T12:41:30"


def test_voevent_ivorn_prefix_is_configurable(make_content):
    document = etree.fromstring(build_voevent(make_content(), ivorn_prefix="ivo://example.org/orchestrator#"))
    assert document.get("ivorn") == "ivo://example.org/orchestrator#S170817a-1-Preliminary"
    assert document.findtext("Who/AuthorIVORN") == "ivo://example.org/orchestrator"


@pytest.mark.parametrize("ivorn_prefix", ["gwnet/LVC#", "ivo://gwnet/LVC", ""])
def test_voevent_rejects_bad_ivorn_prefix(make_content, ivorn_prefix):
    with pytest.raises(NoticeValidationError, match="ivorn_prefix"):
        build_voevent(make_content(), ivorn_prefix=ivorn_prefix)


def test_validate_voevent_rejects_schema_violations():
    missing_ivorn = b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" version="2.0"/>'
    with pytest.raises(NoticeValidationError, match="ivorn"):
        validate_voevent(missing_ivorn)
    bad_role = (
        b'<voe:VOEvent xmlns:voe="http://www.ivoa.net/xml/VOEvent/v2.0" version="2.0"'
        b' ivorn="ivo://x/y#z" role="rehearsal"/>'
    )
    with pytest.raises(NoticeValidationError, match="role"):
        validate_voevent(bad_role)
    with pytest.raises(NoticeValidationError, match="well-formed"):
        validate_voevent(b"<VOEvent")


# --- roles ---------------------------------------------------------------------


def test_mdc_superevent_notices_have_role_test(make_content):
    role = notice_role("MS170817a")
    assert role == "test"
    document = etree.fromstring(build_voevent(make_content(superevent_id="MS170817a", role=role)))
    assert document.get("role") == "test"
    assert document.get("ivorn") == "ivo://gwnet/LVC#MS170817a-1-Preliminary"


def test_hardware_injection_has_role_test_and_flag(make_content):
    assert notice_role("S170817a", hardware_injection=True) == "test"
    assert notice_role("S170817a") == "observation"
    xml_bytes = build_voevent(make_content(hardware_injection=True, role="test"))
    assert etree.fromstring(xml_bytes).get("role") == "test"
    assert voevent_params(xml_bytes)["HardwareInj"] == "1"


@pytest.mark.parametrize("build", ALL_BUILDERS)
@pytest.mark.parametrize(
    "overrides",
    [{"superevent_id": "MS170817a"}, {"superevent_id": "TS170817a"}, {"hardware_injection": True}],
)
def test_test_data_is_never_sent_as_observation(make_content, build, overrides):
    with pytest.raises(NoticeValidationError, match="role"):
        build(make_content(role="observation", **overrides))


# --- retractions -----------------------------------------------------------------


def test_retraction_carries_no_event(make_content):
    content = make_content(alert_type="RETRACTION", serial=3)

    notice = json.loads(build_json_notice(content))
    assert notice["event"] is None
    assert list(package_json_schema_validator().iter_errors(notice)) == []
    assert read_avro(build_avro_notice(content))["event"] is None

    xml_bytes = build_voevent(content)
    document = etree.fromstring(xml_bytes)
    params = voevent_params(xml_bytes)
    assert params["Packet_Type"] == "164"
    assert "FAR" not in params and "skymap_fits" not in params
    assert document.find("WhereWhen") is None


def test_retraction_needs_no_event_fields(make_content):
    bare = NoticeContent(
        alert_type="RETRACTION", superevent_id="S170817a", serial=4, time_created="2017-08-18T00:00:00Z"
    )
    assert json.loads(build_json_notice(bare))["event"] is None
    assert voevent_params(build_voevent(bare))["GraceID"] == "S170817a"


# --- invalid content ---------------------------------------------------------------


@pytest.mark.parametrize("build", ALL_BUILDERS)
@pytest.mark.parametrize(
    ("overrides", "field_named"),
    [
        ({"classification": {"BNS": "0.99", "NSBH": 0.0, "BBH": 0.0, "Terrestrial": 0.01}}, "classification"),
        ({"classification": {"BNS": 1.5}}, "classification"),
        ({"classification": {"BNSS": 0.5}}, "classification"),
        ({"properties": {"HasNS": True}}, "properties"),
        ({"superevent_id": ""}, "superevent_id"),
        ({"superevent_id": None}, "superevent_id"),
        ({"superevent_id": "G123456"}, "superevent_id"),
        ({"alert_type": "PRELIM"}, "alert_type"),
        ({"serial": 0}, "serial"),
        ({"far": -1.0}, "far"),
        ({"far": float("nan")}, "far"),
        ({"far": None}, "far"),
        ({"event_time_gps": None}, "event_time_gps"),
        ({"significant": "yes"}, "significant"),
        ({"instruments": "H1,L1"}, "instruments"),
        ({"instruments": ["H1", "X9"]}, "instruments"),
        ({"group": "Test"}, "group"),
        ({"pipeline": ""}, "pipeline"),
        ({"skymap": b"\x1f\x8b gzipped"}, "skymap"),
        ({"skymap": "not bytes"}, "skymap"),
        ({"role": "rehearsal"}, "role"),
        ({"time_created": "yesterday"}, "time_created"),
        ({"duration": -0.1}, "duration"),
    ],
)
def test_invalid_content_raises_and_names_the_field(make_content, build, overrides, field_named):
    with pytest.raises(NoticeValidationError, match=field_named):
        build(make_content(**overrides))


def test_flattened_fits_sky_map_is_rejected(make_content):
    flat = io.BytesIO()
    Table({"PROB": np.full(HEALPIX_BASE_PIXELS, 1 / HEALPIX_BASE_PIXELS)}).write(flat, format="fits")
    with pytest.raises(NoticeValidationError, match="multi-order"):
        build_json_notice(make_content(skymap=flat.getvalue()))


def test_json_schema_catches_a_bad_url(make_content):
    with pytest.raises(NoticeValidationError, match=r"urls\.gracedb"):
        build_json_notice(make_content(urls={"gracedb": "not a url"}))


def test_avro_schema_catches_a_mistyped_record(make_content):
    record = alert_record(make_content())
    record["event"]["classification"]["BNS"] = "0.99"
    with pytest.raises(NoticeValidationError, match="classification"):
        validate_avro_record(record)


# --- identity ------------------------------------------------------------------------


def test_notice_identity_matches_the_ivorn(make_content):
    identity = notice_identity("S190425z", "PRELIMINARY", 1)
    assert identity == "S190425z-1-Preliminary"
    content = make_content(superevent_id="S190425z")
    assert etree.fromstring(build_voevent(content)).get("ivorn") == f"ivo://gwnet/LVC#{identity}"


def test_notice_identity_differs_by_type_and_serial():
    identities = {notice_identity("S190425z", alert_type, 1) for alert_type in ALERT_TYPES}
    identities.add(notice_identity("S190425z", "PRELIMINARY", 2))
    assert len(identities) == len(ALERT_TYPES) + 1


@pytest.mark.parametrize(
    ("arguments", "field_named"),
    [
        (("S190425z", "FINAL", 1), "alert_type"),
        (("", "INITIAL", 1), "superevent_id"),
        (("S190425z", "INITIAL", -1), "serial"),
    ],
)
def test_notice_identity_rejects_bad_parts(arguments, field_named):
    with pytest.raises(NoticeValidationError, match=field_named):
        notice_identity(*arguments)


def test_content_is_frozen(make_content):
    content = make_content()
    with pytest.raises(dataclasses.FrozenInstanceError):
        content.far = 1.0


# --- FAR in words ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("far_hz", "text"),
    [
        (1 / (1.6e5 * SECONDS_PER_YEAR), "about one in 1.6e5 years"),
        (1 / (2345 * SECONDS_PER_YEAR), "about one in 2300 years"),
        (1 / (16.4 * SECONDS_PER_YEAR), "about one in 16 years"),
        (1 / (2.34 * SECONDS_PER_YEAR), "about one in 2.3 years"),
        (1 / SECONDS_PER_YEAR, "about one in 1 year"),
        # Shorter recurrences stay in years (the issue's "about one in N
        # years"), still two significant figures: 7 months, 3 months, a day.
        (1 / (7 * 30 * SECONDS_PER_DAY), "about one in 0.57 years"),
        (1 / (SECONDS_PER_YEAR / 4), "about one in 0.25 years"),
        (1 / SECONDS_PER_DAY, "about one in 0.0027 years"),
        (1 / 90.0, "about one in 2.9e-06 years"),
    ],
)
def test_far_to_human(far_hz, text):
    assert far_to_human(far_hz) == text


def test_far_to_human_handles_zero_and_rejects_nonsense():
    assert "zero" in far_to_human(0.0)
    for bad in (-1e-9, float("inf"), "1e-9"):
        with pytest.raises(ValueError):
            far_to_human(bad)
