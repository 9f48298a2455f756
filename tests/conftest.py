"""Shared test setup.

Tests run against the database named by DATABASE_URL (PostgreSQL in CI) or
a SQLite file, and against Redis when REDIS_URL is set; the worker tests use
whichever broker the settings select and never skip.
"""
import os

os.environ.setdefault("ORCHESTRATOR_DEV", "1")  # worker processes the tests start: a generated key

import pytest
from django.db import connection

from alerts.mockdata.simulation import PIPELINES, make_mock_events
from tests.mock_data import (DUPLICATES_SEED, DUPLICATES_SOURCE_COUNT, MOCK_SEED, MOCK_SOURCE_COUNT,
                             MOCK_START_GPS)


@pytest.fixture(autouse=True)
def isolated_orchestrator(settings, tmp_path):
    """Inline tasks, a private media folder and a private notice outbox for
    every test. Automatic preliminary alerts are off unless a test turns
    them on (``PRELIMINARY_ALERTS``): inline, they would run the moment a
    superevent is created. The settle wait lasts its whole
    ``ORCHESTRATOR_TIMEOUT_S`` unless a test turns the early end on, so
    that tests can step through it."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.ORCHESTRATOR = {
        **settings.ORCHESTRATOR, "TASKS_INLINE": True, "INGEST_FILES_DIR": "", "DETCHAR_FRAME_GLOB": "",
        "PRELIMINARY_ALERTS": False, "ORCHESTRATOR_MIN_SETTLE_S": -1.0,
        "NOTICE_DESTINATIONS": [{"name": "outbox", "transport": "outbox", "formats": ["json", "avro", "voevent"],
                                 "directory": str(tmp_path / "outbox")}],
    }
    yield settings.ORCHESTRATOR


def database_url_of_test_db():
    """A DATABASE_URL that points worker subprocesses at the test database."""
    params = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{params['NAME']}"
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{params['NAME']}"


def empty_task_queues():
    """Drop the tasks left on the broker's queues (main and slow). With Redis
    they outlive the test database, and a task left by a cluster a test
    stopped would act on the next test's rows of the same primary key."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    from alerts.workers import slow_queue_name

    for name in (Conf.PREFIX, slow_queue_name()):
        get_broker(name).purge_queue()


@pytest.fixture
def worker_env(tmp_path):
    """Environment for subprocesses that must share this test's database;
    the task queues start and end empty."""
    env = dict(os.environ)
    env["DATABASE_URL"] = database_url_of_test_db()
    env["MEDIA_ROOT"] = str(tmp_path / "media")
    env["ORCHESTRATOR_TASKS_INLINE"] = "0"
    env["DJANGO_SETTINGS_MODULE"] = "orchestrator_site.settings"
    empty_task_queues()
    yield env
    empty_task_queues()


@pytest.fixture(scope="session")
def mock_events():
    """Four single-pipeline mock CBC events, one per source, 100 s apart."""
    return make_mock_events(MOCK_SOURCE_COUNT, MOCK_SEED, start_gps=MOCK_START_GPS)


@pytest.fixture(scope="session")
def mock_events_with_duplicates():
    """Two sources, each reported by every mock pipeline within ~0.05 s."""
    return make_mock_events(
        DUPLICATES_SOURCE_COUNT,
        DUPLICATES_SEED,
        start_gps=MOCK_START_GPS,
        pipelines_per_source=len(PIPELINES),
    )
