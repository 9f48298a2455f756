"""Record every step run (what, for which event/superevent, when, how it ended),
so latency and failures are visible in the admin and the API."""
import contextlib
import logging
import os
import socket

from django.utils import timezone

from alerts.models import StepRun

logger = logging.getLogger(__name__)
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
MAX_ERROR_CHARS = 2000


class StepSkipped(Exception):
    """Raised inside a step to end it early as 'skipped' with a reason."""


@contextlib.contextmanager
def record_step(step, *, event=None, superevent=None, reraise=True):
    """Context manager that writes a StepRun around the enclosed block.

    A ``StepSkipped`` ends the step as skipped; any other exception marks it
    failed with the reason and is re-raised (unless ``reraise`` is False).
    """
    run = StepRun.objects.create(
        step=step, event=event, superevent=superevent, started=timezone.now(), worker=WORKER_NAME
    )
    try:
        yield run
    except StepSkipped as skipped:
        finish(run, StepRun.Status.SKIPPED, str(skipped))
    except Exception as error:
        finish(run, StepRun.Status.FAILED, f"{type(error).__name__}: {error}")
        logger.exception("step %s failed", step)
        if reraise:
            raise
    else:
        finish(run, StepRun.Status.SUCCEEDED, "")


def finish(run, status, error=""):
    """End ``run`` with ``status`` (and why, if it did not succeed); for a
    step that spans tasks (a download retried later), whose last task ends it."""
    run.status = status
    run.error = error[:MAX_ERROR_CHARS]
    run.finished = timezone.now()
    run.save(update_fields=["status", "error", "finished"])
    logger.info("step %s %s", run.step, status, extra={
        "step": run.step, "status": status, "event": run.event.graceid if run.event_id else None,
        "superevent": run.superevent.superevent_id if run.superevent_id else None,
        "duration_s": round((run.finished - run.started).total_seconds(), 3)})
