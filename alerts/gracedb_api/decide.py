"""The decisions this surface takes: the decision service's, with
``via="gracedb"`` in the audit trail, so every rule and role is the same as
through the native API, the command line, the dashboard and the admin."""
from alerts import decisions, roles, store

VIA = "gracedb"
Refused = decisions.Refused
NotAllowed = decisions.NotAllowed


def add_label(owner, name, *, user):
    return decisions.add_label(owner, name, user=user, via=VIA)


def remove_label(owner, name, *, user):
    return decisions.remove_label(owner, name, user=user, via=VIA)


def apply_verdict(superevent, label, *, user, reason=""):
    return decisions.apply_verdict(superevent, label, user=user, reason=reason, via=VIA)


def set_preferred_event(superevent, event, *, user, reason=""):
    return decisions.set_preferred_event(superevent, event, user=user, reason=reason, via=VIA)


def add_comment(owner, text, *, user, tags=()):
    """A log message. Comments are the advocates' (decision service);
    pipelines log what they upload too, so a pipeline's comment is stored
    directly."""
    if not roles.is_pipeline(user) or roles.is_advocate(user):
        return decisions.add_comment(owner, text, user=user, via=VIA, tags=tags)
    return store.log(owner, text, tags=tags)
