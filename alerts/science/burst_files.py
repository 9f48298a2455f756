"""Event attributes from the event files of Burst pipelines.

GraceDB takes a Burst candidate as the pipeline's own file: cWB a text file
of ``key: value ...`` lines, oLIB and MLy a JSON object. Only what the
orchestrator uses is read (time, FAR, detectors, SNR, the time-frequency
extent); everything else goes to the extra attributes. Pure functions: bytes
in, a dict of the attributes ``alerts.events.validate_attributes`` takes out.
"""
import json

# Keys (lower case) naming each attribute in the formats accepted.
TIME_KEYS = ("gpstime", "time", "start_time_gps", "event_time")
FAR_KEYS = ("far", "false_alarm_rate")
INSTRUMENT_KEYS = ("instruments", "ifos", "ifo", "network", "detectors")
SNR_KEYS = ("snr", "rho", "network_snr")
EXTENT_KEYS = {"duration": ("duration",), "central_frequency": ("central_frequency", "frequency"),
               "bandwidth": ("bandwidth",)}


class BurstFileError(ValueError):
    """The file is not an event file of a Burst pipeline; the message says why."""


def parse_burst_event_file(data):
    """Attributes from a JSON object or a ``key: value`` text file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BurstFileError("not a text file (JSON or 'key: value' lines)") from None
    if text.lstrip().startswith("{"):
        try:
            fields = json.loads(text)
        except ValueError as error:
            raise BurstFileError(f"not valid JSON: {error}") from None
        if not isinstance(fields, dict):
            raise BurstFileError("the JSON document is not an object")
        fields = {str(key).lower(): value for key, value in fields.items()}
    else:
        fields = key_value_lines(text)
    return attributes(fields)


def key_value_lines(text):
    """``key: v1 v2`` lines (cWB's trigger file); a lone value stays a string,
    several become a list. Lines without a colon and comments are skipped."""
    fields = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        values = value.split()
        fields[key.strip().lower()] = values[0] if len(values) == 1 else values
    if not fields:
        raise BurstFileError("no 'key: value' lines and not a JSON object")
    return fields


def first(fields, keys):
    for key in keys:
        if key in fields and fields[key] not in (None, "", []):
            value = fields[key]
            return value[0] if isinstance(value, list) and key not in INSTRUMENT_KEYS else value
    return None


def instruments(value):
    if value is None:
        return []
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    return [str(ifo) for ifo in value]


def attributes(fields):
    used = set(TIME_KEYS + FAR_KEYS + INSTRUMENT_KEYS + SNR_KEYS)
    extent = {}
    for name, keys in EXTENT_KEYS.items():
        value = first(fields, keys)
        if value is not None:
            try:
                extent[name] = float(value)
            except (TypeError, ValueError):
                raise BurstFileError(f"{name} must be a number, got {str(value)[:40]!r}") from None
        used.update(keys)
    extra = {key: value for key, value in fields.items() if key not in used}
    return {
        "gpstime": first(fields, TIME_KEYS),
        "far": first(fields, FAR_KEYS),
        "snr": first(fields, SNR_KEYS),
        "instruments": instruments(first(fields, INSTRUMENT_KEYS)),
        "extra_attributes": {**extra, **extent},
    }
