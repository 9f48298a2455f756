"""Messages per second through ``manage.py listen``, and what fetching a file
from a GraceDB-compatible server adds.

Label and log messages for events that exist are written to a Kafka topic
(librdkafka's mock cluster, held by this process: tests/kafka.py), then one
``manage.py listen --workers N`` process reads them into a scratch
PostgreSQL database. The rate is messages applied divided by the time from
the first applied row to the last (process start-up left out); every run
checks that each message left exactly one row. Handler tasks the labels
enqueue go to a queue of the benchmark's own, emptied afterwards.

The fetch figure is the time of ``alerts.gracedb_source.download`` from a
second instance of this server (``runserver`` on its own database, as in
tests/test_gracedb_source.py) with ligo-gracedb over HTTP on this machine:
one psd.xml.gz, and the announcement's whole fetch (coinc.xml, then
psd.xml.gz), median and range over repeats.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from django.conf import settings
from django.db import connection
from django.db.models import Max, Min
from django.test.utils import override_settings

from alerts.models import Category, Event, Label, Log
from benchmarks.machine import machine_line
from benchmarks.superevent_throughput import DEFAULT_BENCH_DB, BenchmarkError, ScratchDatabase

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MESSAGES = 4000
DEFAULT_EVENTS = 200
DEFAULT_WORKERS = (1, 2)
DEFAULT_REPEATS = 3
DEFAULT_FETCHES = 20
TARGET_PER_S = 500.0
TARGET_WORKERS = 2
LISTEN_TIMEOUT_S = 600
MESSAGE_PREFIX = "bench log "
LABEL_PREFIX = "BENCH_"


def database_url():
    params = connection.settings_dict
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    return (f"postgres://{user}{password}@{params.get('HOST') or '127.0.0.1'}:{params.get('PORT') or 5432}/"
            f"{params['NAME']}")


def make_events(count, start_gps=1400000000.0):
    """Event rows that the messages name, inserted directly: no handler runs."""
    events = [Event(graceid=f"G9{index:05d}", category=Category.PRODUCTION, group="CBC", pipeline="gstlal",
                    search="AllSky", gpstime=start_gps + 100.0 * index, far=1e-3, instruments="H1,L1")
              for index in range(count)]
    Event.objects.bulk_create(events)
    return [event.graceid for event in events]


def messages_for(graceids, count, run):
    """Half labels, half log messages, spread over the events; ``run`` makes
    them new for each run (a repeat would be applied as a no-op)."""
    made = []
    for index in range(count):
        graceid = graceids[index % len(graceids)]
        if index % 2:
            made.append({"uid": graceid, "alert_type": "log", "object": {},
                         "data": {"N": index, "comment": f"{MESSAGE_PREFIX}{run} {index}", "tag_names": []}})
        else:
            made.append({"uid": graceid, "alert_type": "label_added", "object": {},
                         "data": {"name": f"{LABEL_PREFIX}{run}_{index}"}})
    return made


def applied_rows(run):
    return (Log.objects.filter(message__startswith=f"{MESSAGE_PREFIX}{run} "),
            Label.objects.filter(name__startswith=f"{LABEL_PREFIX}{run}_"))


def applied_count(run):
    return sum(rows.count() for rows in applied_rows(run))


def applied_window_s(run):
    spans = [rows.aggregate(first=Min("created"), last=Max("created")) for rows in applied_rows(run)]
    first = min(span["first"] for span in spans if span["first"])
    last = max(span["last"] for span in spans if span["last"])
    return (last - first).total_seconds()


def run_listener(broker, group, workers, run, expected, env):
    """One ``listen`` process until every message is applied; (applied, seconds)."""
    command = [sys.executable, "manage.py", "listen", "--broker", broker, "--group", group, "--topics", "cbc_gstlal",
               "--consumer-group", uuid.uuid4().hex, "--workers", str(workers)]
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + LISTEN_TIMEOUT_S
            while applied_count(run) < expected:
                if process.poll() is not None or time.monotonic() > deadline:
                    output.seek(0)
                    raise BenchmarkError(f"listen stopped or timed out with {applied_count(run)} of {expected} "
                                         f"applied; its output ends:\n{output.read()[-3000:]}")
                time.sleep(0.2)
        finally:
            process.terminate()
            process.wait(30)
    return applied_count(run), applied_window_s(run)


def purge_queue(name):
    from django_q.brokers import get_broker

    try:
        get_broker(name).purge_queue()
    except Exception:  # noqa: BLE001 - no Redis: the tasks went to the database, dropped with it
        pass


def listen_rates(broker, graceids, messages, workers, repeats, env, write):
    from tests.kafka import publish

    rates = {count: [] for count in workers}
    run = 0
    for _ in range(repeats):
        for count in workers:
            run += 1
            group = f"bench-{uuid.uuid4().hex[:6]}"
            publish(broker, f"{group}.cbc_gstlal", messages_for(graceids, messages, run))
            done, seconds = run_listener(broker, group, count, run, messages, env)
            rate = done / seconds if seconds > 0 else float("nan")
            write(f"  listen --workers {count}: {done} of {messages} applied in {seconds:.2f} s = {rate:.0f}/s")
            rates[count].append(rate)
    return rates


def fetch_latency(fetches, env, write):
    """Seconds of a psd.xml.gz download, and of coinc.xml + psd.xml.gz, from a remote instance."""
    from alerts import gracedb_source
    from alerts.mockdata.simulation import make_mock_events
    from tests.gracedb_remote import pipeline_client, remote_gracedb_server

    mock = make_mock_events(1, 1)[0]
    workdir = tempfile.mkdtemp(prefix="orchestrator-bench-remote-")
    # Basic credentials only: no SciToken or X.509 lookup on this machine.
    os.environ.update({"IGWN_AUTH_UTILS_FIND_SCITOKEN": "0", "IGWN_AUTH_UTILS_FIND_X509": "0"})
    try:
        with remote_gracedb_server(env, workdir) as (api, user, password):
            pipeline = pipeline_client(api, user, password)
            graceid = pipeline.create_event("CBC", mock.pipeline, "coinc.xml", filecontents=mock.coinc_xml,
                                            search="AllSky").json()["graceid"]
            pipeline.write_log(graceid, "PSD", filename="psd.xml.gz", filecontents=mock.psd_xml_gz, tag_name=["psd"])
            with override_settings(GRACEDB={**settings.GRACEDB, "url": api, "username": user, "password": password}):
                assert gracedb_source.download(graceid, "psd.xml.gz") == mock.psd_xml_gz  # warm-up, not timed
                psd, both = [], []
                for _ in range(fetches):
                    started = time.perf_counter()
                    gracedb_source.download(graceid, "psd.xml.gz")
                    psd.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    for name in ("coinc.xml", "psd.xml.gz"):
                        gracedb_source.download(graceid, name)
                    both.append(time.perf_counter() - started)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    write(f"  {fetches} fetches each from {api}")
    return {f"psd.xml.gz ({len(mock.psd_xml_gz)} bytes)": psd,
            f"coinc.xml ({len(mock.coinc_xml)} bytes) + psd.xml.gz": both}


def format_range(values, unit="", scale=1.0, digits=0):
    low, mid, high = min(values) * scale, statistics.median(values) * scale, max(values) * scale
    return f"{mid:.{digits}f}{unit} (range {low:.{digits}f}-{high:.{digits}f})"


def run_benchmark(messages=DEFAULT_MESSAGES, events=DEFAULT_EVENTS, workers=DEFAULT_WORKERS,
                  repeats=DEFAULT_REPEATS, fetches=DEFAULT_FETCHES, bench_db=DEFAULT_BENCH_DB + "_listen",
                  write=print):
    from tests.kafka import mock_kafka_cluster

    if messages < 2 or events < 1 or repeats < 1 or fetches < 1 or min(workers) < 1:
        raise BenchmarkError("--messages >= 2, --events, --repeats, --fetches and --workers must be positive")
    if connection.vendor != "postgresql":
        raise BenchmarkError("this benchmark measures PostgreSQL: set DATABASE_URL=postgres://...")
    write(machine_line())
    queue = f"bench_listen_{os.getpid()}"
    media_root = tempfile.mkdtemp(prefix="orchestrator-bench-media-")
    try:
        with mock_kafka_cluster() as broker, ScratchDatabase(bench_db) as database:
            write(f"database: {database.description}; {messages} label/log messages (half each) on {events} "
                  f"events per run, {repeats} run(s) per worker count; broker: librdkafka mock cluster {broker}")
            graceids = make_events(events)
            env = {**os.environ, "DATABASE_URL": database_url(), "MEDIA_ROOT": media_root,
                   "ORCHESTRATOR_PRELIMINARY_ALERTS": "0", "Q_QUEUE_NAME": queue,
                   "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings"}
            try:
                rates = listen_rates(broker, graceids, messages, workers, repeats, env, write)
            finally:
                purge_queue(queue)
            latencies = fetch_latency(fetches, env, write)
    finally:
        shutil.rmtree(media_root, ignore_errors=True)
    write("")
    write(f"{'measure':<48} {'median (range)':>30}")
    for count, values in rates.items():
        target = f"  target >= {TARGET_PER_S:.0f}" if count == TARGET_WORKERS else ""
        write(f"{f'listen --workers {count}, messages/s applied':<48} {format_range(values):>30}{target}")
    for what, values in latencies.items():
        write(f"{f'fetch {what}, ms':<48} {format_range(values, scale=1000, digits=1):>30}")
    if TARGET_WORKERS in rates:
        verdict = "met" if statistics.median(rates[TARGET_WORKERS]) >= TARGET_PER_S else "MISSED"
        write(f"target {TARGET_PER_S:.0f} messages/s with {TARGET_WORKERS} workers (median): {verdict}")
    return rates, latencies
