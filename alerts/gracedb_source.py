"""GraceDB as the source of files: what an IGWN Alert message announces is
downloaded with ``ligo-gracedb`` and stored as a native upload stores it.

The seed's ``handle_cbc_event`` starts with downloads ("download
psd.xml.gz", "download coinc.xml", "download ranking_data.xml.gz"): an event
that arrives by message carries no files, so when a file is announced its
event's coinc.xml is fetched first (BAYESTAR and p_astro read it), then the
file itself, each stored through :func:`alerts.events.add_event_file`, so
annotations run exactly as on an upload.

Downloads are worker tasks. A 5xx answer, a timeout or a refused connection
is retried after ``retry.initial_s * factor**(attempt-1)`` seconds, at most
``retry.max_attempts`` times; then the failure is logged on the event. A
download repeated after a crash stores nothing new when the bytes are those
already stored. What is logged here about the exchange with GraceDB is
not written back to it.

Each announced download is a StepRun (step ``gracedb_download``, subject the
file name) written in the transaction that records the announcement and
ended by the task that stores the file or gives up; while it runs, the file
is under way, so an alert waits for the annotation it brings (a sky map:
``annotations.expected_annotations``) as it would for a file uploaded here.
That wait is the orchestrator's bounded annotation wait: the alert path never
waits on a dead GraceDB longer than ``ANNOTATION_MAX_WAIT_S``.

A coinc.xml fetched for an event made from a message also gives the event
what an upload of it would have read from it and GraceDB's event object
does not carry (``f_low``, ``has_psd``, exact GPS seconds and nanoseconds,
``likelihood``, the program): added, never replacing what the message said.
"""
import logging

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from alerts import workers
from alerts.events import UploadError, add_event_file, attributes_from_coinc
from alerts.models import Event, StepRun
from alerts.science.coinc import parse_coinc
from alerts.steps import WORKER_NAME, finish
from alerts.store import latest_file, log
from alerts.vocabulary import COINC_FILENAME, DOWNLOAD_STEP, PSD_FILENAME, RANKING_DATA_FILENAME

logger = logging.getLogger(__name__)

# Files whose annotation needs the event's coinc.xml (the seed's second download).
NEEDS_COINC = {PSD_FILENAME, RANKING_DATA_FILENAME}


def conf():
    return settings.GRACEDB


def enabled():
    return bool(conf()["url"])


class TransientError(Exception):
    """A download that may work later (5xx, timeout, connection refused)."""


def client():
    """A ligo-gracedb client for ``GRACEDB_URL``, with HTTP basic credentials
    when a user name is configured (no certificate or token lookup)."""
    from ligo.gracedb.rest import GraceDb

    settings_ = conf()
    user = settings_["username"]
    gracedb = GraceDb(service_url=settings_["url"], force_noauth=not user, retries=0)
    if user:
        gracedb.auth = (user, settings_["password"])
    # requests waits forever by default; a GraceDB that takes the connection
    # and never answers must end as a timeout (retried) rather than hold a worker.
    request, timeout_s = gracedb.request, settings_["timeout_s"]

    def request_with_timeout(method, url, **kwargs):
        kwargs["timeout"] = kwargs.get("timeout") or timeout_s
        return request(method, url, **kwargs)

    gracedb.request = request_with_timeout
    return gracedb


def download(graceid, filename):
    """The bytes of ``filename`` of event ``graceid`` on the source GraceDB."""
    import requests
    from ligo.gracedb.exceptions import HTTPError

    try:
        return client().files(graceid, filename).read()
    except HTTPError as error:
        status = error.response.status_code
        if status >= 500:
            raise TransientError(f"GraceDB answered {status}") from None
        raise
    except (requests.ConnectionError, requests.Timeout) as error:
        raise TransientError(f"{type(error).__name__}: {error}") from None


def announce(event, filename, tags=None):
    """Record and queue the download of ``filename``, which a message just
    announced for ``event`` (call inside the transaction that records the
    announcement): its StepRun says, from this moment, that the file is under
    way. Returns the StepRun."""
    subject_chars = StepRun._meta.get_field("subject").max_length
    run = StepRun.objects.create(step=DOWNLOAD_STEP, subject=filename[:subject_chars], event=event,
                                 started=timezone.now())
    workers.enqueue(fetch_announced_file, event.pk, filename, tags, 1, run.pk)
    return run


def fetch_announced_file(event_pk, filename, tags=None, attempt=1, run_pk=None):
    """Download ``filename`` (and first the event's coinc.xml where its
    annotation needs it) and store it as an upload would; ends the download's
    StepRun (``run_pk``) unless it is retried later."""
    event = Event.objects.get(pk=event_pk)
    run = StepRun.objects.filter(pk=run_pk, status=StepRun.Status.RUNNING).first() if run_pk else None
    if run is not None:
        run.attempt, run.worker = attempt, WORKER_NAME
        run.save(update_fields=["attempt", "worker"])
    wanted = ([COINC_FILENAME] if filename in NEEDS_COINC and latest_file(event, COINC_FILENAME) is None
              else []) + [filename]
    try:
        for name in wanted:
            store(event, name, download(event.graceid, name), tags=tags if name == filename else None)
    except TransientError as error:
        retry = conf()["retry"]
        if attempt < retry["max_attempts"]:
            delay_s = retry["initial_s"] * retry["factor"] ** (attempt - 1)
            log(event, f"Could not download {filename} from GraceDB ({error}); trying again in {delay_s:g} s "
                       f"(attempt {attempt} of {retry['max_attempts']})", announce=False)
            workers.enqueue(fetch_announced_file, event_pk, filename, tags, attempt + 1, run_pk, delay_s=delay_s)
            return
        why = f"Could not download {filename} from GraceDB after {attempt} attempts ({error}); giving up"
    except UploadError as error:
        why = f"Downloaded {filename} from GraceDB but it was refused: {error}"
    except Exception as error:  # noqa: BLE001 - a 4xx or any other answer: logged on the event, never retried
        why = f"Could not download {filename} from GraceDB: {type(error).__name__}: {error}"
    else:
        if run is not None:
            finish(run, StepRun.Status.SUCCEEDED)
        return
    log(event, why, announce=False)
    if run is not None:
        finish(run, StepRun.Status.FAILED, why)


def store(event, name, data, tags=None):
    """Store a downloaded file as an upload of it, unless its latest version
    holds these bytes (a download repeated after a crash, or a coinc.xml that
    two downloads fetched at once: the event's lock orders them). A coinc.xml
    also completes the event's attributes (module docstring), in the same
    transaction, so that what its arrival starts reads them."""
    with transaction.atomic():
        Event.objects.select_for_update().filter(pk=event.pk).exists()
        current = latest_file(event, name)
        if current is not None and current.sha256 == current.digest(data):
            return current
        stored = add_event_file(event, name, data, tags=tags, message=f"Downloaded {name} from GraceDB")
        if name == COINC_FILENAME:
            complete_from_coinc(event, data)
    return stored


def complete_from_coinc(event, coinc_xml):
    """Add the extra attributes an upload of ``coinc_xml`` would have given
    ``event`` and it lacks (the file was validated when stored)."""
    extra = attributes_from_coinc(parse_coinc(coinc_xml))["extra_attributes"]
    event.refresh_from_db(fields=["extra_attributes"])  # the event is locked (``store``)
    missing = {key: value for key, value in extra.items() if key not in event.extra_attributes}
    if missing:
        event.extra_attributes = {**missing, **event.extra_attributes}
        event.save(update_fields=["extra_attributes"])
