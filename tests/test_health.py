"""``manage.py health`` exits with Nagios's codes: 2 with the database at a
closed port, 2 with no worker cluster, 0 with one running; /health/ shows
the status word to anyone and the checks to staff only."""
import datetime
import subprocess
import sys
import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.test import Client

from alerts import health as checks
from alerts.models import Category, Notice, Superevent
from tests.test_delivery import kafka  # noqa: F401 (fixture)
from tests.cluster import ROOT
from tests.test_workers import qcluster, queued  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_PORT_DATABASE = "postgres://postgres@127.0.0.1:1/nothing"
WORKER_WAIT_S = 90


def health(env):
    return subprocess.run([sys.executable, "manage.py", "health"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_database_at_a_closed_port_is_critical(worker_env):
    worker_env["DATABASE_URL"] = CLOSED_PORT_DATABASE
    done = health(worker_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CRITICAL database: unreachable" in done.stdout
    assert "Traceback" not in done.stderr


def test_no_worker_is_critical(worker_env):
    done = health(worker_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CRITICAL workers: no live worker cluster" in done.stdout
    assert "OK database: reachable, migrated" in done.stdout


def test_a_running_cluster_is_ok(worker_env, qcluster):  # noqa: F811
    deadline = time.monotonic() + WORKER_WAIT_S
    while True:
        done = health(worker_env)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: orchestrator")
    assert "OK workers:" in done.stdout


def test_health_page_shows_details_to_staff_only():
    anonymous = Client().get("/health/")
    assert anonymous.status_code == 503  # no worker in the test
    assert anonymous.json() == {"status": "CRITICAL"}
    staff = User.objects.create_user("ops", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)
    body = client.get("/health/").json()
    assert {"check": "workers", "status": "CRITICAL", "detail": "no live worker cluster"} in body["checks"]


# --- queue age, the MDC canary, Kafka --------------------------------------------

OLD_TASK_S = 120


def queue_task(broker, age_s):
    from django.utils import timezone
    from django_q.signing import SignedPackage

    started = timezone.now() - datetime.timedelta(seconds=age_s)
    broker.enqueue(SignedPackage.dumps({"id": uuid.uuid4().hex, "name": "probe", "func": "math.floor",
                                        "args": (1,), "kwargs": {}, "started": started}))


@pytest.fixture
def private_queue(monkeypatch):
    """A queue of the configured broker that no cluster serves, as the only one measured."""
    from django_q.brokers import get_broker

    name = f"health-{uuid.uuid4().hex[:8]}"
    broker = get_broker(name)
    monkeypatch.setattr(checks, "queues", lambda: [name])
    yield broker
    broker.delete_queue()


def test_queue_age_is_the_oldest_waiting_task_against_its_thresholds(private_queue, settings):
    settings.HEALTH_CHECKS = {**settings.HEALTH_CHECKS, "QUEUE_AGE_WARNING_S": 60, "QUEUE_AGE_CRITICAL_S": 300}
    assert checks.check_queue_age().as_dict() == {"check": "queue age", "status": "OK", "detail": "no task waiting"}
    queue_task(private_queue, OLD_TASK_S)
    queue_task(private_queue, 0)  # a newer one behind it
    result = checks.check_queue_age()
    assert result.state == checks.WARNING, result.line()
    age = int(result.detail.split()[-3])
    assert OLD_TASK_S <= age < OLD_TASK_S + 30
    settings.HEALTH_CHECKS = {**settings.HEALTH_CHECKS, "QUEUE_AGE_CRITICAL_S": 100}
    assert checks.check_queue_age().state == checks.CRITICAL
    assert "queue age" in [result.name for result in checks.run_checks()]


def mdc_superevent(suffix, age_s, preliminary):
    from django.utils import timezone

    superevent = Superevent.objects.create(superevent_id=f"MS190425{suffix}", category=Category.MDC, t_start=0,
                                           t_0=1, t_end=2, date=datetime.date(2019, 4, 25),
                                           day_index=ord(suffix) - ord("a"))
    Superevent.objects.filter(pk=superevent.pk).update(
        created=timezone.now() - datetime.timedelta(seconds=age_s))
    if preliminary:
        Notice.objects.create(superevent=superevent, reason="preliminary-1", serial=1,
                              alert_type=Notice.AlertType.PRELIMINARY, identity=f"{superevent.superevent_id}-1-P")
    return superevent


def test_mdc_canary_wants_a_recent_mdc_superevent_with_its_preliminary(settings):
    off = checks.check_mdc()
    assert off.state == checks.OK and off.detail.startswith("skipped: no mock stream configured")
    settings.HEALTH_CHECKS = {**settings.HEALTH_CHECKS, "MDC_WARNING_S": 3600, "MDC_CRITICAL_S": 3 * 3600}
    assert checks.check_mdc().state == checks.CRITICAL  # none yet
    mdc_superevent("a", 2 * 3600, preliminary=True)
    mdc_superevent("b", 60, preliminary=False)  # newer, but its Preliminary never came
    stale = checks.check_mdc()
    assert stale.state == checks.WARNING and "MS190425a" in stale.detail, stale.line()
    mdc_superevent("c", 4 * 3600, preliminary=True)  # older ones change nothing
    assert checks.check_mdc().state == checks.WARNING
    Superevent.objects.filter(superevent_id="MS190425a").update(created=Superevent.objects.get(
        superevent_id="MS190425c").created)
    assert checks.check_mdc().state == checks.CRITICAL
    mdc_superevent("d", 60, preliminary=True)
    fresh = checks.check_mdc()
    assert fresh.state == checks.OK and "MS190425d" in fresh.detail


def test_kafka_check_reaches_the_destination_with_its_settings(settings, kafka):  # noqa: F811
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTICE_DESTINATIONS": [kafka]}
    assert checks.check_kafka().state == checks.OK
    closed = {**kafka, "bootstrap_servers": "127.0.0.1:1"}
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTICE_DESTINATIONS": [closed]}
    assert checks.check_kafka().state == checks.CRITICAL
