"""Machine-readable alert notices: JSON and Avro per igwn-gwalert-schema.

Consumers parse these payloads automatically, so every payload is validated
against the schema files shipped in the ``igwn-gwalert-schema`` package
before it is returned; nothing invalid ever leaves this module. The VOEvent
(GCN Classic) form lives in :mod:`alerts.science.voevent` and shares the
content, the checks and the identity defined here.

JSON payloads are validated with ``jsonschema`` (Draft 2020-12, the draft the
package's ``igwn.alerts.Alert.schema.json`` declares, with format checking of
``date-time`` and ``uri``); Avro records with ``fastavro`` against the
package's ``igwn.alerts.Alert.avsc``.

Pure module: plain Python values and bytes in, bytes or dicts out.
"""
import base64
import datetime
import hashlib
import io
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Mapping, Optional, Sequence, Union

import fastavro
import fastavro.validation
from astropy import units
from astropy.io import fits
from astropy.time import Time
from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators as jsonschema_validators

from alerts import vocabulary as v

# --- vocabulary ------------------------------------------------------------

ALERT_TYPES = (v.EARLYWARNING_ALERT, v.PRELIMINARY_ALERT, *v.HUMAN_ALERT_TYPES)
RETRACTION = v.RETRACTION_ALERT

# Alert type as spelled in IVORNs and in the VOEvent AlertType Param
# (GCN Classic usage, e.g. ``S190425z-1-Preliminary``).
ALERT_TYPE_TITLES = {
    "EARLYWARNING": "EarlyWarning",
    "PRELIMINARY": "Preliminary",
    "INITIAL": "Initial",
    "UPDATE": "Update",
    "RETRACTION": "Retraction",
}

ROLE_OBSERVATION, ROLE_TEST = v.ROLE_OBSERVATION, v.ROLE_TEST
ROLES = (ROLE_OBSERVATION, ROLE_TEST)

# ``S`` + YYMMDD + day suffix; mock-data (MDC) superevents use ``MS``, test
# ones ``TS``.
SUPEREVENT_ID_PATTERN = re.compile(r"^(?P<prefix>S|MS|TS)\d{6}[a-z]+$")
TEST_ONLY_ID_PREFIXES = ("MS", "TS")

GROUPS = v.GROUPS
INSTRUMENTS = ("H1", "L1", "V1", "K1")
CLASSIFICATION_NAMES = ("BNS", "NSBH", "BBH", "Terrestrial")
# HasSSM is carried by the sub-solar-mass search's alerts.
PROPERTY_NAMES = ("HasNS", "HasRemnant", "HasMassGap", "HasSSM")

# First header card of any FITS file, and the pixel ordering of the
# multi-order (MOC) sky maps that the schema asks for.
FITS_SIGNATURE = b"SIMPLE  ="
MULTIORDER_ORDERING = "NUNIQ"

# Decimal places of the ISO 8601 times: event times keep microseconds (GPS
# times are measured that finely), creation times whole seconds.
EVENT_TIME_DECIMALS = 6
CREATED_TIME_DECIMALS = 0
UTC_SUFFIX = "Z"

SCHEMA_PACKAGE = "igwn_gwalert_schema"
JSON_SCHEMA_FILE = "igwn.alerts.Alert.schema.json"
AVRO_SCHEMA_FILE = "igwn.alerts.Alert.avsc"
# Formats the JSON schema uses; their checkers come from optional libraries.
CHECKED_FORMATS = ("date-time", "uri")
# Uncompressed blocks: every Avro reader supports them.
AVRO_CODEC = "null"
# Length the Avro object container format fixes for its sync marker.
AVRO_SYNC_MARKER_BYTES = 16


class NoticeValidationError(ValueError):
    """The content cannot make a valid notice; the message names the field."""


# --- content ---------------------------------------------------------------

TimeLike = Union[Time, datetime.datetime, str]


@dataclass(frozen=True)
class NoticeContent:
    """Everything a notice says, in plain values.

    ``event_time_gps``, ``far`` (Hz), ``significant``, ``instruments``,
    ``group``, ``pipeline`` and ``search`` are required for every alert type
    but RETRACTION, which carries no event (its event fields are ignored).
    ``skymap`` is multi-order FITS bytes; ``skymap_url`` and
    ``skymap_filename`` (e.g. ``bayestar.multiorder.fits,0``) feed the VOEvent
    sky map Group. ``urls['gracedb']`` is the superevent's web page.
    ``role`` is 'observation' or 'test' (see :func:`notice_role`).
    """

    alert_type: str
    superevent_id: str
    serial: int
    time_created: TimeLike
    event_time_gps: Optional[float] = None
    far: Optional[float] = None
    significant: Optional[bool] = None
    instruments: Sequence[str] = ()
    group: Optional[str] = None
    pipeline: Optional[str] = None
    search: Optional[str] = None
    properties: Optional[Mapping[str, float]] = None
    classification: Optional[Mapping[str, float]] = None
    skymap: Optional[bytes] = None
    skymap_filename: Optional[str] = None
    skymap_url: Optional[str] = None
    duration: Optional[float] = None
    central_frequency: Optional[float] = None
    urls: Mapping[str, str] = field(default_factory=dict)
    role: str = ROLE_OBSERVATION
    hardware_injection: bool = False
    external_coinc: None = None

    @property
    def has_event(self):
        """Retractions carry no event; every other type does."""
        return self.alert_type != RETRACTION


def notice_role(superevent_id, hardware_injection=False):
    """VOEvent role for a superevent: 'test' for MDC/test IDs and injections.

    Keeps mock and injected signals from ever being announced as real
    observations.
    """
    match = SUPEREVENT_ID_PATTERN.match(superevent_id or "")
    if hardware_injection or (match and match["prefix"] in TEST_ONLY_ID_PREFIXES):
        return ROLE_TEST
    return ROLE_OBSERVATION


def notice_identity(superevent_id, alert_type, serial):
    """Stable identity of one notice, e.g. ``S190425z-1-Preliminary``.

    Used as the Kafka message key and the dedupe key, and as the fragment of
    the VOEvent IVORN, so all three always agree.
    """
    _check_superevent_id(superevent_id)
    _check_alert_type(alert_type)
    _check_serial(serial)
    return f"{superevent_id}-{serial}-{ALERT_TYPE_TITLES[alert_type]}"


# --- checks the schemas cannot express ---------------------------------------


def _fail(field_name, problem):
    raise NoticeValidationError(f"{field_name}: {problem}")


def _is_real_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_superevent_id(superevent_id):
    if not isinstance(superevent_id, str) or not superevent_id:
        _fail("superevent_id", "is missing")
    if not SUPEREVENT_ID_PATTERN.match(superevent_id):
        _fail("superevent_id", f"{superevent_id!r} is not a superevent ID like S190425z")


def _check_alert_type(alert_type):
    if alert_type not in ALERT_TYPES:
        _fail("alert_type", f"{alert_type!r} is not one of {', '.join(ALERT_TYPES)}")


def _check_serial(serial):
    if isinstance(serial, bool) or not isinstance(serial, int) or serial < 1:
        _fail("serial", f"{serial!r} is not a positive integer")


def _check_finite_number(field_name, value, minimum=None):
    if not _is_real_number(value) or not math.isfinite(value):
        _fail(field_name, f"{value!r} is not a finite number")
    if minimum is not None and value < minimum:
        _fail(field_name, f"{value!r} is below {minimum}")


def _check_probabilities(field_name, probabilities, allowed_names):
    if not isinstance(probabilities, Mapping):
        _fail(field_name, f"{probabilities!r} is not a mapping of name to probability")
    for name, probability in probabilities.items():
        where = f"{field_name}[{name!r}]"
        if name not in allowed_names:
            _fail(where, f"unknown name; expected one of {', '.join(allowed_names)}")
        _check_finite_number(where, probability)
        if not 0 <= probability <= 1:
            _fail(where, f"probability {probability!r} is outside [0, 1]")


def _check_skymap(skymap):
    if not isinstance(skymap, (bytes, bytearray)):
        _fail("skymap", f"is {type(skymap).__name__}, expected FITS bytes")
    if not bytes(skymap).startswith(FITS_SIGNATURE):
        _fail("skymap", "is not an uncompressed FITS file")
    try:
        with fits.open(io.BytesIO(skymap)) as hdus:
            orderings = [hdu.header.get("ORDERING") for hdu in hdus]
    except (OSError, ValueError) as error:
        _fail("skymap", f"cannot be read as FITS: {error}")
    if MULTIORDER_ORDERING not in orderings:
        _fail("skymap", f"is not a multi-order sky map (no ORDERING = {MULTIORDER_ORDERING})")


def _check_event(content):
    _check_finite_number("event_time_gps", content.event_time_gps, minimum=0)
    _check_finite_number("far", content.far, minimum=0)
    if not isinstance(content.significant, bool):
        _fail("significant", f"{content.significant!r} is not a boolean")
    if isinstance(content.instruments, str) or not isinstance(content.instruments, Sequence):
        _fail("instruments", f"{content.instruments!r} is not a list of detector names")
    if not content.instruments:
        _fail("instruments", "is empty")
    for instrument in content.instruments:
        if instrument not in INSTRUMENTS:
            _fail("instruments", f"unknown detector {instrument!r}; expected one of {', '.join(INSTRUMENTS)}")
    if content.group not in GROUPS:
        _fail("group", f"{content.group!r} is not one of {', '.join(GROUPS)}")
    for name in ("pipeline", "search"):
        value = getattr(content, name)
        if not isinstance(value, str) or not value:
            _fail(name, "is missing")
    if content.classification is not None:
        _check_probabilities("classification", content.classification, CLASSIFICATION_NAMES)
    if content.properties is not None:
        _check_probabilities("properties", content.properties, PROPERTY_NAMES)
    if content.skymap is not None:
        _check_skymap(content.skymap)
    for name in ("duration", "central_frequency"):
        value = getattr(content, name)
        if value is not None:
            _check_finite_number(name, value, minimum=0)


def check_content(content):
    """Reject content that no schema would catch: unknown alert type or role,
    bad IDs, test data marked as an observation, impossible probabilities."""
    if not isinstance(content, NoticeContent):
        raise NoticeValidationError(f"expected NoticeContent, got {type(content).__name__}")
    _check_alert_type(content.alert_type)
    _check_superevent_id(content.superevent_id)
    _check_serial(content.serial)
    if content.role not in ROLES:
        _fail("role", f"{content.role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content.hardware_injection, bool):
        _fail("hardware_injection", f"{content.hardware_injection!r} is not a boolean")
    if notice_role(content.superevent_id, content.hardware_injection) == ROLE_TEST and content.role != ROLE_TEST:
        _fail("role", "MDC/test superevents and hardware injections must have role 'test'")
    if content.external_coinc is not None:
        _fail("external_coinc", "external coincidences are not supported yet")
    if not isinstance(content.urls, Mapping):
        _fail("urls", f"{content.urls!r} is not a mapping of name to URL")
    utc_time(content.time_created, field_name="time_created")
    if content.has_event:
        _check_event(content)


# --- times -------------------------------------------------------------------


def utc_time(value, field_name="time"):
    """An astropy Time in UTC from a Time, a datetime or an ISO 8601 string.

    Naive datetimes and strings without an offset are taken as UTC.
    """
    try:
        if isinstance(value, Time):
            return value.utc
        if isinstance(value, str):
            value = datetime.datetime.fromisoformat(value)
        if isinstance(value, datetime.datetime):
            if value.tzinfo is not None:
                value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            return Time(value, scale="utc")
    except ValueError as error:
        _fail(field_name, f"{value!r} is not an ISO 8601 time: {error}")
    _fail(field_name, f"{value!r} is not a time")


def iso_utc(time, decimals):
    """ISO 8601 UTC text with a ``Z`` suffix, as the alert schema's
    ``date-time`` format requires."""
    return Time(time, precision=decimals).utc.isot + UTC_SUFFIX


def gps_to_iso_utc(gps_seconds, decimals=EVENT_TIME_DECIMALS):
    """UTC time of a GPS time; astropy applies the leap seconds."""
    return iso_utc(Time(gps_seconds, format="gps"), decimals)


# --- the alert record shared by JSON and Avro -------------------------------


def _event_record(content):
    classification = content.classification or {}
    properties = content.properties or {}
    return {
        "time": gps_to_iso_utc(content.event_time_gps),
        "far": float(content.far),
        "significant": content.significant,
        "instruments": list(content.instruments),
        "group": content.group,
        "pipeline": content.pipeline,
        "search": content.search,
        "classification": {name: float(value) for name, value in classification.items()},
        "properties": {name: float(value) for name, value in properties.items()},
        "mchirp_source": None,
        "duration": None if content.duration is None else float(content.duration),
        "central_frequency": None if content.central_frequency is None else float(content.central_frequency),
        "skymap": None if content.skymap is None else bytes(content.skymap),
    }


def alert_record(content):
    """The alert as a dict of the schemas' fields, sky map as raw bytes."""
    check_content(content)
    return {
        "alert_type": content.alert_type,
        "time_created": iso_utc(utc_time(content.time_created), CREATED_TIME_DECIMALS),
        "superevent_id": content.superevent_id,
        "event": _event_record(content) if content.has_event else None,
        "external_coinc": None,
        "urls": dict(content.urls),
    }


# --- JSON --------------------------------------------------------------------


@cache
def _json_validator():
    schema_text = resources.files(SCHEMA_PACKAGE).joinpath(JSON_SCHEMA_FILE).read_text()
    schema = json.loads(schema_text)
    validator_class = jsonschema_validators.validator_for(schema)
    validator_class.check_schema(schema)
    format_checker = validator_class.FORMAT_CHECKER
    missing = [name for name in CHECKED_FORMATS if name not in format_checker.checkers]
    if missing:
        # jsonschema silently skips formats whose checker library is absent.
        raise RuntimeError(f"cannot check JSON schema formats {missing}: install rfc3339-validator, rfc3986-validator")
    return validator_class(schema, format_checker=format_checker)


def validate_json_notice(notice):
    """Check a decoded JSON notice against the package's JSON schema."""
    error = jsonschema_exceptions.best_match(_json_validator().iter_errors(notice))
    if error is not None:
        raise NoticeValidationError(f"{error.json_path}: {error.message}")


def build_json_notice(content):
    """JSON notice bytes; the sky map is base64-encoded, as the schema's
    ``contentEncoding`` says."""
    notice = alert_record(content)
    if notice["event"] is not None and notice["event"]["skymap"] is not None:
        notice["event"]["skymap"] = base64.b64encode(notice["event"]["skymap"]).decode("ascii")
    validate_json_notice(notice)
    try:
        return json.dumps(notice, allow_nan=False).encode("utf-8")
    except ValueError as error:
        raise NoticeValidationError(f"cannot encode as JSON: {error}") from error


def skymap_from_json_notice(notice):
    """Sky map bytes of a decoded JSON notice (None for retractions)."""
    event = notice.get("event")
    if not event or event.get("skymap") is None:
        return None
    return base64.b64decode(event["skymap"], validate=True)


# --- Avro --------------------------------------------------------------------


@cache
def avro_schema():
    """The package's Avro schema, parsed by fastavro."""
    schema_text = resources.files(SCHEMA_PACKAGE).joinpath(AVRO_SCHEMA_FILE).read_text()
    return fastavro.parse_schema(json.loads(schema_text))


# Offending values are quoted only this far, so a sky map never floods a log.
QUOTED_VALUE_MAX_CHARS = 80


def _describe_avro_problem(problem):
    quoted = repr(problem.datum)
    if len(quoted) > QUOTED_VALUE_MAX_CHARS:
        quoted = quoted[:QUOTED_VALUE_MAX_CHARS] + "..."
    return f"{problem.field}: {quoted} is not of type {problem.schema}"


def validate_avro_record(record):
    """Check an alert record against the package's Avro schema."""
    try:
        fastavro.validation.validate(record, avro_schema(), raise_errors=True)
    except fastavro.validation.ValidationError as error:
        # A bad nested field also fails every other branch of the enclosing
        # union ("expected null"); report the nested field, not the branches.
        problems = [problem for problem in error.errors if problem.schema != "null"] or error.errors
        described = "; ".join(_describe_avro_problem(problem) for problem in problems)
        raise NoticeValidationError(f"Avro schema: {described}") from error


def _avro_sync_marker(content):
    """Container sync marker derived from the notice identity instead of
    random bytes, so the same notice always encodes to the same bytes (and
    the same checksum)."""
    identity = notice_identity(content.superevent_id, content.alert_type, content.serial)
    return hashlib.blake2b(identity.encode("utf-8"), digest_size=AVRO_SYNC_MARKER_BYTES).digest()


def build_avro_notice(content):
    """Avro object container holding one alert record; sky map as raw bytes."""
    record = alert_record(content)
    validate_avro_record(record)
    buffer = io.BytesIO()
    fastavro.writer(
        buffer, avro_schema(), [record], codec=AVRO_CODEC, validator=True, sync_marker=_avro_sync_marker(content)
    )
    return buffer.getvalue()


# --- human-readable false alarm rate ----------------------------------------

# Recurrences are always quoted in Julian years (365.25 days), as the issue
# and the established circulars do ("about one in N years").
SECONDS_PER_YEAR = units.year.to(units.s)
SIGNIFICANT_FIGURES = 2
# Counts from here up are written as mantissa and exponent (1.6e5).
SCIENTIFIC_FROM = 1e4


def _rounded_count(count):
    """Two significant figures: 0.0027, 0.58, 2.3, 16, 160, 1600, then 1.6e5
    (and 2.7e-05 below 1e-4, where plain decimals get long)."""
    rounded = float(f"{count:.{SIGNIFICANT_FIGURES - 1}e}")
    if rounded >= SCIENTIFIC_FROM:
        mantissa, exponent = f"{rounded:.{SIGNIFICANT_FIGURES - 1}e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    if rounded >= 10 ** (SIGNIFICANT_FIGURES - 1):
        return str(int(rounded))
    return f"{rounded:.{SIGNIFICANT_FIGURES}g}"


def far_to_human(far_hz):
    """'about one in N years' for a false alarm rate in Hz.

    Always years, so circulars compare at a glance: N has two significant
    figures, whatever its size ('about one in 1.6e5 years', 'about one in 16
    years', 'about one in 0.58 years' for a recurrence of seven months,
    'about one in 0.0027 years' for one a day), and 'about one in 1 year'
    when N rounds to 1. Significant alerts, the ones with a circular, recur
    less often than about once in 0.3 years. A FAR of zero, which some
    pipelines report, gets its own wording.
    """
    if not _is_real_number(far_hz) or not math.isfinite(far_hz) or far_hz < 0:
        raise ValueError(f"false alarm rate must be a finite number >= 0 Hz, got {far_hz!r}")
    if far_hz == 0:
        return "no false alarms expected (reported false alarm rate is zero)"
    count = _rounded_count(1.0 / far_hz / SECONDS_PER_YEAR)
    return f"about one in {count} {'year' if count == '1' else 'years'}"
