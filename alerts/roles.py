"""Who may do what: the roles, in one place.

- anonymous: nothing (the API answers 401, pages redirect to sign-in);
- reader: any signed-in active user reads everything and changes nothing;
- advocate (group ``advocates``, or a superuser): verdict labels, alerts,
  preferred event, re-localization, labels and comments;
- pipeline (group ``pipelines``): uploads events and files, nothing else;
- staff: the Django admin (its override actions still need an advocate).

Every way in (REST, GraceDB surface, command line, dashboard, admin) asks
these functions, so a rule is written once.
"""
from rest_framework import permissions

from alerts.vocabulary import ADVOCATES_GROUP, PIPELINES_GROUP

ADVOCATE = "advocate"
PIPELINE = "pipeline"
READER = "reader"


def in_group(user, name):
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return user.groups.filter(name=name).exists()


def is_reader(user):
    return bool(user is not None and user.is_authenticated and user.is_active)


def is_advocate(user):
    return is_reader(user) and (user.is_superuser or in_group(user, ADVOCATES_GROUP))


def is_pipeline(user):
    return is_reader(user) and (user.is_superuser or in_group(user, PIPELINES_GROUP))


CHECKS = {READER: is_reader, ADVOCATE: is_advocate, PIPELINE: is_pipeline}


def allowed(user, role):
    """Whether ``user`` acts with ``role`` (READER, ADVOCATE or PIPELINE)."""
    return CHECKS[role](user)


class RoleRequired(permissions.BasePermission):
    """DRF permission: signed-in users read; writes need ``write_role``
    (a view attribute: ADVOCATE or PIPELINE; none means read-only)."""

    message = "this action needs a role you do not have"

    def has_permission(self, request, view):
        if not is_reader(request.user):
            return False
        if request.method in permissions.SAFE_METHODS:
            return True
        role = getattr(view, "write_role", None)
        if role is None:
            return False
        self.message = f"only users in the group '{_group_of(role)}' may do this"
        return allowed(request.user, role)


def _group_of(role):
    return {ADVOCATE: ADVOCATES_GROUP, PIPELINE: PIPELINES_GROUP}.get(role, role)
