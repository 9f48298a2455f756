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
