"""Messages per second through ``manage.py listen``, and what fetching a file
from a GraceDB-compatible server adds.

Label and log messages for events that exist are written to a Kafka topic
(librdkafka's mock cluster, in this process), then N listener processes in
one consumer group read them from a scratch PostgreSQL database; the rate is
messages applied divided by the time from the first to the last one
(process start-up left out). The fetch figure is the median time of
``alerts.gracedb_source.download`` of a psd.xml.gz from this server's own
GraceDB surface (``runserver`` on the same scratch database).
"""
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.db import connection
from django.db.models import Max, Min

from alerts.events import add_event_file, create_event
from alerts.models import Event, Label, Log
from benchmarks.machine import machine_line
from benchmarks.superevent_throughput import ScratchDatabase

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MESSAGES = 4000
DEFAULT_EVENTS = 200
DEFAULT_WORKERS = 2
TARGET_PER_S = 500.0
FETCHES = 20


def database_url():
    params = connection.settings_dict
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    return (f"postgres://{user}{password}@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/"
            f"{params['NAME']}")


def make_events(count, start_gps=1400000000.0):
    """Events that the messages name (attributes only: no annotations run)."""
    return [create_event(group="CBC", pipeline="gstlal", graceid=f"G9{index:05d}", attributes={
        "gpstime": start_gps + 100.0 * index, "far": 1e-3, "instruments": ["H1", "L1"]}).graceid
        for index in range(count)]


def messages_for(graceids, count):
    """Half labels, half log messages, spread over the events."""
    made = []
    for index in range(count):
        graceid = graceids[index % len(graceids)]
        if index % 2:
            made.append({"uid": graceid, "alert_type": "log", "object": {},
                         "data": {"N": index, "comment": f"bench log {index}", "tag_names": []}})
        else:
            made.append({"uid": graceid, "alert_type": "label_added", "object": {},
                         "data": {"name": f"BENCH_{index // len(graceids) // 2}"}})
    return made


def publish(broker, topic, messages):
    from hop import Stream

    with Stream(auth=False).open(f"kafka://{broker}/{topic}", "w", automatic_offload=False) as producer:
        for message in messages:
            producer.write(message)


def applied_count():
    return (Log.objects.filter(message__startswith="bench log ").count()
            + Label.objects.filter(name__startswith="BENCH_").count())


def run_listeners(broker, group, workers, expected, env, timeout_s=600):
    consumer_group = uuid.uuid4().hex
    processes = [subprocess.Popen(
        [sys.executable, "manage.py", "listen", "--broker", broker, "--group", group, "--topics", "cbc_gstlal",
         "--consumer-group", consumer_group], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
    try:
        deadline = time.monotonic() + timeout_s
        while applied_count() < expected and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
    done = applied_count()
    logs = Log.objects.filter(message__startswith="bench log ").aggregate(first=Min("created"), last=Max("created"))
    labels = Label.objects.filter(name__startswith="BENCH_").aggregate(first=Min("created"), last=Max("created"))
    first = min(value for value in (logs["first"], labels["first"]) if value)
    last = max(value for value in (logs["last"], labels["last"]) if value)
    return done, (last - first).total_seconds()


def fetch_latency(graceid, psd, env):
    """Median seconds of one psd.xml.gz download from this server's GraceDB surface."""
    from django.conf import settings
    from django.contrib.auth.models import Group, User

    from alerts import gracedb_source

    user = User.objects.create_user(f"bench-{uuid.uuid4().hex[:6]}", password="bench")
    user.groups.add(Group.objects.get_or_create(name="pipelines")[0])
    event = Event.objects.get(graceid=graceid)
    add_event_file(event, "psd.xml.gz", psd)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/gracedb/api/"
    saved = settings.GRACEDB
    settings.GRACEDB = {**saved, "url": url, "username": user.username, "password": "bench"}
    try:
        for _ in range(120):
            try:
                gracedb_source.download(graceid, "psd.xml.gz")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.5)
        times = []
        for _ in range(FETCHES):
            started = time.perf_counter()
            data = gracedb_source.download(graceid, "psd.xml.gz")
            times.append(time.perf_counter() - started)
        assert data == psd
        return statistics.median(times)
    finally:
        settings.GRACEDB = saved
        server.terminate()
        server.wait(30)


def run_benchmark(messages=DEFAULT_MESSAGES, events=DEFAULT_EVENTS, workers=DEFAULT_WORKERS, out=print):
    from confluent_kafka import Producer

    from alerts.mockdata.simulation import make_mock_events

    holder = Producer({"test.mock.num.brokers": 1})
    broker = "{0.host}:{0.port}".format(list(holder.list_topics(timeout=10).brokers.values())[0])
    with ScratchDatabase(name=f"orchestrator_bench_listen_{os.getpid()}") as scratch:
        out(machine_line())
        out(f"database: {scratch.description}; {messages} label/log messages for {events} events, "
            f"{workers} listener process(es)")
        graceids = make_events(events)
        group = f"bench-{uuid.uuid4().hex[:6]}"
        publish(broker, f"{group}.cbc_gstlal", messages_for(graceids, messages))
        env = {**os.environ, "DATABASE_URL": database_url(), "ORCHESTRATOR_PRELIMINARY_ALERTS": "0",
               "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost"}
        done, seconds = run_listeners(broker, group, workers, messages, env)
        rate = done / seconds if seconds > 0 else float("nan")
        verdict = "met" if rate >= TARGET_PER_S and done == messages else "MISSED"
        out(f"listen, {workers} processes: {done} of {messages} applied in {seconds:.2f} s = {rate:.0f} messages/s "
            f"(target >= {TARGET_PER_S:.0f}: {verdict})")
        mock = make_mock_events(1, 1)[0]
        latency = fetch_latency(graceids[0], mock.psd_xml_gz, env)
        out(f"fetch psd.xml.gz ({len(mock.psd_xml_gz)} bytes) from the GraceDB surface with ligo-gracedb: "
            f"median {latency * 1000:.0f} ms over {FETCHES}")
    del holder
