"""Labels, logs and versioned files on events and superevents.

Every write announces itself through the handler registry after commit, so
steps that wait for a file or a label run exactly when it appears.
"""
import datetime

from django.core.files.base import ContentFile
from django.db import IntegrityError, connections, router, transaction
from django.db.models import Max
from django.utils import timezone

from alerts import handlers
from alerts.models import Event, File, Label, Log, Superevent
from alerts.prepared import execute_prepared, insert


def owner_kwargs(owner):
    if isinstance(owner, Event):
        return {"event": owner}
    if isinstance(owner, Superevent):
        return {"superevent": owner}
    raise TypeError(f"files, labels and logs belong to an Event or a Superevent, not {owner!r}")


def log(owner, message, file=None, tags=(), external_key="", repeat_checked=False, announce=True):
    """Append a log message; with ``external_key`` a repeated message is
    ignored (``repeat_checked``: the caller has just looked for it).

    The new message is announced to the LOGS_ADDED handlers (write-back to
    GraceDB) unless ``announce`` is false: a message that records what came
    from GraceDB, or that goes with a label change, announced on its own.
    """
    if external_key and not repeat_checked:
        existing = Log.objects.filter(external_key=external_key, **owner_kwargs(owner)).first()
        if existing:
            return existing
    entry = insert([Log(message=message, file=file, tags=list(tags), external_key=external_key,
                        **owner_kwargs(owner))])[0]
    if announce:
        handlers.dispatch(handlers.LOGS_ADDED, [entry.pk])
    return entry


def log_once(owner, message, tags=(), external_key=""):
    """``log`` with ``external_key``: True if written, False if the owner
    has a log of that key already."""
    entry = pending_log(owner, message, tags=tags)
    entry.external_key = external_key
    using = router.db_for_write(Log)
    connection = connections[using]
    if connection.vendor != "postgresql":
        if Log.objects.using(using).filter(external_key=external_key, **owner_kwargs(owner)).exists():
            return False
        write_logs([entry])
        return True
    owner_column = Log._meta.get_field("event" if isinstance(owner, Event) else "superevent").column
    values = [field.get_db_prep_save(field.pre_save(entry, add=True), connection) for field in _LOG_FIELDS]
    # Raw SQL: the look-up and the INSERT in one statement (an ingested log
    # message's round trips, measured in `listen`).
    return execute_prepared(using, _insert_log_once_sql(connection, owner_column), values + [owner.pk, external_key]) == 1


def pending_log(owner, message, file=None, tags=()):
    """An unsaved log message, for ``write_logs``."""
    return Log(message=message, file=file, tags=list(tags), **owner_kwargs(owner))


def write_logs(entries):
    """Save ``pending_log`` entries in order with one INSERT: the rows ``log``
    would write one by one, for one round trip instead of several."""
    return insert(entries)


def log_many(owner, messages, tags=()):
    """Append several log messages, in order, with one INSERT (announced
    as ``log`` announces one)."""
    entries = write_logs([pending_log(owner, message, tags=tags) for message in messages])
    if entries:
        handlers.dispatch(handlers.LOGS_ADDED, [entry.pk for entry in entries])
    return entries


def add_label(owner, name, creator="orchestrator"):
    """Add a label once; returns True when it is new (and handlers were told)."""
    # No savepoint of its own: a failure here fails the caller's transaction
    # (or savepoint) as any database error does; a label already there is no error.
    with transaction.atomic(savepoint=False):
        if not insert_label_once(owner, name, creator, pending_log(owner, f"Label added: {name}", tags=["label"])):
            return False
    if isinstance(owner, Event):
        handlers.dispatch(handlers.EVENT_LABEL_ADDED, owner.pk, name)
    else:
        handlers.dispatch(handlers.SUPEREVENT_LABEL_ADDED, owner.pk, name)
    return True


def insert_label_once(owner, name, creator, entry):
    """Insert the label, and the unsaved log ``entry`` with it, unless the
    owner has the label; True if they were inserted."""
    using = router.db_for_write(Label)
    connection = connections[using]
    if connection.vendor != "postgresql":
        if Label.objects.using(using).filter(name=name, **owner_kwargs(owner)).exists():
            return False
        try:
            with transaction.atomic(using=using):
                Label.objects.using(using).create(name=name, creator=creator, **owner_kwargs(owner))
        except IntegrityError:  # another worker added it a moment ago
            return False
        write_logs([entry])
        return True
    label = Label(name=name, creator=creator, **owner_kwargs(owner))
    values = [field.get_db_prep_save(field.pre_save(obj, add=True), connection)
              for obj, fields in ((label, _LABEL_FIELDS), (entry, _LOG_FIELDS)) for field in fields]
    # Raw SQL: one statement instead of five (a lookup, a savepoint, the
    # INSERT, its release, the log's INSERT); measured, these round trips
    # were most of a label message's time in `listen`.
    return execute_prepared(using, _insert_label_once_sql(connection), values) == 1


_LABEL_FIELDS = [field for field in Label._meta.concrete_fields if not field.primary_key]
_LOG_FIELDS = [field for field in Log._meta.concrete_fields if not field.primary_key]


def _columns(connection, fields):
    return ", ".join(connection.ops.quote_name(field.column) for field in fields)


def _log_values_select(connection):
    """SELECT of one log row's values (typed: a SELECT list does not take
    its types from the columns it is inserted into)."""
    return "SELECT " + ", ".join(f"CAST(%s AS {field.cast_db_type(connection)})" for field in _LOG_FIELDS)


def _insert_label_once_sql(connection):
    """The label row ON CONFLICT DO NOTHING, and the log row only if the
    label row was written (its SELECT reads the label INSERT's output)."""
    quote = connection.ops.quote_name
    return (f"WITH new_label AS (INSERT INTO {quote(Label._meta.db_table)} ({_columns(connection, _LABEL_FIELDS)}) "
            f"VALUES ({', '.join(['%s'] * len(_LABEL_FIELDS))}) ON CONFLICT DO NOTHING RETURNING 1) "
            f"INSERT INTO {quote(Log._meta.db_table)} ({_columns(connection, _LOG_FIELDS)}) "
            f"{_log_values_select(connection)} FROM new_label")


def _insert_log_once_sql(connection, owner_column):
    """The log row unless the owner has a log of its external key."""
    quote = connection.ops.quote_name
    table = quote(Log._meta.db_table)
    return (f"INSERT INTO {table} ({_columns(connection, _LOG_FIELDS)}) {_log_values_select(connection)} "
            f"WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {quote(owner_column)} = %s "
            f"AND {quote(Log._meta.get_field('external_key').column)} = %s)")


def remove_label(owner, name):
    """Remove a label; returns True when it was there (and handlers were told)."""
    with transaction.atomic():
        deleted, _ = Label.objects.filter(name=name, **owner_kwargs(owner)).delete()
        if not deleted:
            return False
        log(owner, f"Label removed: {name}", tags=["label"], announce=False)
    if isinstance(owner, Event):
        handlers.dispatch(handlers.EVENT_LABEL_REMOVED, owner.pk, name)
    else:
        handlers.dispatch(handlers.SUPEREVENT_LABEL_REMOVED, owner.pk, name)
    return True


def add_file(owner, name, data, tags=(), message=None, announce=True):
    """Store ``data`` as the next version of ``name`` on ``owner``.

    The owner row is locked while the version number is chosen, so two
    workers adding the same file name get consecutive versions.
    """
    with transaction.atomic():
        type(owner).objects.select_for_update().filter(pk=owner.pk).exists()
        latest = File.objects.filter(name=name, **owner_kwargs(owner)).aggregate(v=Max("version"))["v"]
        stored = save_file_version(owner, name, data, (latest or 0) + 1, tags)
        log(owner, message or file_added_message(stored), file=stored, tags=tags, announce=False)
    if announce:
        kind = handlers.EVENT_FILE_ADDED if isinstance(owner, Event) else handlers.SUPEREVENT_FILE_ADDED
        handlers.dispatch(kind, owner.pk, stored.pk)
    return stored


def save_file_version(owner, name, data, version, tags=()):
    """Store ``data`` as ``name,version`` (content and File row, no log).

    The caller chooses the version: ``add_file`` under the owner's lock, or
    the creator of a new owner, whose first file of a name is version 1.
    """
    stored = stage_file_version(owner, name, data, version, tags)
    stored.save(force_insert=True)
    return stored


def stage_file_version(owner, name, data, version, tags=(), pk=None):
    """``save_file_version`` up to its row: the content is in storage, the
    File (with ``pk`` if given) is for the caller to insert."""
    stored = File(pk=pk, name=name, version=version, tags=sorted(set(tags)), size=len(data),
                  sha256=File.digest(data), **owner_kwargs(owner))
    stored.content.save(name, ContentFile(data), save=False)
    return stored


def file_added_message(stored):
    return f"File added: {stored.filename}"


def latest_file(owner, name):
    """Newest version of a named file, or None."""
    return File.objects.filter(name=name, **owner_kwargs(owner)).order_by("-version").first()


def orphaned_files(grace_s, storage=None):
    """Names of stored files that no File row names and that are older
    than ``grace_s`` seconds, in sorted order.

    Content is written to storage before its File row commits, so a
    rolled-back upload or a worker killed mid-transaction leaves a file no
    row points at. The grace period keeps files of transactions still
    running.
    """
    storage = storage or File._meta.get_field("content").storage
    named = set(File.objects.values_list("content", flat=True))
    cutoff = timezone.now() - datetime.timedelta(seconds=grace_s)
    return sorted(name for name in _walk(storage, "")
                  if name not in named and storage.get_modified_time(name) < cutoff)


def _walk(storage, folder):
    if not storage.exists(folder or "."):
        return
    folders, files = storage.listdir(folder or ".")
    for name in files:
        yield f"{folder}/{name}" if folder else name
    for sub in folders:
        yield from _walk(storage, f"{folder}/{sub}" if folder else sub)


def remove_orphaned_files(grace_s, storage=None):
    """Delete what ``orphaned_files`` lists; returns the names removed."""
    storage = storage or File._meta.get_field("content").storage
    names = orphaned_files(grace_s, storage)
    for name in names:
        storage.delete(name)
    return names
