"""Throughput of the superevent manager, alone and behind the upload path.

Workload: ``events`` detections of ``events / per_source`` sources. The
detections of one source lie within `SOURCE_SPREAD_S` (less than the 1 s
window half-width, so they all overlap and must form exactly one
superevent); sources are `SOURCE_SPACING_S` apart. Detection ``k`` of source
``s`` goes to worker ``(s + k) % workers`` and every worker takes its share
in time order, so the workers reach each source at about the same moment
and race for it, as in tests/test_concurrency.py.

Two paths are timed, each with 1, 2, ... worker processes (fork; every
child closes inherited database connections first and connects before the
start barrier):

- "manager alone": Event rows are bulk-inserted with their graceids
  beforehand (not timed), pending for the manager
  (``grouping_done`` false); the workers call
  ``alerts.superevents.process_event(pk)`` on their share. The manager
  drains pending events in batches, so a call may group the events of
  other calls (of either worker), which then return at once: the timed
  span, to the last worker's finish, still holds all of the manager's work.
- "manager live": one event at a time, as uploads arrive when there is no
  backlog: each worker calls ``alerts.events.create_event`` with the
  event's attributes (no coinc.xml) and TASKS_INLINE on, so each event is
  created and grouped, as a batch of one, in one transaction
  (GROUP_AT_UPLOAD). The first ``live_events`` events of the workload, so
  the run stays short. Held to a stretch goal of the manager's 500/s; the
  event's creation and its transaction are part of its cost.
- "upload+parse": the workers call ``alerts.events.create_event`` with
  realistic coinc.xml bytes and TASKS_INLINE on: each upload is grouped
  inside its own transaction (GROUP_AT_UPLOAD), and the manager's
  EVENT_CREATED task runs inline after the commit and finds it done. A small pool of coincs is simulated with
  ligo.skymap's tools (``make_mock_events``) and every upload is a copy of a
  pool document with its event time rewritten (coinc_inspiral and
  sngl_inspiral end times, SNR series epochs) by igwn-ligolw. Simulation
  and rewriting happen before timing.

The time of a run is from the start barrier to the last worker's finish.
Each run starts on an empty scratch database (created next to the one
DATABASE_URL names, migrated once, flushed between runs, dropped at the
end) and an empty temporary MEDIA_ROOT, and is checked afterwards: every
event grouped, one superevent per source holding exactly its detections,
windows covering their events and never overlapping, the preferred event
first in the preference order, IDs unique and gapless per day.

Only the superevent manager's subscription (EVENT_CREATED) stays
registered while timing, so annotation or alert steps that other modules
subscribe are not part of the figures; DEBUG is off, as deployed.
"""
import contextlib
import cProfile
import dataclasses
import io
import math
import multiprocessing
import os
import pstats
import queue
import random
import shutil
import tempfile
import time
import traceback
from collections import Counter, defaultdict

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext, override_settings

from alerts import handlers, superevent_rules as rules
from alerts.events import GRACEID_OFFSET, GRACEID_PREFIX, create_event
from alerts.models import Category, Event, StepRun, Superevent
from alerts.superevents import BATCH_SIZE, candidate_of, process_event
from benchmarks.machine import machine_line

DEFAULT_EVENTS = 3000
DEFAULT_PER_SOURCE = 5
DEFAULT_WORKERS = (1, 2)
#: GPS 1400000000 is 2024-05-17 16:53:02 UTC.
DEFAULT_START_GPS = 1_400_000_000.0
#: Seconds between sources: tens of seconds, far beyond a window.
SOURCE_SPACING_S = 20.0
#: The detections of one source lie within this many seconds of its first.
SOURCE_SPREAD_S = 0.9
#: Random sub-second part of each source time, so times are not round.
SOURCE_JITTER_S = 0.5
#: Simulated coinc.xml documents the uploads are copied from.
DEFAULT_POOL = 30
DEFAULT_SEED = 2024
#: Events per second to reach with TARGET_WORKERS workers (issue 2's targets).
TARGETS = {"manager": 500.0, "upload": 100.0}
#: Beyond the targets: the manager's rate, held to events arriving one at a
#: time, each also created (without parsing) in the same transaction.
STRETCH_GOALS = {"live": 500.0}
TARGET_WORKERS = 2
PATH_TITLES = {"manager": "manager alone", "live": "manager live", "upload": "upload+parse"}
#: Events of the live run (one at a time costs more than a backlog's batches).
DEFAULT_LIVE_EVENTS = 1000
DEFAULT_BENCH_DB = "orchestrator_bench"
#: Sources run in the single-process dry run that counts queries.
DRY_RUN_SOURCES = 10
INSTRUMENT_SETS = (("H1", "L1"), ("H1", "L1", "V1"), ("H1", "V1"), ("L1", "V1"))
SNR_RANGE = (8.0, 30.0)
#: Significant FARs (Hz), log-uniform: all form superevents.
FAR_RANGE_HZ = (1e-14, 1e-8)
BARRIER_TIMEOUT_S = 300
RUN_TIMEOUT_S = 3600
PROFILE_TOP = 25


class BenchmarkError(RuntimeError):
    """The benchmark cannot run, or a run produced wrong superevents."""


@dataclasses.dataclass(frozen=True)
class EventSpec:
    index: int
    source: int
    gpstime: float
    pipeline: str
    far: float
    snr: float
    instruments: tuple

    @property
    def graceid(self):
        return f"{GRACEID_PREFIX[Category.PRODUCTION]}{GRACEID_OFFSET + self.index + 1}"


@dataclasses.dataclass
class RunResult:
    path: str
    workers: int
    events: int
    superevents: int
    seconds: float
    check: str = "ok"
    profile: str = ""
    #: CPU seconds used by the worker processes and by their database
    #: server processes (None where /proc does not show them).
    worker_cpu_s: float = 0.0
    db_cpu_s: float | None = None

    @property
    def rate(self):
        return self.events / self.seconds if self.seconds > 0 else float("inf")


@dataclasses.dataclass
class QueryCount:
    path: str
    events: int
    per_event: float
    creating: float
    joining: float
    kinds: dict
    example_sql: list


# --- Workload --------------------------------------------------------------------


def plan_workload(events, per_source, seed=DEFAULT_SEED, start_gps=DEFAULT_START_GPS,
                  spacing=SOURCE_SPACING_S):
    """``events`` detections, ``per_source`` per source (the last may have fewer)."""
    if events < 1 or per_source < 1:
        raise BenchmarkError("--events and --per-source must be at least 1")
    windows = settings.ORCHESTRATOR["SUPEREVENT_WINDOW_S"]
    half_width = max(windows.values())
    if SOURCE_SPREAD_S >= half_width:
        raise BenchmarkError(f"detections {SOURCE_SPREAD_S} s apart would not all overlap with a "
                             f"{half_width} s window half-width")
    if spacing <= 2 * half_width + SOURCE_SPREAD_S + SOURCE_JITTER_S:
        raise BenchmarkError(f"sources {spacing} s apart would overlap")
    rng = random.Random(seed)
    pipelines = settings.ORCHESTRATOR["PIPELINES"]["CBC"]
    specs = []
    for source in range(math.ceil(events / per_source)):
        t_source = start_gps + source * spacing + rng.uniform(0, SOURCE_JITTER_S)
        count = min(per_source, events - len(specs))
        offsets = [0.0] + sorted(rng.uniform(0, SOURCE_SPREAD_S) for _ in range(count - 1))
        for k, offset in enumerate(offsets):
            specs.append(EventSpec(
                index=len(specs), source=source, gpstime=t_source + offset,
                pipeline=pipelines[k % len(pipelines)],
                far=math.exp(rng.uniform(*map(math.log, FAR_RANGE_HZ))),
                snr=rng.uniform(*SNR_RANGE), instruments=rng.choice(INSTRUMENT_SETS),
            ))
    return specs


def split(specs, workers):
    """Detection k of source s to worker (s + k) % workers; each share in time order."""
    shares = [[] for _ in range(workers)]
    first_of_source = {}
    for spec in specs:
        first = first_of_source.setdefault(spec.source, spec.index)
        shares[(spec.source + spec.index - first) % workers].append(spec)
    for share in shares:
        share.sort(key=lambda spec: spec.gpstime)
    return shares


def make_coinc_pool(size, seed, start_gps=DEFAULT_START_GPS):
    """``size`` simulated coinc.xml documents (parsed), all significant."""
    from alerts.mockdata.simulation import PIPELINES, make_mock_events

    sources = math.ceil(size / len(PIPELINES))
    mocks = make_mock_events(sources, seed, start_gps=start_gps, spacing=SOURCE_SPACING_S,
                             pipelines_per_source=len(PIPELINES), insignificant_fraction=0.0)
    return [_load_ligolw(mock.coinc_xml) for mock in mocks[:size]]


def _load_ligolw(data):
    from igwn_ligolw import utils as ligolw_utils

    from alerts.science.coinc import _ContentHandler

    return ligolw_utils.load_fileobj(io.BytesIO(data), compress=False, contenthandler=_ContentHandler)


def retimed_coinc(xmldoc, gpstime):
    """coinc.xml bytes of ``xmldoc`` moved to ``gpstime`` (the document is changed).

    The candidate gets ``gpstime``; its triggers, their SNR series and the
    process rows move by the same shift, so the coincidence stays intact.
    """
    import lal
    from igwn_ligolw import ligolw, lsctables
    from igwn_ligolw import utils as ligolw_utils

    (coinc_inspiral,) = lsctables.CoincInspiralTable.get_table(xmldoc)
    target = lal.LIGOTimeGPS(gpstime)
    shift = target - coinc_inspiral.end
    coinc_inspiral.end = target
    for sngl in lsctables.SnglInspiralTable.get_table(xmldoc):
        sngl.end = sngl.end + shift
    for element in xmldoc.getElementsByTagName(ligolw.Time.tagName):
        if element.Type == "GPS" and element.pcdata is not None:
            element.pcdata = element.pcdata + shift
    for process in lsctables.ProcessTable.get_table(xmldoc):
        process.start_time = process.end_time = target.gpsSeconds
    buffer = io.BytesIO()
    ligolw_utils.write_fileobj(xmldoc, buffer)
    return buffer.getvalue()


def make_coincs(specs, pool):
    """One coinc.xml per spec: pool documents in turn, retimed to the spec."""
    from alerts.science.coinc import parse_coinc

    coincs = {spec.index: retimed_coinc(pool[spec.index % len(pool)], spec.gpstime) for spec in specs}
    first = specs[0]
    parsed = parse_coinc(coincs[first.index]).gpstime
    if abs(parsed - first.gpstime) > 1e-6:
        raise BenchmarkError(f"retimed coinc reads back {parsed}, expected {first.gpstime}")
    return coincs


# --- Scratch database ------------------------------------------------------------


class ScratchDatabase:
    """A fresh, migrated database beside the configured one, for the duration.

    ``default`` points at it inside the ``with`` block (as Django's test
    runner does), ``flush()`` empties it, and it is dropped on exit unless
    ``keep``. SQLite gets a temporary file instead.
    """

    def __init__(self, name=DEFAULT_BENCH_DB, keep=False):
        self.name, self.keep = name, keep
        self.settings_dict = connection.settings_dict
        self.vendor = connection.vendor
        self.original_name = self.settings_dict["NAME"]
        self.tmpdir = None

    def __enter__(self):
        connections.close_all()
        if self.vendor == "postgresql":
            if self.name == self.original_name:
                raise BenchmarkError(f"the scratch database {self.name!r} is the configured one; "
                                     f"choose another --bench-db, it is dropped afterwards")
            self._drop()
            self._admin(f'CREATE DATABASE "{self.name}"')
            target = self.name
        else:
            self.tmpdir = tempfile.mkdtemp(prefix="orchestrator-bench-db-")
            target = os.path.join(self.tmpdir, "bench.sqlite3")
        self.settings_dict["NAME"] = target
        try:
            call_command("migrate", verbosity=0, interactive=False)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def flush(self):
        call_command("flush", verbosity=0, interactive=False)
        connections.close_all()

    def __exit__(self, *exc):
        connections.close_all()
        self.settings_dict["NAME"] = self.original_name
        if self.keep:
            return
        if self.vendor == "postgresql":
            self._drop()
        elif self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _drop(self):
        self._admin(f'DROP DATABASE IF EXISTS "{self.name}"')

    def _admin(self, sql):
        import psycopg

        params = self.settings_dict
        with psycopg.connect(dbname="postgres", host=params.get("HOST") or None, port=params.get("PORT") or None,
                             user=params.get("USER") or None, password=params.get("PASSWORD") or None,
                             autocommit=True) as admin:
            admin.execute(sql)

    @property
    def description(self):
        if self.vendor == "postgresql":
            return f"PostgreSQL database {self.name!r} on {self.settings_dict.get('HOST') or 'localhost'}"
        return "SQLite file in a temporary directory"


@contextlib.contextmanager
def manager_handlers_only():
    """Only the superevent manager's EVENT_CREATED subscription stays registered.

    Yields the (kind, path) subscriptions set aside for the duration.
    """
    registry = handlers._subscribers
    saved = {kind: list(paths) for kind, paths in registry.items()}
    manager = f"{process_event.__module__}.{process_event.__qualname__}"
    set_aside = [(kind, path) for kind, paths in saved.items() for path in paths
                 if (kind, path) != (handlers.EVENT_CREATED, manager)]
    registry.clear()
    registry[handlers.EVENT_CREATED] = [manager]
    try:
        yield set_aside
    finally:
        registry.clear()
        registry.update(saved)


# --- Runs ------------------------------------------------------------------------


def precreate_events(specs):
    """Bulk-insert Event rows for ``specs``; returns {spec.index: pk}."""
    Event.objects.bulk_create(
        [Event(graceid=spec.graceid, category=Category.PRODUCTION, group="CBC", pipeline=spec.pipeline,
               search="AllSky", gpstime=spec.gpstime, far=spec.far, snr=spec.snr,
               instruments=",".join(spec.instruments)) for spec in specs],
        batch_size=1000,
    )
    pks = dict(Event.objects.values_list("graceid", "pk"))
    return {spec.index: pks[spec.graceid] for spec in specs}


def _backend_pid():
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _process_cpu_s(pid):
    """CPU seconds (user + system) of a local process, or None if not visible."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _worker(index, share, prepare, work, barrier, results, profile_path):
    outcome = {"worker": index, "error": None}
    try:
        connections.close_all()  # never use a connection inherited from the parent
        connection.ensure_connection()
        backend = _backend_pid()
        if prepare is not None:
            prepare(share)
        barrier.wait(BARRIER_TIMEOUT_S)
        profiler = cProfile.Profile() if profile_path else None
        db_cpu = _process_cpu_s(backend)
        cpu = time.process_time()
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        for item in share:
            work(item)
        if profiler:
            profiler.disable()
        finished = time.perf_counter()
        cpu = time.process_time() - cpu
        db_cpu_after = _process_cpu_s(backend)
        outcome.update(started=started, finished=finished, count=len(share), cpu=cpu,
                       db_cpu=None if db_cpu is None or db_cpu_after is None else db_cpu_after - db_cpu)
        if profiler:
            profiler.dump_stats(profile_path)
    except BaseException:
        outcome["error"] = traceback.format_exc()
        barrier.abort()
    finally:
        connections.close_all()
        results.put(outcome)


def race(shares, work, prepare=None, profile_path=None):
    """Run ``work(item)`` over each share in its own process.

    Returns the seconds from the barrier to the last finish, the workers' CPU
    seconds and their database backends' CPU seconds (None if unknown).

    With ``profile_path``, worker 0 runs under cProfile and dumps its stats there.
    """
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(len(shares)), context.Queue()
    connections.close_all()  # children must not inherit an open connection
    processes = [
        context.Process(target=_worker, args=(index, share, prepare, work, barrier, results,
                                              profile_path if index == 0 else None))
        for index, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    outcomes = []
    try:
        for _ in processes:
            outcomes.append(results.get(timeout=RUN_TIMEOUT_S))
    except queue.Empty:
        raise BenchmarkError(f"workers did not finish within {RUN_TIMEOUT_S} s") from None
    finally:
        for process in processes:
            process.join(BARRIER_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    errors = [o for o in outcomes if o["error"] and "BrokenBarrierError" not in o["error"]]
    errors = errors or [o for o in outcomes if o["error"]]
    if errors:
        raise BenchmarkError(f"worker {errors[0]['worker']} failed:\n{errors[0]['error']}")
    if any(process.exitcode != 0 for process in processes):
        raise BenchmarkError(f"worker exit codes {[p.exitcode for p in processes]}")
    db_cpu = [o["db_cpu"] for o in outcomes]
    return (max(o["finished"] for o in outcomes) - min(o["started"] for o in outcomes),
            sum(o["cpu"] for o in outcomes), None if None in db_cpu else sum(db_cpu))


def _warm_upload(share):
    from alerts.science.coinc import parse_coinc

    if share:
        parse_coinc(share[0][1])


def _upload(item):
    pipeline, coinc = item
    create_event(group="CBC", pipeline=pipeline, search="AllSky", coinc=coinc, files=[])


def _live(spec):
    create_event(group="CBC", pipeline=spec.pipeline, search="AllSky",
                 attributes={"gpstime": spec.gpstime, "far": spec.far, "snr": spec.snr,
                             "instruments": list(spec.instruments)})


def run_path(path, specs, workers, coincs=None, profile_path=None):
    """One timed run of ``path`` ("manager", "live" or "upload") on the (empty) database."""
    shares = split(specs, workers)
    if path == "manager":
        pks = precreate_events(specs)
        seconds, cpu, db_cpu = race([[pks[spec.index] for spec in share] for share in shares], process_event,
                                    profile_path=profile_path)
    elif path == "live":
        seconds, cpu, db_cpu = race(shares, _live, profile_path=profile_path)
    else:
        seconds, cpu, db_cpu = race([[(spec.pipeline, coincs[spec.index]) for spec in share] for share in shares], _upload,
                       prepare=_warm_upload, profile_path=profile_path)
    return RunResult(path=path, workers=workers, events=len(specs),
                     superevents=Superevent.objects.count(), seconds=seconds, worker_cpu_s=cpu, db_cpu_s=db_cpu)


# --- Checks ----------------------------------------------------------------------


def verify(specs, start_gps=DEFAULT_START_GPS, spacing=SOURCE_SPACING_S):
    """What is wrong with the superevents made from ``specs`` (empty list: all good)."""
    problems = []
    expected = Counter(spec.source for spec in specs)

    def source_of(gpstime):
        return int((gpstime - start_gps) // spacing)

    events = list(Event.objects.all())
    if len(events) != len(specs):
        problems.append(f"{len(events)} events stored, {len(specs)} sent")
    ungrouped = [e.graceid for e in events if e.superevent_id is None]
    if ungrouped:
        problems.append(f"{len(ungrouped)} events not grouped, e.g. {ungrouped[:5]}")
    pending = [e.graceid for e in events if not e.grouping_done]
    if pending:
        problems.append(f"{len(pending)} events not marked done by the manager, e.g. {pending[:5]}")
    runs = Counter(StepRun.objects.filter(step="superevent_manager", status=StepRun.Status.SUCCEEDED)
                   .values_list("event_id", flat=True))
    unrecorded = [e.graceid for e in events if runs[e.pk] != 1]
    if unrecorded:
        problems.append(f"{len(unrecorded)} events without exactly one succeeded manager step run, "
                        f"e.g. {unrecorded[:5]}")
    superevents = {s.pk: s for s in Superevent.objects.all()}
    if len(superevents) != len(expected):
        problems.append(f"{len(superevents)} superevents, expected {len(expected)} (one per source)")
    members = defaultdict(list)
    for event in events:
        members[event.superevent_id].append(event)
    seen_sources = Counter()
    for pk, superevent in superevents.items():
        group = members.get(pk, [])
        sources = {source_of(e.gpstime) for e in group}
        if len(sources) != 1:
            problems.append(f"{superevent} holds detections of sources {sorted(sources)}")
            continue
        (source,) = sources
        seen_sources[source] += 1
        if len(group) != expected[source]:
            problems.append(f"{superevent} holds {len(group)} of the {expected[source]} detections of source {source}")
        outside = [e.graceid for e in group if not superevent.t_start <= e.gpstime <= superevent.t_end]
        if outside:
            problems.append(f"{superevent} window [{superevent.t_start}, {superevent.t_end}] misses {outside}")
        preferred = next((e for e in group if e.pk == superevent.preferred_event_id), None)
        if preferred is None:
            problems.append(f"{superevent} prefers an event it does not hold")
            continue
        policy = settings.ORCHESTRATOR
        best = max(rules.preference_key(candidate_of(e, []), policy) for e in group)
        if rules.preference_key(candidate_of(preferred, []), policy) != best:
            problems.append(f"{superevent} prefers {preferred.graceid}, not first in the preference order")
        if (superevent.t_0, superevent.far) != (preferred.gpstime, preferred.far):
            problems.append(f"{superevent} t_0/far differ from its preferred event's")
    split_sources = [source for source, count in seen_sources.items() if count > 1]
    if split_sources:
        problems.append(f"sources split over several superevents: {split_sources[:10]}")
    ordered = sorted(superevents.values(), key=lambda s: (s.category, s.t_start))
    for earlier, later in zip(ordered, ordered[1:]):
        if earlier.category == later.category and earlier.t_end >= later.t_start:
            problems.append(f"{earlier} [{earlier.t_start}, {earlier.t_end}] overlaps "
                            f"{later} [{later.t_start}, {later.t_end}]")
    ids = [s.superevent_id for s in superevents.values()]
    if len(set(ids)) != len(ids):
        problems.append("duplicate superevent IDs")
    indices = defaultdict(list)
    for superevent in superevents.values():
        indices[(superevent.category, superevent.date)].append(superevent.day_index)
    for (category, date), values in indices.items():
        if sorted(values) != list(range(len(values))):
            problems.append(f"{category} {date}: day indices are not 0..{len(values) - 1}")
    for superevent in superevents.values():
        if superevent.superevent_id != rules.superevent_id(superevent.category, superevent.date,
                                                           superevent.day_index):
            problems.append(f"{superevent} does not match its date and day index")
            break
    return problems


# --- Query counts ----------------------------------------------------------------


def _kind_of(sql):
    words = sql.lstrip().split(None, 2)
    head = words[0].upper() if words else ""
    if "pg_advisory" in sql:
        return "advisory lock"
    if head == "SELECT" and "FOR UPDATE" in sql.upper():
        return "SELECT FOR UPDATE"
    if head in {"SAVEPOINT", "RELEASE"}:
        return "SAVEPOINT/RELEASE"
    return head


def count_queries(path, specs, coincs=None):
    """Queries per event in a single-process run over ``specs`` (empty database)."""
    ordered = sorted(specs, key=lambda spec: spec.gpstime)
    pks = precreate_events(ordered) if path == "manager" else None
    captured, creating, joining = [], [], []
    seen_sources = set()
    for spec in ordered:
        with CaptureQueriesContext(connection) as context:
            if path == "manager":
                process_event(pks[spec.index])
            elif path == "live":
                _live(spec)
            else:
                _upload((spec.pipeline, coincs[spec.index]))
        queries = [q["sql"] for q in context.captured_queries]
        captured.append(queries)
        (joining if spec.source in seen_sources else creating).append(len(queries))
        seen_sources.add(spec.source)
    kinds = Counter(_kind_of(sql) for queries in captured for sql in queries)
    total = sum(len(queries) for queries in captured)
    example = next((captured[i] for i, spec in enumerate(ordered) if i and spec.source == ordered[i - 1].source),
                   captured[0])
    return QueryCount(path=path, events=len(ordered), per_event=total / len(ordered),
                      creating=sum(creating) / max(len(creating), 1), joining=sum(joining) / max(len(joining), 1),
                      kinds={kind: count / len(ordered) for kind, count in kinds.most_common()},
                      example_sql=example)


# --- Report ----------------------------------------------------------------------

COLUMNS = ("path", "workers", "events", "superevents", "seconds", "events/s", "target", "check",
           "cpu ms/event (worker+db)", "cpu-bound events/s")


def target_text(result):
    if result.workers != TARGET_WORKERS:
        return "-"
    if result.path in TARGETS:
        goal = TARGETS[result.path]
        return f">={goal:.0f} {'met' if result.rate >= goal else 'MISSED'}"
    if result.path in STRETCH_GOALS:
        goal = STRETCH_GOALS[result.path]
        return f"stretch >={goal:.0f} {'met' if result.rate >= goal else 'not met'}"
    return "-"


def cpu_text(result):
    worker = 1000 * result.worker_cpu_s / result.events
    if result.db_cpu_s is None:
        return f"{worker:.1f}+?"
    return f"{worker:.1f}+{1000 * result.db_cpu_s / result.events:.1f}"


def cpu_bound_text(result):
    """Rate if CPU were the only limit: min(workers, CPUs) cores for worker + database CPU."""
    if result.db_cpu_s is None:
        return "?"
    cores = min(result.workers, os.cpu_count() or 1)
    return f"{cores * result.events / (result.worker_cpu_s + result.db_cpu_s):.0f}"


def format_table(results):
    rows = [COLUMNS] + [
        (PATH_TITLES[r.path], str(r.workers), str(r.events), str(r.superevents), f"{r.seconds:.2f}",
         f"{r.rate:.0f}", target_text(r), r.check, cpu_text(r), cpu_bound_text(r))
        for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def format_query_count(count, show_sql=False):
    kinds = ", ".join(f"{kind} {value:.1f}" for kind, value in count.kinds.items())
    text = (f"{PATH_TITLES[count.path]}: {count.per_event:.1f} queries/event over {count.events} events "
            f"(first of a source {count.creating:.1f}, later ones {count.joining:.1f}); per event: {kinds}")
    if show_sql:
        text += "\n  queries of one event joining a superevent:\n" + "\n".join(
            f"    {sql[:200]}" for sql in count.example_sql)
    return text


def profile_summary(path, top=PROFILE_TOP):
    out = io.StringIO()
    stats = pstats.Stats(path, stream=out)
    stats.strip_dirs().sort_stats("cumulative").print_stats(top)
    out.write("\n")
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


# --- Entry point -----------------------------------------------------------------


def run_benchmark(events=DEFAULT_EVENTS, per_source=DEFAULT_PER_SOURCE, workers=DEFAULT_WORKERS,
                  skip_upload=False, live_events=DEFAULT_LIVE_EVENTS, allow_sqlite=False, pool=DEFAULT_POOL, seed=DEFAULT_SEED,
                  bench_db=DEFAULT_BENCH_DB, keep_db=False, query_count=True, show_sql=False,
                  profile_dir=None, write=print):
    """Run every (path, workers) combination; returns the RunResults. Prints as it goes."""
    if connection.vendor == "sqlite" and not allow_sqlite:
        raise BenchmarkError(
            "DATABASE_URL points at SQLite; this benchmark targets PostgreSQL "
            "(e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/orchestrator). "
            "Pass --allow-sqlite to run it on SQLite anyway.")
    if connection.vendor not in {"postgresql", "sqlite"}:
        raise BenchmarkError(f"unsupported database {connection.vendor}")
    workers = sorted(set(workers))
    if not workers or workers[0] < 1:
        raise BenchmarkError("--workers must be positive numbers")
    if profile_dir:
        os.makedirs(profile_dir, exist_ok=True)
    specs = plan_workload(events, per_source, seed=seed)
    sources = len({spec.source for spec in specs})
    paths = ["manager"] + (["live"] if live_events > 0 else []) + ([] if skip_upload else ["upload"])
    live_specs = specs[:live_events]
    specs_of = {"live": live_specs}
    write(f"workload: {len(specs)} events over {sources} sources ({per_source} per source within "
          f"{SOURCE_SPREAD_S} s, sources {SOURCE_SPACING_S:.0f} s apart), workers {workers}")
    write(machine_line())
    write(f"manager alone: all events pending first (a backlog), drained in batches of up to {BATCH_SIZE}")
    if live_specs:
        write(f"manager live: the first {len(live_specs)} events, each created (create_event, no parsing) "
              f"and grouped in its own transaction as it arrives, as an upload does")
    coincs = None
    if not skip_upload:
        started = time.perf_counter()
        write(f"simulating {pool} coinc.xml with ligo.skymap (not timed) ...")
        documents = make_coinc_pool(pool, seed)
        write(f"retiming {len(specs)} copies with igwn-ligolw (not timed) ...")
        coincs = make_coincs(specs, documents)
        size = sum(map(len, coincs.values())) / len(coincs)
        write(f"  {time.perf_counter() - started:.1f} s; coinc.xml {size / 1024:.0f} KiB on average")

    results, counts = [], []
    media_root = tempfile.mkdtemp(prefix="orchestrator-bench-media-")
    inline = {**settings.ORCHESTRATOR, "TASKS_INLINE": True}
    try:
        with (ScratchDatabase(bench_db, keep=keep_db) as database,
              override_settings(DEBUG=False, MEDIA_ROOT=media_root, ORCHESTRATOR=inline),
              manager_handlers_only() as set_aside):
            write(f"database: {database.description} (migrated; flushed before each run)")
            if set_aside:
                write("not timed (subscriptions set aside): " + ", ".join(f"{k} -> {p}" for k, p in set_aside))
            for path in paths:
                for count in workers:
                    database.flush()
                    shutil.rmtree(media_root, ignore_errors=True)
                    os.makedirs(media_root)
                    profile_path = (os.path.join(profile_dir, f"{path}-{count}w-worker0.prof")
                                    if profile_dir else None)
                    run_specs = specs_of.get(path, specs)
                    result = run_path(path, run_specs, count, coincs=coincs, profile_path=profile_path)
                    result.profile = profile_path or ""
                    problems = verify(run_specs)
                    result.check = "ok" if not problems else "FAILED"
                    write(f"{PATH_TITLES[path]}, {count} worker(s): {result.rate:.0f} events/s "
                          f"({result.seconds:.2f} s), check {result.check}")
                    results.append(result)
                    if problems:
                        write(format_table(results))
                        raise BenchmarkError(
                            f"{PATH_TITLES[path]} with {count} worker(s) made wrong superevents:\n  "
                            + "\n  ".join(problems[:20]))
            if query_count:
                sample = [spec for spec in specs if spec.source < DRY_RUN_SOURCES]
                for path in paths:
                    database.flush()
                    shutil.rmtree(media_root, ignore_errors=True)
                    os.makedirs(media_root)
                    counts.append(count_queries(path, sample, coincs))
                    problems = verify(sample)
                    if problems:
                        raise BenchmarkError(f"dry run of {PATH_TITLES[path]} made wrong superevents: {problems}")
                connections.close_all()
    finally:
        shutil.rmtree(media_root, ignore_errors=True)

    write("")
    write(format_table(results))
    write(f"(load average {os.getloadavg()[0]:.1f} at the end; other processes on this machine slow the "
          f"wall-clock figures, the CPU columns much less)")
    if counts:
        write("")
        write("queries per event (single process, DEBUG cursor):")
        for count in counts:
            write("  " + format_query_count(count, show_sql=show_sql))
    if profile_dir:
        for result in results:
            if result.profile:
                write(f"\nprofile of worker 0, {PATH_TITLES[result.path]}, {result.workers} worker(s) "
                      f"({result.profile}):")
                write(profile_summary(result.profile))
    return results, counts
