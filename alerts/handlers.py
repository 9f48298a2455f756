"""Registry of what runs when something happens to an event or superevent.

Ingestion, uploads and the manager announce changes with ``dispatch(kind,
...)``; annotation and alert steps subscribe with ``@handles(kind)``. Each
subscriber runs as its own worker task, so one failing step never blocks
another. Arguments are primary keys and names, never model objects, so that
they cross process boundaries unchanged.
"""
from collections import defaultdict

from alerts import workers

# What can happen; the arguments each kind passes to its handlers.
EVENT_CREATED = "event_created"  # (event_pk,)
EVENT_FILE_ADDED = "event_file_added"  # (event_pk, file_pk)
EVENT_LABEL_ADDED = "event_label_added"  # (event_pk, label_name)
EVENT_LABEL_REMOVED = "event_label_removed"  # (event_pk, label_name)
SUPEREVENT_CREATED = "superevent_created"  # (superevent_pk,)
SUPEREVENT_EVENT_ADDED = "superevent_event_added"  # (superevent_pk, event_pk)
SUPEREVENT_PREFERRED_CHANGED = "superevent_preferred_changed"  # (superevent_pk, event_pk)
SUPEREVENT_LABEL_ADDED = "superevent_label_added"  # (superevent_pk, label_name)
SUPEREVENT_LABEL_REMOVED = "superevent_label_removed"  # (superevent_pk, label_name)
SUPEREVENT_FILE_ADDED = "superevent_file_added"  # (superevent_pk, file_pk)
# Log messages written here one at a time (store.log, log_many), on events
# or superevents; not the rows an upload or the grouping writes in bulk.
LOGS_ADDED = "logs_added"  # ([log_pk, ...],)
KINDS = {
    EVENT_CREATED, EVENT_FILE_ADDED, EVENT_LABEL_ADDED, EVENT_LABEL_REMOVED, SUPEREVENT_CREATED,
    SUPEREVENT_EVENT_ADDED, SUPEREVENT_PREFERRED_CHANGED, SUPEREVENT_LABEL_ADDED,
    SUPEREVENT_LABEL_REMOVED, SUPEREVENT_FILE_ADDED, LOGS_ADDED,
}

_subscribers = defaultdict(list)
_conditions = {}  # (kind, path) -> when


def handles(kind, when=None):
    """Subscribe the decorated module-level function to ``kind``.

    ``when(*args)``, if given, is the handler's own first test of its
    arguments, cheap and without the database (a label's name, a setting):
    where it is false the handler would return at once, so ``dispatch``
    queues no task for it (a task costs a queue round trip; an IGWN Alert
    stream carries many labels no handler acts on).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown handler kind {kind!r}")

    def register(func):
        path = f"{func.__module__}.{func.__qualname__}"
        if path not in _subscribers[kind]:
            _subscribers[kind].append(path)
        if when is not None:
            _conditions[(kind, path)] = when
        return func

    return register


def subscribers(kind):
    return list(_subscribers[kind])


def dispatch(kind, *args, done=()):
    """Queue every subscriber of ``kind`` (after the current transaction
    commits), except those in ``done`` (functions whose work the caller did
    in the same transaction) and those whose ``when`` is false."""
    if kind not in KINDS:
        raise ValueError(f"unknown handler kind {kind!r}")
    skipped = {workers.task_path(func) for func in done}
    for path in _subscribers[kind]:
        when = _conditions.get((kind, path))
        if path not in skipped and (when is None or when(*args)):
            workers.enqueue(path, *args)
