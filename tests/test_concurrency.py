"""Several processes ingesting overlapping events at once never create two
superevents with overlapping windows and never lose an event."""
import multiprocessing
import os
import random
from urllib.parse import urlsplit

import pytest
from django.db import connection, connections

from alerts.models import Event, Superevent
from tests.factories import T0, make_event

pytestmark = pytest.mark.django_db(transaction=True)

PROCESSES = 4
CLUSTERS = 25
# Offsets (s) of one source's detections; with 1 s windows they chain into
# one superevent, and they are spread over different processes to race.
OFFSETS = [0.0, 0.3, 0.7, 1.2]
CLUSTER_SPACING_S = 20.0


def test_the_database_is_the_configured_one():
    """CI sets DATABASE_URL to PostgreSQL: the tests, and the locking they
    check, must really run there, never on a silent SQLite fallback."""
    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme in {"postgres", "postgresql", "pgsql"}:
        assert connection.vendor == "postgresql"
        assert connection.settings_dict["NAME"].startswith(f"test_{urlsplit(url).path.lstrip('/')}")
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            assert cursor.fetchone()[0].startswith("PostgreSQL")
    else:
        assert not url or url.startswith("sqlite"), f"unexpected DATABASE_URL {url}"
        assert connection.vendor == "sqlite"


def ingest(specs, barrier, failures):
    connections.close_all()  # never share the parent's connection
    barrier.wait()
    try:
        for gpstime, snr in specs:
            make_event(gpstime=gpstime, snr=snr)
    except Exception as error:  # reported to the parent, which fails the test
        failures.put(f"{type(error).__name__}: {error}")
    finally:
        connections.close_all()


def test_parallel_ingestion_groups_each_source_once():
    rng = random.Random(7)
    shares = [[] for _ in range(PROCESSES)]
    for cluster in range(CLUSTERS):
        for index, offset in enumerate(OFFSETS):
            shares[(cluster + index) % PROCESSES].append((T0 + cluster * CLUSTER_SPACING_S + offset,
                                                          rng.uniform(8, 20)))
    # Every process works through the sources in the same order, so the
    # detections of one source are ingested at the same moment: the race.
    for share in shares:
        share.sort()
    context = multiprocessing.get_context("fork")
    barrier, failures = context.Barrier(PROCESSES), context.Queue()
    connections.close_all()
    workers = [context.Process(target=ingest, args=(share, barrier, failures)) for share in shares]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    assert failures.empty(), failures.get()

    assert Event.objects.count() == CLUSTERS * len(OFFSETS)
    assert not Event.objects.filter(superevent__isnull=True).exists(), "an event was lost"
    superevents = list(Superevent.objects.order_by("t_start"))
    assert len(superevents) == CLUSTERS
    for earlier, later in zip(superevents, superevents[1:]):
        assert earlier.t_end < later.t_start, f"{earlier} overlaps {later}"
    for superevent in superevents:
        times = sorted(superevent.events.values_list("gpstime", flat=True))
        assert [round(t - times[0], 6) for t in times] == OFFSETS
        preferred_snr = superevent.preferred_event.snr
        assert preferred_snr == max(superevent.events.values_list("snr", flat=True))
    assert sorted(s.day_index for s in superevents) == list(range(CLUSTERS))
    assert len({s.superevent_id for s in superevents}) == CLUSTERS
