"""``manage.py health`` exits with Nagios's codes: 2 with the database at a
closed port, 2 with no worker cluster, 0 with one running; /health/ shows
the status word to anyone and the checks to staff only."""
import subprocess
import sys
import time

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tests.test_workers import ROOT, qcluster, queued  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_PORT_DATABASE = "postgres://postgres@127.0.0.1:1/nothing"
WORKER_WAIT_S = 90


def health(env):
    return subprocess.run([sys.executable, "manage.py", "health"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_database_at_a_closed_port_is_critical(worker_env):
    worker_env["DATABASE_URL"] = CLOSED_PORT_DATABASE
    done = health(worker_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CRITICAL database: unreachable" in done.stdout
    assert "Traceback" not in done.stderr


def test_no_worker_is_critical(worker_env):
    done = health(worker_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "CRITICAL workers: no live worker cluster" in done.stdout
    assert "OK database: reachable, migrated" in done.stdout


def test_a_running_cluster_is_ok(worker_env, qcluster):  # noqa: F811
    deadline = time.monotonic() + WORKER_WAIT_S
    while True:
        done = health(worker_env)
        if done.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("OK: orchestrator")
    assert "OK workers:" in done.stdout


def test_health_page_shows_details_to_staff_only():
    anonymous = Client().get("/health/")
    assert anonymous.status_code == 503  # no worker in the test
    assert anonymous.json() == {"status": "CRITICAL"}
    staff = User.objects.create_user("ops", password="x", is_staff=True)
    client = Client()
    client.force_login(staff)
    body = client.get("/health/").json()
    assert {"check": "workers", "status": "CRITICAL", "detail": "no live worker cluster"} in body["checks"]
