"""A second instance of this server playing the remote GraceDB (its
``/gracedb/api/`` surface), on a database of its own, for the GraceDB-source
tests and the listen benchmark (``benchmark_listen``)."""
import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import requests
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
USER = "gstlal-robot"
PASSWORD = "remote-pipeline-password"
START_TIMEOUT_S = 60


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _admin(host, port, user, sql):
    with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True) as admin:
        admin.execute(sql)


@contextlib.contextmanager
def remote_gracedb_server(base_env, workdir):
    """Start the remote instance; yields (api url, user, password).

    ``base_env`` is the environment of this server's subprocesses; the remote
    one gets its own database (beside the current one on PostgreSQL, a file
    in ``workdir`` otherwise) and media folder, and no Redis: its queued
    tasks stay in its database, no worker runs them.
    """
    workdir = Path(workdir)
    database = None
    if connection.vendor == "postgresql":
        params = connection.settings_dict
        host, port, user = params.get("HOST") or "127.0.0.1", params.get("PORT") or 5432, params.get("USER") or "postgres"
        name = f"orch_remote_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        _admin(host, port, user, f'CREATE DATABASE "{name}"')
        database, url = (host, port, user, name), f"postgres://{user}@{host}:{port}/{name}"
    else:
        url = f"sqlite:///{workdir / 'remote.sqlite3'}"
    env = {**base_env, "DATABASE_URL": url, "MEDIA_ROOT": str(workdir / "remote-media"),
           "ORCHESTRATOR_PRELIMINARY_ALERTS": "0", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
    env.pop("REDIS_URL", None)
    manage = [sys.executable, "manage.py"]
    server = None
    try:
        subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run([*manage, "shell", "-c",
                        "from django.contrib.auth.models import Group, User;"
                        f"u = User.objects.create_user('{USER}', password='{PASSWORD}');"
                        "u.groups.add(Group.objects.get_or_create(name='pipelines')[0],"
                        "             Group.objects.get_or_create(name='advocates')[0])"],
                       cwd=ROOT, env=env, check=True)
        port = free_port()
        server = subprocess.Popen([*manage, "runserver", "--noreload", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        api = f"http://127.0.0.1:{port}/gracedb/api/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                requests.get(api, timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        yield api, USER, PASSWORD
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
        if database:
            host, port_, user, name = database
            _admin(host, port_, user, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pipeline_client(api, user=USER, password=PASSWORD):
    """A ligo-gracedb client acting as a pipeline on the remote instance."""
    from ligo.gracedb.rest import GraceDb

    client = GraceDb(service_url=api, force_noauth=True, retries=0)
    client.auth = (user, password)
    return client
