"""django-q2's qcluster plus the orchestrator's timer and slow-task cluster.

django-q2's scheduler is too coarse for waits that must fire within a
second, so this command also runs ``alerts.workers.run_timer`` in its own
process beside the cluster (see alerts/workers.py). It also starts, as a
child process, the cluster that serves the slow queue (BAYESTAR and plots,
``settings.SLOW_TASKS``), so those never occupy the workers the alert path
needs. Both are stopped with the main cluster; a slow cluster or a timer
that dies is started again (without the timer, no delayed step would fire).

SIGTERM or SIGINT stops everything within ``Q_STOP_GRACE_S`` plus a few
seconds: django-q2 alone waits for every worker to finish its task (BAYESTAR
can take minutes), so after the grace the workers still busy are killed.
Their tasks are not lost: each worker records the task it runs, and the next
start queues those again (``alerts.workers.resume_interrupted``). The
deliveries they had claimed are released once they have ended, so the next
start sends them at once (``alerts.delivery.release_dead_claims``).
"""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.db import connections
from django.utils import timezone
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQCommand

from alerts.delivery import release_dead_claims, resume_deliveries
from alerts.orchestrator import resume_vetting
from alerts.workers import resume_interrupted, run_timer, slow_queue_name

SENTINEL_CHECK_S = 0.5
CHILD_STOP_WAIT_S = 5
# After the grace and the kill of busy workers, how long the cluster's
# sentinel gets to wind down before it is killed too.
SENTINEL_STOP_WAIT_S = 2


class Command(DjangoQCommand):
    help = "Start the django-q2 worker cluster, the orchestrator's precise timer and the slow-task cluster."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--no-timer", action="store_true",
                            help="do not start the timer (another machine runs one)")
        parser.add_argument("--no-slow-cluster", action="store_true",
                            help="do not start the slow-task cluster (another machine runs "
                                 "'Q_CLUSTER_NAME=<queue>-slow manage.py qcluster --no-timer')")

    def handle(self, *args, **options):
        settings.SECRET_KEY  # django-q2 signs tasks with it
        started = time.time()
        started_at = timezone.now()
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        is_main = not os.environ.get("Q_CLUSTER_NAME")
        timer = None if options["no_timer"] else start_timer()
        slow = None
        if is_main and settings.Q_SLOW_WORKERS > 0 and not options["no_slow_cluster"]:
            slow = start_slow_cluster()
        if is_main:
            try:
                released = release_dead_claims()  # e.g. the last stop's workers were killed
                if released:
                    self.stdout.write(f"released {released} delivery claim(s) of ended workers")
                resumed = resume_deliveries()
                if resumed:
                    self.stdout.write(f"resuming delivery of {resumed} notice(s) left unsent")
                resume_vetting()  # superevents whose vetting began but never finished
                interrupted = resume_interrupted(started_at)
                if interrupted:
                    self.stdout.write(f"running again {interrupted} task(s) cut off by the last stop")
            except BaseException:  # e.g. the database is down: leave no child behind
                if slow is not None:
                    stop_subprocess(slow, CHILD_STOP_WAIT_S)
                if timer is not None:
                    timer.kill()
                raise
        connections.close_all()  # the cluster's processes fork from here: share no connection
        cluster = Cluster()
        # Replace django-q2's handlers, which wait for every running task.
        # A plain flag: a signal handler must take no lock.
        stop_requested = StopFlag()

        def request_stop(signum, frame):
            stop_requested.flag = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            cluster.start()
            if options.get("run_once"):
                cluster.stop()
            while cluster.sentinel.is_alive() and not stop_requested.flag:
                if slow is not None and slow.poll() is not None:
                    self.stderr.write(f"slow-task cluster exited ({slow.returncode}); starting it again")
                    slow = start_slow_cluster()
                if timer is not None and not timer.is_alive() and running(cluster):
                    self.stderr.write(f"timer exited ({timer.exitcode}); starting it again")
                    timer = start_timer()
                time.sleep(SENTINEL_CHECK_S)
        finally:
            stopping = time.monotonic()
            if slow is not None and slow.poll() is None:
                slow.send_signal(signal.SIGTERM)  # it stops itself the same way, meanwhile
            if timer is not None and timer.is_alive():
                timer.terminate()
            stop_cluster(cluster, settings.Q_STOP_GRACE_S)
            release_claims_of_ended_workers(self.stderr)
            if timer is not None:
                timer.join(CHILD_STOP_WAIT_S)
                if timer.is_alive():
                    timer.kill()
            if slow is not None:
                stop_subprocess(slow, settings.Q_STOP_GRACE_S + SENTINEL_STOP_WAIT_S + 1
                                - (time.monotonic() - stopping))
            self.stdout.write(f"stopped in {time.monotonic() - stopping:.1f} s "
                              f"(up {time.time() - started:.0f} s)")
            self.stdout.flush()


def stop_cluster(cluster, grace_s):
    """Stop django-q2's cluster: ask, give running tasks ``grace_s`` seconds,
    then kill the worker processes (their tasks run again at the next start)
    and, if it still lingers, the sentinel."""
    sentinel = cluster.sentinel
    if sentinel is None or not sentinel.is_alive():
        return
    if cluster.stop_event is not None:
        cluster.stop_event.set()  # the sentinel stops the pusher, then waits for the workers
    sentinel.join(grace_s)
    if sentinel.is_alive():
        kill_tree(sentinel.pid, include_root=False)
        sentinel.join(SENTINEL_STOP_WAIT_S)
    if sentinel.is_alive():
        kill_tree(sentinel.pid, include_root=True)
        sentinel.join(1)


def release_claims_of_ended_workers(stderr):
    """After a stop: deliveries that the killed workers had claimed go back
    to 'pending', so the next start sends them at once (alerts.delivery)."""
    connections.close_all()  # a fresh connection: the forked cluster may have shared the old one
    try:
        release_dead_claims()
    except Exception as error:  # e.g. the database is down: the next start tries again
        stderr.write(f"could not release the delivery claims of stopped workers: {error}")
    finally:
        connections.close_all()


def descendants(pid):
    """Every process below ``pid`` (read from /proc: Linux)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def kill_tree(pid, include_root):
    for child in descendants(pid) + ([pid] if include_root else []):
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


class StopFlag:
    flag = False


def running(cluster):
    """Started and not stopping: a child that dies now died on its own."""
    stop_event, start_event = cluster.stop_event, cluster.start_event  # stop() clears them
    return (stop_event is not None and start_event is not None and start_event.is_set()
            and not stop_event.is_set())


def start_timer():
    connections.close_all()  # the timer opens its own connection
    timer = multiprocessing.get_context("fork").Process(target=run_timer, name="orchestrator-timer")
    timer.start()
    return timer


def start_slow_cluster():
    """A second qcluster serving the slow queue. A subprocess, because
    django-q2 reads its cluster's name once, at import."""
    env = {**os.environ, "Q_CLUSTER_NAME": slow_queue_name()}
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "qcluster", "--no-timer"]
    return subprocess.Popen(command, env=env)


def stop_subprocess(process, wait_s):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(max(wait_s, 0.5))
        except subprocess.TimeoutExpired:
            kill_tree(process.pid, include_root=True)
            process.wait()
