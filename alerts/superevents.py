"""The superevent manager: groups events close in time into superevents.

Events are handled in batches. ``process_event`` (the EVENT_CREATED task)
returns at once if its event is already handled (``Event.grouping_done``);
otherwise ``assign_pending`` takes, in one transaction, the event and up to
``BATCH_SIZE - 1`` other pending events of its category, applies the rules
to them one by one in memory, in creation (id) order, exactly as one task
per event would (``_plan``), and writes the result with a few bulk
statements. The tasks of the other events of the batch then find them done.
An upload's new event goes through the same steps inside the upload's
transaction (``group_at_upload``), as a batch of one.

Correct under concurrency: pending events are claimed with FOR NO KEY
UPDATE SKIP LOCKED, so two managers never take the same event. A task whose
event another manager's batch holds groups a batch of other pending events
meanwhile, then waits for that batch and takes its event over if the batch
did not handle it (it failed): a task ends only once its event is handled,
or fails with a failed step run. Each transaction takes a lock on every
time bucket that the windows of its events touch (PostgreSQL advisory
transaction locks, all in ascending order in one statement; SQLite
serialises all writers with IMMEDIATE transactions). Two events whose
windows overlap share a bucket, so one batch waits for the other and then
sees the superevents it created; the superevents are read only after the
locks are held. Day counters are incremented with one atomic upsert per day
and batch, so IDs follow creation order without gaps.
"""
import dataclasses
import logging
import zlib
from collections import defaultdict

from django.db import connection, transaction
from django.db.models import Case, CharField, FloatField, IntegerField, Q, Value, When
from django.utils import timezone

from alerts import handlers, superevent_rules as rules
from alerts.config import policy
from alerts.handlers import handles
from alerts.models import Event, Label, StepRun, Superevent, SupereventDayCounter
from alerts.prepared import Param, PreparedSelect, PreparedUpdate, insert
from alerts.steps import MAX_ERROR_CHARS, WORKER_NAME
from alerts.store import log_many, pending_log, write_logs

logger = logging.getLogger(__name__)

STEP = "superevent_manager"
LOG_TAGS = ["superevent_manager"]
# Seconds of GPS time per advisory lock; windows are a few seconds, so a
# window touches one or two buckets and distant events never wait.
LOCK_BUCKET_S = 16
# First key of PostgreSQL's two-key advisory locks, one per category.
LOCK_NAMESPACE = {category: zlib.crc32(f"superevent-{category}".encode()) & 0x7FFFFFFF
                  for category in rules.ID_PREFIX}
# Range of the second key (a 32-bit integer).
LOCK_KEY_MIN, LOCK_KEY_MAX = -2**31, 2**31 - 1
# Most pending events one transaction handles: enough to amortise the fixed
# cost of a transaction, few enough to keep it short.
BATCH_SIZE = 200
# Event windows closer than this are read with one range condition: a
# backlog in time order costs one, events far apart in time one each.
SPAN_MERGE_GAP_S = 600.0


def candidate_of(event, labels=None):
    if labels is None:
        labels = event.label_names()
    return rules.Candidate(
        group=event.group, pipeline=event.pipeline, search=event.search, gpstime=event.gpstime,
        far=event.far, snr=event.snr, instruments=tuple(event.instrument_list),
        labels=frozenset(labels), extra=event.extra_attributes,
    )


# --- locks and counters -----------------------------------------------------------


def buckets_of(t_start, t_end):
    """The lock buckets a window [t_start, t_end] touches."""
    return range(int(t_start // LOCK_BUCKET_S), int(t_end // LOCK_BUCKET_S) + 1)


def lock_buckets(category, buckets):
    """Take the advisory transaction locks of ``buckets`` (PostgreSQL only;
    SQLite serialises writers with IMMEDIATE transactions).

    unnest yields the sorted buckets in order and each row takes its lock in
    turn; every manager locks in ascending order, so there are no deadlocks.
    """
    buckets = sorted(set(buckets))
    if connection.vendor != "postgresql" or not buckets:
        return
    with connection.cursor() as cursor:
        # Raw SQL: the ORM has no advisory locks; one statement for all buckets.
        cursor.execute("SELECT pg_advisory_xact_lock(%s, bucket) FROM unnest(%s::integer[]) AS bucket",
                       [LOCK_NAMESPACE[category], buckets])


def next_day_index(category, date):
    """Atomically take the next creation index of ``date`` for ``category``."""
    return next_day_indexes(category, date, 1)[0]


def next_day_indexes(category, date, count):
    """Atomically take the next ``count`` creation indexes of ``date`` (contiguous)."""
    table = SupereventDayCounter._meta.db_table
    with connection.cursor() as cursor:
        # Raw SQL: an atomic upsert that returns the new value (gap-free IDs under concurrency).
        cursor.execute(
            f"INSERT INTO {table} (category, date, next_index) VALUES (%s, %s, %s) "
            f"ON CONFLICT (category, date) DO UPDATE SET next_index = {table}.next_index + excluded.next_index "
            f"RETURNING next_index",
            [category, date, count],
        )
        end = cursor.fetchone()[0]
    return list(range(end - count, end))


# --- the task ---------------------------------------------------------------------


@handles(handlers.EVENT_CREATED)
def process_event(event_pk):
    """Put a new event into a superevent (a new one or the one it overlaps),
    together with the other events waiting for the manager.

    Returns once the event is handled, by this task or by another manager's
    batch; or fails, with a failed step run, if it cannot be handled.
    """
    done, category = handled_and_category(event_pk)
    if done:
        return  # a repeated task, or handled in another event's batch
    started = timezone.now()
    try:
        if not _assign(event_pk, category, wait=False):
            # Another manager's batch holds the event (this task grouped
            # other pending events meanwhile): wait for that batch, and take
            # the event over if the batch did not handle it (e.g. it failed).
            _assign(event_pk, category, wait=True)
    except Exception as error:  # recorded outside the rolled-back transaction
        StepRun.objects.create(step=STEP, event_id=event_pk, started=started, finished=timezone.now(),
                               status=StepRun.Status.FAILED, worker=WORKER_NAME,
                               error=f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS])
        logger.exception("step %s failed", STEP)
        raise


def group_at_upload(event):
    """Group a new ``event`` inside the transaction that is creating it,
    before its row is inserted (``events.write_new_event``).

    Nobody else sees the uncommitted event, so it needs no claim: it is a
    batch of one, under the same time-bucket locks and rules as any batch.
    The rules are applied before anything is written: if they fail, the
    event is left pending (None is returned) and its EVENT_CREATED task
    groups it (or records why it cannot). Then the superevent rows are
    written and the event's ``superevent`` and ``grouping_done`` set in
    memory, so its INSERT carries them; the caller writes the outcome's logs
    together with the upload's and calls `finish_at_upload`. A database
    error fails the whole upload (nothing half written): no savepoint, which
    would cost two round trips per upload.
    """
    try:
        outcome = _plan(event.category, [event], event.pk, timezone.now(), unlabelled=True)
    except Exception as error:
        logger.warning("event %s left to the superevent manager's task: grouping at upload failed (%s: %s)",
                       event.pk, type(error).__name__, error, exc_info=True)
        return None
    _write_superevents(outcome)
    _set_done(outcome.done)
    return outcome


def finish_at_upload(outcome):
    """The step run of an upload's grouping, and its announcements (after the commit)."""
    _write_step_runs(outcome)
    for kind, *args in outcome.announcements:
        handlers.dispatch(kind, *args)


def _assign(event_pk, category, wait):
    try:
        return assign_pending(event_pk, category=category, wait=wait)
    except BatchFailed as failure:
        # One event's trouble must not hold up the others: this event alone
        # (the others' own tasks take them).
        logger.warning("batch of %d events failed (%s: %s); retrying event %s alone", failure.size,
                       type(failure.__cause__).__name__, failure.__cause__, event_pk)
        return assign_pending(event_pk, category=category, batch_size=1, wait=True)


def handled_and_category(event_pk):
    """(grouping_done, category) of an event."""
    row = Event.objects.filter(pk=event_pk).values_list("grouping_done", "category").first()
    if row is None:
        raise Event.DoesNotExist(f"no event with pk {event_pk}")
    return bool(row[0]), row[1]


class BatchFailed(Exception):
    """A batch of several events failed (the cause is chained)."""

    def __init__(self, size):
        super().__init__(f"batch of {size} events failed")
        self.size = size


@dataclasses.dataclass(eq=False)
class Slot:
    """A superevent during a batch: its events and labels, and what changed."""

    superevent: Superevent
    events: list
    labels: frozenset = frozenset()
    new: bool = False
    touched: bool = False


@dataclasses.dataclass(eq=False)
class Pending:
    """A pending event of the batch and what the rules need of it."""

    event: Event
    candidate: rules.Candidate
    window: tuple | None = None  # None: above the FAR threshold
    date: object = None


def assign_pending(first_pk, category=None, batch_size=None, wait=False):
    """Group event ``first_pk`` and up to ``batch_size - 1`` (default
    ``BATCH_SIZE - 1``) other pending events of its category in one
    transaction, then dispatch the announcements.

    Returns True if the event is handled (by this batch or before). If
    another manager's batch holds the event: with ``wait``, waits for that
    batch to end first; without, groups a batch of other pending events
    instead (best effort: their own tasks see to them if that fails) and
    returns False.
    """
    batch_size = batch_size or BATCH_SIZE
    started = timezone.now()
    batch, leading = [], False
    try:
        with transaction.atomic():
            if category is None:
                category = Event.objects.values_list("category", flat=True).get(pk=first_pk)
            batch = claim_pending(first_pk, category, batch_size, wait)
            leading = bool(batch) and batch[0].pk == first_pk
            announcements = _assign_batch(category, batch, first_pk if leading else None, started) if batch else []
    except Exception as error:
        if batch and not leading:
            logger.warning("could not group %d pending events for their tasks (%s: %s)",
                           len(batch), type(error).__name__, error, exc_info=True)
            return False
        if len(batch) > 1:
            raise BatchFailed(len(batch)) from error
        raise
    for kind, *args in announcements:
        handlers.dispatch(kind, *args)
    # With ``wait`` an empty claim means the event was handled meanwhile.
    return leading or wait


def claim_pending(first_pk, category, batch_size, wait=False):
    """Lock up to ``batch_size`` pending events of ``category``: ``first_pk``
    first if it is pending, then by id, skipping those another manager holds.

    With ``wait``, a ``first_pk`` held by another manager is waited for; the
    claim is empty if it is handled then. Without, it is skipped too (the
    caller sees ``first_pk`` is not first).
    """
    pending = Event.objects.filter(category=category, grouping_done=False)
    if wait:
        first = list(locked(pending.filter(pk=first_pk)))
        if not first or batch_size == 1:
            return first
        return first + list(locked(pending.exclude(pk=first_pk).order_by("pk"), skip_locked=True)[:batch_size - 1])
    # The requested event first, then by id.
    first_then_id = pending.order_by(Case(When(pk=first_pk, then=Value(0)), default=Value(1),
                                          output_field=IntegerField()), "pk")
    return list(locked(first_then_id, skip_locked=True)[:batch_size])


def locked(queryset, skip_locked=False, of=()):
    """``queryset`` with the manager's row lock (none on SQLite, whose
    IMMEDIATE transactions serialise writers), on the rows of ``of`` only if given.

    NO KEY: labels, logs and files may still be added to the rows meanwhile.
    """
    features = connection.features
    return queryset.select_for_update(no_key=features.has_select_for_no_key_update,
                                      skip_locked=skip_locked and features.has_select_for_update_skip_locked,
                                      of=of if features.has_select_for_update_of else ())


@dataclasses.dataclass(eq=False)
class Outcome:
    """What the rules decided for a batch, for the writes: the handled
    events, the new superevents (slots, in creation order), every slot read
    or made, the log messages and the announcements (kind, pk, *args)."""

    category: str
    started: object
    done: list
    created: list
    slots: list
    logs: list
    announcements: list


def _assign_batch(category, batch, first_pk, started):
    """Group ``batch`` and write the outcome; returns the announcements."""
    outcome = _plan(category, batch, first_pk, started)
    _write_superevents(outcome)
    mark_done(outcome.done)
    write_logs(outcome.logs)
    _write_step_runs(outcome)
    return outcome.announcements


def _plan(category, batch, first_pk, started, unlabelled=False):
    """Apply the rules to ``batch`` under its bucket locks; nothing is written.

    ``unlabelled``: the batch's events are known to have no labels (a new
    upload), so their labels are not read.
    """
    pending = _prepare(batch, first_pk)
    forming = [p for p in pending if p.window is not None]
    slots, labels_of = _read_batch(category, [] if unlabelled else pending, forming)
    for item in pending:
        item.candidate = dataclasses.replace(item.candidate, labels=frozenset(labels_of[item.event.pk]))

    logs, announcements, created, done = [], [], [], []
    candidates = {e.pk: candidate_of(e, labels_of[e.pk]) for slot in slots for e in slot.events}
    candidates.update((p.event.pk, p.candidate) for p in pending)
    for item in pending:  # in id order, as one task per event would
        event = item.event
        done.append(event)
        if event.superevent_id is not None:
            continue  # grouped before the done flag existed
        if item.window is None:
            logs.append(pending_log(event, f"FAR {event.far:.3g} Hz is above the superevent threshold "
                                           f"{policy()['SUPEREVENT_FAR_THRESHOLD']:.3g} Hz: not grouped"))
            continue
        t_start, t_end = item.window
        overlapping = [s for s in slots if s.superevent.t_start <= t_end
                       and s.superevent.t_end >= t_start]
        if not overlapping:
            superevent = Superevent(category=category, t_start=t_start, t_0=event.gpstime, t_end=t_end,
                                    preferred_event=event, far=event.far, date=item.date)
            slot = Slot(superevent, [event], new=True)
            slots.append(slot)
            created.append(slot)
            event.superevent = superevent
            logs.append(pending_log(superevent, f"Created superevent with preferred event {event.graceid} "
                                                f"(window {t_start:.3f} to {t_end:.3f})", tags=LOG_TAGS))
            announcements.append((handlers.SUPEREVENT_CREATED, superevent))
            continue
        # The database listed them latest t_0 first; min keeps the first of a tie.
        overlapping.sort(key=lambda s: -s.superevent.t_0)
        slot = min(overlapping, key=lambda s: abs(s.superevent.t_0 - event.gpstime))
        superevent = slot.superevent
        slot.events.append(event)
        slot.touched = True
        event.superevent = superevent
        messages = []
        grow_window(superevent, t_start, t_end, messages,
                    neighbours=[s.superevent for s in slots if s is not slot])
        messages.append(f"Added event {event.graceid}")
        announcements.append((handlers.SUPEREVENT_EVENT_ADDED, superevent, event.pk))
        if _reselect(superevent, slot.events, candidates, slot.labels, messages):
            announcements.append((handlers.SUPEREVENT_PREFERRED_CHANGED, superevent,
                                  superevent.preferred_event_id))
        logs.extend(pending_log(superevent, message, tags=LOG_TAGS) for message in messages)
    return Outcome(category, started, done, created, slots, logs, announcements)


def _prepare(batch, first_pk):
    """The batch in id order with candidates, windows and dates.

    The FAR threshold and the window do not look at labels (loaded later,
    for the preferred-event order). An event whose attributes the rules
    cannot handle is left pending for its own task, which then fails on it
    alone; if it is the requested event, the step fails.
    """
    pending = []
    for event in sorted(batch, key=lambda e: e.pk):
        try:
            item = Pending(event, candidate_of(event, labels=()))
            if rules.forms_superevent(item.candidate, policy()):
                item.window = rules.event_window(item.candidate, policy())
                buckets = buckets_of(*item.window)  # finite, and within the lock key's range
                if not (LOCK_KEY_MIN <= buckets.start and buckets.stop - 1 <= LOCK_KEY_MAX):
                    raise ValueError(f"window {item.window} is out of range")
                item.date = rules.gps_to_utc_date(event.gpstime)
        except Exception as error:
            if event.pk == first_pk:
                raise
            logger.warning("event %s left to its own task (%s: %s)", event.pk, type(error).__name__, error)
            continue
        pending.append(item)
    return pending


def _spans(windows, gap=SPAN_MERGE_GAP_S):
    """Merge [start, end] intervals less than ``gap`` apart, in order."""
    spans = []
    for start, end in sorted(windows):
        if spans and start <= spans[-1][1] + gap:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    return spans


def _overlapping(spans, prefix=""):
    """Condition: a superevent window (``prefix`` its path) overlaps one of ``spans``."""
    condition = Q()
    for start, end in spans:
        condition |= Q(**{f"{prefix}t_start__lte": end, f"{prefix}t_end__gte": start})
    return condition


def _read_batch(category, pending, forming):
    """Lock the time buckets of the batch's windows, then read the
    superevents that overlap them (locked) with their events, and the labels
    of all these (``pending`` leaves out events known to have none). Returns
    (slots, {event pk: label names}), each slot's ``labels`` set from its
    superevent's.

    The superevents come with their events, in one query (a superevent is
    created with its preferred event and never loses it), locked in pk
    order, as every locker of several superevents does. The labels come in
    a second query: its snapshot is taken once those locks are held, so it
    sees the labels whose handlers held a superevent this batch waited for.

    These are also all the neighbours that can clip a growing window: a
    superevent grows only into an event window of the batch, and windows
    never overlap, so any other superevent that its grown window meets
    overlaps the batch's windows, or touches its old window at an end it
    does not grow past, where clipping changes nothing.
    """
    slots, events = [], []
    if forming:
        lock_buckets(category, (b for item in forming for b in buckets_of(*item.window)))
        spans = _spans([item.window for item in forming])
        values = {"category": category}
        for i, (start, end) in enumerate(spans):
            values[f"start{i}"], values[f"end{i}"] = start, end
        events = _slot_events(len(spans), **values)
        by_pk = {}
        for event in events:
            slot = by_pk.get(event.superevent_id)
            if slot is None:
                slot = by_pk[event.superevent_id] = Slot(event.superevent, [])
                slots.append(slot)
            slot.events.append(event)
    labels_of, superevent_labels = defaultdict(set), defaultdict(set)
    label_rows = _label_rows([p.event.pk for p in pending] + [event.pk for event in events],
                             [slot.superevent.pk for slot in slots])
    for event_pk, superevent_pk, name in label_rows:
        if event_pk is not None:
            labels_of[event_pk].add(name)
        else:
            superevent_labels[superevent_pk].add(name)
    for slot in slots:
        slot.labels = frozenset(superevent_labels.get(slot.superevent.pk, ()))
    return slots, labels_of


def _slot_events_query(span_count):
    """The events of the superevents of ``category`` that overlap one of
    ``span_count`` spans (``start<i>``, ``end<i>``), with their superevents
    (locked), latest event first in each."""
    spans = [(Param(f"start{i}", FloatField()), Param(f"end{i}", FloatField())) for i in range(span_count)]
    joined = Event.objects.select_related("superevent").filter(
        _overlapping(spans, prefix="superevent__"), superevent__category=Param("category", CharField()))
    return locked(joined.order_by("superevent_id", "-pk"), of=("superevent",))


# Compiled once per number of spans (an upload has one).
_slot_events = PreparedSelect(_slot_events_query)

# Label reads up to this many events and superevents (an upload's) are
# compiled once per count; a manager's batch, larger, as it comes.
PREPARED_LABEL_EVENTS, PREPARED_LABEL_SUPEREVENTS = 32, 4


def _label_rows(event_pks, superevent_pks):
    """(event_id, superevent_id, name) of the labels of these events and superevents."""
    if not event_pks and not superevent_pks:
        return []
    shape = (len(event_pks), len(superevent_pks))
    if shape[0] > PREPARED_LABEL_EVENTS or shape[1] > PREPARED_LABEL_SUPEREVENTS:
        return list(_labels_query(event_pks, superevent_pks))
    values = {f"event{i}": pk for i, pk in enumerate(event_pks)}
    values.update((f"superevent{i}", pk) for i, pk in enumerate(superevent_pks))
    return _labels(shape, **values)


def _labels_query(event_pks, superevent_pks):
    # event__id, not event_id: the pk's own lookup takes Params (no join: Django trims it).
    return Label.objects.filter(Q(event__id__in=event_pks) | Q(superevent__id__in=superevent_pks)) \
        .values_list("event_id", "superevent_id", "name")


_labels = PreparedSelect(lambda shape: _labels_query(
    [Param(f"event{i}", Event._meta.pk) for i in range(shape[0])],
    [Param(f"superevent{i}", Superevent._meta.pk) for i in range(shape[1])]))


def _write_superevents(outcome):
    """Give new superevents their IDs and rows, store changed windows and
    preferred events, and point the logs and announcements at the rows.

    New superevents need their day index, then their pk, before anything
    can point at them.
    """
    by_date = defaultdict(list)
    for slot in outcome.created:  # in creation order
        by_date[slot.superevent.date].append(slot.superevent)
    for date, superevents in by_date.items():
        for superevent, index in zip(superevents, next_day_indexes(outcome.category, date, len(superevents))):
            superevent.day_index = index
            superevent.superevent_id = rules.superevent_id(outcome.category, date, index)
    if outcome.created:
        insert([slot.superevent for slot in outcome.created])
    now = timezone.now()
    for slot in outcome.slots:
        if slot.touched and not slot.new:
            superevent = slot.superevent
            superevent.updated = now
            # One UPDATE each (no signals): bulk_update's CASE costs more CPU to compile than this saves.
            _update_superevent(None, pk=superevent.pk, **{name: getattr(superevent, name) for name in _CHANGED})
    for entry in outcome.logs:  # superevents created above now have their pk
        if entry.superevent is not None:
            entry.superevent_id = entry.superevent.pk
    outcome.announcements = [(kind, target.pk, *rest) for kind, target, *rest in outcome.announcements]


# What grouping changes in an existing superevent.
_CHANGED = ("t_start", "t_end", "t_0", "preferred_event_id", "far", "updated")
_update_superevent = PreparedUpdate(lambda _: (
    Superevent.objects.filter(pk=Param("pk", Superevent._meta.pk)),
    {name: Param(name, Superevent._meta.get_field(name)) for name in _CHANGED}))


def _write_step_runs(outcome):
    now = timezone.now()
    insert([
        StepRun(step=STEP, event=event, started=outcome.started, finished=now,
                status=StepRun.Status.SUCCEEDED, worker=WORKER_NAME) for event in outcome.done
    ])


def _set_done(events):
    """Set the superevent and the done flag of ``events`` in memory."""
    for event in events:
        event.grouping_done = True
        if event.superevent_id is None and event.superevent is not None:  # joined (set in memory)
            event.superevent_id = event.superevent.pk


def mark_done(events):
    """Store the superevent and the done flag of ``events``: one UPDATE per
    superevent joined (events of one superevent come together in a batch)."""
    _set_done(events)
    by_superevent = defaultdict(list)
    for event in events:
        by_superevent[event.superevent_id].append(event.pk)
    for superevent_pk, pks in by_superevent.items():
        Event.objects.filter(pk__in=pks).update(grouping_done=True, superevent_id=superevent_pk)


# --- the rules against the store -------------------------------------------------------


def grow_window(superevent, t_start, t_end, messages, neighbours=None):
    """Widen the window to cover the event, stopping at neighbouring superevents.

    ``neighbours`` are the other superevents (in memory, as a batch sees
    them); by default they are read from the database. The log message, if
    any, is appended to ``messages`` (for the caller to write).
    """
    new_start, new_end = min(superevent.t_start, t_start), max(superevent.t_end, t_end)
    if (new_start, new_end) == (superevent.t_start, superevent.t_end):
        return
    if neighbours is None:
        neighbours = Superevent.objects.filter(
            category=superevent.category, t_start__lte=new_end, t_end__gte=new_start
        ).exclude(pk=superevent.pk)
    else:
        neighbours = [n for n in neighbours if n.category == superevent.category
                      and n.t_start <= new_end and n.t_end >= new_start]
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
        log_many(superevent, messages, tags=LOG_TAGS)
        return changed
    events = list(superevent.events.prefetch_related("labels"))
    candidates = {e.pk: candidate_of(e, [label.name for label in e.labels.all()]) for e in events}
    return _reselect(superevent, events, candidates, superevent.label_names(), messages)


def _reselect(superevent, events, candidates, superevent_labels, messages):
    """``reselect_preferred`` on given events, their candidates ({pk: Candidate})
    and the superevent's labels."""
    current = next((e for e in events if e.pk == superevent.preferred_event_id), None)
    # The current preferred event first (it keeps ties), then latest first.
    ordered = ([current] if current else []) + sorted((e for e in events if e is not current),
                                                      key=lambda e: -e.pk)
    ordered_candidates = [candidates[e.pk] for e in ordered]
    best_index = rules.choose_preferred(ordered_candidates, policy())
    best = ordered[best_index]
    if best is current:
        return False
    if current is not None and not rules.may_replace_preferred(
            superevent_labels, ordered_candidates[best_index], policy()):
        messages.append(f"Preferred event kept as {current.graceid}: superevent is locked "
                        f"({', '.join(sorted(superevent_labels))})")
        return False
    superevent.preferred_event = best
    superevent.t_0 = best.gpstime
    superevent.far = best.far
    messages.append(f"Preferred event changed from {current.graceid if current else 'none'} "
                    f"to {best.graceid}")
    return True


def _orders_events(event_pk, label_name):
    return label_name in {name for names in policy()["COMPLETE_ANNOTATIONS"].values() for name in names}


@handles(handlers.EVENT_LABEL_ADDED, when=_orders_events)
@handles(handlers.EVENT_LABEL_REMOVED, when=_orders_events)
def reconsider_on_label(event_pk, label_name):
    """Annotation labels make an event preferable, and their removal (an
    advocate's, or an IGWN Alert's label_removed) less so: re-apply the order.

    The event's row is locked first: if a manager's batch holds it (the
    label came while the batch ran, too late for the batch to see), this
    waits for the batch and then finds its superevent instead of none.
    Locking the event, then its superevent, is the batch's order too.
    """
    if not _orders_events(event_pk, label_name):
        return
    with transaction.atomic():
        event = Event.objects.select_for_update(no_key=connection.features.has_select_for_no_key_update) \
            .get(pk=event_pk)
        if event.superevent_id is None:
            return
        superevent = Superevent.objects.select_for_update().get(pk=event.superevent_id)
        changed = reselect_preferred(superevent)
        if changed:
            superevent.save()
    if changed:
        handlers.dispatch(handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk, superevent.preferred_event_id)
