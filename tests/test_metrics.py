"""/metrics: restricted, counts uploads, and the upload-to-notice histogram
has a sample once a Preliminary notice exists."""
import re

import pytest
from django.test import Client

from alerts.models import Notice, Superevent
from tests.factories import make_event
from tests.annotated import annotated_event
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.test_orchestrator import alerts_on, deferred, run_all  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text, name, **labels):
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" ([0-9.e+]+)"
    found = re.search(pattern, text)
    return None if found is None else float(found.group(1))


def scrape(client=None):
    response = (client or Client(REMOTE_ADDR="127.0.0.1")).get("/metrics")
    assert response.status_code == 200
    return response.content.decode()


def test_metrics_are_restricted(settings):
    settings.METRICS_ALLOWED_IPS = []
    settings.METRICS_TOKEN = "s3cret"
    refused = Client().get("/metrics")
    assert refused.status_code == 403 and "error" in refused.json()
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret").status_code == 200


def test_counters_after_an_upload_and_latency_after_a_preliminary(superevent_manager_only):  # noqa: F811
    before = scrape()
    assert sample(before, "orchestrator_events_received_total", group="CBC", pipeline="gstlal") is None
    event = make_event()
    after = scrape()
    assert sample(after, "orchestrator_events_received_total", group="CBC", pipeline="gstlal") == 1
    assert sample(after, "orchestrator_superevents_created_total") == 1
    assert sample(after, "orchestrator_upload_to_notice_seconds_count", alert_type="PRELIMINARY") is None
    superevent = Superevent.objects.get(preferred_event=event)
    Notice.objects.create(superevent=superevent, reason="preliminary", alert_type=Notice.AlertType.PRELIMINARY,
                          serial=1, identity=f"{superevent.superevent_id}-1-Preliminary")
    latency = scrape()
    assert sample(latency, "orchestrator_upload_to_notice_seconds_count", alert_type="PRELIMINARY") == 1
    assert 'orchestrator_request_seconds_count{endpoint="metrics",method="GET"}' in latency


def test_a_real_preliminary_shows_in_the_latency_steps_and_notices(alerts_on, deferred):  # noqa: F811
    """The whole path, as a worker runs it: the event's upload, the
    orchestrator's Preliminary, its delivery to the outbox."""
    annotated_event()
    run_all(deferred)
    text = scrape()
    preliminaries = Notice.objects.filter(alert_type=Notice.AlertType.PRELIMINARY).count()
    assert preliminaries >= 1
    assert sample(text, "orchestrator_upload_to_notice_seconds_count", alert_type="PRELIMINARY") == preliminaries
    assert sample(text, "orchestrator_notices_total", alert_type="PRELIMINARY", destination="outbox",
                  status="sent") == 3 * preliminaries  # json, avro, voevent
    for step in ("preliminary_alert", "deliver_notice"):
        assert sample(text, "orchestrator_step_seconds_count", status="succeeded", step=step) >= 1, step
