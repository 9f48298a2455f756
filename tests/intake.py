"""Shared fixture of the intake tests (upload_event, API, ingest, replay).

Those tests are about what comes in: events, files, labels, logs and the
superevent the manager forms. The rest of the workflow (BAYESTAR, p_astro,
vetting, notices) has its own tests and would cost minutes per upload here,
so only the superevent manager runs; every other task is recorded, once its
transaction commits, instead of being run.
"""
import pytest
from django.db import transaction

from alerts import workers

MANAGER_TASKS = "alerts.superevents."


@pytest.fixture
def superevent_manager_only(monkeypatch):
    """Run the superevent manager's tasks; returns the (path, args) of the others."""
    held_back = []
    enqueue = workers.enqueue

    def enqueue_manager_only(path, *args, delay_s=0.0):
        if path.startswith(MANAGER_TASKS):
            enqueue(path, *args, delay_s=delay_s)
        else:
            transaction.on_commit(lambda: held_back.append((path, args)))

    monkeypatch.setattr(workers, "enqueue", enqueue_manager_only)
    return held_back
