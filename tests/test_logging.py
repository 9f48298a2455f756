"""JSON log lines carry superevent, event and step; Sentry stays off without a DSN."""
import json
import logging

import pytest
import sentry_sdk

from alerts.log_format import JsonFormatter
from alerts.steps import record_step
from tests.factories import make_event
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def test_sentry_is_not_initialised_without_a_dsn(settings):
    assert not settings.SENTRY_DSN
    assert not sentry_sdk.get_client().is_active()


def test_a_step_logs_one_json_line_with_its_event_and_step(caplog, superevent_manager_only):  # noqa: F811
    event = make_event()
    with caplog.at_level(logging.INFO, logger="alerts.steps"):
        with record_step("p_astro", event=event):
            pass
    records = [r for r in caplog.records if getattr(r, "step", None) == "p_astro"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["event"] == event.graceid and line["step"] == "p_astro" and line["status"] == "succeeded"
    assert line["level"] == "INFO" and line["duration_s"] >= 0
