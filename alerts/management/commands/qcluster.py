"""django-q2's qcluster plus the orchestrator's timer and slow-task cluster.

django-q2's scheduler is too coarse for waits that must fire within a
second, so this command also runs ``alerts.workers.run_timer`` in its own
process beside the cluster (see alerts/workers.py). It also starts, as a
child process, the cluster that serves the slow queue (BAYESTAR and plots,
``settings.SLOW_TASKS``), so those never occupy the workers the alert path
needs. Both are stopped with the main cluster; a slow cluster or a timer
that dies is started again (without the timer, no delayed step would fire).
"""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.db import connections
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQCommand

from alerts.delivery import resume_deliveries
from alerts.orchestrator import resume_vetting
from alerts.workers import run_timer, slow_queue_name

SENTINEL_CHECK_S = 0.5
CHILD_STOP_WAIT_S = 5


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
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        is_main = not os.environ.get("Q_CLUSTER_NAME")
        timer = None if options["no_timer"] else start_timer()
        slow = None
        if is_main and settings.Q_SLOW_WORKERS > 0 and not options["no_slow_cluster"]:
            slow = start_slow_cluster()
        if is_main:
            resumed = resume_deliveries()
            if resumed:
                self.stdout.write(f"resuming delivery of {resumed} notice(s) left unsent")
            resume_vetting()  # superevents whose vetting began but never finished
        cluster = Cluster()
        try:
            cluster.start()
            if options.get("run_once"):
                cluster.stop()
            # Cluster.start() returns at once; SIGTERM/SIGINT make the
            # cluster's own handler stop the sentinel, which ends this loop.
            while cluster.sentinel.is_alive():
                if slow is not None and slow.poll() is not None:
                    self.stderr.write(f"slow-task cluster exited ({slow.returncode}); starting it again")
                    slow = start_slow_cluster()
                if timer is not None and not timer.is_alive() and running(cluster):
                    self.stderr.write(f"timer exited ({timer.exitcode}); starting it again")
                    timer = start_timer()
                time.sleep(SENTINEL_CHECK_S)
        finally:
            if timer is not None and timer.is_alive():
                timer.terminate()
                timer.join(CHILD_STOP_WAIT_S)
            if slow is not None:
                stop_subprocess(slow)


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


def stop_subprocess(process):
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(CHILD_STOP_WAIT_S * 4)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
