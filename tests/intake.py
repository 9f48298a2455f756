"""Shared fixture of the intake tests (upload_event, API, ingest, replay).

Those tests are about what comes in: events, files, labels, logs and the
superevent the manager forms. The rest of the workflow (BAYESTAR, p_astro,
vetting, notices) has its own tests and would cost minutes per upload here,
so only the superevent manager runs; every other task is recorded, once its
transaction commits, instead of being run.
"""
import gzip

import pytest
from django.db import transaction

from alerts import workers
from alerts.science.coinc import GZIP_MAGIC

MANAGER_TASKS = "alerts.superevents."


@pytest.fixture
def superevent_manager_only(monkeypatch):
    """Run the superevent manager's tasks; returns the (path, args) of the others."""
    held_back = []
    enqueue = workers.enqueue

    def enqueue_manager_only(path, *args, delay_s=0.0):
        path = workers.task_path(path)
        if path.startswith(MANAGER_TASKS):
            enqueue(path, *args, delay_s=delay_s)
        else:
            transaction.on_commit(lambda: held_back.append((path, args)))

    monkeypatch.setattr(workers, "enqueue", enqueue_manager_only)
    return held_back


# An Array whose stream bytes do not fit its declared Type: igwn-ligolw raises
# RuntimeError ("... bytes were not decoded") for it, as for a damaged SNR
# series (coinc.xml) or spectrum (psd.xml.gz).
BINARY_ARRAY_TYPE = b'<Array Type="real_8"'
WRONG_ARRAY_TYPE = b'<Array Type="lstring"'


def damaged_array(data):
    """``data`` (plain or gzip LIGO-LW) with its first binary Array damaged."""
    compressed = data[:2] == GZIP_MAGIC
    text = gzip.decompress(data) if compressed else data
    assert BINARY_ARRAY_TYPE in text
    text = text.replace(BINARY_ARRAY_TYPE, WRONG_ARRAY_TYPE, 1)
    return gzip.compress(text) if compressed else text
