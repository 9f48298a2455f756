"""Is the orchestrator healthy right now? One result per check, with
Nagios's states (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), as gwcelery's
``nagios`` command reports them. Used by ``manage.py health`` and ``/health/``.

Our own small module rather than django-health-check: that library's
results are pass/fail per backend (no WARNING level, no measured values such
as queue depth or the age of the last event), and half of these checks are
about django-q2 and the orchestrator's own tables, which it does not know.
No check reports a secret (no URL, no password): only states and counts.
"""
import datetime
import shutil
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone

from alerts.config import policy

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}


@dataclass
class Result:
    name: str
    state: int
    detail: str

    def line(self):
        return f"{STATE_NAMES[self.state]} {self.name}: {self.detail}"

    def as_dict(self):
        return {"check": self.name, "status": STATE_NAMES[self.state], "detail": self.detail}


def thresholds():
    return settings.HEALTH_CHECKS


def one_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def check_database():
    from django.db.migrations.executor import MigrationExecutor

    try:
        connection.ensure_connection()
        plan = MigrationExecutor(connection).migration_plan(MigrationExecutor(connection).loader.graph.leaf_nodes())
    except Exception as error:
        return Result("database", CRITICAL, f"unreachable ({type(error).__name__})")
    if plan:
        return Result("database", CRITICAL, f"reachable, {len(plan)} migration(s) not applied")
    return Result("database", OK, "reachable, migrated")


def queues():
    from alerts.workers import slow_queue_name
    from django_q.conf import Conf

    names = [Conf.PREFIX]
    if settings.Q_SLOW_WORKERS > 0:
        names.append(slow_queue_name())
    return names


def check_broker():
    from django_q.brokers import get_broker

    try:
        get_broker().ping()
    except Exception as error:
        return Result("broker", CRITICAL, f"unreachable ({type(error).__name__})")
    return Result("broker", OK, "reachable")


def check_workers():
    from django_q.brokers import get_broker
    from django_q.status import Stat

    try:
        clusters = Stat.get_all(broker=get_broker())
    except Exception as error:
        return Result("workers", CRITICAL, f"cannot read cluster status ({type(error).__name__})")
    running = [c for c in clusters if c.status not in ("Stopped", "Stopping")]
    if not running:
        return Result("workers", CRITICAL, "no live worker cluster")
    workers = sum(len(c.workers) for c in running)
    return Result("workers", OK, f"{len(running)} cluster(s) live, {workers} worker(s)")


def check_queue():
    from django_q.brokers import get_broker

    limits = thresholds()
    depth = 0
    try:
        for name in queues():
            depth += get_broker(name).queue_size() or 0
    except Exception as error:
        return Result("queue", UNKNOWN, f"cannot measure ({type(error).__name__})")
    return graded("queue", depth, limits["QUEUE_WARNING"], limits["QUEUE_CRITICAL"], f"{depth} task(s) waiting")


def graded(name, value, warning, critical, detail):
    """OK below ``warning``, WARNING from it, CRITICAL from ``critical``."""
    status = CRITICAL if value >= critical else WARNING if value >= warning else OK
    return Result(name, status, detail)


def oldest_waiting_task(broker):
    """When the oldest task still waiting in ``broker``'s queue was queued
    (django-q2 stamps ``started`` at enqueue), or None if none waits."""
    from django_q.brokers.redis_broker import Redis
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    if isinstance(broker, Redis):
        package = broker.connection.lindex(broker.list_key, 0)  # the list's head is popped first
        return SignedPackage.loads(package)["started"] if package else None
    row = OrmQ.objects.filter(key=broker.list_key, lock__lte=timezone.now()).order_by("id").first()
    return row.task["started"] if row else None


def check_queue_age():
    from django_q.brokers import get_broker

    limits = thresholds()
    try:
        queued = [when for name in queues() if (when := oldest_waiting_task(get_broker(name))) is not None]
    except Exception as error:
        return Result("queue age", UNKNOWN, f"cannot measure ({type(error).__name__})")
    if not queued:
        return Result("queue age", OK, "no task waiting")
    age = max((timezone.now() - min(queued)).total_seconds(), 0.0)
    return graded("queue age", age, limits["QUEUE_AGE_WARNING_S"], limits["QUEUE_AGE_CRITICAL_S"],
                  f"oldest waiting task queued {age:.0f} s ago")


def check_mdc():
    """The canary, as gwcelery's: where a mock (MDC) stream keeps uploading
    events, a recent MDC superevent must have had its Preliminary notice, or
    something along the chain is broken even if every process is up."""
    from alerts.models import Category, Notice, Superevent

    limits = thresholds()
    warning_s, critical_s = limits["MDC_WARNING_S"], limits["MDC_CRITICAL_S"]
    if not warning_s and not critical_s:
        return Result("mdc canary", OK, "skipped: no mock stream configured (HEALTH_MDC_WARNING_S)")
    latest = Superevent.objects.filter(
        category=Category.MDC, notices__alert_type=Notice.AlertType.PRELIMINARY).order_by("-created").first()
    if latest is None:
        return Result("mdc canary", CRITICAL, "no MDC superevent with a Preliminary notice yet")
    age = max((timezone.now() - latest.created).total_seconds(), 0.0)
    detail = f"last MDC superevent with a Preliminary: {latest.superevent_id}, {age:.0f} s ago"
    if critical_s and age > critical_s:
        return Result("mdc canary", CRITICAL, detail + f" (more than {critical_s:g} s)")
    if warning_s and age > warning_s:
        return Result("mdc canary", WARNING, detail + f" (more than {warning_s:g} s)")
    return Result("mdc canary", OK, detail)


def check_timer():
    from alerts.models import DelayedTask

    late_s = thresholds()["TIMER_LATE_S"]
    overdue = DelayedTask.objects.filter(fired__isnull=True,
                                         due__lt=timezone.now() - datetime.timedelta(seconds=late_s)).count()
    if overdue:
        return Result("timer", CRITICAL, f"{overdue} delayed task(s) more than {late_s:g} s overdue")
    return Result("timer", OK, "no delayed task overdue")


def check_notices():
    from alerts.models import NoticeDelivery

    limits = thresholds()
    failed = NoticeDelivery.objects.filter(status=NoticeDelivery.Status.FAILED).count()
    stale = timezone.now() - datetime.timedelta(seconds=limits["DELIVERY_LATE_S"])
    waiting = NoticeDelivery.objects.filter(
        status__in=(NoticeDelivery.Status.PENDING, NoticeDelivery.Status.SENDING)).count()
    late = NoticeDelivery.objects.filter(
        status__in=(NoticeDelivery.Status.PENDING, NoticeDelivery.Status.SENDING),
        notice__created__lt=stale).count()
    detail = f"{waiting} delivery(ies) waiting ({late} late), {failed} failed"
    if failed or late:
        return Result("notices", CRITICAL if late else WARNING, detail)
    return Result("notices", OK, detail)


def check_last_event():
    from alerts.models import Event

    limit = thresholds()["LAST_EVENT_MAX_AGE_S"]
    last = Event.objects.order_by("-created").values_list("created", flat=True).first()
    if last is None:
        return Result("last event", OK if not limit else WARNING, "no event received yet")
    age = (timezone.now() - last).total_seconds()
    detail = f"last event {age:.0f} s ago"
    if limit and age > limit:
        return Result("last event", WARNING, detail + f" (more than {limit:g} s)")
    return Result("last event", OK, detail)


def check_disk():
    limits = thresholds()
    results = []
    for name, folder in (("media", settings.MEDIA_ROOT), ("outbox", settings.OUTBOX_DIR)):
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = shutil.disk_usage(probe)
        free = usage.free / usage.total * 100
        state = CRITICAL if free < limits["DISK_FREE_CRITICAL_PCT"] else \
            WARNING if free < limits["DISK_FREE_WARNING_PCT"] else OK
        results.append((state, f"{name} {free:.0f}% free"))
    return Result("disk", max(s for s, _ in results), ", ".join(d for _, d in results))


KAFKA_TIMEOUT_S = 5
KAFKA_PRODUCER_ONLY = ("enable.idempotence", "acks", "linger.ms", "message.timeout.ms")


def check_kafka():
    destinations = [d for d in policy().get("NOTICE_DESTINATIONS", []) if d.get("transport") == "kafka"]
    if not destinations:
        return None
    try:
        from confluent_kafka.admin import AdminClient

        from alerts.transports import kafka_config

        for destination in destinations:  # with the destination's own credentials and TLS
            config = {name: value for name, value in kafka_config(destination).items()
                      if name not in KAFKA_PRODUCER_ONLY}
            AdminClient(config).list_topics(timeout=KAFKA_TIMEOUT_S)
    except Exception as error:
        return Result("kafka", CRITICAL, f"unreachable ({type(error).__name__})")
    return Result("kafka", OK, f"{len(destinations)} server set(s) reachable")


CHECKS = [check_broker, check_workers, check_queue, check_queue_age, check_timer, check_notices, check_last_event,
          check_mdc, check_disk, check_kafka]
# What cannot be judged with the database down.
NEEDS_DATABASE = (check_timer, check_notices, check_last_event, check_mdc)


def run_checks():
    """Every check's result; with the database down, only what needs no database."""
    database = check_database()
    results = [database]
    for check in CHECKS:
        if database.state == CRITICAL and check in NEEDS_DATABASE:
            results.append(Result(check.__name__.removeprefix("check_").replace("_", " "), UNKNOWN,
                                  "database unavailable"))
            continue
        try:
            result = check()
        except Exception as error:
            result = Result(check.__name__.removeprefix("check_").replace("_", " "), UNKNOWN, one_line(error))
        if result is not None:
            results.append(result)
    return results


def overall(results):
    """Nagios's rule: the worst state wins (UNKNOWN ranks below CRITICAL)."""
    states = {r.state for r in results}
    for state in (CRITICAL, WARNING, UNKNOWN):
        if state in states:
            return state
    return OK
