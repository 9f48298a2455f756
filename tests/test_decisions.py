"""The advocate's decision service: Initial, Update, Retraction, verdicts,
the preferred event by hand, each refused with a reason and audited."""
import json
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from alerts import decisions
from alerts.models import AuditRecord, Notice
from alerts.store import add_file
from alerts.vocabulary import ADVNO, ADVOCATES_GROUP, ADVOK, INJ
from tests.annotated import annotated_event, tiny_skymap
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def alerts_on(settings, isolated_orchestrator):
    outbox = {**isolated_orchestrator["NOTICE_DESTINATIONS"][0], "roles": ["observation", "test"]}
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": True, "NOTICE_DESTINATIONS": [outbox]}


@pytest.fixture
def outbox(isolated_orchestrator):
    return Path(isolated_orchestrator["NOTICE_DESTINATIONS"][0]["directory"])


@pytest.fixture
def advocate():
    user = User.objects.create_user("ada", password="pw")
    user.groups.add(Group.objects.get_or_create(name=ADVOCATES_GROUP)[0])
    return user


@pytest.fixture
def reader():
    return User.objects.create_user("rea", password="pw")


@pytest.fixture
def superevent():
    event = annotated_event()
    event.refresh_from_db()
    return event.superevent


def outbox_files(outbox, superevent):
    return sorted(p.name for p in (outbox / superevent.superevent_id).glob("*.json"))


def test_initial_update_retraction_each_once(outbox, superevent, advocate):
    add_file(superevent, "bayestar.multiorder.fits", tiny_skymap(), tags=["sky_loc", "public"])
    before = len(outbox_files(outbox, superevent))
    shown = decisions.preview(superevent, "initial", ["bayestar.multiorder.fits,1"])
    assert shown.notice["alert_type"] == "INITIAL" and shown.files == ["bayestar.multiorder.fits,1"]
    assert len(outbox_files(outbox, superevent)) == before  # a preview sends nothing
    initial = decisions.send(superevent, "initial", ["bayestar.multiorder.fits,1"], user=advocate)
    assert initial.serial == shown.serial and initial.alert_type == "INITIAL"
    again = decisions.send(superevent, "INITIAL", ["bayestar.multiorder.fits,1"], user=advocate)
    assert again.pk == initial.pk
    notice = json.loads((outbox / superevent.superevent_id / f"{initial.identity}.json").read_bytes())
    assert notice["alert_type"] == "INITIAL" and notice["event"]["skymap"]
    assert superevent.files.filter(name="initial-circular.txt").exists()
    update = decisions.send(superevent, "update", ["bayestar.multiorder.fits,2"], user=advocate)
    assert update.serial == initial.serial + 1
    assert decisions.send(superevent, "update", ["bayestar.multiorder.fits,2"], user=advocate).pk == update.pk
    retraction = decisions.send(superevent, "retraction", user=advocate)
    payload = json.loads((outbox / superevent.superevent_id / f"{retraction.identity}.json").read_bytes())
    assert payload["alert_type"] == "RETRACTION" and payload["event"] is None
    assert "retract" in superevent.files.filter(name="retraction-circular.txt").get().read().decode().lower()
    assert len(outbox_files(outbox, superevent)) == before + 3
    with pytest.raises(decisions.Refused, match="retracted"):
        decisions.send(superevent, "update", ["bayestar.multiorder.fits,1"], user=advocate)


def test_reader_and_anonymous_are_refused_and_audited(superevent, reader):
    for user in (reader, None):
        with pytest.raises(decisions.NotAllowed):
            decisions.send(superevent, "initial", user=user)
    records = AuditRecord.objects.filter(action="send initial")
    assert [r.outcome for r in records] == ["refused", "refused"]
    assert not Notice.objects.filter(superevent=superevent, alert_type="INITIAL").exists()


def test_refusals_name_the_reason(superevent, advocate):
    with pytest.raises(decisions.Refused, match="no file bayestar.multiorder.fits,9"):
        decisions.send(superevent, "initial", ["bayestar.multiorder.fits,9"], user=advocate)
    with pytest.raises(decisions.BadRequest):
        decisions.send(superevent, "final", user=advocate)
    decisions.add_label(superevent, INJ, user=advocate)
    with pytest.raises(decisions.Refused, match="injection"):
        decisions.send(superevent, "initial", user=advocate)
    assert AuditRecord.objects.filter(outcome="refused").count() == 3


def test_verdicts_send_and_exclude_each_other(superevent, advocate):
    notice = decisions.apply_verdict(superevent, ADVOK, user=advocate)
    assert notice.alert_type == "INITIAL" and ADVOK in superevent.label_names()
    with pytest.raises(decisions.Refused, match="exclude"):
        decisions.add_label(superevent, ADVNO, user=advocate)
    assert ADVNO not in superevent.label_names()
    assert not Notice.objects.filter(superevent=superevent, alert_type="RETRACTION").exists()


def test_preferred_event_override_when_frozen(superevent, advocate):
    assert "SIGNIF_LOCKED" in superevent.label_names()
    other = make_event(far=1e-9)
    other.refresh_from_db()
    assert other.superevent_id == superevent.pk
    decisions.set_preferred_event(superevent, other, user=advocate, reason="better")
    superevent.refresh_from_db()
    assert superevent.preferred_event_id == other.pk
    stranger = make_event(gpstime=superevent.t_0 + 1000)
    with pytest.raises(decisions.Refused, match="not an event of"):
        decisions.set_preferred_event(superevent, stranger, user=advocate)


def test_api_alerts_roles_dry_run_and_idempotency(superevent, advocate, reader, outbox):
    from django.core.management import call_command
    from rest_framework.test import APIClient
    url = f"/api/superevents/{superevent.superevent_id}/alerts/"
    assert APIClient().post(url, {"alert_type": "initial"}, format="json").status_code == 401
    as_reader = APIClient()
    as_reader.force_authenticate(reader)
    answer = as_reader.post(url, {"alert_type": "initial"}, format="json")
    assert answer.status_code == 403 and "error" in answer.json()
    api = APIClient()
    api.force_authenticate(advocate)
    shown = api.post(url, {"alert_type": "initial", "dry_run": True}, format="json")
    assert shown.status_code == 200 and shown.json()["notice"]["alert_type"] == "INITIAL"
    bad = api.post(url, {"alert_type": "final"}, format="json")
    assert bad.status_code == 400 and "alert_type" in bad.json()["error"]
    first = api.post(url, {"alert_type": "update", "files": ["bayestar.multiorder.fits,1"]}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k1")
    assert first.status_code == 201
    again = api.post(url, {"alert_type": "update", "files": ["bayestar.multiorder.fits,1"]}, format="json",
                     HTTP_IDEMPOTENCY_KEY="k1")
    assert again.json() == first.json()
    assert Notice.objects.filter(superevent=superevent, alert_type="UPDATE").count() == 1
    with pytest.raises(SystemExit) as refused:
        call_command("send_alert", superevent.superevent_id, "initial", user="rea")
    assert refused.value.code == 2
    call_command("send_alert", superevent.superevent_id, "initial", "--file", "bayestar.multiorder.fits,1",
                 user="ada")
    assert Notice.objects.filter(superevent=superevent, alert_type="INITIAL").count() == 1
    token = __import__("io").StringIO()
    call_command("add_user", "pip", "--pipeline", stdout=token)
    assert len(token.getvalue().strip()) == 40


def test_superevent_list_filters_and_detail_without_a_query_per_row(superevent, advocate,
                                                                    django_assert_max_num_queries):
    from rest_framework.test import APIClient
    api = APIClient()
    api.force_authenticate(advocate)
    for i in range(5):  # not significant enough for an alert: no advocate is asked for
        make_event(gpstime=superevent.t_0 + 1000 * (i + 1), far=1e-5)
    with django_assert_max_num_queries(12):
        rows = api.get("/api/superevents/").json()["results"]
    assert len(rows) == 6
    waiting = api.get("/api/superevents/?waiting=true").json()["results"]
    assert [r["superevent_id"] for r in waiting] == [superevent.superevent_id]
    sent = api.get("/api/superevents/?alert_sent=true&far_max=1e-6&label=ADVREQ").json()["results"]
    assert [r["superevent_id"] for r in sent] == [superevent.superevent_id]
    assert api.get("/api/superevents/?t_0_min=abc").status_code == 400
    with django_assert_max_num_queries(16):
        detail = api.get(f"/api/superevents/{superevent.superevent_id}/").json()
    assert detail["preferred_event_data"]["graceid"] == superevent.preferred_event.graceid
    assert detail["notices"][0]["deliveries"] and any(f["version"] == 1 for f in detail["files"])
    assert APIClient().get("/api/superevents/").status_code == 401


def test_openapi_schema_and_local_docs(advocate):
    from rest_framework.test import APIClient
    api = APIClient()
    api.force_authenticate(advocate)
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/superevents/{superevent_id}/alerts/" in schema.json()["paths"]
    docs = api.get("/api/docs/")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()
    assert APIClient().get("/api/schema/").status_code == 401
