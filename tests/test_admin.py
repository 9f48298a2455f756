"""Operators' admin: every model's list, search and detail pages load."""
import pytest
from django.contrib import admin
from django.urls import reverse

from alerts.models import Event, Superevent
from alerts.store import add_file, add_label
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def operator(client, django_user_model):
    user = django_user_model.objects.create_superuser("operator", "op@example.org", "pw")
    client.force_login(user)
    return client


def test_every_alerts_model_is_registered():
    from django.apps import apps

    registered = {model for model in admin.site._registry}
    assert set(apps.get_app_config("alerts").get_models()) <= registered


def test_lists_search_and_detail_pages_load(operator):
    event = make_event()
    superevent = Superevent.objects.get()
    add_label(superevent, "ADVREQ")
    add_file(event, "notes.txt", b"checked by the advocate", tags=["em_follow"])
    for model in admin.site._registry:
        if model._meta.app_label != "alerts":
            continue
        url = reverse(f"admin:alerts_{model._meta.model_name}_changelist")
        response = operator.get(url, {"q": "S190425a"})
        assert response.status_code == 200, url
    page = operator.get(reverse("admin:alerts_superevent_change", args=[superevent.pk]))
    assert page.status_code == 200
    assert event.graceid.encode() in page.content and b"ADVREQ" in page.content
    listing = operator.get(reverse("admin:alerts_superevent_changelist"))
    assert b"S190425a" in listing.content
    assert operator.get(reverse("admin:alerts_event_change", args=[event.pk])).status_code == 200
    filtered = operator.get(reverse("admin:alerts_event_changelist"), {"pipeline": "gstlal"})
    assert event.graceid.encode() in filtered.content
    assert Event.objects.count() == 1


def test_superevent_list_shows_label_badges_and_filters_by_label(operator):
    from django.contrib.staticfiles import finders

    make_event(gpstime=1240215503.0)
    make_event(gpstime=1240315503.0)
    flagged, quiet = Superevent.objects.order_by("t_0")
    add_label(flagged, "DQV")
    url = reverse("admin:alerts_superevent_changelist")

    listing = operator.get(url).content.decode()
    assert '<span class="gw-label gw-label-DQV">DQV</span>' in listing
    assert "alerts/labels.css" in listing
    assert finders.find("alerts/labels.css"), "the badge stylesheet must ship in static/"

    only_vetoed = operator.get(url, {"labels__name": "DQV"}).content.decode()
    assert flagged.superevent_id in only_vetoed and quiet.superevent_id not in only_vetoed


def test_every_list_has_search_and_filters():
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label == "alerts":
            assert model_admin.search_fields and model_admin.list_filter, model.__name__


def listed(operator, model_name, **query):
    """The rows a changelist shows for ``query`` (search ``q`` and filters)."""
    response = operator.get(reverse(f"admin:alerts_{model_name}_changelist"), query)
    assert response.status_code == 200
    return set(response.context["cl"].result_list)


def test_search_and_filters_return_the_right_rows(operator):
    from alerts.models import SkymapSummary, SupereventDayCounter

    first = make_event(gpstime=1240215503.0)
    second = make_event(gpstime=1240215603.0, pipeline="pycbc")
    mdc = make_event(gpstime=1240215503.0, search="MDC")
    by_event = {event.pk: Event.objects.get(pk=event.pk).superevent for event in (first, second, mdc)}
    assert [by_event[e.pk].superevent_id for e in (first, second, mdc)] == ["S190425a", "S190425b", "MS190425a"]

    assert listed(operator, "superevent", q="S190425b") == {by_event[second.pk]}
    assert listed(operator, "superevent", q=first.graceid) == {by_event[first.pk]}  # its preferred event
    assert listed(operator, "superevent", category="mdc") == {by_event[mdc.pk]}
    assert listed(operator, "superevent", category="production", q="S190425a") == {by_event[first.pk]}

    assert listed(operator, "event", q=second.graceid) == {second}
    assert listed(operator, "event", q="S190425b") == {second}  # by its superevent
    assert listed(operator, "event", q="MS190425a") == {mdc}
    assert listed(operator, "event", pipeline="pycbc") == {second}
    assert listed(operator, "event", search="MDC") == {mdc}

    summary_file = add_file(first, "bayestar.multiorder.fits", b"not a real sky map", tags=["sky_loc"])
    burst_file = add_file(second, "cwb.multiorder.fits", b"nor this", tags=["sky_loc"])
    summary = SkymapSummary.objects.create(file=summary_file, area_50_deg2=10.0, area_90_deg2=40.0)
    SkymapSummary.objects.create(file=burst_file, area_50_deg2=20.0, area_90_deg2=80.0)
    assert listed(operator, "skymapsummary", file__name="bayestar.multiorder.fits") == {summary}
    assert listed(operator, "skymapsummary", file__event__pipeline="gstlal") == {summary}

    counters = {counter.category: counter for counter in SupereventDayCounter.objects.all()}
    assert listed(operator, "supereventdaycounter", q="2019-04-25") == set(counters.values())
    assert listed(operator, "supereventdaycounter", q="2019-04-26") == set()


def test_append_only_records_refuse_change_and_delete_even_to_a_superuser(operator):
    from alerts.models import Log

    make_event()
    log = Log.objects.first()
    before = log.message
    for view in ("change", "delete"):
        response = operator.post(reverse(f"admin:alerts_log_{view}", args=[log.pk]), {"message": "rewritten", "post": "yes"})
        assert response.status_code == 403, view
    assert Log.objects.get(pk=log.pk).message == before


def test_forged_decision_post_by_a_reader_is_refused_and_changes_nothing(client, django_user_model):
    from alerts.models import AuditRecord, Notice

    make_event()
    superevent = Superevent.objects.get()
    reader = django_user_model.objects.create_user("reader", password="pw", is_staff=True)
    client.force_login(reader)
    url = reverse("admin:alerts_superevent_decide", args=[superevent.pk, "initial"])
    assert client.post(url, {"reason": "forged"}).status_code == 403
    assert not Notice.objects.filter(superevent=superevent).exists()
    assert client.get(url).status_code == 302
