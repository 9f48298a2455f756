"""VOEvent 2.0 notices in the GCN Classic form used for LVK alerts.

Built as an XML tree with lxml and validated against the IVOA VOEvent 2.0
XML schema before being returned. The schema file is the
``VOEvent-v2.0.xsd`` shipped inside the ``comet`` package (a VOEvent broker
on PyPI), so validation works offline.

Param names, packet type numbers and IVORN layout follow what GCN Classic
consumers of LVK VOEvents parse (e.g. ``ivo://gwnet/LVC#S190425z-1-Preliminary``).

Pure module: a :class:`~alerts.science.notices.NoticeContent` in, bytes out.
"""
from functools import cache
from importlib import resources

from astropy.time import Time
from lxml import etree

from alerts.science.notices import (
    ALERT_TYPE_TITLES,
    EVENT_TIME_DECIMALS,
    NoticeValidationError,
    check_content,
    notice_identity,
    utc_time,
)

VOEVENT_NAMESPACE = "http://www.ivoa.net/xml/VOEvent/v2.0"
XSI_NAMESPACE = "http://www.w3.org/2001/XMLSchema-instance"
VOEVENT_SCHEMA_LOCATION = f"{VOEVENT_NAMESPACE} http://www.ivoa.net/xml/VOEvent/VOEvent-v2.0.xsd"
VOEVENT_VERSION = "2.0"

# The XSD ships in the comet package, under this path.
XSD_PACKAGE = "comet"
XSD_PATH = "schema/VOEvent-v2.0.xsd"

IVORN_SCHEME = "ivo://"
IVORN_FRAGMENT_SEPARATOR = "#"
DEFAULT_IVORN_PREFIX = "ivo://gwnet/LVC#"

# GCN Classic notice type numbers of LVK VOEvents.
PACKET_TYPES = {
    "EARLYWARNING": 163,
    "PRELIMINARY": 150,
    "INITIAL": 151,
    "UPDATE": 152,
    "RETRACTION": 164,
}

# Param ``internal``: 0 sends the notice to everyone, 1 to LVK members only.
INTERNAL_FLAG = 0
# Param ``OpenAlert``: 1 marks an alert of the public alert programme.
OPEN_ALERT_FLAG = 1

AUTHOR_CONTACT_NAME = "LIGO Scientific Collaboration, Virgo Collaboration and KAGRA Collaboration"
OBSERVATORY_LOCATION_ID = "LIGO Virgo"
# Event times are UTC at the geocentre.
COORDINATE_SYSTEM = "UTC-FK5-GEO"
SECONDS_UNIT = "s"
HERTZ_UNIT = "Hz"
SKYMAP_GROUP_TYPE = "GW_SKYMAP"
DEFAULT_SKYMAP_GROUP_NAME = "skymap"

DETECTOR_DESCRIPTIONS = {
    "H1": "H1: LIGO Hanford 4 km gravitational-wave detector",
    "L1": "L1: LIGO Livingston 4 km gravitational-wave detector",
    "V1": "V1: Virgo 3 km gravitational-wave detector",
    "K1": "K1: KAGRA 3 km gravitational-wave detector",
}

# Unified Content Descriptors (IVOA UCD1+) of the Params.
UCD_IDENTIFIER = "meta.id"
UCD_VERSION = "meta.version"
UCD_NUMBER = "meta.number"
UCD_CODE = "meta.code"
UCD_URL = "meta.ref.url"
UCD_FALSE_ALARM_RATE = "arith.rate;stat.falsealarm"
UCD_PROBABILITY = "stat.probability"
UCD_DURATION = "time.duration"
UCD_FREQUENCY = "gw.frequency"

EVENT_DESCRIPTION = "Report of a candidate gravitational-wave event"
RETRACTION_DESCRIPTION = "Retraction of a previously reported candidate gravitational-wave event"
HOW_DESCRIPTION = "Candidate gravitational-wave event found by low-latency analysis"
WHY_EVENT = "A transient gravitational-wave signal was detected; see the sky map for where to look."
WHY_RETRACTION = "The candidate was withdrawn after human vetting; no follow-up is needed."


def ivorn(identity, ivorn_prefix=DEFAULT_IVORN_PREFIX):
    """IVORN of a notice: the prefix followed by its notice identity."""
    _check_ivorn_prefix(ivorn_prefix)
    return f"{ivorn_prefix}{identity}"


def _check_ivorn_prefix(ivorn_prefix):
    if not (
        isinstance(ivorn_prefix, str)
        and ivorn_prefix.startswith(IVORN_SCHEME)
        and ivorn_prefix.endswith(IVORN_FRAGMENT_SEPARATOR)
        and len(ivorn_prefix) > len(IVORN_SCHEME) + len(IVORN_FRAGMENT_SEPARATOR)
    ):
        raise NoticeValidationError(f"ivorn_prefix: {ivorn_prefix!r} is not like {DEFAULT_IVORN_PREFIX!r}")


def _flag(value):
    return "1" if value else "0"


def _number_text(value):
    """Shortest text that reads back as the same float."""
    return repr(float(value))


def _sub(parent, tag, text=None, **attributes):
    element = etree.SubElement(parent, tag, {k: str(v) for k, v in attributes.items()})
    if text is not None:
        element.text = str(text)
    return element


def _param(parent, name, value, data_type, description, ucd, unit=None):
    attributes = {"name": name, "dataType": data_type, "value": value, "ucd": ucd}
    if unit is not None:
        attributes["unit"] = unit
    param = _sub(parent, "Param", **attributes)
    _sub(param, "Description", description)
    return param


def _probability_group(parent, group_type, probabilities, description):
    group = _sub(parent, "Group", type=group_type)
    for name, probability in probabilities.items():
        _param(group, name, _number_text(probability), "float", f"Probability of {name}", UCD_PROBABILITY)
    _sub(group, "Description", description)


def _skymap_group_name(skymap_filename):
    """``bayestar.multiorder.fits,0`` -> ``bayestar``: the map's producer."""
    if not skymap_filename:
        return DEFAULT_SKYMAP_GROUP_NAME
    return skymap_filename.split(",")[0].split(".")[0] or DEFAULT_SKYMAP_GROUP_NAME


def _who(root, content, ivorn_prefix):
    who = _sub(root, "Who")
    _sub(who, "AuthorIVORN", ivorn_prefix.rstrip(IVORN_FRAGMENT_SEPARATOR))
    created = Time(utc_time(content.time_created, field_name="time_created"), precision=0)
    _sub(who, "Date", created.isot)
    author = _sub(who, "Author")
    _sub(author, "contactName", AUTHOR_CONTACT_NAME)


def _identification_params(what, content):
    _param(what, "Packet_Type", PACKET_TYPES[content.alert_type], "int", "GCN notice type number", UCD_IDENTIFIER)
    _param(what, "internal", INTERNAL_FLAG, "int", "1 if for LVK members only", UCD_IDENTIFIER)
    _param(what, "Pkt_Ser_Num", content.serial, "int", "Serial number of this notice for the superevent", UCD_NUMBER)
    _param(what, "GraceID", content.superevent_id, "string", "Superevent identifier", UCD_IDENTIFIER)
    _param(what, "AlertType", ALERT_TYPE_TITLES[content.alert_type], "string", "Type of alert", UCD_VERSION)
    _param(what, "HardwareInj", _flag(content.hardware_injection), "int", "1 if a hardware injection", UCD_NUMBER)
    _param(what, "OpenAlert", OPEN_ALERT_FLAG, "int", "1 if part of the open alert programme", UCD_NUMBER)
    event_page = content.urls.get("gracedb")
    if event_page:
        _param(what, "EventPage", event_page, "string", "Web page of the superevent", UCD_URL)


def _event_params(what, content):
    _param(what, "Instruments", ",".join(content.instruments), "string", "Detectors that observed the event", UCD_CODE)
    _param(
        what, "FAR", _number_text(content.far), "float", "False alarm rate", UCD_FALSE_ALARM_RATE, unit=HERTZ_UNIT
    )
    _param(what, "Significant", _flag(content.significant), "int", "1 if a significant alert", UCD_NUMBER)
    _param(what, "Group", content.group, "string", "Data analysis working group", UCD_CODE)
    _param(what, "Pipeline", content.pipeline, "string", "Low-latency pipeline", UCD_CODE)
    _param(what, "Search", content.search, "string", "Search that found the event", UCD_CODE)
    if content.central_frequency is not None:
        _param(
            what, "CentralFreq", _number_text(content.central_frequency), "float",
            "Central frequency of the burst", UCD_FREQUENCY, unit=HERTZ_UNIT,
        )
    if content.duration is not None:
        _param(
            what, "Duration", _number_text(content.duration), "float",
            "Duration of the burst", UCD_DURATION, unit=SECONDS_UNIT,
        )
    if content.skymap_url:
        group = _sub(what, "Group", type=SKYMAP_GROUP_TYPE, name=_skymap_group_name(content.skymap_filename))
        _param(group, "skymap_fits", content.skymap_url, "string", "Multi-order FITS sky map", UCD_URL)
    if content.classification:
        _probability_group(
            what, "Classification", content.classification,
            "Probabilities of the source categories, terrestrial noise included",
        )
    if content.properties:
        _probability_group(
            what, "Properties", content.properties,
            "Probabilities of source properties, assuming an astrophysical source",
        )


def _where_when(root, content):
    event_time = Time(content.event_time_gps, format="gps", precision=EVENT_TIME_DECIMALS).utc
    where_when = _sub(root, "WhereWhen")
    data_location = _sub(where_when, "ObsDataLocation")
    _sub(data_location, "ObservatoryLocation", id=OBSERVATORY_LOCATION_ID)
    observation = _sub(data_location, "ObservationLocation")
    _sub(observation, "AstroCoordSystem", id=COORDINATE_SYSTEM)
    coordinates = _sub(observation, "AstroCoords", coord_system_id=COORDINATE_SYSTEM)
    time = _sub(coordinates, "Time", unit=SECONDS_UNIT)
    instant = _sub(time, "TimeInstant")
    _sub(instant, "ISOTime", event_time.isot)


def _how(root, content):
    how = _sub(root, "How")
    _sub(how, "Description", HOW_DESCRIPTION)
    for instrument in content.instruments:
        _sub(how, "Description", DETECTOR_DESCRIPTIONS[instrument])


@cache
def _voevent_schema():
    xsd_file = resources.files(XSD_PACKAGE).joinpath(XSD_PATH)
    with resources.as_file(xsd_file) as xsd_path:
        return etree.XMLSchema(etree.parse(str(xsd_path)))


def _safe_parser():
    return etree.XMLParser(resolve_entities=False, no_network=True)


def validate_voevent(xml_bytes):
    """Check VOEvent bytes against the VOEvent 2.0 XML schema."""
    try:
        document = etree.fromstring(xml_bytes, _safe_parser())
    except etree.XMLSyntaxError as error:
        raise NoticeValidationError(f"VOEvent is not well-formed XML: {error}") from error
    schema = _voevent_schema()
    if not schema.validate(document):
        problem = schema.error_log.last_error
        raise NoticeValidationError(f"VOEvent schema, line {problem.line}: {problem.message}")


def build_voevent(content, ivorn_prefix=DEFAULT_IVORN_PREFIX):
    """VOEvent 2.0 bytes for a notice; retractions carry no event Params
    and no WhereWhen."""
    check_content(content)
    _check_ivorn_prefix(ivorn_prefix)
    identity = notice_identity(content.superevent_id, content.alert_type, content.serial)
    root = etree.Element(
        etree.QName(VOEVENT_NAMESPACE, "VOEvent"),
        {
            "version": VOEVENT_VERSION,
            "role": content.role,
            "ivorn": ivorn(identity, ivorn_prefix),
            f"{{{XSI_NAMESPACE}}}schemaLocation": VOEVENT_SCHEMA_LOCATION,
        },
        nsmap={"voe": VOEVENT_NAMESPACE, "xsi": XSI_NAMESPACE},
    )
    _who(root, content, ivorn_prefix)
    what = _sub(root, "What")
    _identification_params(what, content)
    if content.has_event:
        _event_params(what, content)
        _where_when(root, content)
        _how(root, content)
    why = _sub(root, "Why")
    _sub(why, "Description", WHY_EVENT if content.has_event else WHY_RETRACTION)
    _sub(root, "Description", EVENT_DESCRIPTION if content.has_event else RETRACTION_DESCRIPTION)
    xml_bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    validate_voevent(xml_bytes)
    return xml_bytes
