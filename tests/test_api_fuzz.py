"""Fuzz the REST API from its own OpenAPI schema (schemathesis), as an
advocate and anonymously: no 5xx, every answer fits the schema, and every
4xx is JSON naming the error."""
import pytest
from django.contrib.auth.models import Group, User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from rest_framework.authtoken.models import Token

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from alerts.vocabulary import ADVOCATES_GROUP
from tests.factories import make_event

pytestmark = pytest.mark.django_db(transaction=True)
MAX_EXAMPLES = 5


def api_schema():
    from drf_spectacular.generators import SchemaGenerator
    return SchemaGenerator().get_schema(request=None, public=True)


@pytest.fixture
def advocate_token():
    user = User.objects.create_user("fuzzer")
    user.groups.add(Group.objects.get_or_create(name=ADVOCATES_GROUP)[0])
    return Token.objects.create(user=user).key


@pytest.fixture
def known_ids():
    """An event grouped into a superevent: half the examples address them, so
    the fuzzed bodies reach the decision service, not only the 404."""
    event = make_event()
    event.refresh_from_db()
    return {"graceid": event.graceid, "superevent_id": event.superevent.superevent_id}


@pytest.mark.parametrize("who", ["advocate", "anonymous"])
def test_no_5xx_from_schema_driven_requests(who, advocate_token, known_ids):
    schema = schemathesis.openapi.from_dict(api_schema())
    app = get_wsgi_application()
    headers = {"Authorization": f"Token {advocate_token}"} if who == "advocate" else {}
    seen = []

    for operation in schema.get_all_operations():
        operation = operation.ok()

        @hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case):
            if len(seen) % 2:
                case.path_parameters = {**case.path_parameters,
                                        **{k: v for k, v in known_ids.items() if k in case.path_parameters}}
            response = case.call(app=app, headers=headers)
            seen.append(response.status_code)
            where = f"{case.method} {case.formatted_path}: {response.status_code}"
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            if response.status_code >= 400:
                assert isinstance(response.json().get("error"), str), where
            if who == "anonymous":  # 400: credentials PostgreSQL cannot even look up (a NUL byte)
                assert response.status_code in (400, 401), where

        run()
    assert seen
    if who == "advocate":  # the bodies reached the service: some were taken, some refused as bad input
        assert any(200 <= code < 300 for code in seen) and 400 in seen
