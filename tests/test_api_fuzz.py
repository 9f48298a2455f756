"""Fuzz the REST API from its own OpenAPI schema (schemathesis), as an
advocate and anonymously: no 5xx, and every answer fits the schema."""
import pytest
from django.contrib.auth.models import Group, User
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from rest_framework.authtoken.models import Token

import schemathesis
from alerts.vocabulary import ADVOCATES_GROUP

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


@pytest.mark.parametrize("who", ["advocate", "anonymous"])
def test_no_5xx_from_schema_driven_requests(who, advocate_token):
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
            response = case.call(app=app, headers=headers)
            seen.append(response.status_code)
            assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.status_code}"
            if who == "anonymous":
                assert response.status_code >= 400, f"{case.method} {case.formatted_path}: {response.status_code}"

        run()
    assert seen
