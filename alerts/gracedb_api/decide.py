"""The decisions this surface takes, through the decision service.

``alerts.decisions`` (the advocates' decision service) applies the rules and
the audit for every way in. Until it is in the tree, these stand-ins apply
the role check and call the store, with the same signatures and exceptions,
so that the views need no change when it arrives.
"""
from django.db import transaction

from alerts import handlers, roles, store, vocabulary

VIA = "gracedb"

try:  # pragma: no cover - which branch is taken depends on the tree
    from alerts import decisions as service
except ImportError:
    service = None


class Refused(Exception):
    status = 409


class NotAllowed(Refused):
    status = 403


if service is not None:
    Refused = service.Refused  # noqa: F811
    NotAllowed = service.NotAllowed  # noqa: F811


def _need_advocate(user):
    if not roles.is_advocate(user):
        raise NotAllowed(f"only users in the group '{vocabulary.ADVOCATES_GROUP}' may do this")


def add_label(owner, name, *, user):
    if service is not None:
        return service.add_label(owner, name, user=user, via=VIA)
    _need_advocate(user)
    return store.add_label(owner, name, creator=user.get_username())


def remove_label(owner, name, *, user):
    if service is not None:
        return service.remove_label(owner, name, user=user, via=VIA)
    _need_advocate(user)
    return store.remove_label(owner, name)


def apply_verdict(superevent, label, *, user, reason=""):
    if service is not None:
        return service.apply_verdict(superevent, label, user=user, reason=reason, via=VIA)
    _need_advocate(user)
    if label not in vocabulary.VERDICT_LABELS:
        raise Refused(f"{label} is not a verdict label")
    other = ({*vocabulary.VERDICT_LABELS} - {label}).pop()
    if other in superevent.label_names():
        raise Refused(f"{superevent.superevent_id} already has {other}")
    store.add_label(superevent, label, creator=user.get_username())
    return None


def set_preferred_event(superevent, event, *, user, reason=""):
    if service is not None:
        return service.set_preferred_event(superevent, event, user=user, reason=reason, via=VIA)
    _need_advocate(user)
    if event.category != superevent.category:
        raise Refused(f"{event.graceid} is a {event.category} event, {superevent.superevent_id} "
                      f"a {superevent.category} superevent")
    if event.superevent_id not in (None, superevent.pk):
        raise Refused(f"{event.graceid} belongs to another superevent")
    with transaction.atomic():
        previous = superevent.preferred_event
        superevent.preferred_event, superevent.t_0, superevent.far = event, event.gpstime, event.far
        superevent.save(update_fields=["preferred_event", "t_0", "far", "updated"])
        if event.superevent_id is None:
            event.superevent = superevent
            event.save(update_fields=["superevent"])
        store.log(superevent, f"Preferred event changed from {previous.graceid if previous else 'none'} "
                              f"to {event.graceid} by {user.get_username()}" + (f": {reason}" if reason else ""))
    handlers.dispatch(handlers.SUPEREVENT_PREFERRED_CHANGED, superevent.pk, event.pk)


def add_comment(owner, text, *, user, tags=()):
    """A log message. Comments are the advocates' (decision service);
    pipelines log what they upload too, so a pipeline's comment is stored
    directly."""
    if service is not None and not roles.is_pipeline(user):
        return service.add_comment(owner, text, user=user, via=VIA)
    if not (roles.is_advocate(user) or roles.is_pipeline(user)):
        raise NotAllowed(f"only users in the groups '{vocabulary.ADVOCATES_GROUP}' or "
                         f"'{vocabulary.PIPELINES_GROUP}' may write log messages")
    return store.log(owner, text, tags=tags)
