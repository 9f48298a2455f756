"""Dashboard pages with Django's test client: sign-in, permissions, what
the pages show, and a fixed number of queries per page (no query per row)."""
import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from alerts import models
from alerts.dashboard.formatting import SECONDS_PER_YEAR, age_words, duration_words, far_words, largest_class
from alerts.orchestrator.alerts import copy_products
from alerts.store import add_label
from alerts.vocabulary import ADVOCATES_GROUP, ADVOK, ADVREQ
from tests.annotated import annotated_event
from tests.factories import T0


@pytest.mark.parametrize("far, words", [
    (1 / (3.2 * SECONDS_PER_YEAR), "about one in 3.2 years"),
    (1 / (100 * SECONDS_PER_YEAR), "about one in 100 years"),
    (1 / (12345 * SECONDS_PER_YEAR), "about one in 12,345 years"),
    (1 / SECONDS_PER_YEAR, "about one in 1 year"),
    (1e-5, "about one in 1.2 days"),
    (1e-3, "about one in 17 minutes"),
    (2.0, "about 2 per second"),
    (0.0, "never (FAR 0)"),
    (None, "unknown"),
])
def test_far_in_words(far, words):
    assert far_words(far) == words


def test_other_wordings():
    assert age_words(42) == "42 s" and age_words(3 * 3600 + 5) == "3 h" and age_words(2 * 86400) == "2 d"
    assert duration_words(0.421) == "0.42 s" and duration_words(125) == "2 min 5 s"
    assert largest_class({"BNS": 0.1, "BBH": 0.8, "Terrestrial": 0.1}) == ("BBH", 0.8)
    assert largest_class(None) is None


@pytest.fixture
def users(db):
    advocates, _ = Group.objects.get_or_create(name=ADVOCATES_GROUP)
    advocate = User.objects.create_user("ada", password="pw")
    advocate.groups.add(advocates)
    reader = User.objects.create_user("rita", password="pw")
    return advocate, reader


def make_superevents(count, waiting=()):
    """``count`` superevents 1000 s apart, each with an annotated event."""
    superevents = []
    for index in range(count):
        event = annotated_event(gpstime=T0 + 1000 * index)
        superevent = models.Event.objects.get(pk=event.pk).superevent
        skymap = models.File.objects.get(event=event, name="bayestar.multiorder.fits")
        models.SkymapSummary.objects.create(file=skymap, area_50_deg2=120.0, area_90_deg2=480.0,
                                            distance_mean_mpc=150.0, distance_std_mpc=40.0)
        copy_products(superevent, event)  # the superevent's own sky map, as after a Preliminary
        if index in waiting:
            add_label(superevent, ADVREQ)
        superevents.append(superevent)
    return superevents


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_sign_in(client):
    superevent, = make_superevents(1)
    event = superevent.events.first()
    file = models.File.objects.filter(event=event).first()
    pages = [reverse("dashboard:list"), reverse("dashboard:rows"),
             reverse("dashboard:superevent", args=[superevent.superevent_id]),
             reverse("dashboard:event", args=[event.graceid]), reverse("dashboard:file", args=[file.pk]),
             reverse("dashboard:confirm", args=[superevent.superevent_id, "ADVOK"])]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 302, page
        assert response["Location"].startswith(reverse("dashboard:login")), page
    response = client.post(reverse("dashboard:act", args=[superevent.superevent_id]), {"action": ADVOK})
    assert response.status_code == 302 and response["Location"].startswith(reverse("dashboard:login"))
    assert client.get(reverse("dashboard:login")).status_code == 200


def test_list_shows_the_waiting_superevent_in_a_fixed_number_of_queries(client, users):
    advocate, _ = users
    superevents = make_superevents(3, waiting=(1,))
    client.force_login(advocate)
    with CaptureQueriesContext(connection) as three:
        response = client.get(reverse("dashboard:list"))
    assert response.status_code == 200
    text = response.content.decode()
    assert "<title>Superevents" in text
    assert text.count("waiting for an advocate</strong>") == 1
    assert all(superevent.superevent_id in text for superevent in superevents)
    # Newest first.
    ids = [superevent.superevent_id for superevent in reversed(superevents)]
    assert [text.index(i) for i in ids] == sorted(text.index(i) for i in ids)
    assert "about one in" in text and "deg²" in text
    make_superevents(3)
    with CaptureQueriesContext(connection) as six:
        client.get(reverse("dashboard:list"))
    assert len(six) == len(three), "a query per row"
    assert len(three) <= 12


def test_list_filters_are_in_the_url(client, users):
    advocate, _ = users
    superevents = make_superevents(2, waiting=(0,))
    client.force_login(advocate)
    text = client.get(reverse("dashboard:list") + "?waiting=on").content.decode()
    assert superevents[0].superevent_id in text and superevents[1].superevent_id not in text
    text = client.get(reverse("dashboard:rows") + f"?label={ADVREQ}").content.decode()
    assert superevents[0].superevent_id in text and superevents[1].superevent_id not in text


def test_superevent_and_event_pages(client, users):
    _, reader = users
    superevent, = make_superevents(1, waiting=(0,))
    client.force_login(reader)
    response = client.get(reverse("dashboard:superevent", args=[superevent.superevent_id]))
    text = response.content.decode()
    assert response.status_code == 200 and f"<title>{superevent.superevent_id}" in text
    assert 'id="skymap"' in text and 'id="p-astro-chart"' in text and "(preferred)" in text
    assert "GPS 1240215503.000" in text and "2019-04-25 08:18" in text
    # Readers see no action.
    assert 'id="actions"' not in text and "ADVOK: send" not in text
    image = client.get(text.split('id="skymap" src="')[1].split('"')[0])
    assert image.status_code == 200 and b"".join(image.streaming_content).startswith(b"\x89PNG")
    event = superevent.events.first()
    text = client.get(reverse("dashboard:event", args=[event.graceid])).content.decode()
    assert superevent.superevent_id in text and "bayestar.multiorder.fits" in text


def test_advocates_see_actions(client, users):
    advocate, _ = users
    superevent, = make_superevents(1)
    client.force_login(advocate)
    text = client.get(reverse("dashboard:superevent", args=[superevent.superevent_id])).content.decode()
    assert 'id="actions"' in text and 'id="advok"' in text and 'name="csrfmiddlewaretoken"' in text


def test_a_readers_post_is_refused_and_nothing_is_sent(users):
    from django.test import Client
    _, reader = users
    superevent, = make_superevents(1, waiting=(0,))
    client = Client(enforce_csrf_checks=True)
    client.force_login(reader)
    for action in ("ADVOK", "ADVNO", "comment", "label_add"):
        response = client.post(reverse("dashboard:act", args=[superevent.superevent_id]),
                               {"action": action, "text": "x", "label": ADVOK})
        assert response.status_code == 403
    assert client.get(reverse("dashboard:confirm", args=[superevent.superevent_id, "ADVOK"])).status_code == 403
    assert not models.Notice.objects.filter(superevent=superevent).exists()
    assert ADVOK not in superevent.label_names()


@pytest.fixture
def decisions(monkeypatch):
    """The decision service the dashboard calls."""
    from alerts import decisions as service
    return service


def test_advocate_confirms_from_the_preview_and_a_second_verdict_sends_nothing(client, users, decisions):
    advocate, _ = users
    superevent, = make_superevents(1, waiting=(0,))
    client.force_login(advocate)
    text = client.get(reverse("dashboard:confirm", args=[superevent.superevent_id, ADVOK])).content.decode()
    assert 'id="preview"' in text and "INITIAL" in text and 'name="idempotency_key"' in text
    act = reverse("dashboard:act", args=[superevent.superevent_id])
    response = client.post(act, {"action": ADVOK}, follow=True)
    notice = models.Notice.objects.get(superevent=superevent)
    assert notice.alert_type == "INITIAL"
    assert f"notice {notice.identity} sent" in response.content.decode()
    # A second click (or a double submit) sends nothing more.
    assert client.post(act, {"action": ADVOK}, follow=True).status_code == 200
    assert models.Notice.objects.filter(superevent=superevent).count() == 1
    assert client.post(act, {"action": "nonsense"}).status_code == 400
