"""django-q2's qcluster plus the orchestrator's timer for delayed tasks.

django-q2's scheduler is too coarse for waits that must fire within a
second, so this command also starts ``alerts.workers.run_timer`` in its own
process beside the cluster (see alerts/workers.py).
"""
import multiprocessing

from django.db import connections
from django_q.management.commands.qcluster import Command as DjangoQCommand

from alerts.workers import run_timer


class Command(DjangoQCommand):
    help = "Start the django-q2 worker cluster and the orchestrator's precise timer."

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--no-timer", action="store_true",
                            help="do not start the timer (another machine runs one)")

    def handle(self, *args, **options):
        timer = None
        if not options["no_timer"]:
            connections.close_all()  # the child opens its own connection
            timer = multiprocessing.get_context("fork").Process(target=run_timer, name="orchestrator-timer",
                                                                daemon=True)
            timer.start()
        try:
            super().handle(*args, **options)
        finally:
            if timer is not None and timer.is_alive():
                timer.terminate()
                timer.join(5)
