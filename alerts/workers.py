"""How steps run: inline, as django-q2 tasks, or at a precise later time.

``enqueue`` is the one way code asks for work to be done. Work is handed
over only after the current database transaction commits, so a worker never
sees half-written data and a rolled-back upload triggers nothing.

Long tasks (``SLOW_TASKS``: BAYESTAR, plots) go to a queue of their own,
served by a second worker cluster, so they never hold up the alert path.

Delayed work goes into the ``DelayedTask`` table; the timer (``run_timer``,
started by ``manage.py qcluster``) polls it every ``TIMER_POLL_S`` seconds
and hands due tasks to django-q2, marking them fired only once the broker
has them (``fire_due_tasks``). django-q2's own scheduler only looks at
its schedules every few tens of seconds (benchmarks/alert_latency.py), far
too coarse for ``orchestrator_timeout``.
"""
import datetime
import importlib
import json
import logging
import os
import signal
import time

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from alerts.config import policy

logger = logging.getLogger(__name__)

TIMER_BATCH_SIZE = 100


def task_path(task):
    """The dotted path of a task given as a function or as a dotted path
    (DelayedTask rows and django-q2 keep paths)."""
    return task if isinstance(task, str) else f"{task.__module__}.{task.__qualname__}"


def resolve(path):
    module_name, func_name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), func_name)


def run_inline():
    return policy()["TASKS_INLINE"]


def enqueue(task, *args, delay_s=0.0):
    """Run ``task(*args)`` on a worker, ``delay_s`` seconds from now at the
    earliest; ``task`` is a function (or its dotted path)."""
    path = task_path(task)
    if run_inline():
        transaction.on_commit(lambda: resolve(path)(*args))
        return
    if delay_s > 0:
        from alerts.models import DelayedTask

        due = timezone.now() + datetime.timedelta(seconds=delay_s)
        DelayedTask.objects.create(func=path, args=list(args), due=due)
        return
    transaction.on_commit(lambda: _hand_to_django_q(path, args))


def _hand_to_django_q(path, args):
    from django_q.tasks import async_task

    cluster = queue_for(path)
    async_task(path, *args, task_name=_task_name(path, args), cluster=cluster, broker=_broker(cluster))


_brokers = {}


def _broker(cluster):
    """django-q2's broker for a queue, made once per process: ``async_task``
    would otherwise open a new Redis connection for every task."""
    from django_q.brokers import get_broker

    key = (os.getpid(), cluster)
    if key not in _brokers:
        _brokers[key] = get_broker(cluster)
    return _brokers[key]


def slow_queue_name():
    """The slow cluster's queue: the main queue's name plus a suffix, read
    from django-q2's configuration so that every process agrees on it."""
    from django_q.conf import Conf

    return Conf.PREFIX + settings.SLOW_QUEUE_SUFFIX


def queue_for(path):
    """The queue a task goes to: the slow one for SLOW_TASKS, else the main
    one (None: django-q2's default)."""
    return slow_queue_name() if path in policy()["SLOW_TASKS"] else None


def _task_name(path, args):
    return f"{path.rsplit('.', 1)[-1]}({', '.join(map(str, args))})"[:100]


def fire_due_tasks(now=None):
    """Hand every due, unfired delayed task to django-q2; returns how many.

    Each task is handed over first and marked fired after, while its row is
    locked in one transaction: if the broker refuses it, or the timer dies
    before the commit, the task is still due and the next poll fires it.
    The rare cost is a second hand-off (timer killed between hand-off and
    commit), which the handlers tolerate; the alternative would lose a wait
    such as ``orchestrator_timeout`` for good. Rows are claimed with SKIP
    LOCKED where the database has it, so several timers (one per worker
    machine) never fire the same task at once.
    """
    from alerts.models import DelayedTask

    now = now or timezone.now()
    handed = []
    with transaction.atomic():
        due = DelayedTask.objects.filter(fired__isnull=True, due__lte=now).order_by("due")
        if connection.features.has_select_for_update_skip_locked:
            due = due.select_for_update(skip_locked=True)
        for task in due[:TIMER_BATCH_SIZE]:
            try:
                # A savepoint: the ORM broker writes in this transaction.
                with transaction.atomic():
                    _hand_to_django_q(task.func, task.args)
            except Exception:  # the broker is likely down: the rest waits too
                _log_broker_outage(task)
                break
            handed.append(task.pk)
        if handed:
            DelayedTask.objects.filter(pk__in=handed).update(fired=timezone.now())
    return len(handed)


# While the broker is down the timer retries every poll (every 50 ms), so
# the outage is logged at most this often (seconds) instead of every poll.
BROKER_OUTAGE_LOG_EVERY_S = 10.0
_last_outage_log = {"at": None}


def _log_broker_outage(task):
    """Log a refused hand-off, at most once per BROKER_OUTAGE_LOG_EVERY_S."""
    now = time.monotonic()
    last = _last_outage_log["at"]
    if last is None or now - last >= BROKER_OUTAGE_LOG_EVERY_S:
        _last_outage_log["at"] = now
        logger.exception("could not hand delayed task %s (%s) to django-q2; it stays due "
                         "(repeats are logged every %.0f s)", task.pk, task.func, BROKER_OUTAGE_LOG_EVERY_S)


def run_timer(poll_s=None, stop_after_s=None):
    """Fire delayed tasks until terminated (or for ``stop_after_s`` seconds)."""
    poll_s = poll_s or policy()["TIMER_POLL_S"]
    started = time.monotonic()
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("timer %s polling every %.3f s", os.getpid(), poll_s)
    while running:
        try:
            fired = fire_due_tasks()
        except Exception:  # keep the timer alive through a database hiccup
            logger.exception("timer could not fire due tasks")
            close_old_connections()
            fired = 0
        if stop_after_s is not None and time.monotonic() - started > stop_after_s:
            break
        if fired < TIMER_BATCH_SIZE:
            time.sleep(poll_s)


# --- Work in flight --------------------------------------------------------------
# django-q2's Redis broker forgets a task once the cluster has taken it, and
# its ORM broker hands it out again only ``retry`` seconds later: a task cut
# off by a stop would be lost or late. So every task the cluster holds has a
# RunningTask row, deleted when the task ends, well or badly; qcluster queues
# what is left at its next start. With Redis the row is written when the
# cluster's pusher takes the task off the broker (``RecordingRedis``), so
# tasks taken ahead of a free worker (up to django-q2's ``queue_limit``) are
# not lost to a forced stop either; otherwise when a worker starts it.
_in_flight = {}  # in one worker process: django-q2 task id -> RunningTask pk
RUNNING_TASK_KEY = "running_task"  # where the task dict carries its RunningTask pk


def _recordable_args(task):
    """The task's arguments as JSON, or None if it cannot be recorded (the
    orchestrator's tasks take JSON-able positional arguments only)."""
    if task.get("kwargs"):
        return None
    try:
        return json.loads(json.dumps(list(task.get("args") or ())))
    except (TypeError, ValueError):
        return None


def _record(task, func=None):
    """A RunningTask row for ``task``; its pk, or None if it could not be written."""
    from alerts.models import RunningTask

    args = _recordable_args(task)
    if args is None:
        return None
    try:
        return RunningTask.objects.create(func=task_path(task.get("func", func)), args=args,
                                          started=timezone.now()).pk
    except Exception:  # never keep the task from running
        logger.exception("could not record task %s as taken", task.get("name"))
        close_old_connections()
        return None


def record_received(package):
    """Record a signed django-q2 package the cluster took off the broker;
    returns the package to run, carrying its RunningTask pk."""
    from django_q.signing import BadSignature, SignedPackage

    try:
        task = SignedPackage.loads(package)
    except (TypeError, BadSignature):
        return package  # django-q2 reports it
    pk = _record(task)
    if pk is None:
        return package  # the worker records it when it starts
    task[RUNNING_TASK_KEY] = pk
    return SignedPackage.dumps(task)


def record_task_start(sender, func, task, **kwargs):
    """django-q2 ``pre_execute`` receiver (in the worker)."""
    pk = task.get(RUNNING_TASK_KEY) or _record(task, func)
    if pk is not None:
        _in_flight[task.get("id")] = pk


def record_task_end(sender, func, task, **kwargs):
    """django-q2 ``post_execute_in_worker`` receiver: the task ended."""
    from alerts.models import RunningTask

    pk = _in_flight.pop(task.get("id"), None)
    if pk is not None:
        try:
            RunningTask.objects.filter(pk=pk).delete()
        except Exception:
            logger.exception("could not clear the running record of task %s", task.get("name"))
            close_old_connections()


def connect_in_flight_records():
    from django_q.signals import post_execute_in_worker, pre_execute

    pre_execute.connect(record_task_start, dispatch_uid="alerts.workers.record_task_start")
    post_execute_in_worker.connect(record_task_end, dispatch_uid="alerts.workers.record_task_end")


def resume_interrupted(started_before):
    """Queue again every task that was running when its cluster was stopped
    (records older than ``started_before``, this start); returns how many.
    A rerun is safe: steps skip work already done and notices have an
    exactly-once identity."""
    from alerts.models import RunningTask

    with transaction.atomic():
        rows = list(RunningTask.objects.select_for_update().filter(started__lt=started_before))
        for row in rows:
            enqueue(row.func, *row.args)
        RunningTask.objects.filter(pk__in=[row.pk for row in rows]).delete()
    return len(rows)
