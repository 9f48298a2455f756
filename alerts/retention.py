"""How long history is kept, and pruning what is older
(``ORCHESTRATOR["HISTORY_RETENTION_DAYS"]``, ``manage.py prune_history``).

Never pruned: notices and their payloads (what was sent), superevents,
events, files and labels, the logs of superevents and of their member events
(they explain what was sent), deliveries still pending, sending or failed,
and anything younger than its retention. A kind whose retention is None is
kept forever. A real prune is itself an AuditRecord.
"""
import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from alerts.config import policy
from alerts.models import AuditRecord, Log, NoticeDelivery, Rejection, StepRun

PRUNE_ACTION = "prune history"

# kind: (model, the field aged against the retention, which rows may go)
KINDS = {
    "rejections": (Rejection, "created", Q()),
    "step_runs": (StepRun, "finished", Q()),  # finished is null while running
    "event_logs": (Log, "created", Q(event__isnull=False, event__superevent__isnull=True)),
    "sent_deliveries": (NoticeDelivery, "sent_at", Q(status=NoticeDelivery.Status.SENT)),
    "audit_records": (AuditRecord, "created", Q()),
}


def retention_days():
    """{kind: days or None}, checked: a negative or unknown entry is an error."""
    days = dict(policy()["HISTORY_RETENTION_DAYS"])
    unknown = sorted(set(days) - set(KINDS))
    if unknown:
        raise ValueError(f"HISTORY_RETENTION_DAYS: unknown kind(s) {', '.join(unknown)} "
                         f"(known: {', '.join(KINDS)})")
    for kind, value in days.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise ValueError(f"HISTORY_RETENTION_DAYS[{kind!r}] must be a number of days >= 0 or null, not {value!r}")
    return days


def prunable(now=None):
    """{kind: (cut-off time, queryset of the rows older than it)} for the
    kinds that have a retention."""
    now = now or timezone.now()
    found = {}
    for kind, days in retention_days().items():
        if days is None:
            continue
        model, field, condition = KINDS[kind]
        cutoff = now - datetime.timedelta(days=days)
        found[kind] = (cutoff, model.objects.filter(condition, **{f"{field}__lt": cutoff}))
    return found


def prune(username, dry_run=False, now=None):
    """Delete (or with ``dry_run`` only count) what the policy lets go;
    returns {kind: (cut-off, count)}. One transaction, audited when real."""
    with transaction.atomic():
        counts = {}
        for kind, (cutoff, rows) in prunable(now).items():
            counts[kind] = (cutoff, rows.count() if dry_run else rows.delete()[0])
        if not dry_run:
            AuditRecord.objects.create(
                username=username, action=PRUNE_ACTION, via="command", outcome=AuditRecord.Outcome.DONE,
                request={"retention_days": retention_days()},
                detail=", ".join(f"{kind}: {count}" for kind, (_, count) in counts.items()) or "nothing to prune")
    return counts
