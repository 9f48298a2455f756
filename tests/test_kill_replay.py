"""Kill test: the worker cluster (workers, timer, slow cluster: its whole
process group) is killed with SIGKILL at random moments while superevents
arrive and are alerted, and started again each time. At the end every
superevent that should have alerts has each exactly once, in the outbox and
on the Kafka topic (librdkafka's mock cluster), and none has more.

Each kill lands on a cluster at work (it has run tasks since its start),
at a random moment after that. The events come already annotated
(``tests.annotated``: no BAYESTAR, no READY labels and no wait for them),
and a short settle time, clean-up delay and claim timeouts (deployment
settings) keep it bounded. Before the fix it stands for, the superevents cut
off missed notices: tasks taken off Redis by a killed cluster were lost, and
tasks left on the queue by an earlier run acted on this run's rows.
"""
import json
import random
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from django.conf import settings

from alerts.models import Notice, NoticeDelivery, Superevent
from tests.annotated import annotated_event
from tests.cluster import kill_cluster, start_cluster, stop_cluster, wait_for
from tests.factories import T0
from tests.kafka import KAFKA_WAIT_S
from tests.test_listen import broker  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

SUPEREVENTS = 50
INSIGNIFICANT_EVERY = 5  # every 5th superevent forms but is not significant: no alert
KILLS_DURING_UPLOADS = 5
KILLS_AFTER_UPLOADS = 2
UPLOAD_PAUSE_S = (0.05, 0.4)
# A kill comes this long after the restarted cluster ran its first task.
KILL_AFTER_WORK_S = (0.0, 2.0)
PAUSE_BEFORE_LATE_KILL_S = (1.0, 4.0)
# Generous (a loaded machine): the usual run settles well within it.
SETTLE_LIMIT_S = 300
# Short, so a pass cut off by a kill is taken over soon after the restart.
CLAIM_TIMEOUT_S = 4.0


def kafka_keys(broker, topic):  # noqa: F811
    """Every message key on ``topic``: each partition read from its start to its end."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=KAFKA_WAIT_S).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=KAFKA_WAIT_S)[1]
                for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        keys, left = [], sum(ends.values())
        deadline = time.monotonic() + KAFKA_WAIT_S
        while left and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() or message.offset() >= ends[message.partition()]:
                continue
            keys.append(message.key().decode())
            left -= 1
        assert not left, f"{left} message(s) on {topic} could not be read"
    finally:
        consumer.close()
    return keys


def kill_at_work(process, rng):
    """SIGKILL once the cluster has run a task, at a random moment after."""
    wait_for(lambda: "Processed" in process.output.text(), "the cluster to run a task", process)
    time.sleep(rng.uniform(*KILL_AFTER_WORK_S))
    kill_cluster(process)


def expected_reasons(index):
    return [] if index % INSIGNIFICANT_EVERY == INSIGNIFICANT_EVERY - 1 else ["preliminary-1", "preliminary-2"]


def reasons_by_superevent(superevent_ids):
    notices = Notice.objects.select_related("superevent")
    return {sid: sorted(n.reason for n in notices if n.superevent.superevent_id == sid) for sid in superevent_ids}


def test_killing_the_workers_at_random_loses_and_duplicates_no_notice(worker_env, broker, tmp_path):  # noqa: F811
    rng = random.Random(15)
    outbox, topic = tmp_path / "outbox", f"kill-test-{uuid.uuid4().hex[:8]}"
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False, "PRELIMINARY_ALERTS": True}
    worker_env.update({
        "Q_WORKERS": "2", "Q_SLOW_WORKERS": "0", "ORCHESTRATOR_LOG_LEVEL": "WARNING",
        "ORCHESTRATOR_PRELIMINARY_ALERTS": "1", "ORCHESTRATOR_TIMEOUT_S": "0.5",
        "ORCHESTRATOR_SECOND_PRELIMINARY": "1", "ORCHESTRATOR_PRELIMINARY_CLEANUP_DELAY_S": "1",
        "ORCHESTRATOR_ANNOTATION_MAX_WAIT_S": "0",
        "ORCHESTRATOR_OUTBOX_DIR": str(outbox), "ORCHESTRATOR_DETCHAR_FRAME_GLOB": "",
        "ORCHESTRATOR_KAFKA_SERVERS": broker, "ORCHESTRATOR_KAFKA_TOPIC": topic,
        "ORCHESTRATOR_DELIVERY_CLAIM_TIMEOUT_S": str(CLAIM_TIMEOUT_S),
        "ORCHESTRATOR_POLICY": json.dumps({"VETTING": {"claim_timeout_s": CLAIM_TIMEOUT_S}}),
    })
    kill_after = set(rng.sample(range(1, SUPEREVENTS), KILLS_DURING_UPLOADS))
    kills, began = 0, time.monotonic()
    process = start_cluster(worker_env)
    try:
        events = []
        for index in range(SUPEREVENTS):
            far = 1e-4 if not expected_reasons(index) else 1e-12  # 1e-4 Hz: a superevent, no alert
            events.append(annotated_event(labels=(), gpstime=T0 + 100 * index, far=far))
            time.sleep(rng.uniform(*UPLOAD_PAUSE_S))
            if index in kill_after:
                kill_at_work(process, rng)
                kills += 1
                process = start_cluster(worker_env)
        for _ in range(KILLS_AFTER_UPLOADS):  # while the backlog is worked off
            time.sleep(rng.uniform(*PAUSE_BEFORE_LATE_KILL_S))
            kill_at_work(process, rng)
            kills += 1
            process = start_cluster(worker_env)

        superevents = [Superevent.objects.get(pk=event.superevent_id) for event in events]
        want = {s.superevent_id: expected_reasons(i) for i, s in enumerate(superevents)}

        def delivered():
            notices = Notice.objects.select_related("superevent")
            files = all((outbox / n.superevent.superevent_id / f"{n.identity}.json").exists() for n in notices)
            unsent = NoticeDelivery.objects.exclude(status=NoticeDelivery.Status.SENT).exists()
            return reasons_by_superevent(want) == want and files and not unsent

        deadline = time.monotonic() + SETTLE_LIMIT_S
        while not delivered() and time.monotonic() < deadline:
            assert process.poll() is None, process.output.text()[-3000:]
            time.sleep(0.5)
        keys = Counter(kafka_keys(broker, topic))
    finally:
        stop_cluster(process)

    have = reasons_by_superevent(want)
    missing = {sid: reasons for sid, reasons in want.items() if have[sid] != reasons}
    assert not missing, f"expected {missing}, have {[have[sid] for sid in missing]}"
    notices = list(Notice.objects.all())
    on_disk = sorted(path.name for path in outbox.glob("*/*.json"))
    assert on_disk == sorted(f"{n.identity}.json" for n in notices)
    assert keys == Counter({n.identity: 1 for n in notices}), f"Kafka duplicates or losses: {keys}"
    expected = sum(len(reasons) for reasons in want.values())
    print(f"\nkill test: {kills} SIGKILLs of the worker cluster, {SUPEREVENTS} superevents, {expected} notices "
          f"expected and found once each in the outbox and on Kafka ({len(notices)} notices, "
          f"{sum(keys.values())} Kafka messages), {time.monotonic() - began:.0f} s")
