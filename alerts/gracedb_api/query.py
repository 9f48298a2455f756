"""The subset of GraceDB's query language this surface understands.

GraceDB documents its queries at https://gracedb.ligo.org/documentation/queries.html.
Served here (terms are ANDed):

- ``gpstime: a .. b`` (events), ``t_0: a .. b``, ``t_start: a .. b``,
  ``t_end: a .. b`` (superevents): GPS ranges, inclusive; ``gpstime: a``
  one time;
- ``far < x`` (also ``<=``, ``>``, ``>=``; ``far: a .. b``);
- ``label: NAME`` (also ``label: A & B``);
- ``pipeline: X``, ``group: X``, ``search: X`` (events; superevents by
  their events), ``category: Production|Test|MDC``;
- a bare event or superevent ID, and bare group, pipeline or search names.

Anything else raises QueryError naming the term: a term this surface does not
understand gives a 400, never a silently wrong result.
"""
import re

from django.db.models import Q

from alerts.models import Category
from alerts.config import policy

NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
TERM = re.compile(
    rf"(?P<key>\w+)\s*:\s*(?P<low>{NUMBER})\s*\.\.\s*(?P<high>{NUMBER})(?=\s|$)"
    rf"|(?P<ckey>\w+)\s*:?\s*(?P<op><=|>=|<|>)\s*(?P<cvalue>{NUMBER})(?=\s|$)"
    r"|(?P<akey>\w+)\s*:\s*(?P<avalue>\"[^\"]*\"|\S+(?:\s*&\s*\S+)*)"
    r"|(?P<bare>\S+)"
)
OPERATORS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
CATEGORIES = {"production": Category.PRODUCTION, "p": Category.PRODUCTION, "test": Category.TEST,
              "t": Category.TEST, "mdc": Category.MDC, "m": Category.MDC}
EVENT_ID = re.compile(r"^[GEHMT]\d+$")
SUPEREVENT_ID = re.compile(r"^[MT]?S\d{6}[a-z]+$")


class QueryError(ValueError):
    """A query term this surface does not serve; the message names it."""


class Fields:
    """Model field names a query maps to, for events or superevents."""

    def __init__(self, times, far, labels, origin_prefix, ident, kind):
        self.times, self.far, self.labels = times, far, labels
        self.origin_prefix, self.ident, self.kind = origin_prefix, ident, kind


EVENT_FIELDS = Fields(times={"gpstime": "gpstime"}, far="far", labels="labels__name", origin_prefix="",
                      ident="graceid", kind="events")
SUPEREVENT_FIELDS = Fields(times={"t_0": "t_0", "t_start": "t_start", "t_end": "t_end", "gpstime": "t_0"},
                           far="far", labels="labels__name", origin_prefix="events__", ident="superevent_id",
                           kind="superevents")


def known_names():
    pipelines = {name.lower() for names in policy()["PIPELINES"].values() for name in names}
    return {"group": {g.lower(): g for g in policy()["PIPELINES"]},
            "pipeline": {p: p for p in pipelines},
            "search": {s.lower(): s for s in policy()["SEARCHES"]}}


def parse(query, fields):
    """A list of Q objects (ANDed) for ``query``; QueryError names a term
    that is not served. The caller applies ``.distinct()`` when a term
    spans a relation (labels, superevents' events)."""
    filters, position, query = [], 0, (query or "").strip()
    names = known_names()
    while position < len(query):
        if query[position].isspace():
            position += 1
            continue
        match = TERM.match(query, position)
        position = match.end()
        text = match.group(0)
        if match.group("key"):
            filters.append(time_or_far_range(match.group("key"), match.group("low"), match.group("high"),
                                             fields, text))
        elif match.group("ckey"):
            key = match.group("ckey").lower()
            if key != "far":
                raise QueryError(f"unsupported query term {text!r}: only 'far' takes <, <=, >, >=")
            filters.append(Q(**{f"{fields.far}__{OPERATORS[match.group('op')]}": float(match.group("cvalue"))}))
        elif match.group("akey"):
            filters.append(attribute(match.group("akey").lower(), match.group("avalue").strip('"'),
                                     fields, names, text))
        else:
            filters.append(bare(match.group("bare"), fields, names))
    return filters


def time_or_far_range(key, low, high, fields, text):
    key = key.lower()
    low, high = sorted((float(low), float(high)))
    if key in fields.times:
        column = fields.times[key]
    elif key == "far":
        column = fields.far
    else:
        raise QueryError(f"unsupported query term {text!r}: ranges are served for "
                         f"{', '.join(sorted(fields.times))} and far")
    return Q(**{f"{column}__gte": low, f"{column}__lte": high})


def attribute(key, value, fields, names, text):
    if key == "label":
        labels = [name.strip() for name in value.split("&") if name.strip()]
        query = Q()
        for name in labels:
            # Each label needs its own join, so "A & B" means both.
            query &= Q(**{"pk__in": _owners_with_label(fields, name)})
        return query
    if key in fields.times:
        try:
            moment = float(value)
        except ValueError:
            raise QueryError(f"unsupported query term {text!r}: GPS times are numbers") from None
        return Q(**{fields.times[key]: moment})
    if key in ("pipeline", "group", "search"):
        known = names[key]
        if value.lower() not in known:
            raise QueryError(f"unknown {key} in query term {text!r}")
        lookup = "iexact" if key == "pipeline" else "exact"
        return Q(**{f"{fields.origin_prefix}{key}__{lookup}": known[value.lower()]})
    if key == "category":
        if value.lower() not in CATEGORIES:
            raise QueryError(f"unknown category in query term {text!r}; expected Production, Test or MDC")
        return Q(category=CATEGORIES[value.lower()])
    raise QueryError(f"unsupported query term {text!r}")


def _owners_with_label(fields, name):
    from alerts.models import Label

    column = "event_id" if fields.kind == "events" else "superevent_id"
    return Label.objects.filter(name=name, **{f"{column}__isnull": False}).values(column)


def bare(word, fields, names):
    if EVENT_ID.match(word):
        return Q(graceid=word) if fields.kind == "events" else Q(events__graceid=word)
    if SUPEREVENT_ID.match(word):
        return Q(superevent__superevent_id=word) if fields.kind == "events" else Q(superevent_id=word)
    for key in ("group", "pipeline", "search"):
        if word.lower() in names[key]:
            lookup = "iexact" if key == "pipeline" else "exact"
            return Q(**{f"{fields.origin_prefix}{key}__{lookup}": names[key][word.lower()]})
    raise QueryError(f"unsupported query term {word!r}")
