"""django-q2's qcluster plus the orchestrator's timer for delayed tasks.

django-q2's scheduler is too coarse for waits that must fire within a
second, so this command also runs ``alerts.workers.run_timer`` in its own
process beside the cluster (see alerts/workers.py), and stops it with the
cluster.
"""
import multiprocessing
import os
import time

from django.conf import settings
from django.db import connections
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as DjangoQCommand

from alerts.delivery import resume_deliveries
from alerts.workers import run_timer

SENTINEL_CHECK_S = 0.5
TIMER_STOP_WAIT_S = 5


class Command(DjangoQCommand):
    help = "Start the django-q2 worker cluster and the orchestrator's precise timer."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--no-timer", action="store_true",
                            help="do not start the timer (another machine runs one)")

    def handle(self, *args, **options):
        settings.SECRET_KEY  # django-q2 signs tasks with it
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        timer = None if options["no_timer"] else start_timer()
        resumed = resume_deliveries()
        if resumed:
            self.stdout.write(f"resuming delivery of {resumed} notice(s) left unsent")
        cluster = Cluster()
        try:
            cluster.start()
            if options.get("run_once"):
                cluster.stop()
            # Cluster.start() returns at once; SIGTERM/SIGINT make the
            # cluster's own handler stop the sentinel, which ends this loop.
            while cluster.sentinel.is_alive():
                time.sleep(SENTINEL_CHECK_S)
        finally:
            if timer is not None and timer.is_alive():
                timer.terminate()
                timer.join(TIMER_STOP_WAIT_S)


def start_timer():
    connections.close_all()  # the timer opens its own connection
    timer = multiprocessing.get_context("fork").Process(target=run_timer, name="orchestrator-timer")
    timer.start()
    return timer
