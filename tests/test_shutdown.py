"""A stop (SIGTERM) ends the worker cluster within 10 s even in the middle of
BAYESTAR, and the cut-off localization runs again at the next start."""
import os
import time

import pytest

from alerts import delivery, liveness, workers
from alerts.annotations import LOCALIZE_TASK
from alerts.events import PSD_FILENAME, create_event
from alerts.models import Event, File, Log, NoticeDelivery, RunningTask
from alerts.science.localization import MULTIORDER_FILENAME
from tests import cluster
from tests.cluster import start_cluster, wait_for
from tests.factories import T0, make_event
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.test_delivery import (ALL_FORMATS, EXTENSIONS, consume, content, kafka,  # noqa: F401 (fixtures)
                                 payload_of, skymap_bytes, superevent)
from tests.worker_probe import FIRED_LABEL

pytestmark = pytest.mark.django_db(transaction=True)

# The issue's bound on a stop.
STOP_LIMIT_S = 10
BNS_INDEX = 3
SLOW_PROBE = "tests.worker_probe.slow_probe"
MARK_FIRED = "tests.worker_probe.mark_fired"
# The real one: superevent_manager_only holds back workers.enqueue's other tasks.
enqueue = workers.enqueue


def stop_cluster(process):
    """SIGTERM; returns how long the cluster took to exit."""
    return cluster.stop_cluster(process, STOP_LIMIT_S * 3)


def test_a_stop_in_the_middle_of_bayestar_is_quick_and_loses_nothing(
        mock_events, superevent_manager_only, worker_env, settings):  # noqa: F811
    mock = mock_events[BNS_INDEX]
    event = create_event(group="CBC", pipeline="pycbc", search="AllSky", coinc=mock.coinc_xml,
                         files=[(PSD_FILENAME, mock.psd_xml_gz)])
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}
    worker_env["Q_STOP_GRACE_S"] = "0.5"  # BAYESTAR surely outlasts it
    first = start_cluster(worker_env)
    try:
        enqueue(LOCALIZE_TASK, event.pk)
        try:
            wait_for(lambda: RunningTask.objects.filter(func=LOCALIZE_TASK).exists(),
                     "BAYESTAR running", first)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{first.output.text()[-3000:]}") from None
        time.sleep(1)
    finally:
        took = stop_cluster(first)
    assert took < STOP_LIMIT_S, first.output.text()[-3000:]
    assert "stopped in" in first.output.text()
    assert not File.objects.filter(event=event, name=MULTIORDER_FILENAME).exists()
    assert list(RunningTask.objects.values_list("func", "args")) == [
        (LOCALIZE_TASK, [event.pk])]

    second = start_cluster(worker_env)
    try:
        wait_for(lambda: File.objects.filter(event=event, name=MULTIORDER_FILENAME).exists(), "the sky map", second)
        assert "running again 1 task(s)" in second.output.text()
    finally:
        took = stop_cluster(second)
    assert took < STOP_LIMIT_S, second.output.text()[-3000:]
    assert File.objects.filter(event=event, name=MULTIORDER_FILENAME).count() == 1
    # (the sky map's plots, queued after it, may be cut off in turn: they run at the next start)
    assert not RunningTask.objects.filter(func=LOCALIZE_TASK).exists()


# --- a stop in the middle of a delivery ----------------------------------------

BLOCKED_FORMAT = "avro"
# Far above the test's waits: a delivery sent at the next start was released
# by the stop, not taken over after its claim expired.
LONG_CLAIM_TIMEOUT_S = 600


def test_a_stop_in_the_middle_of_a_delivery_sends_each_notice_once(
        superevent, content, kafka, worker_env, settings, tmp_path):  # noqa: F811
    """The worker is stopped while writing the notice's Avro file to the
    outbox (a FIFO stands at its name, so the write blocks); the Kafka message
    went out before. The stop releases the cut claim, and the next start
    sends the rest at once: one file per format, one Kafka message."""
    outbox = tmp_path / "outbox"
    kafka = {**kafka, "formats": ["json"], "roles": ["observation", "test"]}
    settings.ORCHESTRATOR = {
        **settings.ORCHESTRATOR, "TASKS_INLINE": False,
        "DELIVERY_RETRY": {**settings.ORCHESTRATOR["DELIVERY_RETRY"], "claim_timeout_s": LONG_CLAIM_TIMEOUT_S},
        # Kafka first: its message is sent before the blocked outbox file.
        "NOTICE_DESTINATIONS": [kafka, {"name": "outbox", "transport": "outbox", "formats": ALL_FORMATS,
                                        "roles": ["observation", "test"], "directory": str(outbox)}]}
    worker_env.update({
        "ORCHESTRATOR_OUTBOX_DIR": str(outbox), "ORCHESTRATOR_KAFKA_SERVERS": kafka["bootstrap_servers"],
        "ORCHESTRATOR_KAFKA_TOPIC": kafka["topic"], "ORCHESTRATOR_KAFKA_FORMATS": "json",
        "ORCHESTRATOR_DELIVERY_CLAIM_TIMEOUT_S": str(LONG_CLAIM_TIMEOUT_S),
        "Q_STOP_GRACE_S": "0.5", "Q_SLOW_WORKERS": "0"})
    notice = delivery.issue_notice(superevent, "preliminary-1", content())  # queued: no cluster yet
    folder = outbox / superevent.superevent_id
    folder.mkdir(parents=True)
    blocked = folder / f"{notice.identity}.{EXTENSIONS[BLOCKED_FORMAT]}"
    os.mkfifo(blocked)  # reading it (the outbox compares what is there) waits for a writer
    cut = NoticeDelivery.objects.get(notice=notice, destination="outbox", format=BLOCKED_FORMAT)

    first = start_cluster(worker_env)
    try:
        wait_for(lambda: NoticeDelivery.objects.filter(pk=cut.pk, status="sending").exists(),
                 "the blocked delivery", first)
        time.sleep(1)
    finally:
        took = stop_cluster(first)
    assert took < STOP_LIMIT_S, first.output.text()[-3000:]
    statuses = dict(NoticeDelivery.objects.filter(notice=notice, destination="outbox").values_list("format", "status"))
    # The cut claim released by the stop (the voevent file may have gone
    # out meanwhile: the start queued a second, concurrent deliver).
    assert (statuses["json"], statuses[BLOCKED_FORMAT]) == ("sent", "pending"), (
        statuses, NoticeDelivery.objects.get(pk=cut.pk).claim_token, first.output.text()[-3000:])
    assert NoticeDelivery.objects.get(notice=notice, destination="kafka").status == "sent"
    assert Log.objects.filter(superevent=superevent, message__contains="released (its worker process has ended)")

    blocked.unlink()
    second = start_cluster(worker_env)
    try:
        wait_for(lambda: not NoticeDelivery.objects.filter(notice=notice).exclude(status="sent").exists(),
                 "every delivery sent", second)
    finally:
        stop_cluster(second)
    cut.refresh_from_db()
    assert cut.attempts == 2
    files = sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))
    assert files == sorted(f"{notice.identity}.{EXTENSIONS[format]}" for format in ALL_FORMATS)
    for format in ALL_FORMATS:
        assert (folder / f"{notice.identity}.{EXTENSIONS[format]}").read_bytes() == payload_of(notice, format)
    [message] = consume(kafka, 1)  # and no second one
    assert message.key() == notice.identity.encode()


def token_of_an_ended_process():
    """The claim token a process made before it exited (it is reaped)."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(writer, liveness.process_token().encode())
        os._exit(0)
    os.close(writer)
    token = os.read(reader, 512).decode()
    os.close(reader)
    os.waitpid(pid, 0)
    return token


def test_only_claims_of_processes_certainly_ended_are_released(superevent, content):  # noqa: F811
    """What the stop and the start rely on: an ended process's claim goes
    back to 'pending'; a living one's, another machine's and an old-style
    token stay claimed until their timeout."""
    ended = token_of_an_ended_process()
    alive = liveness.process_token()
    host, pid, start, machine, nonce = alive.split(":")
    elsewhere = ":".join([host, pid, start, "0" * 12, nonce])
    tokens = {"json": ended, "avro": alive, "voevent": elsewhere}
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    NoticeDelivery.objects.filter(notice=notice).update(status="pending")
    for format, token in tokens.items():
        NoticeDelivery.objects.filter(notice=notice, format=format).update(status="sending", claim_token=token)
    assert liveness.holder_is_dead(ended) and not liveness.holder_is_dead(alive)
    assert not liveness.holder_is_dead(elsewhere) and not liveness.holder_is_dead("vm:123:abcdef")

    assert delivery.release_dead_claims() == 1
    assert dict(NoticeDelivery.objects.filter(notice=notice).values_list("format", "status")) == {
        "json": "pending", "avro": "sending", "voevent": "sending"}


# --- tasks the cluster had taken but not started ----------------------------------

HOLD_S = 120  # the probe that keeps the only worker busy: far longer than the test waits


def test_tasks_taken_ahead_of_a_free_worker_survive_a_forced_stop(worker_env, settings):
    """With Redis, django-q2's pusher takes tasks off the broker before a
    worker is free (up to queue_limit): one worker, busy with a long task,
    and two more tasks taken off Redis. A forced stop must not lose those
    two; the next start runs each once."""
    from django_q.brokers import get_broker

    busy, *waiting = [make_event(far=1e-3, gpstime=T0 + 10 * index) for index in range(3)]  # no superevent
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}
    worker_env.update({"Q_WORKERS": "1", "Q_SLOW_WORKERS": "0", "Q_STOP_GRACE_S": "0.5"})
    broker = get_broker()
    assert broker.__class__.__name__ == ("RecordingRedis" if os.environ.get("REDIS_URL") else "ORM")
    first = start_cluster(worker_env)
    try:
        enqueue(SLOW_PROBE, busy.pk, HOLD_S)
        wait_for(lambda: RunningTask.objects.filter(func=SLOW_PROBE).exists(), "the long task", first)
        for event in waiting:
            enqueue(MARK_FIRED, event.pk, "now")
        if os.environ.get("REDIS_URL"):
            wait_for(lambda: broker.queue_size() == 0, "the cluster to take both tasks", first)
        wait_for(lambda: RunningTask.objects.count() == 3, "the taken tasks recorded", first)
    finally:
        took = stop_cluster(first)
    assert took < STOP_LIMIT_S, first.output.text()[-3000:]
    assert not Event.objects.filter(labels__name=FIRED_LABEL).exists()
    assert sorted(RunningTask.objects.values_list("func", flat=True)) == sorted([MARK_FIRED, MARK_FIRED, SLOW_PROBE])

    worker_env["Q_WORKERS"] = "2"  # one for the long task's rerun, one for the others
    second = start_cluster(worker_env)
    try:
        wait_for(lambda: Event.objects.filter(labels__name=FIRED_LABEL).count() == len(waiting),
                 "the taken tasks to run", second)
        assert "running again 3 task(s)" in second.output.text()
    finally:
        stop_cluster(second)
    for event in waiting:
        assert event.logs.filter(message__startswith="probe fired").count() == 1
