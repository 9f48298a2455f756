"""The superevent manager: groups events close in time into superevents.

Correct under concurrency: each event's transaction first takes a lock on
every time bucket its window touches (PostgreSQL advisory transaction locks;
SQLite serialises all writers with IMMEDIATE transactions). Two events whose
windows overlap share a bucket, so one waits for the other and then sees the
superevent it created; the overlap query runs only after the locks are held.
Day counters are incremented with one atomic upsert, so IDs follow creation
order without gaps.
"""
import logging
import zlib

from django.conf import settings
from django.db import connection, transaction

from alerts import handlers, superevent_rules as rules
from alerts.handlers import handles
from alerts.models import Event, Superevent, SupereventDayCounter
from alerts.steps import record_step
from alerts.store import log, log_many

logger = logging.getLogger(__name__)

# Seconds of GPS time per advisory lock; windows are a few seconds, so a
# window touches one or two buckets and distant events never wait.
LOCK_BUCKET_S = 16
# First key of PostgreSQL's two-key advisory locks, one per category.
LOCK_NAMESPACE = {category: zlib.crc32(f"superevent-{category}".encode()) & 0x7FFFFFFF
                  for category in rules.ID_PREFIX}


def policy():
    return settings.ORCHESTRATOR


def candidate_of(event, labels=None):
    if labels is None:
        labels = event.label_names()
    return rules.Candidate(
        group=event.group, pipeline=event.pipeline, search=event.search, gpstime=event.gpstime,
        far=event.far, snr=event.snr, instruments=tuple(event.instrument_list),
        labels=frozenset(labels), extra=event.extra_attributes,
    )


def lock_time_range(category, t_start, t_end):
    """Serialise managers whose windows may overlap (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        return
    first, last = int(t_start // LOCK_BUCKET_S), int(t_end // LOCK_BUCKET_S)
    with connection.cursor() as cursor:
        # One statement; generate_series yields the buckets in ascending
        # order and each row takes its lock in turn: no deadlocks.
        cursor.execute("SELECT pg_advisory_xact_lock(%s, bucket) FROM generate_series(%s, %s) AS bucket",
                       [LOCK_NAMESPACE[category], first, last])


def next_day_index(category, date):
    """Atomically take the next creation index of ``date`` for ``category``."""
    table = SupereventDayCounter._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (category, date, next_index) VALUES (%s, %s, 1) "
            f"ON CONFLICT (category, date) DO UPDATE SET next_index = {table}.next_index + 1 "
            f"RETURNING next_index",
            [category, date],
        )
        return cursor.fetchone()[0] - 1


@handles(handlers.EVENT_CREATED)
def process_event(event_pk):
    """Put a new event into a superevent (a new one or the one it overlaps)."""
    event = Event.objects.get(pk=event_pk)
    with record_step("superevent_manager", event=event):
        outcome = assign_event(event_pk)
    for kind, *args in outcome:
        handlers.dispatch(kind, *args)


def assign_event(event_pk):
    """The locked part of ``process_event``; returns the changes to announce."""
    announcements = []
    with transaction.atomic():
        event = Event.objects.select_for_update().get(pk=event_pk)
        if event.superevent_id is not None:
            return announcements  # a repeated task: already grouped
        # The FAR threshold and the window do not look at labels; the
        # preferred-event order, which does, reloads every event's labels.
        candidate = candidate_of(event, labels=())
        if not rules.forms_superevent(candidate, policy()):
            log(event, f"FAR {event.far:.3g} Hz is above the superevent threshold "
                       f"{policy()['SUPEREVENT_FAR_THRESHOLD']:.3g} Hz: not grouped")
            return announcements
        t_start, t_end = rules.event_window(candidate, policy())
        lock_time_range(event.category, t_start, t_end)
        overlapping = list(
            Superevent.objects.select_for_update()
            .filter(category=event.category, t_start__lte=t_end, t_end__gte=t_start)
        )
        if not overlapping:
            superevent = create_superevent(event, t_start, t_end)
            announcements.append((handlers.SUPEREVENT_CREATED, superevent.pk))
            return announcements
        superevent = min(overlapping, key=lambda s: abs(s.t_0 - event.gpstime))
        event.superevent = superevent
        event.save(update_fields=["superevent"])
        messages = []  # the superevent's log, written in one INSERT at the end
        grow_window(superevent, t_start, t_end, messages)
        messages.append(f"Added event {event.graceid}")
        announcements.append((handlers.SUPEREVENT_EVENT_ADDED, superevent.pk, event.pk))
        if reselect_preferred(superevent, messages):
            announcements.append((handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk,
                                  superevent.preferred_event_id))
        log_many(superevent, messages, tags=["superevent_manager"])
        superevent.save()
    return announcements


def create_superevent(event, t_start, t_end):
    date = rules.gps_to_utc_date(event.gpstime)
    index = next_day_index(event.category, date)
    superevent = Superevent.objects.create(
        superevent_id=rules.superevent_id(event.category, date, index),
        category=event.category, t_start=t_start, t_0=event.gpstime, t_end=t_end,
        preferred_event=event, far=event.far, date=date, day_index=index,
    )
    event.superevent = superevent
    event.save(update_fields=["superevent"])
    log(superevent, f"Created superevent with preferred event {event.graceid} "
                    f"(window {t_start:.3f} to {t_end:.3f})", tags=["superevent_manager"])
    return superevent


def grow_window(superevent, t_start, t_end, messages):
    """Widen the window to cover the event, stopping at neighbouring superevents.

    The log message, if any, is appended to ``messages`` (for the caller to write).
    """
    new_start, new_end = min(superevent.t_start, t_start), max(superevent.t_end, t_end)
    if (new_start, new_end) == (superevent.t_start, superevent.t_end):
        return
    neighbours = Superevent.objects.filter(
        category=superevent.category, t_start__lte=new_end, t_end__gte=new_start
    ).exclude(pk=superevent.pk)
    for neighbour in neighbours:
        if neighbour.t_0 < superevent.t_0:
            new_start = max(new_start, neighbour.t_end)
        else:
            new_end = min(new_end, neighbour.t_start)
    messages.append(f"Window changed from [{superevent.t_start:.3f}, {superevent.t_end:.3f}] "
                    f"to [{new_start:.3f}, {new_end:.3f}]")
    superevent.t_start, superevent.t_end = new_start, new_end


def reselect_preferred(superevent, messages=None):
    """Apply the preferred-event order unless the superevent is locked.

    Returns True if the preferred event changed (the caller saves). Log
    messages go to ``messages`` if given (for the caller to write), else
    straight to the superevent's log.
    """
    if messages is None:
        messages = []
        changed = reselect_preferred(superevent, messages)
        log_many(superevent, messages, tags=["superevent_manager"])
        return changed
    events = list(superevent.events.prefetch_related("labels"))
    current = next((e for e in events if e.pk == superevent.preferred_event_id), None)
    ordered = ([current] if current else []) + [e for e in events if e is not current]
    candidates = [candidate_of(e, [label.name for label in e.labels.all()]) for e in ordered]
    best = ordered[rules.choose_preferred(candidates, policy())]
    if best is current:
        return False
    superevent_labels = superevent.label_names()
    if current is not None and not rules.may_replace_preferred(
            superevent_labels, candidates[ordered.index(best)], policy()):
        messages.append(f"Preferred event kept as {current.graceid}: superevent is locked "
                        f"({', '.join(sorted(superevent_labels))})")
        return False
    superevent.preferred_event = best
    superevent.t_0 = best.gpstime
    superevent.far = best.far
    messages.append(f"Preferred event changed from {current.graceid if current else 'none'} "
                    f"to {best.graceid}")
    return True


@handles(handlers.EVENT_LABEL_ADDED)
def reconsider_on_label(event_pk, label_name):
    """Annotation labels can make an event preferable: re-apply the order."""
    if label_name not in {name for names in policy()["COMPLETE_ANNOTATIONS"].values() for name in names}:
        return
    with transaction.atomic():
        event = Event.objects.get(pk=event_pk)
        if event.superevent_id is None:
            return
        superevent = Superevent.objects.select_for_update().get(pk=event.superevent_id)
        changed = reselect_preferred(superevent)
        if changed:
            superevent.save()
    if changed:
        handlers.dispatch(handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk, superevent.preferred_event_id)
