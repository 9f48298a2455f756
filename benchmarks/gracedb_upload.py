"""Creating an event through the GraceDB-compatible surface vs the native API.

The same coinc.xml documents are uploaded both ways through Django's full
request path (middleware, URL routing, DRF, authentication) in this process,
with no network in between, so the figures compare the two layers and the
work they share (``alerts.events.create_event``: parsing, storage, grouping
at upload):

- native: ``POST /api/events/`` (multipart ``coinc``, token header);
- GraceDB: ``POST /gracedb/api/events/`` as ``ligo-gracedb``'s
  ``create_event`` sends it (multipart ``eventFile``, group, pipeline,
  search, offline, content_id), HTTP basic with the API token as password.

Uploads alternate in blocks (native, GraceDB, native ...) so that drift of
the machine or the database hits both alike; every upload is its own source
(times ``SOURCE_SPACING_S`` apart), so each creates a superevent. Only the
superevent manager's subscription stays registered (as in the throughput
benchmark); DEBUG is off. Target: GraceDB / native <= 1.2.
"""
import base64
import shutil
import statistics
import tempfile
import time

from django.conf import settings
from django.test import Client
from django.test.utils import override_settings

from benchmarks.machine import machine_line
from benchmarks.superevent_throughput import (DEFAULT_BENCH_DB, DEFAULT_START_GPS, SOURCE_SPACING_S,
                                              BenchmarkError, ScratchDatabase, make_coinc_pool,
                                              manager_handlers_only, retimed_coinc)

DEFAULT_UPLOADS = 100
DEFAULT_BLOCK = 10
DEFAULT_POOL = 8
DEFAULT_SEED = 2024
TARGET_RATIO = 1.2
USER = "benchmark-pipeline"


def native_request(client, token, coinc, pipeline):
    return client.post("/api/events/", {"group": "CBC", "pipeline": pipeline, "search": "AllSky",
                                        "coinc": _upload("coinc.xml", coinc)},
                       HTTP_AUTHORIZATION=f"Token {token}")


def gracedb_request(client, basic, coinc, pipeline):
    return client.post("/gracedb/api/events/", {"group": "CBC", "pipeline": pipeline, "search": "AllSky",
                                                "offline": "False", "content_id": "0",
                                                "eventFile": _upload("coinc.xml", coinc)},
                       HTTP_AUTHORIZATION=f"Basic {basic}")


def _upload(name, data):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, data, content_type="application/xml")


def run_benchmark(uploads=DEFAULT_UPLOADS, block=DEFAULT_BLOCK, pool=DEFAULT_POOL, seed=DEFAULT_SEED,
                  bench_db=DEFAULT_BENCH_DB, keep_db=False, write=print):
    """Time ``uploads`` uploads each way; returns (native_s, gracedb_s) lists."""
    if uploads < 1 or block < 1:
        raise BenchmarkError("--uploads and --block must be positive")
    write(machine_line())
    write(f"simulating {pool} coinc.xml and retiming {2 * uploads} copies (not timed) ...")
    documents = make_coinc_pool(pool, seed)
    pipelines = [document_pipeline(doc) for doc in documents]
    coincs = [(retimed_coinc(documents[i % pool], DEFAULT_START_GPS + i * SOURCE_SPACING_S), pipelines[i % pool])
              for i in range(2 * uploads)]
    media_root = tempfile.mkdtemp(prefix="orchestrator-bench-media-")
    inline = {**settings.ORCHESTRATOR, "TASKS_INLINE": True}
    timings = {"native": [], "gracedb": []}
    try:
        with (ScratchDatabase(bench_db, keep=keep_db) as database,
              override_settings(DEBUG=False, MEDIA_ROOT=media_root, ORCHESTRATOR=inline,
                                ALLOWED_HOSTS=[*settings.ALLOWED_HOSTS, "testserver"]),
              manager_handlers_only()):
            write(f"database: {database.description}")
            token = pipeline_token()
            basic = base64.b64encode(f"{USER}:{token}".encode()).decode()
            client = Client()
            ways = {"native": lambda c, p: native_request(client, token, c, p),
                    "gracedb": lambda c, p: gracedb_request(client, basic, c, p)}
            # One of each first, not timed: imports, first connections.
            warm = [(retimed_coinc(documents[0], DEFAULT_START_GPS - 1000 - i * SOURCE_SPACING_S), pipelines[0])
                    for i in range(2)]
            for (coinc, pipeline), way in zip(warm, ways.values()):
                check(way(coinc, pipeline))
            order = [name for start in range(0, uploads, block)
                     for name in ("native", "gracedb") for _ in range(min(block, uploads - start))]
            for (coinc, pipeline), name in zip(coincs, order):
                started = time.perf_counter()
                response = ways[name](coinc, pipeline)
                timings[name].append(time.perf_counter() - started)
                check(response)
    finally:
        shutil.rmtree(media_root, ignore_errors=True)
    report(timings, write)
    return timings["native"], timings["gracedb"]


def document_pipeline(xmldoc):
    from igwn_ligolw import lsctables

    (process, *_) = lsctables.ProcessTable.get_table(xmldoc)
    program = (process.program or "").lower()
    known = {name for names in settings.ORCHESTRATOR["PIPELINES"].values() for name in names}
    return next((name for name in known if name in program), "gstlal")


def pipeline_token():
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    from alerts.vocabulary import PIPELINES_GROUP

    user = get_user_model().objects.create_user(USER)
    user.groups.add(Group.objects.get_or_create(name=PIPELINES_GROUP)[0])
    return Token.objects.create(user=user).key


def check(response):
    if response.status_code != 201:
        raise BenchmarkError(f"upload answered {response.status_code}: {response.content[:300]!r}")


def report(timings, write):
    native, gracedb = timings["native"], timings["gracedb"]
    rows = []
    for name, values in (("native POST /api/events/", native), ("GraceDB POST /gracedb/api/events/", gracedb)):
        rows.append(f"  {name:<36} {len(values):>5} uploads  median {statistics.median(values) * 1e3:7.1f} ms  "
                    f"mean {statistics.fmean(values) * 1e3:7.1f} ms")
    ratio_median = statistics.median(gracedb) / statistics.median(native)
    ratio_mean = statistics.fmean(gracedb) / statistics.fmean(native)
    write("create an event from the same coinc.xml:")
    for row in rows:
        write(row)
    verdict = "ok" if ratio_median <= TARGET_RATIO else "ABOVE TARGET"
    write(f"  GraceDB / native: {ratio_median:.2f} (medians), {ratio_mean:.2f} (means); "
          f"target <= {TARGET_RATIO}: {verdict}")
