"""Steps run as django-q2 tasks in a real qcluster (Redis broker when REDIS_URL
is set, as in CI; the ORM broker otherwise), and delayed steps fire on time."""
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from alerts import workers
from alerts.models import DelayedTask, Event, StepRun, Superevent
from tests.factories import T0, make_event
from tests.worker_probe import FIRED_LABEL

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
WAIT_LIMIT_S = 120
DELAY_S = 2.0
STOP_WAIT_S = 30


@pytest.fixture
def queued(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}


@pytest.fixture
def qcluster(worker_env, queued):
    worker_env["Q_WORKERS"] = "2"
    process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=worker_env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    yield process
    process.send_signal(signal.SIGTERM)  # the cluster stops its own processes
    try:
        process.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(condition, what, process):
    deadline = time.monotonic() + WAIT_LIMIT_S
    while time.monotonic() < deadline:
        if condition():
            return
        if process.poll() is not None:
            raise AssertionError(f"qcluster exited early:\n{process.stdout.read().decode()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_broker_is_the_configured_one():
    """CI sets REDIS_URL: then the cluster must really use Redis."""
    if os.environ.get("REDIS_URL"):
        assert settings.Q_CLUSTER.get("redis") == os.environ["REDIS_URL"]
        assert "orm" not in settings.Q_CLUSTER
    else:
        assert settings.Q_CLUSTER["orm"] == "default"


def test_qcluster_runs_the_superevent_manager(qcluster):
    events = [make_event(gpstime=T0 + 30 * (i // 2) + 0.1 * (i % 2)) for i in range(10)]
    # Nothing ran inline: the manager is a queued task.
    wait_for(lambda: not Event.objects.filter(superevent__isnull=True).exists(), "events grouped", qcluster)
    assert Superevent.objects.count() == 5
    runs = StepRun.objects.filter(step="superevent_manager", status="succeeded")
    assert runs.count() == len(events)
    assert all(run.worker and not run.worker.endswith(f":{os.getpid()}") for run in runs)


def test_delayed_task_fires_after_its_due_time(qcluster):
    event = make_event(far=1e-3)  # no superevent: nothing else runs
    due = timezone.now() + datetime.timedelta(seconds=DELAY_S)
    workers.enqueue("tests.worker_probe.mark_fired", event.pk, due.isoformat(), delay_s=DELAY_S)
    assert DelayedTask.objects.filter(fired__isnull=True).count() == 1
    wait_for(lambda: event.labels.filter(name=FIRED_LABEL).exists(), "the delayed task", qcluster)
    fired_log = event.logs.get(message__startswith="probe fired")
    fired_at = datetime.datetime.fromisoformat(fired_log.message.split()[3])
    assert fired_at >= due, "a delayed task must never run early"
    assert DelayedTask.objects.get().fired is not None


SLOW_PROBE = "tests.worker_probe.slow_probe"
SLOW_PROBE_S = 10


@pytest.fixture
def slow_probe_routed(settings):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR,
                             "SLOW_TASKS": [*settings.ORCHESTRATOR["SLOW_TASKS"], SLOW_PROBE]}


def test_slow_tasks_never_hold_up_the_alert_path(slow_probe_routed, qcluster):
    """Long tasks (BAYESTAR) go to the slow cluster that qcluster starts, so
    a task on the main queue runs while they are still busy: with one shared
    queue, two 10 s tasks would occupy both main workers first."""
    event = make_event(far=1e-3)  # no superevent: nothing else runs
    for _ in range(2):
        workers.enqueue(SLOW_PROBE, event.pk, SLOW_PROBE_S)
    workers.enqueue("tests.worker_probe.mark_fired", event.pk, "now")
    slow_done = event.logs.filter(message__startswith="slow probe done")
    wait_for(lambda: event.labels.filter(name=FIRED_LABEL).exists(), "the main-queue task", qcluster)
    assert not slow_done.exists(), "the main-queue task waited for the slow tasks"
    wait_for(lambda: slow_done.count() == 2, "the slow tasks", qcluster)
    assert {entry.message.split()[-1] for entry in slow_done} == {workers.slow_queue_name()}


def test_fire_due_tasks_claims_each_task_once(queued):
    past = timezone.now() - datetime.timedelta(seconds=1)
    future = timezone.now() + datetime.timedelta(hours=1)
    DelayedTask.objects.create(func="tests.worker_probe.mark_fired", args=[1, "x"], due=past)
    DelayedTask.objects.create(func="tests.worker_probe.mark_fired", args=[2, "y"], due=future)
    assert workers.fire_due_tasks() == 1
    assert workers.fire_due_tasks() == 0
    assert DelayedTask.objects.filter(fired__isnull=True).get().due == future
