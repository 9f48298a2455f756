"""Reads behind the dashboard pages, a fixed number of queries per page
(never one per row): the list's page of superevents with labels, notices,
preferred events, sky-map summaries and p_astro in bulk."""
import json
from collections import defaultdict

from django.db.models import Q

from alerts import listing, models, vocabulary
from alerts.products import CLASSIFICATION_NAMES
from alerts.vocabulary import (ADVNO, ADVOK, ADVREQ, DQ_LABELS, LOW_SIGNIF_LOCKED, MULTIORDER_SUFFIX,
                               P_ASTRO_SUFFIX, RETRACTION_ALERT, SIGNIF_LOCKED)

from alerts.dashboard.formatting import largest_class

# The labels of DESIGN.md section 4, for the list's label filter.
LABEL_NAMES = tuple(sorted({*vocabulary.VERDICT_LABELS, *vocabulary.DQ_LABELS, *vocabulary.READY_LABELS,
                            vocabulary.ADVREQ, vocabulary.EM_READY, vocabulary.GCN_PRELIM_SENT,
                            vocabulary.SIGNIF_LOCKED, vocabulary.LOW_SIGNIF_LOCKED, vocabulary.DQR_REQUEST}))


# The significance filter: which lock label the superevent carries.
SIGNIFICANCE_LABELS = {"significant": SIGNIF_LOCKED, "low": LOW_SIGNIF_LOCKED}


def superevent_list(category="", label="", significance="", waiting=False):
    """The filtered list, newest first (label subqueries only as filters:
    in the SELECT list PostgreSQL would run them for every row before the
    top-N sort; the preferred events come per page in decorate_rows, as a
    join here would join every event before the sort)."""
    queryset = models.Superevent.objects.order_by(*listing.NEWEST_FIRST)
    if category:
        queryset = queryset.filter(category=category)
    if label:
        queryset = queryset.filter(listing.has_label(label))
    if significance in SIGNIFICANCE_LABELS:
        queryset = queryset.filter(listing.has_label(SIGNIFICANCE_LABELS[significance]))
    if waiting:
        queryset = queryset.filter(listing.waiting())
    return queryset


def decorate_rows(superevents):
    """Attach labels, notices, sky-map areas and p_astro to a page of
    superevents in a fixed number of queries; returns the rows."""
    rows = list(superevents)
    if not rows:
        return rows
    pks = [row.pk for row in rows]
    preferred = [row.preferred_event_id for row in rows if row.preferred_event_id]
    events = models.Event.objects.in_bulk(preferred)
    for row in rows:
        row.preferred = events.get(row.preferred_event_id)
    labels = defaultdict(list)
    for pk, name in models.Label.objects.filter(superevent__in=pks).order_by("created").values_list(
            "superevent", "name"):
        labels[pk].append(name)
    notices = defaultdict(list)
    for pk, alert_type, serial in models.Notice.objects.filter(superevent__in=pks).values_list(
            "superevent", "alert_type", "serial"):
        notices[pk].append((serial, alert_type))
    files = (models.File.objects.filter(Q(superevent__in=pks) | Q(event__in=preferred))
             .filter(Q(name__endswith=MULTIORDER_SUFFIX) | Q(name__endswith=P_ASTRO_SUFFIX))
             .order_by("version").only("pk", "name", "version", "sha256", "content", "event", "superevent"))
    newest = {}
    for file in files:
        kind = "skymap" if file.name.endswith(MULTIORDER_SUFFIX) else "p_astro"
        newest[(file.superevent_id or ("event", file.event_id), kind)] = file
    shas = [file.sha256 for (owner, kind), file in newest.items() if kind == "skymap"]
    areas = dict(models.SkymapSummary.objects.filter(file__sha256__in=shas).values_list(
        "file__sha256", "area_90_deg2"))
    for row in rows:
        row.label_list = labels[row.pk]
        row.notice_list = [alert_type for serial, alert_type in sorted(notices[row.pk])]
        row.retracted = RETRACTION_ALERT in row.notice_list or ADVNO in row.label_list
        row.waiting = ADVREQ in row.label_list and ADVOK not in row.label_list and ADVNO not in row.label_list
        row.dq = next((name for name in row.label_list if name in DQ_LABELS), "")
        owners = (row.pk, ("event", row.preferred_event_id))
        skymap = next((newest[(o, "skymap")] for o in owners if (o, "skymap") in newest), None)
        row.area_90 = areas.get(skymap.sha256) if skymap else None
        p_astro = next((newest[(o, "p_astro")] for o in owners if (o, "p_astro") in newest), None)
        row.top_class = largest_class(read_probabilities(p_astro))
    return rows


def read_probabilities(file, names=CLASSIFICATION_NAMES):
    """The class probabilities in a p_astro / em_bright JSON file, or None."""
    if file is None:
        return None
    try:
        content = json.loads(file.read())
    except (OSError, ValueError):
        return None
    if not isinstance(content, dict):
        return None
    values = {name: float(content[name]) for name in names
              if isinstance(content.get(name), (int, float)) and not isinstance(content.get(name), bool)}
    return values or None


def label_choices():
    """The vocabulary's labels (no query: a DISTINCT over every label row
    would cost more than the rest of the page)."""
    return list(LABEL_NAMES)
