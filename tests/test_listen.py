"""``manage.py listen``: IGWN Alert messages from Kafka (librdkafka's mock
cluster stands in for the broker), applied as ``ingest`` applies them.

Messages are written with hop-client, as GraceDB's igwn-alert publisher
writes them, on GraceDB's topic names.
"""
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from alerts import listen, listen_worker
from alerts.models import Event, Label, Log, Rejection
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.kafka import mock_kafka_cluster, publish
from tests.test_ingest import label_added, log_message, message, new_event

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker():
    """A one-broker mock Kafka cluster living in this process: host:port."""
    with mock_kafka_cluster() as bootstrap:
        yield bootstrap


def conf_for(broker, group, kinds=("cbc_gstlal",)):
    return {"broker": broker, "group": group, "kinds": list(kinds), "consumer_group": uuid.uuid4().hex,
            "progress_interval_s": 0.0, "log_interval_s": 10.0}


def test_topic_names_and_url_follow_gracedb():
    assert listen.topic_names("gracedb-test", ["superevent", "cbc_gstlal"]) == [
        "gracedb-test.superevent", "gracedb-test.cbc_gstlal"]
    assert listen.kafka_url("kafka.scimma.org", ["a.b", "a.c"], "user-1") == "kafka://user-1@kafka.scimma.org/a.b,a.c"


@pytest.mark.usefixtures("superevent_manager_only")
def test_messages_from_kafka_are_applied_like_ingest_and_repeats_change_nothing(broker, mock_events):
    source = mock_events[1]
    group = f"gracedb-{uuid.uuid4().hex[:6]}"
    # Every message carries the whole event (``object``), as GraceDB's do, so
    # their order across partitions does not matter.
    obj = new_event("G500100", source)["object"]
    stream = [new_event("G500100", source), label_added("G500100", "EMBRIGHT_READY", obj=obj),
              log_message("G500100", 1, "hello from gstlal", obj=obj), b"not json at all",
              {"uid": "G500100", "alert_type": "explode"}]
    publish(broker, f"{group}.cbc_gstlal", stream)
    progress_lines = []
    listener = listen.Listener(conf_for(broker, group), on_progress=lambda p, lag: progress_lines.append(lag))
    progress = listener.run(max_messages=len(stream))
    assert (progress.applied, progress.rejected) == (3, 2)
    event = Event.objects.get(graceid="G500100")
    assert event.superevent is not None  # the manager grouped it
    assert event.label_names() == {"EMBRIGHT_READY"}
    assert Log.objects.filter(event=event, message="hello from gstlal").count() == 1
    reasons = list(Rejection.objects.values_list("reason", flat=True))
    assert any("not a JSON message" in reason for reason in reasons)
    assert any("unknown event alert_type 'explode'" in reason for reason in reasons)
    assert progress_lines, "the progress line was never reported"

    # The same messages again (a redelivery): nothing new.
    publish(broker, f"{group}.cbc_gstlal", stream[:3])
    again = listen.Listener(conf_for(broker, group)).run(max_messages=len(stream) + 3)
    assert again.applied == 6  # a fresh consumer group reads the whole topic again
    assert Event.objects.count() == 1
    assert Label.objects.filter(event=event).count() == 1
    assert Log.objects.filter(event=event, message="hello from gstlal").count() == 1


def publish_by_uid(broker, topic, messages):
    """Publish with the uid as the Kafka key, so one uid's messages share a
    partition: Kafka keeps order within a partition only, and that is the
    order the listener must keep too."""
    from hop import Stream

    with Stream(auth=False).open(f"kafka://{broker}/{topic}", "w", automatic_offload=False) as producer:
        for item in messages:
            producer.write(item, key=item["uid"].encode())


def ordered_stream(graceids, source):
    """Per event: created, a label added, removed and another added, five
    numbered logs; a uid's messages only give the right end state in order."""
    stream = []
    for graceid in graceids:
        obj = new_event(graceid, source)["object"]
        stream += [new_event(graceid, source), label_added(graceid, "DQV", obj=obj),
                   message(graceid, "label_removed", data={"name": "DQV"}, obj=obj),
                   label_added(graceid, "DQOK", obj=obj)]
        stream += [log_message(graceid, number, f"log {number} of {graceid}", obj=obj) for number in range(1, 6)]
    return stream


def assert_applied_in_order(graceids):
    for graceid in graceids:
        event = Event.objects.get(graceid=graceid)
        assert event.label_names() == {"DQOK"}, graceid
        logs = list(Log.objects.filter(event=event, message__startswith="log ").order_by("pk")
                    .values_list("message", flat=True))
        assert logs == [f"log {number} of {graceid}" for number in range(1, 6)], graceid


@pytest.mark.usefixtures("superevent_manager_only")
def test_worker_processes_keep_each_uids_messages_in_order_and_record_a_bad_one(broker, mock_events):
    """--workers 2: two forked processes apply the batches, split by uid; a
    bad message inside a batch is recorded and the rest of it applied."""
    source = mock_events[1]
    group = f"gracedb-{uuid.uuid4().hex[:6]}"
    graceids = [f"G71{index:04d}" for index in range(12)]
    stream = ordered_stream(graceids, source)
    stream.insert(len(stream) // 2, {"uid": graceids[3], "alert_type": "explode"})
    publish_by_uid(broker, f"{group}.cbc_gstlal", stream)
    pids = set()
    listener = listen.Listener(conf_for(broker, group), workers=2,
                               on_progress=lambda progress, lag: pids.update(listener._pool.pids))
    progress = listener.run(max_messages=len(stream))
    assert (progress.applied, progress.rejected) == (len(stream) - 1, 1)
    assert len(pids) == 2 and os.getpid() not in pids
    assert_applied_in_order(graceids)
    assert list(Rejection.objects.values_list("reason", flat=True)) == [
        f"{graceids[3]}: unknown event alert_type 'explode'"]
    assert listener._pool is None  # the workers were stopped with the listener


@pytest.mark.usefixtures("superevent_manager_only")
def test_a_dead_worker_process_stores_no_offset_and_its_batch_is_read_again(broker, mock_events, monkeypatch,
                                                                            tmp_path, caplog):
    """A worker process killed while it holds a part: the listener stores no
    offset of that batch, replaces its workers, reopens the stream and
    applies everything, each message once in effect."""
    source = mock_events[1]
    group = f"gracedb-{uuid.uuid4().hex[:6]}"
    graceids = [f"G72{index:04d}" for index in range(12)]
    stream = ordered_stream(graceids, source)
    publish_by_uid(broker, f"{group}.cbc_gstlal", stream)
    died = tmp_path / "died"
    apply_part = listen.apply_part

    def dies_once(part):  # runs in the forked worker processes
        if not died.exists() and any(item.get("uid") == graceids[5] for item in part):
            died.write_text(str(os.getpid()))
            os._exit(9)
        return apply_part(part)

    monkeypatch.setattr(listen, "apply_part", dies_once)
    expected_logs = 5 * len(graceids)

    def stop_when_all_applied(progress, lag):
        if (Log.objects.filter(message__startswith="log ").count() >= expected_logs
                and Label.objects.filter(name="DQOK").count() == len(graceids)):
            listener.stop()

    listener = listen.Listener(conf_for(broker, group), workers=2, on_progress=stop_when_all_applied)
    timer = threading.Timer(240.0, listener.stop)
    timer.start()
    try:
        progress = listener.run()
    finally:
        timer.cancel()
    assert died.exists(), "no worker died; the test proves nothing"
    assert int(died.read_text()) != os.getpid()
    assert any("died" in record.getMessage() for record in caplog.records if record.name == "alerts.listen")
    assert progress.applied >= len(stream)
    assert_applied_in_order(graceids)
    assert Log.objects.filter(message__startswith="log ").count() == expected_logs
    assert not Rejection.objects.exists(), list(Rejection.objects.values_list("reason", flat=True))


def test_a_worker_pool_answers_in_order_and_reports_a_death():
    """The pipes: a part's answer comes back from the worker it went to, and
    a worker that is gone raises WorkerFailed rather than hanging."""
    pool = listen_worker.WorkerPool(2)
    try:
        pool.send(0, [b"not json"])
        pool.send(1, [])
        assert pool.receive(0)[0][0] is False
        assert pool.receive(1) == []
        os.kill(pool.pids[1], signal.SIGKILL)
        with pytest.raises(listen_worker.WorkerFailed, match="died|gone"):
            pool.send(1, [])
            pool.receive(1)
    finally:
        pool.close()
    assert Rejection.objects.filter(reason__startswith="not a JSON message").count() == 1


def test_an_unreachable_broker_is_logged_once_per_interval_and_never_crashes(caplog):
    closed_port = "127.0.0.1:9"  # discard port: nothing listens
    conf = {**conf_for(closed_port, "gracedb"), "log_interval_s": 60.0}
    listener = listen.Listener(conf)
    threading.Timer(12.0, listener.stop).start()
    started = time.monotonic()
    progress = listener.run()
    assert time.monotonic() - started < 30
    assert (progress.applied, progress.rejected) == (0, 0)
    warnings = [record for record in caplog.records if record.name == "alerts.listen"]
    assert len(warnings) == 1, [record.getMessage() for record in warnings]


def listen_process(broker, group, consumer_group, env):
    return subprocess.Popen(
        [sys.executable, "manage.py", "listen", "--broker", broker, "--group", group,
         "--topics", "cbc_gstlal", "--consumer-group", consumer_group],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {Log.objects.filter(message__startswith='log ').count()} "
                         f"logs, {Label.objects.filter(name='DQOK').count()} labels")


def test_a_listener_killed_mid_stream_loses_nothing_and_duplicates_nothing(broker, mock_events, worker_env):
    """SIGKILL while messages flow, then a restart with the same consumer
    group: every message is applied exactly once in effect."""
    source = mock_events[1]
    group = f"gracedb-{uuid.uuid4().hex[:6]}"
    events = [f"G6{index:05d}" for index in range(20)]
    stream = [new_event(graceid, source) for graceid in events]
    objects = {graceid: new_event(graceid, source)["object"] for graceid in events}
    stream += [log_message(graceid, number, f"log {number} of {graceid}", obj=objects[graceid])
               for graceid in events for number in range(1, 11)]
    stream += [label_added(graceid, "DQOK", obj=objects[graceid]) for graceid in events]
    env = {**worker_env, "ORCHESTRATOR_PRELIMINARY_ALERTS": "0", "IGWN_ALERT_PROGRESS_INTERVAL_S": "1"}
    consumer_group = uuid.uuid4().hex
    publish(broker, f"{group}.cbc_gstlal", stream)

    first = listen_process(broker, group, consumer_group, env)
    try:
        wait_for(lambda: Log.objects.filter(message__startswith="log ").count() >= 40, 120, "some messages applied")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    applied_before = Log.objects.filter(message__startswith="log ").count()
    assert applied_before < 200, "the listener finished before it could be killed; the test proves nothing"

    second = listen_process(broker, group, consumer_group, env)
    try:
        # Partitions are read in no set order: wait for the last of every kind.
        wait_for(lambda: Label.objects.filter(name="DQOK").count() == len(events)
                 and Log.objects.filter(message__startswith="log ").count() >= 10 * len(events),
                 300, "all messages applied (the restarted listener first waits out the killed one's "
                      "group session, 45 s)")
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=20)
    finally:
        second.kill()
    assert second.returncode == 0, output
    assert "stopped:" in output
    assert Event.objects.filter(graceid__in=events).count() == len(events)
    assert not Rejection.objects.exists(), list(Rejection.objects.values_list("reason", flat=True))
    for graceid in events:
        messages = list(Log.objects.filter(event__graceid=graceid, message__startswith="log ")
                        .values_list("message", flat=True))
        assert sorted(messages) == sorted(f"log {number} of {graceid}" for number in range(1, 11))
    assert not Rejection.objects.exists()
