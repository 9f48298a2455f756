"""Field names and JSON types of GraceDB's REST answers, written down once
from GraceDB's documentation so that the GraceDB-compatible surface is
checked against them.

Sources: GraceDB's REST API documentation
(https://gracedb.ligo.org/documentation/rest.html and
https://gracedb.ligo.org/documentation/models.html: events, superevents,
logs, labels, VOEvents, signoffs) and what the ``ligo-gracedb`` client reads
(``ligo/gracedb/rest.py``: the API root's ``links``, ``templates`` and
lists; ``events``/``superevents`` paging through ``links.next``;
``numRows``). ``None`` among the types means the field may be null.
"""
NUMBER = (int, float)
TEXT = (str,)
NULL = (type(None),)

ROOT = {"links": (dict,), "templates": (dict,), "groups": (list,), "pipelines": (list,),
        "searches": (list,), "labels": (list,), "superevent-categories": (dict,), "instruments": (dict,),
        "voevent-types": (dict,), "signoff-types": (dict,), "signoff-statuses": (dict,),
        "server-version": TEXT, "api-versions": (list,)}
ROOT_LINKS = {"self", "events", "superevents"}
ROOT_TEMPLATES = {
    "event-detail-template", "event-log-template", "event-log-detail-template", "event-label-template",
    "files-template", "taglist-template", "voevent-list-template", "voevent-detail-template",
    "superevent-detail-template", "superevent-label-list-template", "superevent-label-detail-template",
    "superevent-log-list-template", "superevent-log-detail-template", "superevent-log-tag-list-template",
    "superevent-file-list-template", "superevent-file-detail-template", "superevent-voevent-list-template",
    "superevent-voevent-detail-template", "superevent-signoff-list-template",
    "superevent-signoff-detail-template", "superevent-event-list-template",
}

EVENT = {"submitter": TEXT, "created": TEXT, "group": TEXT, "graceid": TEXT, "pipeline": TEXT,
         "gpstime": NUMBER, "reporting_latency": NUMBER + NULL, "instruments": TEXT,
         "nevents": (int,) + NULL, "offline": (bool,), "search": TEXT + NULL, "far": NUMBER,
         "far_is_upper_limit": (bool,), "likelihood": NUMBER + NULL, "labels": (list,),
         "extra_attributes": (dict,), "superevent": TEXT + NULL, "superevent_neighbours": (dict,),
         "links": (dict,)}
EVENT_LINKS = {"neighbors", "log", "emobservations", "files", "labels", "self", "tags"}
COINC_INSPIRAL = {"ifos": TEXT, "end_time": (int,), "end_time_ns": (int,), "snr": NUMBER,
                  "combined_far": NUMBER, "mchirp": NUMBER, "mass": NUMBER}
SINGLE_INSPIRAL = {"ifo": TEXT, "snr": NUMBER, "end_time": (int,), "end_time_ns": (int,),
                   "mass1": NUMBER, "mass2": NUMBER}

SUPEREVENT = {"superevent_id": TEXT, "gw_id": TEXT + NULL, "category": TEXT, "created": TEXT,
              "submitter": TEXT, "em_type": TEXT + NULL, "t_start": NUMBER, "t_0": NUMBER, "t_end": NUMBER,
              "far": NUMBER + NULL, "time_coinc_far": NUMBER + NULL, "space_coinc_far": NUMBER + NULL,
              "labels": (list,), "preferred_event": TEXT + NULL, "preferred_event_data": (dict,) + NULL,
              "gw_events": (list,), "em_events": (list,), "links": (dict,)}
SUPEREVENT_LINKS = {"events", "labels", "logs", "files", "self", "voevents", "emobservations"}
SUPEREVENT_CATEGORIES = {"Production", "Test", "MDC"}

LOG = {"self": TEXT, "N": (int,), "comment": TEXT, "created": TEXT, "issuer": TEXT, "filename": TEXT,
       "file_version": (int,) + NULL, "tag_names": (list,), "file": TEXT}
LABEL = {"name": TEXT, "creator": TEXT, "created": TEXT, "self": TEXT}
TAG = {"name": TEXT, "displayName": TEXT}
VOEVENT = {"self": TEXT, "N": (int,), "voevent_type": TEXT, "ivorn": TEXT + NULL, "created": TEXT,
           "issuer": TEXT, "filename": TEXT, "file_version": (int,), "skymap_type": TEXT + NULL,
           "skymap_filename": TEXT + NULL, "internal": (bool,), "open_alert": (bool,),
           "hardware_inj": (bool,), "coinc_comment": (bool,)}
SIGNOFF = {"self": TEXT, "submitter": TEXT, "created": TEXT, "instrument": TEXT, "status": TEXT,
           "comment": TEXT, "signoff_type": TEXT}

EVENT_PAGE = {"start": (int,), "numRows": (int,), "events": (list,), "links": (dict,)}
SUPEREVENT_PAGE = {"numRows": (int,), "superevents": (list,), "links": (dict,)}
EVENT_LOG_LIST = {"numRows": (int,), "log": (list,)}
SUPEREVENT_LOG_LIST = {"numRows": (int,), "logs": (list,)}
LABEL_LIST = {"labels": (list,)}
VOEVENT_LIST = {"voevents": (list,)}
SIGNOFF_LIST = {"signoffs": (list,)}


def mismatches(document, reference):
    """Fields of ``reference`` missing from ``document`` or of another type."""
    wrong = []
    for name, types in reference.items():
        if name not in document:
            wrong.append(f"{name}: missing")
        elif not isinstance(document[name], types) or (isinstance(document[name], bool)
                                                       and bool not in types):
            wrong.append(f"{name}: {type(document[name]).__name__}, expected {types}")
    return wrong
