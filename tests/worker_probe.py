"""Tiny tasks the worker tests enqueue; importable by qcluster subprocesses."""
from alerts.models import Event
from alerts.store import add_label, log

FIRED_LABEL = "DQR_REQUEST"


def mark_fired(event_pk, due_iso):
    """Label the event and log when the delayed task ran against when it was due."""
    from django.utils import timezone

    event = Event.objects.get(pk=event_pk)
    log(event, f"probe fired at {timezone.now().isoformat()} (due {due_iso})")
    add_label(event, FIRED_LABEL)


def slow_probe(event_pk, seconds):
    """Stand in for BAYESTAR: hold a worker, then log which cluster ran it."""
    import os
    import time

    time.sleep(seconds)
    log(Event.objects.get(pk=event_pk), f"slow probe done on cluster {os.environ.get('Q_CLUSTER_NAME', 'main')}")
