"""Per-deployment policy overrides (orchestrator_site/policy.py): JSON merged
over the ORCHESTRATOR block, tuple keys spelled "CBC/AllSky", bad input
stops the start with the reason."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from orchestrator_site.policy import FILE_VARIABLE, JSON_VARIABLE, PolicyError, apply_overrides

ROOT = Path(__file__).resolve().parent.parent


def test_overrides_merge_over_the_block_file_first_then_string(tmp_path):
    policy = settings.ORCHESTRATOR
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({
        "ORCHESTRATOR_TIMEOUT_S": 5,
        "SIGNIFICANT": {"CBC/AllSky": [8, 1e-7], "CBC/BBH": [2, 1e-8]},
        "SUPEREVENT_WINDOW_S": {"pycbc": 0.5},
    }))
    merged = apply_overrides(policy, {FILE_VARIABLE: str(path),
                                      JSON_VARIABLE: '{"ORCHESTRATOR_TIMEOUT_S": 7.5}'})
    assert merged["ORCHESTRATOR_TIMEOUT_S"] == 7.5  # the string comes last
    assert merged["SIGNIFICANT"][("CBC", "AllSky")] == (8, 1e-7)
    assert merged["SIGNIFICANT"][("CBC", "BBH")] == (2, 1e-8)
    # Keys not mentioned keep their defaults, at every depth.
    assert merged["SIGNIFICANT"][("Burst", "AllSky")] == policy["SIGNIFICANT"][("Burst", "AllSky")]
    assert merged["SUPEREVENT_WINDOW_S"] == {**policy["SUPEREVENT_WINDOW_S"], "pycbc": 0.5}
    assert merged["PIPELINES"] == policy["PIPELINES"]
    assert apply_overrides(policy, {}) == policy


def test_null_disables_a_less_significant_threshold():
    merged = apply_overrides(settings.ORCHESTRATOR, {JSON_VARIABLE: '{"LESS_SIGNIFICANT_FAR": {"CBC/AllSky": null}}'})
    assert merged["LESS_SIGNIFICANT_FAR"][("CBC", "AllSky")] is None


@pytest.mark.parametrize("text, reason", [
    ('{"SIGNIFICANT": {', "invalid JSON at line 1"),
    ('[1, 2]', "expected a JSON object"),
    ('{"SIGNIFICANT_THRESHOLD": 1}', "unknown policy key(s) SIGNIFICANT_THRESHOLD"),
    ('{"SIGNIFICANT": {"CBC AllSky": [7, 1e-7]}}', "must be spelled GROUP/SEARCH"),
    ('{"SIGNIFICANT": {"CBC/AllSky": [7]}}', "expected 2 values"),
    ('{"ORCHESTRATOR_TIMEOUT_S": "soon"}', "ORCHESTRATOR_TIMEOUT_S: expected a number"),
])
def test_bad_overrides_say_where_and_why(text, reason):
    with pytest.raises(PolicyError) as error:
        apply_overrides(settings.ORCHESTRATOR, {JSON_VARIABLE: text})
    assert reason in str(error.value)
    assert str(error.value).startswith(JSON_VARIABLE)


def test_a_bad_policy_file_stops_the_start(tmp_path, worker_env):
    path = tmp_path / "policy.json"
    path.write_text('{"SIGNIFICANT": {"CBC/AllSky": [7, 1e-7],}}')
    missing = tmp_path / "missing.json"
    for bad in (path, missing):
        result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                                env={**worker_env, FILE_VARIABLE: str(bad)})
        assert result.returncode != 0
        last_line = result.stderr.strip().splitlines()[-1]
        assert last_line.startswith(f"django.core.exceptions.ImproperlyConfigured: {FILE_VARIABLE}={bad}: ")
