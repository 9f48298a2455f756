"""prune_history: what the retention policy lets go, and nothing else."""
import datetime

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from alerts import retention
from alerts.models import AuditRecord, Log, Notice, NoticeDelivery, NoticePayload, Rejection, StepRun
from alerts.store import log
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)
DAY = datetime.timedelta(days=1)


@pytest.fixture
def retention_policy(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "HISTORY_RETENTION_DAYS": {
        "rejections": 90, "step_runs": 180, "event_logs": 365, "sent_deliveries": 400, "audit_records": 1000}}


def aged(model, field, days, **fields):
    """A row of ``model`` whose ``field`` is ``days`` old."""
    row = model.objects.create(**fields) if fields else None
    model.objects.filter(pk=row.pk).update(**{field: timezone.now() - days * DAY})
    return row


@pytest.fixture
def history(retention_policy):
    """Rows on both sides of each retention, and what is never pruned."""
    member = make_event()  # in a superevent
    member.refresh_from_db()
    superevent = member.superevent
    noise = make_event(gpstime=1240215503.0 + 5000, far=1e-2)  # above the threshold: no superevent
    noise.refresh_from_db()
    assert noise.superevent_id is None
    now = timezone.now()
    rows = {"old": [], "young": [], "kept": []}
    rows["old"].append(aged(Rejection, "created", 91, source="api", reason="old"))
    rows["young"].append(aged(Rejection, "created", 89, source="api", reason="young"))
    rows["old"].append(aged(StepRun, "finished", 181, step="x", event=noise, started=now, status="succeeded"))
    rows["young"].append(aged(StepRun, "finished", 179, step="x", event=noise, started=now, status="succeeded"))
    running = StepRun.objects.create(step="x", event=noise, started=now - 900 * DAY)
    rows["kept"].append(running)
    old_noise_log, young_noise_log = log(noise, "old noise"), log(noise, "young noise")
    Log.objects.filter(pk=old_noise_log.pk).update(created=now - 366 * DAY)
    Log.objects.filter(pk=young_noise_log.pk).update(created=now - 364 * DAY)
    rows["old"].append(old_noise_log)
    rows["young"].append(young_noise_log)
    for owner in (superevent, member):  # the candidate's own history
        kept = log(owner, "explains what was sent")
        Log.objects.filter(pk=kept.pk).update(created=now - 5000 * DAY)
        rows["kept"].append(kept)
    notice = Notice.objects.create(superevent=superevent, reason="initial", alert_type="INITIAL", serial=9,
                                   identity="S-9-Initial")
    Notice.objects.filter(pk=notice.pk).update(created=now - 5000 * DAY)
    rows["kept"] += [notice, NoticePayload.objects.create(notice=notice, format="json", content=b"{}", sha256="x")]
    rows["old"].append(NoticeDelivery.objects.create(notice=notice, destination="a", format="json", status="sent",
                                                     sent_at=now - 401 * DAY))
    rows["young"].append(NoticeDelivery.objects.create(notice=notice, destination="b", format="json",
                                                       status="sent", sent_at=now - 399 * DAY))
    rows["kept"].append(NoticeDelivery.objects.create(notice=notice, destination="c", format="json",
                                                      status="failed"))
    rows["old"].append(aged(AuditRecord, "created", 1001, username="ada", action="send initial", outcome="done"))
    rows["young"].append(aged(AuditRecord, "created", 999, username="ada", action="send initial", outcome="done"))
    return rows


def exists(row):
    return type(row).objects.filter(pk=row.pk).exists()


def test_dry_run_counts_and_deletes_nothing(history, capsys):
    audits = AuditRecord.objects.count()
    call_command("prune_history", "--dry-run")
    out = capsys.readouterr().out
    for kind in retention.KINDS:
        assert f"{kind}: 1 older than" in out, out
    assert "would be deleted" in out
    assert all(exists(row) for rows in history.values() for row in rows)
    assert AuditRecord.objects.count() == audits  # a dry run changes nothing, not even the audit trail


def test_prune_deletes_only_what_is_older_than_its_retention_and_is_audited(history, capsys):
    call_command("prune_history", "--user", "ops")
    assert not any(exists(row) for row in history["old"])
    assert all(exists(row) for row in history["young"] + history["kept"])
    record = AuditRecord.objects.get(action=retention.PRUNE_ACTION)
    assert record.username == "ops" and record.via == "command" and record.outcome == "done"
    assert record.request["retention_days"]["rejections"] == 90
    assert "rejections: 1" in record.detail and "audit_records: 1" in record.detail
    assert "deleted" in capsys.readouterr().out


def test_null_keeps_a_kind_forever_and_a_bad_policy_is_refused(history, settings, capsys):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "HISTORY_RETENTION_DAYS": {
        **settings.ORCHESTRATOR["HISTORY_RETENTION_DAYS"], "audit_records": None, "rejections": None}}
    call_command("prune_history")
    assert "kept forever (no retention set): audit_records, rejections" in capsys.readouterr().out
    kept_kinds = (AuditRecord, Rejection)
    assert all(exists(row) for row in history["old"] if isinstance(row, kept_kinds))
    assert not any(exists(row) for row in history["old"] if not isinstance(row, kept_kinds))
    for bad in ({"rejections": -1}, {"notices": 30}):
        settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "HISTORY_RETENTION_DAYS": bad}
        with pytest.raises(CommandError):
            call_command("prune_history")


def test_the_default_policy_never_prunes_deliveries_or_audit_records():
    days = retention.retention_days()
    assert days["sent_deliveries"] is None and days["audit_records"] is None
    assert set(days) == set(retention.KINDS)
