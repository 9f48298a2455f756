"""Notices are issued once per (superevent, reason), validated before
anything is sent, delivered once per destination and format (repeated
messages, handlers running twice, workers racing), retried with backoff, and
resent under the same identity when a worker dies between the broker's
acknowledgement and the database record (librdkafka's mock cluster stands in
for the broker)."""
import dataclasses
import datetime
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict

import fastavro
import numpy as np
import pytest
from astropy.table import Table
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from ligo.skymap.io.fits import write_sky_map
from lxml import etree

from alerts import delivery, handlers, transports, workers
from alerts.models import Log, Notice, NoticeDelivery, NoticePayload, StepRun
from alerts.science.notices import NoticeContent, NoticeValidationError, validate_json_notice
from alerts.science.voevent import validate_voevent
from tests.factories import make_event
from tests.racing import JOIN_S, race, record_send

pytestmark = pytest.mark.django_db(transaction=True)

ALL_FORMATS = ["json", "avro", "voevent"]
EXTENSIONS = {"json": "json", "avro": "avro", "voevent": "xml"}
VOEVENT_NS = {"voe": "http://www.ivoa.net/xml/VOEvent/v2.0"}
HEALPIX_BASE_PIXELS = 12
ORDER_ZERO_FIRST_UNIQ = 4
# The counting transport holds each send this long, so racing workers
# overlap for certain.
RACE_SEND_S = 0.3
RACE_CLAIM_S = 0.2
KAFKA_WAIT_S = 30
RETRY = {"initial_s": 0.5, "factor": 3.0, "max_delay_s": 60.0, "max_attempts": 3, "claim_timeout_s": 60.0}


# --- fixtures and helpers ----------------------------------------------------


@pytest.fixture(autouse=True)
def outbox(settings, tmp_path):
    """A private outbox as the only destination, and quick retries."""
    directory = tmp_path / "outbox"
    settings.ORCHESTRATOR = {
        **settings.ORCHESTRATOR,
        "NOTICE_DESTINATIONS": [{"name": "outbox", "transport": "outbox", "formats": ALL_FORMATS,
                                 "directory": str(directory)}],
        "DELIVERY_RETRY": dict(RETRY),
    }
    return directory


def use_destinations(settings, *destinations):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "NOTICE_DESTINATIONS": list(destinations)}


@pytest.fixture(scope="module")
def skymap_bytes():
    table = Table({
        "UNIQ": np.arange(ORDER_ZERO_FIRST_UNIQ, ORDER_ZERO_FIRST_UNIQ + HEALPIX_BASE_PIXELS, dtype=np.int64),
        "PROBDENSITY": np.full(HEALPIX_BASE_PIXELS, 1 / (4 * np.pi)),
    })
    buffer = io.BytesIO()
    write_sky_map(buffer, table, moc=True)
    return buffer.getvalue()


@pytest.fixture
def superevent(monkeypatch):
    """A superevent of one event, made with only the superevent manager
    subscribed: the workflow's own handlers (which issue notices) stay out,
    so every notice seen here is the test's own."""
    manager_only = defaultdict(list, {
        kind: [path for path in paths if path.startswith("alerts.superevents.")]
        for kind, paths in handlers._subscribers.items()})
    monkeypatch.setattr(handlers, "_subscribers", manager_only)
    event = make_event()
    event.refresh_from_db()
    assert event.superevent is not None
    return event.superevent


@pytest.fixture
def content(superevent, skymap_bytes):
    """NoticeContent for the superevent; the serial is filled in by issue_notice."""
    def make(alert_type="PRELIMINARY", **overrides):
        sid = superevent.superevent_id
        if alert_type == "RETRACTION":
            values = dict(time_created="2019-04-25T09:00:00Z")
        else:
            values = dict(
                time_created="2019-04-25T08:20:00Z", event_time_gps=superevent.t_0, far=superevent.far,
                significant=True, instruments=["H1", "L1"], group="CBC", pipeline="gstlal", search="AllSky",
                properties={"HasNS": 0.9, "HasRemnant": 0.5, "HasMassGap": 0.0},
                classification={"BNS": 0.9, "NSBH": 0.05, "BBH": 0.0, "Terrestrial": 0.05},
                skymap=skymap_bytes, skymap_filename="bayestar.multiorder.fits,0",
                skymap_url=f"https://example.org/api/superevents/{sid}/files/bayestar.multiorder.fits,0")
        values.update(urls={"gracedb": f"https://example.org/superevents/{sid}/view/"})
        values.update(overrides)
        return NoticeContent(alert_type=alert_type, superevent_id=sid, serial=0, **values)
    return make


@pytest.fixture
def sends(monkeypatch):
    """Counts transport sends (in this process) and passes them on."""
    calls = []
    real_send = transports.send

    def counting_send(destination, identity, format, payload, **kwargs):
        calls.append((destination["name"], identity, format, bytes(payload)))
        return real_send(destination, identity, format, payload, **kwargs)

    monkeypatch.setattr(transports, "send", counting_send)
    return calls


@pytest.fixture
def held(monkeypatch):
    """Tasks are recorded instead of run: issue_notice then sends nothing, so
    a test (or its worker processes) can run deliver itself."""
    queued = []
    monkeypatch.setattr(workers, "enqueue",
                        lambda path, *args, delay_s=0.0: queued.append((workers.task_path(path), args, delay_s)))
    return queued


def payload_of(notice, format):
    return bytes(NoticePayload.objects.get(notice=notice, format=format).content)


def outbox_files(directory):
    return sorted(path for path in directory.rglob("*") if path.is_file()) if directory.exists() else []


def superevent_logs(superevent):
    return list(Log.objects.filter(superevent=superevent).values_list("message", flat=True))


def ivorn_of(xml_bytes):
    return etree.fromstring(xml_bytes).get("ivorn")


# --- issuing and the outbox ------------------------------------------------------


def test_issue_notice_sends_every_format_to_the_outbox(superevent, content, outbox):
    sid = superevent.superevent_id
    notice = delivery.issue_notice(superevent, "preliminary-1", content())

    assert (notice.serial, notice.identity, notice.reason) == (1, f"{sid}-1-Preliminary", "preliminary-1")
    assert notice.alert_type == "PRELIMINARY" and notice.role == "observation"
    for format in ALL_FORMATS:
        path = outbox / sid / f"{notice.identity}.{EXTENSIONS[format]}"
        assert path.read_bytes() == payload_of(notice, format)
    document = json.loads(payload_of(notice, "json"))
    validate_json_notice(document)
    assert document["superevent_id"] == sid and document["event"]["instruments"] == ["H1", "L1"]
    [record] = list(fastavro.reader(io.BytesIO(payload_of(notice, "avro"))))
    assert record["alert_type"] == "PRELIMINARY" and record["event"]["skymap"].startswith(b"SIMPLE")
    validate_voevent(payload_of(notice, "voevent"))
    assert ivorn_of(payload_of(notice, "voevent")) == f"ivo://gwnet/LVC#{notice.identity}"

    deliveries = NoticeDelivery.objects.filter(notice=notice)
    assert sorted(d.format for d in deliveries) == sorted(ALL_FORMATS)
    assert all(d.status == "sent" and d.attempts == 1 and d.sent_at and d.destination == "outbox"
               for d in deliveries)
    assert StepRun.objects.filter(step="deliver_notice", superevent=superevent, status="succeeded").count() == 1
    logs = superevent_logs(superevent)
    assert any("issued" in line and notice.identity in line for line in logs)
    assert sum(f"Notice {notice.identity} sent to outbox/" in line for line in logs) == 3

    second = delivery.issue_notice(superevent, "preliminary-2", lambda serial: dataclasses.replace(
        content(), serial=serial, time_created="2019-04-25T08:25:00Z"))
    assert (second.serial, second.identity) == (2, f"{sid}-2-Preliminary")

    retraction = delivery.issue_notice(superevent, "retraction", content("RETRACTION"))
    assert (retraction.serial, retraction.identity) == (3, f"{sid}-3-Retraction")
    document = json.loads((outbox / sid / f"{retraction.identity}.json").read_bytes())
    validate_json_notice(document)
    assert document["alert_type"] == "RETRACTION" and document["event"] is None
    assert ivorn_of((outbox / sid / f"{retraction.identity}.xml").read_bytes()).endswith("-3-Retraction")
    assert len(outbox_files(outbox)) == 9


def test_a_repeated_message_or_handler_sends_nothing_new(superevent, content, outbox, sends):
    first = delivery.issue_notice(superevent, "preliminary-1", content())
    # The same handler again (a repeated message), with content that would
    # differ if it were rebuilt: the first notice stands, nothing is resent.
    again = delivery.issue_notice(superevent, "preliminary-1", content(time_created="2019-04-25T08:30:00Z"))
    delivery.issue_notice(superevent, "preliminary-1", lambda serial: pytest.fail("content built twice"))
    delivery.deliver(first.pk)  # a queued deliver task running twice

    assert again.pk == first.pk
    assert Notice.objects.filter(superevent=superevent).count() == 1
    assert NoticeDelivery.objects.filter(notice=first).count() == 3
    assert sorted(format for _, _, format, _ in sends) == sorted(ALL_FORMATS)
    assert len(outbox_files(outbox)) == 3
    assert set(NoticeDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}
    with pytest.raises(ValueError, match="issued as PRELIMINARY"):
        delivery.issue_notice(superevent, "preliminary-1", content("INITIAL"))


def test_an_invalid_notice_is_never_recorded_or_sent(superevent, content, outbox, sends):
    bad = content(classification={"BNS": 1.5, "NSBH": 0.0, "BBH": 0.0, "Terrestrial": 0.0})
    with pytest.raises(NoticeValidationError, match="outside"):
        delivery.issue_notice(superevent, "preliminary-1", bad)

    assert not Notice.objects.exists() and not NoticePayload.objects.exists()
    assert not NoticeDelivery.objects.exists()
    assert sends == [] and outbox_files(outbox) == []
    [line] = [line for line in superevent_logs(superevent) if "NOT issued" in line]
    assert "preliminary-1" in line and "outside [0, 1]" in line
    # The reason is still free: a valid notice for it goes out normally.
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    assert notice.serial == 1 and len(sends) == 3


def test_outbox_resend_is_idempotent_and_never_overwrites_another_notice(tmp_path):
    destination = {"name": "outbox", "transport": "outbox", "directory": str(tmp_path)}
    kwargs = dict(superevent_id="S190425a", serial=1)
    first = transports.send(destination, "S190425a-1-Preliminary", "voevent", b"<a/>", **kwargs)
    again = transports.send(destination, "S190425a-1-Preliminary", "voevent", b"<a/>", **kwargs)
    assert first == again == tmp_path / "S190425a" / "S190425a-1-Preliminary.xml"
    assert first.read_bytes() == b"<a/>" and len(outbox_files(tmp_path)) == 1
    with pytest.raises(transports.PermanentTransportError, match="different notice"):
        transports.send(destination, "S190425a-1-Preliminary", "voevent", b"<b/>", **kwargs)
    assert first.read_bytes() == b"<a/>"


# --- roles: which destination takes which notices ------------------------------------


def outbox_destination(tmp_path, name, formats=ALL_FORMATS, **extra):
    return {"name": name, "transport": "outbox", "formats": list(formats), "directory": str(tmp_path / name),
            **extra}


def test_a_destination_gets_only_the_roles_it_takes(settings, superevent, content, tmp_path, sends):
    public = outbox_destination(tmp_path, "public")  # no "roles": observation notices only
    rehearsal = outbox_destination(tmp_path, "rehearsal", ["voevent"], roles=["observation", "test"])
    use_destinations(settings, public, rehearsal)

    mock = delivery.issue_notice(superevent, "preliminary-1", content(role="test"))
    assert mock.role == "test"
    assert list(NoticeDelivery.objects.filter(notice=mock).values_list("destination", "format")) == [
        ("rehearsal", "voevent")]
    assert [(name, format) for name, _, format, _ in sends] == [("rehearsal", "voevent")]
    assert outbox_files(tmp_path / "public") == []
    [xml] = outbox_files(tmp_path / "rehearsal")
    assert etree.fromstring(xml.read_bytes()).get("role") == "test"
    assert any(mock.identity in line and "not to public, which take no test notices" in line
               for line in superevent_logs(superevent))

    real = delivery.issue_notice(superevent, "preliminary-2", lambda serial: dataclasses.replace(
        content(), serial=serial, time_created="2019-04-25T08:25:00Z"))
    assert sorted(NoticeDelivery.objects.filter(notice=real).values_list("destination", flat=True)) == [
        "public", "public", "public", "rehearsal"]
    assert len(outbox_files(tmp_path / "public")) == 3


def test_a_destination_whose_roles_narrowed_after_issuing_refuses_the_notice(settings, superevent, content,
                                                                             tmp_path, held):
    rehearsal = outbox_destination(tmp_path, "rehearsal", roles=["test", "observation"])
    use_destinations(settings, rehearsal)
    notice = delivery.issue_notice(superevent, "preliminary-1", content(role="test"))
    use_destinations(settings, {**rehearsal, "roles": ["observation"]})
    delivery.deliver(notice.pk)
    assert set(NoticeDelivery.objects.values_list("status", "attempts")) == {("failed", 1)}
    assert "takes no test notices" in NoticeDelivery.objects.first().last_error
    assert outbox_files(tmp_path / "rehearsal") == []


@pytest.mark.parametrize("roles", [["public"], [], "observation"])
def test_bad_roles_stop_issuing(settings, superevent, content, tmp_path, roles):
    use_destinations(settings, outbox_destination(tmp_path, "outbox", roles=roles))
    with pytest.raises(ImproperlyConfigured, match="roles"):
        delivery.issue_notice(superevent, "preliminary-1", content())
    assert not Notice.objects.exists()


# --- the vetting task delivers locally; the network is the queued task's ---------------


def test_local_only_delivery_leaves_networked_destinations_to_the_queued_task(settings, superevent, content,
                                                                             outbox, held, monkeypatch):
    network = []
    monkeypatch.setitem(transports.TRANSPORTS, "kafka", lambda destination, identity, format, payload, **kwargs:
                        network.append((identity, format)))
    monkeypatch.delitem(transports.SEND_MARKS, "kafka")  # no broker to read back either
    use_destinations(settings, settings.ORCHESTRATOR["NOTICE_DESTINATIONS"][0],
                     {"name": "kafka", "transport": "kafka", "formats": ["json"], "bootstrap_servers": "unused:9092"})
    notice = delivery.issue_notice(superevent, "preliminary-1", content())

    def statuses():
        return dict(((d.destination, d.format), d.status) for d in NoticeDelivery.objects.filter(notice=notice))

    delivery.deliver(notice.pk, local_only=True)
    assert statuses() == {("outbox", "json"): "sent", ("outbox", "avro"): "sent", ("outbox", "voevent"): "sent",
                          ("kafka", "json"): "pending"}
    assert network == [] and len(outbox_files(outbox)) == 3
    delivery.deliver(notice.pk, local_only=True)  # nothing local left: nothing happens
    assert network == []
    delivery.deliver(notice.pk)  # the task issue_notice queued
    assert network == [(notice.identity, "json")]
    assert set(statuses().values()) == {"sent"}


# --- workers racing ------------------------------------------------------------


def race_deliver(notice_pk, record, barrier, failures):
    """One racing worker: send through a transport that records every send in
    a file shared by the processes."""
    connections.close_all()  # never share the parent's connection
    real_send = transports.send

    def recording_send(destination, identity, format, payload, **kwargs):
        record_send(record, destination, identity, format)
        time.sleep(RACE_SEND_S)
        return real_send(destination, identity, format, payload, **kwargs)

    transports.send = recording_send
    # A slow worker between reading a delivery and writing its claim: the
    # gap that only a lock closes (save() is how a claim is written).
    real_save = NoticeDelivery.save

    def slow_save(self, *args, **kwargs):
        time.sleep(RACE_CLAIM_S)
        return real_save(self, *args, **kwargs)

    NoticeDelivery.save = slow_save
    barrier.wait()
    try:
        delivery.deliver(notice_pk)
    except Exception as error:  # reported to the parent, which fails the test
        failures.put(f"{type(error).__name__}: {error}")
    finally:
        connections.close_all()


def run_racers(notice_pk, record):
    race(race_deliver, notice_pk, record)
    return record.read_text().splitlines() if record.exists() else []


def test_racing_workers_send_each_delivery_once(superevent, content, outbox, held, tmp_path):
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    assert held == [(delivery.DELIVER_TASK, (notice.pk,), 0.0)] and outbox_files(outbox) == []

    lines = run_racers(notice.pk, tmp_path / "sends.txt")

    sent = sorted(line.rsplit(" ", 1)[0] for line in lines)
    assert sent == sorted(f"outbox {notice.identity} {format}" for format in ALL_FORMATS)
    assert len({line.rsplit(" ", 1)[1] for line in lines}) > 1, "the work was not shared: no race happened"
    assert set(NoticeDelivery.objects.values_list("status", "attempts")) == {("sent", 1)}
    assert len(outbox_files(outbox)) == 3


def test_racing_workers_without_claims_would_send_twice(superevent, content, held, tmp_path, monkeypatch):
    """Control: the race test above catches a delivery picked without a lock."""
    def unlocked_claim(notice, token, exclude, names=None):
        candidate = NoticeDelivery.objects.filter(notice=notice, status="pending").exclude(
            pk__in=exclude).order_by("pk").first()
        if candidate is not None:
            candidate.status, candidate.claim_token = "sending", token
            candidate.attempts += 1
            candidate.save()
        return candidate

    monkeypatch.setattr(delivery, "_claim_next", unlocked_claim)
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    lines = run_racers(notice.pk, tmp_path / "sends.txt")
    assert len(lines) > len(ALL_FORMATS)


# --- Kafka, through librdkafka's mock cluster -------------------------------------


@pytest.fixture
def kafka():
    """A mock Kafka cluster living in this process (one broker), and a Kafka
    destination pointing at it with a fresh topic."""
    holder = Producer({"test.mock.num.brokers": 1})
    brokers = holder.list_topics(timeout=KAFKA_WAIT_S).brokers.values()
    servers = ",".join(f"{broker.host}:{broker.port}" for broker in brokers)
    destination = {"name": "kafka", "transport": "kafka", "formats": ALL_FORMATS, "bootstrap_servers": servers,
                   "topic": f"igwn.gwalert.{uuid.uuid4().hex[:8]}", "timeout_s": 10.0}
    yield destination
    transports._producers.clear()
    transports._consumers.clear()  # read-back consumers of this broker: it goes away
    del holder


def consume(destination, count):
    """The first ``count`` messages of the destination's topic, or fail."""
    topic = destination["topic"]
    consumer = Consumer({"bootstrap.servers": destination["bootstrap_servers"], "group.id": uuid.uuid4().hex,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=KAFKA_WAIT_S).topics[topic].partitions
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING) for partition in partitions])
        messages, deadline = [], time.monotonic() + KAFKA_WAIT_S
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None:
                assert message.error() is None, message.error()
                messages.append(message)
        # Nothing beyond what was expected.
        extra = consumer.poll(1.0)
        assert extra is None, f"unexpected message {extra.key()}"
    finally:
        consumer.close()
    assert len(messages) == count, f"{len(messages)} of {count} messages arrived"
    return sorted(messages, key=lambda message: (message.partition(), message.offset()))


def headers_of(message):
    return {name: value.decode() for name, value in message.headers()}


def test_kafka_delivers_the_stored_bytes_keyed_by_identity(settings, superevent, content, outbox, kafka):
    use_destinations(settings, settings.ORCHESTRATOR["NOTICE_DESTINATIONS"][0], kafka)
    notice = delivery.issue_notice(superevent, "preliminary-1", content())

    messages = consume(kafka, 3)
    by_format = {headers_of(message)["format"]: message for message in messages}
    assert sorted(by_format) == sorted(ALL_FORMATS)
    for format, message in by_format.items():
        assert message.key() == notice.identity.encode()
        assert message.value() == payload_of(notice, format)
        assert message.value() == (outbox / superevent.superevent_id /
                                   f"{notice.identity}.{EXTENSIONS[format]}").read_bytes()
        assert headers_of(message) == {"identity": notice.identity, "format": format, "serial": "1",
                                       "superevent_id": superevent.superevent_id,
                                       "content-type": transports.CONTENT_TYPES[format]}
    assert NoticeDelivery.objects.filter(status="sent").count() == 6
    # A repeated message puts nothing more on the topic.
    delivery.issue_notice(superevent, "preliminary-1", content())
    consume(kafka, 3)


def test_kafka_config_maps_the_credentials():
    destination = {"name": "gcn", "transport": "kafka", "bootstrap_servers": "kafka.example:9092",
                   "security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "user",
                   "sasl_password": "not-a-secret", "timeout_s": 3.0, "config": {"ssl.ca.location": "/etc/ca.pem"}}
    config = transports.kafka_config(destination)
    assert {name: config[name] for name in ("bootstrap.servers", "security.protocol", "sasl.mechanism",
                                            "sasl.username", "sasl.password", "message.timeout.ms",
                                            "ssl.ca.location", "client.id")} == {
        "bootstrap.servers": "kafka.example:9092", "security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN",
        "sasl.username": "user", "sasl.password": "not-a-secret", "message.timeout.ms": 3000,
        "ssl.ca.location": "/etc/ca.pem", "client.id": "gw-alert-orchestrator-gcn"}
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    default = transports.kafka_config({name: value for name, value in destination.items() if name != "sasl_mechanism"})
    assert default["sasl.mechanism"] == "SCRAM-SHA-512"
    plain = transports.kafka_config({"name": "local", "bootstrap_servers": "localhost:9092",
                                     "sasl_username": "ignored"})
    assert plain["security.protocol"] == "PLAINTEXT" and not any(name.startswith("sasl.") for name in plain)
    with pytest.raises(transports.PermanentTransportError, match="bootstrap_servers"):
        transports.kafka_config({"name": "nowhere"})


def test_kafka_credentials_from_the_environment_reach_librdkafka(tmp_path):
    """ORCHESTRATOR_KAFKA_* -> the settings' Kafka destination -> librdkafka
    options (settings are read once per process: a fresh one)."""
    code = ("import json, django; django.setup(); from django.conf import settings; from alerts import transports; "
            "[kafka] = [d for d in settings.ORCHESTRATOR['NOTICE_DESTINATIONS'] if d['transport'] == 'kafka']; "
            "print(json.dumps({'roles': kafka['roles'], 'config': transports.kafka_config(kafka)}))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "orchestrator_site.settings",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'unused.sqlite3'}",
           "ORCHESTRATOR_KAFKA_SERVERS": "kafka.example:9092", "ORCHESTRATOR_KAFKA_USERNAME": "user",
           "ORCHESTRATOR_KAFKA_PASSWORD": "not-a-secret", "ORCHESTRATOR_KAFKA_SASL_MECHANISM": "PLAIN",
           "ORCHESTRATOR_KAFKA_ROLES": "observation"}
    env.pop("ORCHESTRATOR_KAFKA_SECURITY_PROTOCOL", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=django_settings.BASE_DIR, capture_output=True,
                          text=True, timeout=JOIN_S)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["roles"] == ["observation"]
    config = found["config"]
    assert (config["bootstrap.servers"], config["security.protocol"], config["sasl.mechanism"],
            config["sasl.username"], config["sasl.password"]) == (
        "kafka.example:9092", "SASL_SSL", "PLAIN", "user", "not-a-secret")


def die_after_the_broker_accepts(notice_pk):
    """A worker killed after the broker acknowledged its first message and
    before the database recorded it as sent."""
    connections.close_all()
    real_send = transports.send

    def send_then_die(*args, **kwargs):
        real_send(*args, **kwargs)  # returns only once the broker acknowledged
        os.kill(os.getpid(), signal.SIGKILL)

    transports.send = send_then_die
    delivery.deliver(notice_pk)
    os._exit(3)  # not reached


def test_a_worker_killed_after_the_broker_accepted_sends_nothing_twice(settings, superevent, content, kafka, held):
    """The window no database closes: the broker has the message, the row
    still says 'sending'. The attempt that takes over reads the topic from the
    mark the first one recorded, finds the message and sends no copy."""
    use_destinations(settings, kafka)
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    first_delivery = NoticeDelivery.objects.filter(notice=notice).order_by("pk").first()

    context = multiprocessing.get_context("fork")
    connections.close_all()
    worker = context.Process(target=die_after_the_broker_accepts, args=(notice.pk,))
    worker.start()
    worker.join(JOIN_S)
    assert worker.exitcode == -signal.SIGKILL

    [accepted] = consume(kafka, 1)
    first_delivery.refresh_from_db()
    assert (first_delivery.status, first_delivery.attempts, first_delivery.sent_at) == ("sending", 1, None)
    assert headers_of(accepted)["format"] == first_delivery.format

    # Recovery before the dead worker's claim expires sends the other
    # formats but leaves the claimed one alone (its worker may be alive).
    delivery.deliver(notice.pk)
    first_delivery.refresh_from_db()
    assert first_delivery.status == "sending"
    assert NoticeDelivery.objects.filter(status="sent").count() == 2
    # Once the claim is older than the claim timeout, it is taken over.
    expired = datetime.timedelta(seconds=RETRY["claim_timeout_s"] + 1)
    NoticeDelivery.objects.filter(pk=first_delivery.pk).update(claimed_at=first_delivery.claimed_at - expired)
    delivery.deliver(notice.pk)

    first_delivery.refresh_from_db()
    assert (first_delivery.status, first_delivery.attempts) == ("sent", 2) and first_delivery.sent_at
    assert set(NoticeDelivery.objects.values_list("status", flat=True)) == {"sent"}
    messages = consume(kafka, 3)  # and no fourth: the taken-over format went out once
    assert sorted(headers_of(message)["format"] for message in messages) == sorted(ALL_FORMATS)
    [only] = [message for message in messages if headers_of(message)["format"] == first_delivery.format]
    assert only.key() == notice.identity.encode() and headers_of(only)["serial"] == "1"
    assert only.value() == payload_of(notice, first_delivery.format)
    assert set(first_delivery.send_mark) == {"topic", "ends"}
    voevent = next(message for message in messages if headers_of(message)["format"] == "voevent")
    assert ivorn_of(voevent.value()) == f"ivo://gwnet/LVC#{notice.identity}"
    logs = superevent_logs(superevent)
    assert any("expired" in line for line in logs)
    assert any(f"sent to kafka/{first_delivery.format} already" in line and "not sent again" in line for line in logs)


def test_a_send_that_never_reached_the_broker_is_made_by_the_next_attempt(settings, superevent, content, kafka,
                                                                          failing, held):
    """The other side of check-before-send: an attempt that failed before the
    broker had the message leaves nothing on the topic, so the retry sends it."""
    use_destinations(settings, {**kafka, "formats": ["json"]})
    failing[0] = 1
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    delivery.deliver(notice.pk)  # the task issue_notice queued: its send fails
    [row] = NoticeDelivery.objects.filter(notice=notice)
    assert (row.status, row.attempts) == ("pending", 1) and row.send_mark is not None
    delivery.deliver(notice.pk)  # the retry
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 2)
    [message] = consume(kafka, 1)
    assert message.key() == notice.identity.encode()


# --- retries -------------------------------------------------------------------------


@pytest.fixture
def failing(monkeypatch):
    """A transport that fails the first ``failures[0]`` sends."""
    failures = [0]
    calls = []
    real_send = transports.send

    def flaky_send(*args, **kwargs):
        calls.append(args[2])
        if len(calls) <= failures[0]:
            raise transports.TransportError(f"broker unreachable (call {len(calls)})")
        return real_send(*args, **kwargs)

    monkeypatch.setattr(transports, "send", flaky_send)
    return failures


@pytest.fixture
def delays(monkeypatch):
    """Delays of the tasks queued (they still run inline at once)."""
    recorded = []
    real_enqueue = workers.enqueue

    def recording_enqueue(path, *args, delay_s=0.0):
        recorded.append(delay_s)
        return real_enqueue(path, *args, delay_s=delay_s)

    monkeypatch.setattr(workers, "enqueue", recording_enqueue)
    return recorded


def only_json_to_the_outbox(settings, outbox):
    use_destinations(settings, {"name": "outbox", "transport": "outbox", "formats": ["json"],
                                "directory": str(outbox)})


def test_a_transient_failure_is_retried_with_backoff(settings, superevent, content, outbox, failing, delays):
    only_json_to_the_outbox(settings, outbox)
    failing[0] = 2
    notice = delivery.issue_notice(superevent, "preliminary-1", content())

    sent = NoticeDelivery.objects.get(notice=notice)
    assert (sent.status, sent.attempts, sent.last_error) == ("sent", 3, "")
    assert delays == [0.0, RETRY["initial_s"], RETRY["initial_s"] * RETRY["factor"]]
    assert [path.name for path in outbox_files(outbox)] == [f"{notice.identity}.json"]
    statuses = list(StepRun.objects.filter(step="deliver_notice").order_by("started", "id")
                    .values_list("status", flat=True))
    assert statuses == ["failed", "failed", "succeeded"]
    assert sum("retrying in" in line for line in superevent_logs(superevent)) == 2


def test_a_delivery_failing_every_attempt_is_marked_failed_loudly(settings, superevent, content, outbox,
                                                                   failing, delays):
    only_json_to_the_outbox(settings, outbox)
    failing[0] = 100
    notice = delivery.issue_notice(superevent, "preliminary-1", content())

    failed = NoticeDelivery.objects.get(notice=notice)
    assert (failed.status, failed.attempts) == ("failed", RETRY["max_attempts"])
    assert "broker unreachable (call 3)" in failed.last_error and failed.sent_at is None
    assert len(delays) == RETRY["max_attempts"]  # the first task and two retries, no more
    assert outbox_files(outbox) == []
    [line] = [line for line in superevent_logs(superevent) if "FAILED" in line]
    assert notice.identity in line and "giving up" in line
    # A repeated message does not revive a failed delivery.
    delivery.issue_notice(superevent, "preliminary-1", content())
    assert NoticeDelivery.objects.get(notice=notice).attempts == RETRY["max_attempts"]


def test_a_permanent_failure_is_not_retried(settings, superevent, content, outbox, delays):
    only_json_to_the_outbox(settings, outbox)
    conflicting = outbox / superevent.superevent_id / f"{superevent.superevent_id}-1-Preliminary.json"
    conflicting.parent.mkdir(parents=True)
    conflicting.write_bytes(b"{}")  # another notice already holds this identity

    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    failed = NoticeDelivery.objects.get(notice=notice)
    assert (failed.status, failed.attempts) == ("failed", 1) and "different notice" in failed.last_error
    assert delays == [0.0] and conflicting.read_bytes() == b"{}"


def test_each_claim_schedules_a_watchdog_when_tasks_are_queued(settings, superevent, content, monkeypatch):
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}
    handed = []
    monkeypatch.setattr(workers, "_hand_to_django_q", lambda path, args: handed.append((path, tuple(args))))
    notice = delivery.issue_notice(superevent, "preliminary-1", content())
    assert handed == [(delivery.DELIVER_TASK, (notice.pk,))]

    from alerts.models import DelayedTask

    before = datetime.datetime.now(datetime.timezone.utc)
    delivery.deliver(notice.pk)
    assert set(NoticeDelivery.objects.values_list("status", flat=True)) == {"sent"}
    watchdogs = DelayedTask.objects.filter(func=delivery.DELIVER_TASK, args=[notice.pk])
    assert watchdogs.count() == 3
    wait = datetime.timedelta(seconds=RETRY["claim_timeout_s"] + delivery.WATCHDOG_MARGIN_S)
    assert all(task.due >= before + wait for task in watchdogs)
    # A watchdog firing after success does nothing, not even a step record.
    runs = StepRun.objects.count()
    delivery.deliver(notice.pk)
    assert StepRun.objects.count() == runs and DelayedTask.objects.count() == 3
