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
``retry.max_attempts`` times; then the failure is logged on the event. The
alert path never waits for them: the orchestrator's annotation wait bounds
what a missing sky map can cost. A download repeated after a crash stores
nothing new when the bytes are those already stored. What is logged here
about the exchange with GraceDB is not written back to it.
"""
import logging

from django.conf import settings

from alerts import workers
from alerts.events import UploadError, add_event_file
from alerts.models import Event
from alerts.store import latest_file, log
from alerts.vocabulary import COINC_FILENAME, PSD_FILENAME, RANKING_DATA_FILENAME

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


def fetch_announced_file(event_pk, filename, tags=None, attempt=1):
    """Download ``filename`` (and first the event's coinc.xml where its
    annotation needs it) and store it as an upload would."""
    event = Event.objects.get(pk=event_pk)
    wanted = ([COINC_FILENAME] if filename in NEEDS_COINC and latest_file(event, COINC_FILENAME) is None
              else []) + [filename]
    try:
        for name in wanted:
            data = download(event.graceid, name)
            current = latest_file(event, name)
            if current is not None and current.sha256 == current.digest(data):
                continue  # a repeated download after a crash: already stored
            add_event_file(event, name, data, tags=tags if name == filename else None,
                           message=f"Downloaded {name} from GraceDB")
    except TransientError as error:
        retry = conf()["retry"]
        if attempt < retry["max_attempts"]:
            delay_s = retry["initial_s"] * retry["factor"] ** (attempt - 1)
            log(event, f"Could not download {filename} from GraceDB ({error}); trying again in {delay_s:g} s "
                       f"(attempt {attempt} of {retry['max_attempts']})", announce=False)
            workers.enqueue(fetch_announced_file, event_pk, filename, tags, attempt + 1, delay_s=delay_s)
        else:
            log(event, f"Could not download {filename} from GraceDB after {attempt} attempts ({error}); giving up",
                announce=False)
        return
    except UploadError as error:
        log(event, f"Downloaded {filename} from GraceDB but it was refused: {error}", announce=False)
        return
    except Exception as error:  # noqa: BLE001 - a 4xx or any other answer: logged on the event, never retried
        log(event, f"Could not download {filename} from GraceDB: {type(error).__name__}: {error}", announce=False)
        return
