"""Safe by default: production settings pass `check --deploy`, and no
traceback reaches a client (issue 15, "Safe by default")."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client, override_settings
from django.urls import path

ROOT = Path(__file__).resolve().parent.parent


def production_env(**extra):
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DJANGO_", "ORCHESTRATOR_DEV"))}
    env.update({"DJANGO_SECRET_KEY": "x" * 20 + "production-like-secret-key-of-fifty-chars-or-more",
                "DJANGO_ALLOWED_HOSTS": "alerts.example.org", "DJANGO_HTTPS": "1"})
    env.update(extra)
    return env


def run_manage(args, env):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_check_deploy_is_clean_with_production_settings():
    result = run_manage(["check", "--deploy", "--fail-level", "WARNING"], production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr and "identified no issues" in result.stdout


def test_refuses_to_start_without_a_secret_key_unless_development():
    env = production_env()
    del env["DJANGO_SECRET_KEY"]
    result = run_manage(["check"], env)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY" in result.stderr
    assert run_manage(["check"], {**env, "ORCHESTRATOR_DEV": "1"}).returncode == 0


def test_debug_is_off_and_hosts_are_localhost_by_default():
    code = ("import django,os;os.environ['DJANGO_SETTINGS_MODULE']='orchestrator_site.settings';"
            "from django.conf import settings;print(settings.DEBUG, settings.ALLOWED_HOSTS)")
    env = production_env()
    del env["DJANGO_ALLOWED_HOSTS"]
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False ['localhost', '127.0.0.1', '[::1]']", out.stderr


def boom(request):
    raise RuntimeError("SELECT secret FROM table -- must not leak")


from orchestrator_site.urls import handler404, handler500, urlpatterns as site_urls  # noqa: E402,F401  the site's handlers

urlpatterns = [path("api/boom/", boom), path("boom/", boom), *site_urls]


@override_settings(ROOT_URLCONF=__name__, DEBUG=False, DEBUG_PROPAGATE_EXCEPTIONS=False)
@pytest.mark.parametrize("url", ["/api/boom/", "/boom/"])
def test_an_exception_in_a_view_reaches_the_client_as_a_request_id_only(url, caplog):
    client = Client(raise_request_exception=False)
    response = client.get(url)
    assert response.status_code == 500
    body = response.content.decode()
    rid = response["X-Request-ID"]
    assert rid and rid in body
    assert "Traceback" not in body and "SELECT" not in body and "RuntimeError" not in body
    if url.startswith("/api/"):
        assert response.json()["request_id"] == rid and response.json()["error"]
    assert any(rid in record.getMessage() for record in caplog.records)


def test_unknown_api_path_answers_json_404(client):
    response = client.get("/api/no-such-thing/")
    assert response.status_code == 404
    assert response.json()["error"].startswith("not found") and response["X-Request-ID"]
