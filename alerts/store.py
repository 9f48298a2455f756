"""Labels, logs and versioned files on events and superevents.

Every write announces itself through the handler registry after commit, so
steps that wait for a file or a label run exactly when it appears.
"""
from django.core.files.base import ContentFile
from django.db import IntegrityError, transaction
from django.db.models import Max

from alerts import handlers
from alerts.models import Event, File, Label, Log, Superevent


def owner_kwargs(owner):
    if isinstance(owner, Event):
        return {"event": owner}
    if isinstance(owner, Superevent):
        return {"superevent": owner}
    raise TypeError(f"files, labels and logs belong to an Event or a Superevent, not {owner!r}")


def log(owner, message, file=None, tags=(), external_key=""):
    """Append a log message; with ``external_key`` a repeated message is ignored."""
    if external_key:
        existing = Log.objects.filter(external_key=external_key, **owner_kwargs(owner)).first()
        if existing:
            return existing
    return Log.objects.create(message=message, file=file, tags=list(tags),
                              external_key=external_key, **owner_kwargs(owner))


def add_label(owner, name, creator="orchestrator"):
    """Add a label once; returns True when it is new (and handlers were told)."""
    with transaction.atomic():
        if Label.objects.filter(name=name, **owner_kwargs(owner)).exists():
            return False
        try:
            with transaction.atomic():
                Label.objects.create(name=name, creator=creator, **owner_kwargs(owner))
        except IntegrityError:  # another worker added it a moment ago
            return False
        log(owner, f"Label added: {name}", tags=["label"])
    if isinstance(owner, Event):
        handlers.dispatch(handlers.EVENT_LABEL_ADDED, owner.pk, name)
    else:
        handlers.dispatch(handlers.SUPEREVENT_LABEL_ADDED, owner.pk, name)
    return True


def remove_label(owner, name):
    deleted, _ = Label.objects.filter(name=name, **owner_kwargs(owner)).delete()
    if deleted:
        log(owner, f"Label removed: {name}", tags=["label"])
    return bool(deleted)


def add_file(owner, name, data, tags=(), message=None, announce=True):
    """Store ``data`` as the next version of ``name`` on ``owner``.

    The owner row is locked while the version number is chosen, so two
    workers adding the same file name get consecutive versions.
    """
    with transaction.atomic():
        type(owner).objects.select_for_update().filter(pk=owner.pk).exists()
        latest = File.objects.filter(name=name, **owner_kwargs(owner)).aggregate(v=Max("version"))["v"]
        stored = File(name=name, version=(latest or 0) + 1, tags=sorted(set(tags)), size=len(data),
                      sha256=File.digest(data), **owner_kwargs(owner))
        stored.content.save(name, ContentFile(data), save=False)
        stored.save()
        log(owner, message or f"File added: {stored.filename}", file=stored, tags=tags)
    if announce:
        kind = handlers.EVENT_FILE_ADDED if isinstance(owner, Event) else handlers.SUPEREVENT_FILE_ADDED
        handlers.dispatch(kind, owner.pk, stored.pk)
    return stored


def latest_file(owner, name):
    """Newest version of a named file, or None."""
    return File.objects.filter(name=name, **owner_kwargs(owner)).order_by("-version").first()
