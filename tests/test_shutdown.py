"""A stop (SIGTERM) ends the worker cluster within 10 s even in the middle of
BAYESTAR, and the cut-off localization runs again at the next start."""
import signal
import subprocess
import sys
import time

import pytest

from alerts import workers
from alerts.annotations import LOCALIZE_TASK
from alerts.events import PSD_FILENAME, create_event
from alerts.models import File, RunningTask
from alerts.science.localization import MULTIORDER_FILENAME
from tests.intake import superevent_manager_only  # noqa: F401 (fixture)
from tests.test_workers import ROOT, Output, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# The bound on a stop.
STOP_LIMIT_S = 10
BNS_INDEX = 3
# The real one: superevent_manager_only holds back workers.enqueue's other tasks.
enqueue = workers.enqueue


def start_cluster(env):
    process = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    process.output = Output(process.stdout)
    return process


def stop_cluster(process):
    """SIGTERM; returns how long the cluster took to exit."""
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_LIMIT_S * 3)
    except subprocess.TimeoutExpired:
        import os

        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return time.monotonic() - began


def test_a_stop_in_the_middle_of_bayestar_is_quick_and_loses_nothing(
        mock_events, superevent_manager_only, worker_env, settings):  # noqa: F811
    mock = mock_events[BNS_INDEX]
    event = create_event(group="CBC", pipeline="pycbc", search="AllSky", coinc=mock.coinc_xml,
                         files=[(PSD_FILENAME, mock.psd_xml_gz)])
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False}
    worker_env["Q_STOP_GRACE_S"] = "0.5"  # BAYESTAR surely outlasts it
    first = start_cluster(worker_env)
    try:
        enqueue(LOCALIZE_TASK, event.pk)
        try:
            wait_for(lambda: RunningTask.objects.filter(func=LOCALIZE_TASK).exists(),
                     "BAYESTAR running", first)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{first.output.text()[-3000:]}") from None
        time.sleep(1)
    finally:
        took = stop_cluster(first)
    assert took < STOP_LIMIT_S, first.output.text()[-3000:]
    assert "stopped in" in first.output.text()
    assert not File.objects.filter(event=event, name=MULTIORDER_FILENAME).exists()
    assert list(RunningTask.objects.values_list("func", "args")) == [
        (LOCALIZE_TASK, [event.pk])]

    second = start_cluster(worker_env)
    try:
        wait_for(lambda: File.objects.filter(event=event, name=MULTIORDER_FILENAME).exists(), "the sky map", second)
        assert "running again 1 task(s)" in second.output.text()
    finally:
        took = stop_cluster(second)
    assert took < STOP_LIMIT_S, second.output.text()[-3000:]
    assert File.objects.filter(event=event, name=MULTIORDER_FILENAME).count() == 1
    # (the sky map's plots, queued after it, may be cut off in turn: they run at the next start)
    assert not RunningTask.objects.filter(func=LOCALIZE_TASK).exists()
