"""GCN Circular drafts: the human-readable text that accompanies an alert.

``circular_context`` gathers the numbers of a superevent from the store (its
preferred event, the pipelines that found it, the products copied to it);
``render_circular`` turns them into text with the Django templates under
``templates/circulars/`` (one per alert type, wording helpers in the
``circular_format`` template filters); ``write_circular`` stores the draft as
``<alert type>-circular.txt`` on the superevent, where advocates read and
edit it before posting.
"""
import re

from django.template.loader import render_to_string

from alerts import products
from alerts.science import circular_text
from alerts.science.notices import ALERT_TYPE_TITLES
from alerts.store import add_file, latest_file
from alerts import vocabulary as v
from alerts.config import policy

TEMPLATE_DIR = "circulars"
CIRCULAR_SUFFIX = "-circular.txt"
BAYESTAR_PREFIX = "bayestar."
# Lines of the rendered templates are tidied: trailing spaces dropped and
# runs of blank lines (left by unused conditional paragraphs) collapsed.
_BLANK_RUNS = re.compile(r"\n{3,}")


def circular_filename(alert_type):
    """``PRELIMINARY`` -> ``preliminary-circular.txt``."""
    return f"{alert_type.lower()}{CIRCULAR_SUFFIX}"


def _event_fields(event):
    extra = event.extra_attributes or {}
    central_frequency = extra.get("central_frequency", extra.get("central_freq"))
    return {
        "graceid": event.graceid,
        "group": event.group,
        "is_cbc": event.group == v.CBC,
        "pipeline": event.pipeline,
        "search": event.search,
        "gpstime": event.gpstime,
        "far": event.far,
        "instruments": [circular_text.detector_title(ifo) for ifo in event.instrument_list],
        "duration": extra.get("duration"),
        "central_frequency": central_frequency,
    }


class _References:
    """Numbered citations, in order of first mention."""

    def __init__(self):
        self.keys = []

    def cite(self, key):
        if key not in circular_text.REFERENCES:
            return None
        if key not in self.keys:
            self.keys.append(key)
        return self.keys.index(key) + 1

    def as_list(self):
        return [{"number": n, "text": circular_text.REFERENCES[key]} for n, key in enumerate(self.keys, start=1)]


def _skymap_description(file, references):
    name = file.name
    if name.startswith(BAYESTAR_PREFIX):
        if name.endswith(products.MULTIORDER_SUFFIX):
            return f"a rapid localization by BAYESTAR [{references.cite('bayestar')}]"
        return "the BAYESTAR localization flattened to a single HEALPix resolution, for older software"
    pipeline = name.split(".", 1)[0]
    return f"a localization by {circular_text.pipeline_title(pipeline)}"


def circular_context(superevent, alert_type="PRELIMINARY", event=None):
    """Everything the circular templates quote, as plain values.

    ``event`` is the event the circular describes: the one the notice it
    accompanies was made from (default: the superevent's preferred event,
    which may have changed since the notice went out).

    Keys: superevent_id, alert_type, alert_title, superevent_url,
    user_guide_url, event (preferred event fields, or None), pipelines
    ([{title, ref}] with the preferred event's pipeline first),
    pipeline_citations (['GstLAL [1]', ...]), classification
    ([(name, probability)] most probable first, CBC only), properties (dict),
    skymaps ([{filename, url, description}]), skymap (filename of the sky map
    notices carry), area_50, area_90, distance_mean, distance_std (None when
    unknown), references ([{number, text}]).
    """
    references = _References()
    event = event if event is not None else superevent.preferred_event
    context = {
        "superevent_id": superevent.superevent_id,
        "alert_type": alert_type,
        "alert_title": ALERT_TYPE_TITLES.get(alert_type, alert_type.title()),
        "superevent_url": products.superevent_url(superevent),
        "user_guide_url": policy()["CIRCULAR"]["user_guide_url"],
        "event": _event_fields(event) if event is not None else None,
        "pipelines": [],
        "pipeline_citations": [],
        "classification": [],
        "properties": {},
        "skymaps": [],
        "skymap": None,
        "area_50": None,
        "area_90": None,
        "distance_mean": None,
        "distance_std": None,
    }
    if event is not None:
        found_by = [event.pipeline] + sorted(
            {e.pipeline for e in superevent.events.all() if not e.offline} - {event.pipeline})
        context["pipelines"] = [{"title": circular_text.pipeline_title(p), "ref": references.cite(p)}
                                for p in found_by]
        context["pipeline_citations"] = [f"{p['title']} [{p['ref']}]" if p["ref"] else p["title"]
                                         for p in context["pipelines"]]
        if event.group == v.CBC:
            context["classification"] = circular_text.ranked(products.classification(superevent) or {})
        context["properties"] = products.properties(superevent) or {}
    skymap = products.skymap_file(superevent)
    if skymap is not None:
        context["skymap"] = skymap.filename
        summary = products.skymap_summary(skymap) or {}
        context["area_50"] = summary.get("area_50_deg2")
        context["area_90"] = summary.get("area_90_deg2")
        context["distance_mean"] = summary.get("distance_mean_mpc")
        context["distance_std"] = summary.get("distance_std_mpc")
    context["skymaps"] = [{"filename": f.filename, "url": products.file_url(f),
                           "description": _skymap_description(f, references)}
                          for f in products.skymap_files(superevent)]
    context["references"] = references.as_list()
    return context


def render_circular(alert_type, context):
    """Circular text for ``alert_type`` (PRELIMINARY, INITIAL ...) from a context."""
    text = render_to_string(f"{TEMPLATE_DIR}/{alert_type.lower()}.txt", context)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)) + "\n"


def write_circular(superevent, alert_type, event=None):
    """Render and store the draft as ``<alert type>-circular.txt`` (tag em_follow).

    ``event``: the event the accompanying notice describes (see
    :func:`circular_context`). A draft identical to the newest stored version
    is not stored again; returns the file holding the current draft.
    """
    text = render_circular(alert_type, circular_context(superevent, alert_type, event)).encode("utf-8")
    name = circular_filename(alert_type)
    current = latest_file(superevent, name)
    if current is not None and current.sha256 == current.digest(text):
        return current
    return add_file(superevent, name, text, tags=policy()["CIRCULAR"]["tags"],
                    message=f"{ALERT_TYPE_TITLES.get(alert_type, alert_type)} GCN Circular draft written")
