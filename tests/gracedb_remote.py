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



class FlakyProxy:
    """An HTTP proxy in front of ``upstream`` (host, port) that answers 503
    during an outage and forwards requests otherwise, keeping the Host
    header, so that the links the server answers with point at the proxy.

    ``fail_next(count)``: the next ``count`` requests answer 503;
    ``fail_for(seconds)``: every request for that long does. With
    ``lose=("POST",)``, the first such request in the outage is forwarded
    and its answer replaced by a 503: the server wrote, the client believes
    it did not. A context manager; ``url`` is its API root, ``served`` the
    (method, path, status) of every request it answered.
    """

    def __init__(self, upstream):
        import http.server
        import threading

        self.upstream, self.served = upstream, []
        self._failing, self._until, self._lose = 0, 0.0, set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                down, lose = proxy._in_outage(self.command)
                if down and not lose:
                    return self.answer(503, {"Content-Type": "text/plain"}, b"Service Unavailable")
                status, headers, data = proxy._forward(self.command, self.path, dict(self.headers), body)
                if lose:
                    status, headers, data = 503, {"Content-Type": "text/plain"}, b"Service Unavailable"
                return self.answer(status, headers, data)

            def answer(self, status, headers, data):
                with proxy._lock:
                    proxy.served.append((self.command, self.path, status))
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in {"content-length", "transfer-encoding", "connection", "server", "date"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def fail_next(self, count, lose=()):
        with self._lock:
            self._failing, self._lose = count, set(lose)

    def fail_for(self, seconds, lose=()):
        with self._lock:
            self._until, self._lose = time.monotonic() + seconds, set(lose)

    def _in_outage(self, method):
        """(answer 503, after forwarding) for a request now."""
        with self._lock:
            down = self._failing > 0 or time.monotonic() < self._until
            if self._failing > 0:
                self._failing -= 1
            lose = down and method in self._lose
            if lose:
                self._lose.discard(method)
            return down, lose

    def _forward(self, method, path, headers, body):
        import http.client

        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/gracedb/api/"

    def unavailable(self):
        """How many 503s it answered."""
        with self._lock:
            return sum(1 for *_, status in self.served if status == 503)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)
