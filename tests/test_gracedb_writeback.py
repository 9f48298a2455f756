"""Write-back to the source GraceDB (a second instance of this server plays
it): the orchestrator's own log messages go back once, what came from
GraceDB does not, and a GraceDB that answers 503 for a while delays
downloads and write-backs but loses and duplicates nothing."""
import time
import urllib.parse

import pytest
from django.db import connections, transaction

from alerts import gracedb_writeback, ingest, store, workers
from alerts.models import DelayedTask, Event, File, Log, WriteBack
from alerts.vocabulary import EM_BRIGHT_FILENAME, EM_BRIGHT_TAG, SKY_LOC_TAG
from tests.gracedb_remote import FlakyProxy, pipeline_client
from tests.racing import race
from tests.test_gracedb_source import no_credential_lookup, remote_gracedb  # noqa: F401 (fixtures)
from tests.test_ingest import log_message, message

pytestmark = pytest.mark.django_db(transaction=True)

GRACEDB_TASKS = ("alerts.gracedb_writeback.", "alerts.gracedb_source.")
# Fast retries: the outage test waits through a few of them.
FAST_RETRY = {"initial_s": 0.05, "factor": 2.0, "max_attempts": 8}
OUTAGE_DEADLINE_S = 60


@pytest.fixture
def gracedb_tasks_only(monkeypatch):
    """Run the GraceDB download and write-back tasks inline once their
    transaction commits; hold every other task (annotations, grouping...),
    which has its own tests. Returns the held (path, args)."""
    held = []

    def enqueue(task, *args, delay_s=0.0):
        path = workers.task_path(task)
        if path.startswith(GRACEDB_TASKS):
            transaction.on_commit(lambda: workers.resolve(path)(*args))
        else:
            transaction.on_commit(lambda: held.append((path, args)))

    monkeypatch.setattr(workers, "enqueue", enqueue)
    return held


def remote_event(api, user, password, mock):
    pipeline = pipeline_client(api, user, password)
    created = pipeline.create_event("CBC", mock.pipeline, "coinc.xml", filecontents=mock.coinc_xml,
                                    search="AllSky").json()
    return pipeline, created


def use_remote(settings, api, user, password, **extra):
    settings.GRACEDB = {**settings.GRACEDB, "url": api, "username": user, "password": password,
                        "write_back": True, **extra}


def remote_logs(pipeline, graceid, key):
    """The remote log messages written for ``key`` (the remote's audit record
    of a comment quotes it; that one is not counted)."""
    return [entry for entry in pipeline.logs(graceid).json()["log"] if entry["comment"].endswith(f" [{key}]")]


def test_own_log_messages_are_written_back_once_and_those_from_gracedb_never(
        remote_gracedb, mock_events, settings, gracedb_tasks_only, no_credential_lookup):  # noqa: F811
    api, user, password = remote_gracedb
    pipeline, created = remote_event(api, user, password, mock_events[0])
    graceid = created["graceid"]
    use_remote(settings, api, user, password)
    ingest.apply_message(message(graceid, "new", data=created, obj=created))
    event = Event.objects.get(graceid=graceid)

    # What came from GraceDB: a pipeline's log message, an update, a label.
    ingest.apply_message(log_message(graceid, 7, "hello from the pipeline", obj=created))
    ingest.apply_message(message(graceid, "update", obj={**created, "far": created["far"] / 2}))
    ingest.apply_message(message(graceid, "label_added", data={"name": "DQOK"}, obj=created))
    # The orchestrator's own: a log message (one tag GraceDB's, one not) and a label.
    own = store.log(event, "BAYESTAR skipped: no PSD yet", tags=["annotation", SKY_LOC_TAG])
    store.add_label(event, "EMBRIGHT_READY")

    key = f"log:{own.pk}"
    label_log = Log.objects.get(event=event, message="Label added: EMBRIGHT_READY")
    written = dict(WriteBack.objects.values_list("key", "state"))
    assert written == {key: "done", f"label:{event.labels.get(name='EMBRIGHT_READY').pk}": "done"}, written
    assert f"log:{label_log.pk}" not in written
    landed = remote_logs(pipeline, graceid, key)
    assert [entry["comment"] for entry in landed] == [f"BAYESTAR skipped: no PSD yet [{key}]"]
    assert SKY_LOC_TAG in landed[0]["tag_names"] and "annotation" not in landed[0]["tag_names"]
    comments = [entry["comment"] for entry in pipeline.logs(graceid).json()["log"]]
    assert not any("hello from the pipeline" in c or c.startswith("Updated:") for c in comments), comments

    # A task that died after the remote write, before marking it done: run
    # again, it finds its write in the remote log and writes nothing more.
    WriteBack.objects.filter(key=key).update(state="pending", attempts=1)
    gracedb_writeback.write_back(key)
    assert WriteBack.objects.get(key=key).state == "done"
    assert len(remote_logs(pipeline, graceid, key)) == 1
    # A repeated task after success writes nothing either.
    gracedb_writeback.write_back(key)
    assert len(remote_logs(pipeline, graceid, key)) == 1

    # GraceDB announces our write: an echo, not news; nor is it written back again.
    logs_before = Log.objects.filter(event=event).count()
    outcome = ingest.apply_message(log_message(graceid, landed[0]["N"], landed[0]["comment"],
                                               tags=landed[0]["tag_names"], obj=created))
    assert outcome == f"{graceid}: our own write-back {key} (not recorded again)"
    assert Log.objects.filter(event=event).count() == logs_before
    # Another orchestrator's key is news.
    ingest.apply_message(log_message(graceid, 99, "someone else's note [log:999999]", obj=created))
    assert Log.objects.filter(event=event, message="someone else's note [log:999999]").exists()
    assert set(WriteBack.objects.values_list("key", flat=True)) == set(written)


def race_write_back(key, barrier, failures):
    connections.close_all()  # never share the parent's connection
    try:
        barrier.wait()
        gracedb_writeback.write_back(key)
    except Exception as error:  # noqa: BLE001 - reported to the parent
        failures.put(repr(error))
    finally:
        connections.close_all()


def test_racing_workers_write_a_log_message_back_once(
        remote_gracedb, mock_events, settings, gracedb_tasks_only, no_credential_lookup):  # noqa: F811
    api, user, password = remote_gracedb
    pipeline, created = remote_event(api, user, password, mock_events[1])
    graceid = created["graceid"]
    ingest.apply_message(message(graceid, "new", data=created, obj=created))
    own = store.log(Event.objects.get(graceid=graceid), "written by three workers at once")  # write-back off here
    use_remote(settings, api, user, password)
    key = f"log:{own.pk}"

    race(race_write_back, key)

    assert WriteBack.objects.get(key=key).state == "done"
    assert len(remote_logs(pipeline, graceid, key)) == 1


def run_delayed_tasks_until(done, what):
    """Fire due DelayedTask rows as the timer does (``fire_due_tasks``)
    until ``done()``; the hand-off runs the GraceDB tasks inline."""
    deadline = time.monotonic() + OUTAGE_DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, f"{what}: not done after {OUTAGE_DEADLINE_S} s"
        workers.fire_due_tasks()
        time.sleep(0.02)


def test_a_gracedb_answering_503_for_a_while_delays_downloads_and_write_backs_but_loses_nothing(
        remote_gracedb, mock_events, settings, monkeypatch, no_credential_lookup):  # noqa: F811
    api, user, password = remote_gracedb
    mock = mock_events[2]
    pipeline, created = remote_event(api, user, password, mock)
    graceid = created["graceid"]
    pipeline.write_log(graceid, "PSD", filename="psd.xml.gz", filecontents=mock.psd_xml_gz, tag_name=["psd"])
    upstream = urllib.parse.urlsplit(api)

    # Queued tasks, as with a worker cluster: a retry waits in a DelayedTask
    # row; the hand-off to django-q2 runs the GraceDB tasks here and holds the rest.
    held = []
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}

    def hand_over(path, args):
        if path.startswith(GRACEDB_TASKS):
            workers.resolve(path)(*args)
        else:
            held.append((path, args))

    monkeypatch.setattr(workers, "_hand_to_django_q", hand_over)

    with FlakyProxy((upstream.hostname, upstream.port)) as proxy:
        use_remote(settings, proxy.url, user, password, retry=FAST_RETRY)
        ingest.apply_message(message(graceid, "new", data=created, obj=created))
        event = Event.objects.get(graceid=graceid)

        # The announced psd.xml.gz (and the coinc.xml it needs) while GraceDB answers 503.
        proxy.fail_next(4)
        ingest.apply_message(log_message(graceid, 2, "PSD", filename="psd.xml.gz", file_version=0,
                                         tags=["psd"], obj=created))
        assert proxy.unavailable() >= 1 and not File.objects.filter(event=event, name="psd.xml.gz").exists()
        assert DelayedTask.objects.filter(fired__isnull=True).exists(), "the retry waits in a DelayedTask row"
        run_delayed_tasks_until(lambda: File.objects.filter(event=event, name="psd.xml.gz").exists(), "download")
        assert proxy.unavailable() == 4
        assert [(f.name, f.version) for f in File.objects.filter(event=event).order_by("name")] == [
            ("coinc.xml", 1), ("psd.xml.gz", 1)]
        assert File.objects.get(event=event, name="psd.xml.gz").read() == mock.psd_xml_gz
        assert Log.objects.filter(event=event, message__contains="trying again").count() >= 1
        run_delayed_tasks_until(lambda: not DelayedTask.objects.filter(fired__isnull=True).exists(), "retries")
        assert File.objects.filter(event=event, name__in=["coinc.xml", "psd.xml.gz"]).count() == 2

        # Write-backs for a while: a product and a log message. The first
        # file upload reaches GraceDB but its answer is a 503 (lost).
        proxy.fail_for(1.0, lose=("POST",))
        unavailable = proxy.unavailable()
        product = store.add_file(event, EM_BRIGHT_FILENAME, b'{"HasNS": 0.0, "HasRemnant": 0.0}',
                                 tags=[EM_BRIGHT_TAG])
        note = store.log(event, "em_bright computed from the template masses", tags=[EM_BRIGHT_TAG])
        keys = [f"file:{product.pk}", f"log:{note.pk}"]
        assert proxy.unavailable() > unavailable and set(
            WriteBack.objects.filter(key__in=keys).values_list("state", flat=True)) == {"pending"}
        run_delayed_tasks_until(lambda: WriteBack.objects.filter(key__in=keys, state="done").count() == 2,
                                "write-back")
        assert [row.attempts > 1 for row in WriteBack.objects.filter(key__in=keys)] == [True, True]

    # Each landed once: one file version, one log message.
    remote_files = set(pipeline.files(graceid).json())
    assert f"{EM_BRIGHT_FILENAME},0" in remote_files and f"{EM_BRIGHT_FILENAME},1" not in remote_files
    assert len(remote_logs(pipeline, graceid, keys[0])) == 1
    assert [entry["comment"] for entry in remote_logs(pipeline, graceid, keys[1])] == [
        f"em_bright computed from the template masses [{keys[1]}]"]
    assert not WriteBack.objects.exclude(state="done").exists()
