"""GraceDB's JSON shapes, built from the orchestrator's models.

Field names and types follow GraceDB's REST API documentation
(https://gracedb.ligo.org/documentation/rest.html) and what ``ligo-gracedb``
reads; ``tests/gracedb_reference.py`` writes them down. Plain functions, not
DRF serializers: an answer is a dict built in one pass.

File versions are numbered from 0 as in GraceDB (``name,0`` is the first
upload); the store numbers them from 1, so version N here is N+1 there.
"""
import re

from alerts import vocabulary
from alerts.models import Category, Event

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
CATEGORY_NAMES = {Category.PRODUCTION: "Production", Category.TEST: "Test", Category.MDC: "MDC"}
VOEVENT_TYPES = {"PR": "preliminary", "IN": "initial", "UP": "update", "RE": "retraction", "EW": "earlywarning"}
VOEVENT_CODE = {vocabulary.PRELIMINARY_ALERT: "PR", vocabulary.INITIAL_ALERT: "IN",
                vocabulary.UPDATE_ALERT: "UP", vocabulary.RETRACTION_ALERT: "RE",
                vocabulary.EARLYWARNING_ALERT: "EW"}
SIGNOFF_STATUS_LABEL = {"OK": vocabulary.ADVOK, "NO": vocabulary.ADVNO}
IVORN = re.compile(rb'ivorn="([^"]+)"')
UNRECORDED = "orchestrator"
"""Submitter/issuer of what the store does not record a user for."""


def gracedb_version(version):
    return version - 1


def store_version(version):
    return version + 1


def timestamp(moment):
    return moment.strftime(TIME_FORMAT) if moment else None


class Urls:
    """Absolute URLs of this surface for one request."""

    def __init__(self, base):
        self.base = base if base.endswith("/") else base + "/"

    def owner(self, owner):
        if isinstance(owner, Event):
            return f"{self.base}events/{owner.graceid}"
        return f"{self.base}superevents/{owner.superevent_id}/"

    def files(self, owner):
        return self.owner(owner) + ("/files/" if isinstance(owner, Event) else "files/")

    def logs(self, owner):
        return self.owner(owner) + ("/log/" if isinstance(owner, Event) else "logs/")

    def labels(self, owner):
        return self.owner(owner) + ("/labels/" if isinstance(owner, Event) else "labels/")

    def voevents(self, owner):
        return self.owner(owner) + ("/voevent/" if isinstance(owner, Event) else "voevents/")

    def file(self, stored, owner):
        return f"{self.files(owner)}{stored.name},{gracedb_version(stored.version)}"


def coinc_extra_attributes(event):
    """GraceDB keeps a CBC event's numbers under ``CoincInspiral`` and one
    ``SingleInspiral`` row per detector; the store keeps them flat."""
    extra = event.extra_attributes or {}
    if event.group != vocabulary.CBC or "CoincInspiral" in extra:
        return extra
    seconds = int(extra.get("gps_seconds", int(event.gpstime)))
    nanoseconds = int(extra.get("gps_nanoseconds", round((event.gpstime - int(event.gpstime)) * 1e9)))
    coinc = {"ifos": event.instruments, "end_time": seconds, "end_time_ns": nanoseconds,
             "snr": event.snr, "combined_far": event.far, "false_alarm_rate": None,
             "mchirp": extra.get("chirp_mass"), "mass": _sum(extra.get("mass1"), extra.get("mass2")),
             "minimum_duration": None}
    singles = [{"ifo": ifo, "snr": snr, "end_time": seconds, "end_time_ns": nanoseconds,
                "mass1": extra.get("mass1"), "mass2": extra.get("mass2"), "spin1z": extra.get("spin1z"),
                "spin2z": extra.get("spin2z"), "f_final": None}
               for ifo, snr in sorted((extra.get("detector_snrs") or {}).items())]
    return {"CoincInspiral": coinc, "SingleInspiral": singles}


def _sum(*values):
    return None if any(v is None for v in values) else sum(values)


def event_json(event, urls, labels=None):
    """GraceDB's event object. ``labels`` (names) saves a query when known."""
    if labels is None:
        labels = sorted(label.name for label in event.labels.all())
    base = urls.owner(event)
    return {
        "submitter": UNRECORDED,
        "created": timestamp(event.created),
        "group": event.group,
        "graceid": event.graceid,
        "pipeline": event.pipeline,
        "gpstime": event.gpstime,
        "reporting_latency": None,
        "instruments": event.instruments,
        "nevents": len(event.instrument_list) if event.group == vocabulary.CBC else None,
        "offline": event.offline,
        "search": event.search,
        "far": event.far,
        "far_is_upper_limit": False,
        "likelihood": (event.extra_attributes or {}).get("likelihood"),
        "labels": list(labels),
        "extra_attributes": coinc_extra_attributes(event),
        "superevent": event.superevent.superevent_id if event.superevent_id else None,
        "superevent_neighbours": {},
        "warnings": [],
        "links": {"neighbors": f"{base}/neighbors/", "log": urls.logs(event),
                  "emobservations": f"{base}/emobservation/", "files": urls.files(event),
                  "labels": urls.labels(event), "self": base, "tags": f"{base}/tag/"},
    }


def superevent_json(superevent, urls):
    base = urls.owner(superevent)
    preferred = superevent.preferred_event
    return {
        "superevent_id": superevent.superevent_id,
        "gw_id": None,
        "category": CATEGORY_NAMES.get(superevent.category, superevent.category),
        "created": timestamp(superevent.created),
        "submitter": UNRECORDED,
        "em_type": None,
        "t_start": superevent.t_start,
        "t_0": superevent.t_0,
        "t_end": superevent.t_end,
        "far": superevent.far,
        "time_coinc_far": None,
        "space_coinc_far": None,
        "labels": sorted(label.name for label in superevent.labels.all()),
        "preferred_event": preferred.graceid if preferred else None,
        "preferred_event_data": event_json(preferred, urls) if preferred else None,
        "pipeline_preferred_events": {},
        "gw_events": sorted(event.graceid for event in superevent.events.all()),
        "em_events": [],
        "links": {"events": f"{base}events/", "labels": urls.labels(superevent), "logs": urls.logs(superevent),
                  "files": urls.files(superevent), "self": base, "voevents": urls.voevents(superevent),
                  "emobservations": f"{base}emobservations/"},
    }


def log_json(log, number, owner, urls):
    stored = log.file
    url = f"{urls.logs(owner)}{number}" + ("" if isinstance(owner, Event) else "/")
    return {
        "self": url,
        "N": number,
        "comment": log.message,
        "created": timestamp(log.created),
        "issuer": UNRECORDED,
        "filename": stored.name if stored else "",
        "file_version": gracedb_version(stored.version) if stored else None,
        "tag_names": list(log.tags),
        "file": urls.file(stored, owner) if stored else "",
        "links": {"self": url, "tags": url + ("/tag/" if isinstance(owner, Event) else "tags/")},
    }


def label_json(label, owner, urls):
    url = urls.labels(owner) + label.name + ("" if isinstance(owner, Event) else "/")
    return {"name": label.name, "creator": label.creator, "created": timestamp(label.created),
            "self": url, "links": {"self": url}}


def tag_json(name):
    return {"name": name, "displayName": name}


def voevent_json(notice, owner, urls):
    voevent = next((p for p in notice.payloads.all() if p.format == "voevent"), None)
    ivorn = None
    if voevent is not None:
        found = IVORN.search(bytes(voevent.content))
        ivorn = found.group(1).decode("utf-8", "replace") if found else None
    code = VOEVENT_CODE.get(notice.alert_type, notice.alert_type)
    url = f"{urls.voevents(owner)}{notice.serial}" + ("" if isinstance(owner, Event) else "/")
    return {
        "self": url,
        "N": notice.serial,
        "voevent_type": code,
        "ivorn": ivorn,
        "created": timestamp(notice.created),
        "issuer": UNRECORDED,
        "filename": f"{notice.superevent.superevent_id}-{notice.serial}-{VOEVENT_TYPES.get(code, code).title()}.xml",
        "file_version": 0,
        "skymap_type": None,
        "skymap_filename": None,
        "internal": notice.role != vocabulary.ROLE_OBSERVATION,
        "open_alert": notice.role == vocabulary.ROLE_OBSERVATION,
        "hardware_inj": False,
        "coinc_comment": False,
        "prob_has_ns": None, "prob_has_remnant": None, "prob_has_mass_gap": None,
        "prob_bns": None, "prob_nsbh": None, "prob_bbh": None, "prob_terrestrial": None,
        "links": {"self": url},
    }


def signoff_json(label, comment, superevent, urls):
    status = next(code for code, name in SIGNOFF_STATUS_LABEL.items() if name == label.name)
    url = f"{urls.owner(superevent)}signoffs/ADV/"
    return {"self": url, "submitter": label.creator, "created": timestamp(label.created),
            "instrument": "", "status": status, "comment": comment, "signoff_type": "ADV",
            "links": {"self": url}}
