"""The admin as the audit and manual-override console: every action per
role, append-only history, the admin's history of a superevent, the admin's
Initial against the API's, and lists without a query per row."""
import datetime
import hashlib
import types

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.db.models import Q
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from alerts import annotations, handlers, models
from alerts.models import AuditRecord, Event, File, Label, Log, Notice, NoticeDelivery, Superevent
from alerts.store import add_label
from alerts.vocabulary import ADVNO, ADVOCATES_GROUP, ADVOK, DQR_REQUEST, PIPELINES_GROUP
from tests.annotated import annotated_event
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)
REASON = "checked the sky map with the on-call team"
SKYMAP_V1 = "bayestar.multiorder.fits,1"


@pytest.fixture(autouse=True)
def alerts_on(settings, isolated_orchestrator):
    outbox = {**isolated_orchestrator["NOTICE_DESTINATIONS"][0], "roles": ["observation", "test"]}
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "PRELIMINARY_ALERTS": True, "NOTICE_DESTINATIONS": [outbox]}


def user_in(name, group=None, staff=True):
    user = User.objects.create_user(name, password="pw", is_staff=staff)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


USERS = {
    "advocate": lambda: user_in("ada", ADVOCATES_GROUP),
    "reader": lambda: user_in("rea"),  # staff, in no group
    "pipeline": lambda: user_in("pip", PIPELINES_GROUP, staff=False),
}


@pytest.fixture
def superevent():
    """A significant superevent whose Preliminary went out (sky map v1 copied)."""
    event = annotated_event()
    event.refresh_from_db()
    superevent = event.superevent
    assert superevent.notices.filter(alert_type="PRELIMINARY").exists()
    return superevent


@pytest.fixture
def relocalized(monkeypatch):
    """The re-localization task, replaced by a recorder (no BAYESTAR run here)."""
    calls = []

    def localize_event(*args):
        calls.append(args)

    localize_event.__module__ = annotations.__name__  # workers.enqueue finds tasks by their dotted path
    localize_event.__qualname__ = "localize_event"
    monkeypatch.setattr(annotations, "localize_event", localize_event)
    return calls


@pytest.fixture
def dispatched(monkeypatch):
    """Handler dispatches, recorded (and still made)."""
    seen, real = [], handlers.dispatch
    monkeypatch.setattr(handlers, "dispatch",
                        lambda name, *args, **kw: (seen.append((name, *args)), real(name, *args, **kw)))
    return seen


def other_member(superevent):
    other = make_event(far=1e-9)
    other.refresh_from_db()
    assert other.superevent_id == superevent.pk
    return other


def failed_preliminary(superevent):
    notice = superevent.notices.get(alert_type="PRELIMINARY")
    notice.deliveries.update(status=NoticeDelivery.Status.FAILED)
    return notice


def labelled(superevent):
    add_label(superevent.preferred_event, DQR_REQUEST)
    return None


def alert_sent(alert_type):
    return lambda ctx: ctx.superevent.notices.filter(alert_type=alert_type).exists()


# kind: (URL maker, setup(superevent) -> object, POST data(object), done(ctx) -> bool)
def decide(kind):
    return lambda superevent: reverse("admin:alerts_superevent_decide", args=[superevent.pk, kind])


def event_labels(superevent):
    return reverse("admin:alerts_event_labels", args=[superevent.preferred_event_id])


ACTIONS = {
    "initial": (decide("initial"), None, lambda _: {}, alert_sent("INITIAL")),
    "update": (decide("update"), None, lambda _: {"files": [SKYMAP_V1]}, alert_sent("UPDATE")),
    "retraction": (decide("retraction"), None, lambda _: {}, alert_sent("RETRACTION")),
    "advok": (decide("advok"), None, lambda _: {},
              lambda ctx: ADVOK in ctx.superevent.label_names() and alert_sent("INITIAL")(ctx)),
    "advno": (decide("advno"), None, lambda _: {},
              lambda ctx: ADVNO in ctx.superevent.label_names() and alert_sent("RETRACTION")(ctx)),
    "preferred": (decide("preferred"), other_member, lambda other: {"event": str(other.pk)},
                  lambda ctx: Superevent.objects.get(pk=ctx.superevent.pk).preferred_event_id == ctx.setup.pk),
    "relocalize": (decide("relocalize"), None, lambda _: {"disabled": ["H1"]},
                   lambda ctx: ctx.relocalized == [(ctx.superevent.preferred_event_id, ["H1"], True)]),
    "retry": (decide("retry"), failed_preliminary, lambda notice: {"notice": str(notice.pk)},
              lambda ctx: not ctx.setup.deliveries.filter(status=NoticeDelivery.Status.FAILED).exists()),
    "event label add": (event_labels, None, lambda _: {"name": DQR_REQUEST, "operation": "add"},
                        lambda ctx: ctx.superevent.preferred_event.labels.filter(name=DQR_REQUEST, creator="ada").exists()
                        and (handlers.EVENT_LABEL_ADDED, ctx.superevent.preferred_event_id, DQR_REQUEST)
                        in ctx.dispatched),
    "event label remove": (event_labels, labelled, lambda _: {"name": DQR_REQUEST, "operation": "remove"},
                           lambda ctx: not ctx.superevent.preferred_event.labels.filter(name=DQR_REQUEST).exists()
                           and (handlers.EVENT_LABEL_REMOVED, ctx.superevent.preferred_event_id, DQR_REQUEST)
                           in ctx.dispatched),
}


def state(superevent):
    """Everything an action could change, to compare before and after a refusal."""
    superevent = Superevent.objects.get(pk=superevent.pk)
    owned = Q(superevent=superevent) | Q(event__superevent=superevent)
    return {
        "notices": sorted(Notice.objects.filter(superevent=superevent).values_list("identity", flat=True)),
        "deliveries": sorted(NoticeDelivery.objects.filter(notice__superevent=superevent)
                             .values_list("id", "status", "attempts")),
        "labels": sorted(Label.objects.filter(owned).values_list("id", "name")),
        "preferred": (superevent.preferred_event_id, superevent.far),
        "logs": Log.objects.filter(owned).count(),
        "files": File.objects.filter(owned).count(),
        "acts done": AuditRecord.objects.filter(outcome=AuditRecord.Outcome.DONE).count(),
        "admin history": LogEntry.objects.count(),
    }


@pytest.mark.parametrize("action", list(ACTIONS))
@pytest.mark.parametrize("role", list(USERS))
def test_each_action_per_role(action, role, superevent, relocalized, dispatched):
    """An advocate's act works and is audited with user and reason; a staff
    reader is refused with a message (GET) or 403 (a forged POST), a pipeline
    account is sent to the admin's sign-in; refused, nothing changes."""
    url_of, setup, data_of, done = ACTIONS[action]
    user = USERS[role]()
    client = Client()
    client.force_login(user)
    prepared = setup(superevent) if setup else None
    url = url_of(superevent)
    ctx = types.SimpleNamespace(superevent=superevent, setup=prepared, relocalized=relocalized,
                                dispatched=dispatched)
    before = state(superevent)
    page = client.get(url, follow=True)
    post = client.post(url, {"reason": REASON, **data_of(prepared)})

    if role == "advocate":
        assert page.status_code == 200 and b'name="reason"' in page.content
        if action in ("initial", "update", "retraction", "advok", "advno"):
            assert b"Dry-run preview" in page.content
        assert post.status_code == 302, post.content[:2000]
        shown = [str(m) for m in client.get(post.url).context["messages"]]
        assert shown and not any(m.startswith("Refused") for m in shown), shown
        assert done(ctx), action
        record = AuditRecord.objects.filter(via="admin", outcome="done", user=user).latest("id")
        assert record.username == "ada" and record.request["reason"] == REASON
        assert LogEntry.objects.filter(user=user, change_message__contains=REASON).exists()
        return

    if role == "reader":
        assert page.status_code == 200  # back on the object's page, which a staff reader may read
        assert "Refused: only advocates may do this." in [str(m) for m in page.context["messages"]]
        assert post.status_code == 403
        refused = AuditRecord.objects.get(user=user)
        assert refused.outcome == "refused" and refused.via == "admin" and refused.request["reason"] == REASON
    else:
        assert page.redirect_chain[-1][0].startswith(reverse("admin:login"))
        assert post.status_code == 302 and post.url.startswith(reverse("admin:login"))
        assert not AuditRecord.objects.filter(user=user).exists()
    assert state(superevent) == before
    assert not done(ctx) and relocalized == []


@pytest.mark.parametrize("role", ["reader", "advocate"])
def test_forged_change_form_posts_change_nothing(role, superevent):
    """A staff user without the model's change permission (reader or
    advocate) cannot type over an event or a superevent."""
    client = Client()
    client.force_login(USERS[role]())
    event = superevent.preferred_event
    before = (state(superevent), Event.objects.filter(pk=event.pk).values().get())
    for url, data in [
        (reverse("admin:alerts_event_change", args=[event.pk]), {"pipeline": "pycbc", "gpstime": "1", "far": "1"}),
        (reverse("admin:alerts_superevent_change", args=[superevent.pk]), {"t_0": "1", "far": "1"}),
        (reverse("admin:alerts_event_delete", args=[event.pk]), {"post": "yes"}),
        (reverse("admin:alerts_superevent_delete", args=[superevent.pk]), {"post": "yes"}),
    ]:
        assert client.post(url, data).status_code == 403, url
    assert (state(superevent), Event.objects.filter(pk=event.pk).values().get()) == before


def test_rule_owned_fields_ignore_a_superusers_form(superevent, admin_client):
    other = other_member(superevent)
    before = Superevent.objects.filter(pk=superevent.pk).values().get()
    url = reverse("admin:alerts_superevent_change", args=[superevent.pk])
    admin_client.post(url, {"preferred_event": other.pk, "t_0": "1", "far": "1", "category": "test",
                            "superevent_id": "S000000x"})
    after = Superevent.objects.filter(pk=superevent.pk).values().get()
    assert {k: v for k, v in after.items() if k != "updated"} == {k: v for k, v in before.items() if k != "updated"}


APPEND_ONLY = [models.Notice, models.NoticePayload, models.NoticeDelivery, models.Log, models.StepRun,
               models.Rejection, models.AuditRecord, models.Label, models.Vetting, models.SupereventDayCounter,
               models.WriteBack, models.RunningTask]


@pytest.fixture
def history(superevent):
    """One row of every append-only model."""
    models.StepRun.objects.create(step="bench", superevent=superevent, started=timezone.now())
    models.Rejection.objects.create(source="api", reason="not XML", excerpt="<x")
    AuditRecord.objects.create(username="ada", action="send initial", target=str(superevent), outcome="done")
    models.WriteBack.objects.create(key="label:1", target="S1")
    models.RunningTask.objects.create(func="alerts.x", started=timezone.now())
    rows = {model: model.objects.order_by("pk").first() for model in APPEND_ONLY}
    assert all(rows.values()), [m.__name__ for m, row in rows.items() if row is None]
    return rows


def test_the_append_only_list_is_what_the_issue_names():
    for model in APPEND_ONLY:
        model_admin = admin.site._registry[model]
        assert not model_admin.get_actions(_superuser_request()), model.__name__
    for model in (models.Event, models.Superevent, models.File):  # they own logs, labels, notices
        model_admin = admin.site._registry[model]
        assert "delete_selected" not in model_admin.get_actions(_superuser_request()), model.__name__
        assert not model_admin.has_delete_permission(_superuser_request()), model.__name__


def _superuser_request():
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = User(is_superuser=True, is_staff=True, is_active=True)
    return request


@pytest.mark.parametrize("model", APPEND_ONLY, ids=lambda model: model.__name__)
def test_append_only_models_refuse_add_change_and_delete_even_to_a_superuser(model, history, admin_client):
    row = history[model]
    name = model._meta.model_name
    before = model.objects.filter(pk=row.pk).values().get()
    count = model.objects.count()
    fields = {f.name: "rewritten" for f in model._meta.concrete_fields if f.get_internal_type() in ("CharField",
                                                                                                   "TextField")}
    attempts = [
        (reverse(f"admin:alerts_{name}_change", args=[row.pk]), fields),
        (reverse(f"admin:alerts_{name}_delete", args=[row.pk]), {"post": "yes"}),
        (reverse(f"admin:alerts_{name}_add"), fields),
        (reverse(f"admin:alerts_{name}_changelist"),
         {"action": "delete_selected", "_selected_action": [row.pk], "index": "0", "post": "yes"}),
    ]
    for url, data in attempts:
        assert admin_client.post(url, data).status_code == 403, url
    assert model.objects.filter(pk=row.pk).values().get() == before
    assert model.objects.count() == count
    assert admin_client.get(reverse(f"admin:alerts_{name}_change", args=[row.pk])).status_code == 200  # readable


def test_an_action_on_a_superevent_shows_in_its_history_with_the_user(superevent):
    advocate = USERS["advocate"]()
    client = Client()
    client.force_login(advocate)
    other = other_member(superevent)
    client.post(reverse("admin:alerts_superevent_decide", args=[superevent.pk, "preferred"]),
                {"event": str(other.pk), "reason": REASON})
    assert Superevent.objects.get(pk=superevent.pk).preferred_event_id == other.pk
    history = client.get(reverse("admin:alerts_superevent_history", args=[superevent.pk])).content.decode()
    assert "ada" in history and f"set preferred event {other.graceid}" in history and REASON in history
    page = client.get(reverse("admin:alerts_superevent_change", args=[superevent.pk])).content.decode()
    trail = page[page.lower().index("audit trail"):]
    assert "ada via admin: set preferred event done" in trail and f"(reason: {REASON})" in trail


FIXED_NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("alert_type, files", [("initial", []), ("update", [SKYMAP_V1])])
def test_the_admins_alert_is_the_notice_the_api_sends_for_the_same_request(alert_type, files, superevent,
                                                                            monkeypatch):
    """Sent from the admin (then rolled back) and from the API, the notice has
    the same identity, type and serial and byte-identical payloads (the
    creation time is fixed for both, the only field that must differ)."""
    from alerts import decisions
    from alerts.orchestrator import alerts as orchestrator_alerts

    frozen = types.SimpleNamespace(now=lambda: FIXED_NOW)
    monkeypatch.setattr(orchestrator_alerts, "timezone", frozen)
    monkeypatch.setattr(decisions, "timezone", frozen)
    advocate = USERS["advocate"]()

    def sent(notice):
        return {"identity": notice.identity, "alert_type": notice.alert_type, "serial": notice.serial,
                "reason": notice.reason, "role": notice.role,
                "payloads": {p.format: hashlib.sha256(bytes(p.content)).hexdigest() for p in notice.payloads.all()}}

    client = Client()
    client.force_login(advocate)
    with pytest.raises(RuntimeError), transaction.atomic():  # undone, so the API starts from the same state
        answer = client.post(reverse("admin:alerts_superevent_decide", args=[superevent.pk, alert_type]),
                             {"reason": REASON, "files": files})
        assert answer.status_code == 302
        from_admin = sent(superevent.notices.get(alert_type=alert_type.upper()))
        raise RuntimeError("roll back")
    assert not superevent.notices.filter(alert_type=alert_type.upper()).exists()

    api = APIClient()
    api.force_authenticate(advocate)
    response = api.post(f"/api/superevents/{superevent.superevent_id}/alerts/",
                        {"alert_type": alert_type, "files": files, "reason": REASON}, format="json")
    assert response.status_code == 201, response.content
    from_api = sent(superevent.notices.get(alert_type=alert_type.upper()))
    assert from_admin == from_api
    assert set(from_api["payloads"]) == {"json", "avro", "voevent"}


def queries_of(client, url):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200, url
    return len(queries)


def test_admin_list_and_change_pages_cost_the_same_queries_whatever_their_rows(admin_client):
    """The superevent list, a filtered event list and a superevent's page:
    no query per row (per superevent, event, label, file or log)."""
    from alerts.store import add_file, log
    from tests.factories import T0

    def grow(start, count):
        for i in range(start, start + count):
            event = make_event(gpstime=T0 + 1000 * i, far=1e-4, pipeline=("gstlal", "pycbc")[i % 2])
            make_event(gpstime=T0 + 1000 * i + 0.1, far=2e-4, pipeline="mbta")
            add_label(event, DQR_REQUEST)
        superevent = Superevent.objects.order_by("id").first()
        for i in range(count):
            stored = add_file(superevent, f"notes-{start + i}.txt", b"x", tags=["em_follow"], announce=False)
            log(superevent, f"note {start + i}", file=stored)
            log(superevent.preferred_event, f"event note {start + i}")
            add_label(superevent, (ADVOK, DQR_REQUEST, "DQOK", "EM_READY")[(start + i) % 4])
        return superevent

    superevent = grow(0, 2)
    pages = [reverse("admin:alerts_superevent_changelist"),
             reverse("admin:alerts_event_changelist") + "?pipeline=gstlal",
             reverse("admin:alerts_superevent_change", args=[superevent.pk])]
    for url in pages:  # warm caches filled once per process (content types)
        queries_of(admin_client, url)
    few = [queries_of(admin_client, url) for url in pages]
    grow(2, 6)
    assert Superevent.objects.count() == 8 and superevent.files.filter(name__startswith="notes-").count() == 8
    many = [queries_of(admin_client, url) for url in pages]
    assert many == few
    assert max(many) <= 16, many


def test_date_hierarchy_and_id_search_on_superevents_and_events():
    for model in (Superevent, Event):
        model_admin = admin.site._registry[model]
        assert model_admin.date_hierarchy and model_admin.show_full_result_count is False
    assert "superevent_id" in admin.site._registry[Superevent].search_fields
    assert "graceid" in admin.site._registry[Event].search_fields


def test_the_date_hierarchy_spans_first_to_last_without_distinct_dates(admin_client):
    """Years, then months, then days between the first and last dates; no
    DISTINCT over the rows (a scan of every event at scale)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from alerts.templatetags.spanned_dates import spanned

    assert spanned(datetime.date(2024, 11, 5), datetime.date(2026, 2, 1), "year") == [
        datetime.date(2024, 1, 1), datetime.date(2025, 1, 1), datetime.date(2026, 1, 1)]
    assert spanned(datetime.date(2025, 11, 5), datetime.date(2026, 2, 1), "month") == [
        datetime.date(2025, 11, 1), datetime.date(2025, 12, 1), datetime.date(2026, 1, 1), datetime.date(2026, 2, 1)]
    assert spanned(datetime.date(2026, 2, 27), datetime.date(2026, 3, 1), "day") == [
        datetime.date(2026, 2, 27), datetime.date(2026, 2, 28), datetime.date(2026, 3, 1)]
    assert spanned(None, None, "year") == []

    old, new = make_event(), make_event(gpstime=1240215503.0 + 1000)
    Event.objects.filter(pk=old.pk).update(created=datetime.datetime(2024, 6, 1, tzinfo=datetime.timezone.utc))
    with CaptureQueriesContext(connection) as queries:
        page = admin_client.get(reverse("admin:alerts_event_changelist")).content.decode()
    assert "created__year=2024" in page and "created__year=2025" in page and "created__year=2026" in page
    assert not any("DISTINCT" in query["sql"] for query in queries)
    only_2024 = admin_client.get(reverse("admin:alerts_event_changelist"), {"created__year": "2024"})
    assert set(only_2024.context["cl"].result_list) == {Event.objects.get(pk=old.pk)}
    assert new.pk not in {e.pk for e in only_2024.context["cl"].result_list}
    superevents = admin_client.get(reverse("admin:alerts_superevent_changelist")).content.decode()
    assert "date__year=2019" in superevents or "date__month=4" in superevents  # t_0's day: 2019-04-25
