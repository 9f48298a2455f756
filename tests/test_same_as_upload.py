"""One CBC event, two ways in, one result.

A real gstlal coinc.xml (ligo.skymap's test data G211117) with its
psd.xml.gz is (b) uploaded by the pipeline to a remote GraceDB (a second
instance of this server) and announced to this one by IGWN Alert messages
only, through librdkafka's mock cluster and ``manage.py listen``, and (a)
uploaded here directly, ``SHIFT_S`` later in GPS time so that it forms a
superevent of its own. A real worker cluster runs both with the production
timings. The remote answers 503 to the first downloads of the psd.xml.gz
(a proxy in front of it), so that the sky map's input is still being fetched
when the event's other annotations are done and the shortest settle wait is
over: the Preliminary alert must wait for the download and BAYESTAR, as it
waits for BAYESTAR after an upload.

Both must give the same superevent (window around the event, FAR, preferred
event and its attributes), the same products (file names, a BAYESTAR sky
map, em_bright and p_astro of the same content) and the same notices (kinds
and content but for ids, times and the sky map's pixels, which BAYESTAR
computes at another sidereal time).
"""
import contextlib
import datetime
import http.server
import json
import threading
import time
import uuid

import pytest
import requests
from django.utils import timezone

from alerts import vocabulary as v
from alerts.events import create_event
from alerts.models import Event, File, Notice, NoticeDelivery, NoticePayload, SkymapSummary, StepRun
from benchmarks.alert_path import real_gstlal_upload, shifted
from tests.cluster import start_cluster, stop_cluster, wait_for
from tests.gracedb_remote import pipeline_client
from tests.kafka import publish
from tests.test_gracedb_source import no_credential_lookup, remote_gracedb  # noqa: F401 (fixtures)
from tests.test_ingest import message
from tests.test_listen import broker, listen_process  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db(transaction=True)

SHIFT_S = 1000
FAILED_PSD_DOWNLOADS = 2
RETRY_INITIAL_S = 2.0  # so the psd.xml.gz arrives 2 + 4 s after its first try
NOTICE_LIMIT_S = 400
# Fields of a JSON notice's event that must be equal either way.
SAME_EVENT_FIELDS = ("far", "significant", "instruments", "group", "pipeline", "search", "classification",
                     "properties", "duration", "central_frequency")


@contextlib.contextmanager
def flaky_gracedb(api, failures, path_part):
    """A proxy in front of the remote GraceDB that answers 503 to the first
    ``failures`` GETs whose path holds ``path_part``; yields its API URL."""
    upstream = api.split("/gracedb/api/")[0]
    failed = []

    class Proxy(http.server.BaseHTTPRequestHandler):
        def forward(self):
            if self.command == "GET" and path_part in self.path and len(failed) < failures:
                failed.append(self.path)
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            answer = requests.request(self.command, upstream + self.path, data=self.rfile.read(length) or None,
                                      headers={key: value for key, value in self.headers.items()},
                                      allow_redirects=False, timeout=60)
            self.send_response(answer.status_code)
            for key, value in answer.headers.items():
                if key.lower() not in {"content-length", "transfer-encoding", "connection", "content-encoding"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PUT = do_DELETE = forward

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        server.failed = failed
        yield f"http://127.0.0.1:{server.server_address[1]}/gracedb/api/", server
    finally:
        server.shutdown()
        server.server_close()


def gracedb_messages(pipeline, graceid):
    """What GraceDB publishes for an event uploaded with its files: the new
    event, then one log message per log entry that carries a file."""
    obj = pipeline.event(graceid).json()
    entries = [entry for entry in pipeline.logs(graceid).json()["log"] if entry.get("filename")]
    return [message(graceid, "new", data=obj, obj=obj)] + [message(graceid, "log", data=entry, obj=obj)
                                                           for entry in entries]


def preliminary_sent(event):
    event.refresh_from_db()
    if event.superevent_id is None:
        return False
    notices = Notice.objects.filter(superevent_id=event.superevent_id, alert_type=v.PRELIMINARY_ALERT)
    return notices.exists() and not NoticeDelivery.objects.filter(notice__in=notices).exclude(
        status=NoticeDelivery.Status.SENT).exists()


def idle():
    """Nothing queued, taken or running on the worker cluster (twice in a
    row, a second apart): what the alert started (plots, the flattened map,
    the circular draft) is done. Delayed tasks due later (the clean-up pass)
    do not count."""
    from django_q.brokers import get_broker
    from django_q.conf import Conf

    from alerts.models import DelayedTask, RunningTask
    from alerts.workers import slow_queue_name

    def now_idle():
        due_soon = timezone.now() + datetime.timedelta(seconds=60)
        return (all(get_broker(name).queue_size() == 0 for name in (Conf.PREFIX, slow_queue_name()))
                and not RunningTask.objects.exists() and not StepRun.objects.filter(status=StepRun.Status.RUNNING).exists()
                and not DelayedTask.objects.filter(fired__isnull=True, due__lt=due_soon).exists())

    if not now_idle():
        return False
    time.sleep(1.0)
    return now_idle()


def outcome(event):
    """What one way in produced, in terms that do not depend on ids or on
    when it happened (times relative to the event's)."""
    event.refresh_from_db()
    superevent = event.superevent
    notices = []
    for notice in Notice.objects.filter(superevent=superevent).order_by("created"):
        payload = json.loads(bytes(NoticePayload.objects.get(notice=notice, format="json").content))
        notices.append({"kind": notice.alert_type, "reason": notice.reason, "serial": notice.serial,
                        "significant": notice.significant, "role": notice.role,
                        "event": {key: payload["event"][key] for key in SAME_EVENT_FIELDS},
                        "has_skymap": bool(payload["event"]["skymap"])})
    skymap = File.objects.filter(event=event, name="bayestar.multiorder.fits").order_by("-version").first()
    return {
        "event": {"far": event.far, "snr": event.snr, "instruments": event.instruments, "group": event.group,
                  "pipeline": event.pipeline, "search": event.search, "category": event.category,
                  "labels": event.label_names(),
                  "coinc attributes": {key: event.extra_attributes.get(key) for key in COINC_KEYS}},
        "superevent": {"window": (round(superevent.t_start - event.gpstime, 6), round(superevent.t_0 - event.gpstime, 6),
                                  round(superevent.t_end - event.gpstime, 6)),
                       "far": superevent.far, "preferred": superevent.preferred_event_id == event.pk,
                       "labels": superevent.label_names(), "events": superevent.events.count()},
        "event files": sorted({f.name for f in File.objects.filter(event=event)}),
        # The flattened map is made after SKYMAP_READY, off the alert path:
        # it is copied to the superevent only if it was there when the alert
        # went out, which is a race either way in (the event has it in both).
        "superevent files": sorted({f.name for f in File.objects.filter(superevent=superevent)} - {v.BAYESTAR_FLAT}),
        "em_bright": json.loads(File.objects.get(event=event, name=v.EM_BRIGHT_FILENAME).read()),
        "p_astro": json.loads(File.objects.filter(event=event, name="gstlal.p_astro.json")
                              .order_by("-version").first().read()),
        "bayestar": StepRun.objects.filter(event=event, step="bayestar", status=StepRun.Status.SUCCEEDED).count(),
        "skymap": skymap and SkymapSummary.objects.get(file=skymap),
        "notices": notices,
    }


# Attributes an upload reads from coinc.xml (alerts.events.attributes_from_coinc)
# but gps_seconds, which the shift changes.
COINC_KEYS = ("gps_nanoseconds", "detector_snrs", "mass1", "mass2", "spin1z", "spin2z", "chirp_mass", "f_low",
              "likelihood", "has_psd", "program")


def test_an_event_announced_by_igwn_alert_gives_what_its_direct_upload_gives(
        remote_gracedb, broker, worker_env, settings, tmp_path, no_credential_lookup):  # noqa: F811
    api, user, password = remote_gracedb
    coinc, psd = real_gstlal_upload()
    settings.ORCHESTRATOR = {**settings.ORCHESTRATOR, "TASKS_INLINE": False, "PRELIMINARY_ALERTS": True}
    pipeline = pipeline_client(api, user, password)
    remote_event = pipeline.create_event("CBC", "gstlal", "coinc.xml", filecontents=coinc, search="AllSky").json()
    graceid = remote_event["graceid"]
    pipeline.write_log(graceid, "PSD", filename="psd.xml.gz", filecontents=psd, tag_name=["psd"])
    messages = gracedb_messages(pipeline, graceid)
    assert [m["data"].get("filename", "") for m in messages] == ["", "coinc.xml", "psd.xml.gz"]

    with flaky_gracedb(api, FAILED_PSD_DOWNLOADS, "psd.xml.gz") as (proxy_api, proxy):
        worker_env.update({
            "ORCHESTRATOR_PRELIMINARY_ALERTS": "1", "ORCHESTRATOR_LOG_LEVEL": "WARNING",
            "ORCHESTRATOR_OUTBOX_DIR": str(tmp_path / "outbox"), "ORCHESTRATOR_DETCHAR_FRAME_GLOB": "",
            "ORCHESTRATOR_PRELIMINARY_CLEANUP_DELAY_S": "3600",  # no clean-up pass within the test
            "GRACEDB_URL": proxy_api, "GRACEDB_USERNAME": user, "GRACEDB_PASSWORD": password,
            "GRACEDB_RETRY_INITIAL_S": str(RETRY_INITIAL_S), "IGWN_AUTH_UTILS_FIND_SCITOKEN": "0",
            "IGWN_AUTH_UTILS_FIND_X509": "0"})
        cluster = start_cluster(worker_env)
        listener = None
        try:
            # (b) announced by IGWN Alert messages only.
            group = f"gracedb-{uuid.uuid4().hex[:6]}"
            publish(broker, f"{group}.cbc_gstlal", messages)
            listener = listen_process(broker, group, uuid.uuid4().hex, worker_env)
            wait_for(lambda: Event.objects.filter(graceid=graceid).exists(), "the announced event", cluster)
            announced = Event.objects.get(graceid=graceid)
            wait_for(lambda: preliminary_sent(announced) and idle(), "the announced event's Preliminary",
                     cluster, NOTICE_LIMIT_S)
            # (a) the same event, SHIFT_S later, uploaded here.
            uploaded = create_event(group="CBC", pipeline="gstlal", search="AllSky", coinc=shifted(coinc, SHIFT_S),
                                    files=[("psd.xml.gz", psd)])
            wait_for(lambda: preliminary_sent(uploaded) and idle(), "the uploaded event's Preliminary",
                     cluster, NOTICE_LIMIT_S)
        finally:
            if listener is not None:
                listener.terminate()
                listener.communicate(timeout=30)
            stop_cluster(cluster)
        assert len(proxy.failed) == FAILED_PSD_DOWNLOADS  # the download was slow, as intended

    # The announced event's sky map input was still being fetched when its
    # other annotations were done: the alert waited for it.
    download = StepRun.objects.get(event=announced, step="gracedb_download", subject="psd.xml.gz")
    assert (download.status, download.attempt) == (StepRun.Status.SUCCEEDED, FAILED_PSD_DOWNLOADS + 1)
    ready = {label.name: label.created for label in announced.labels.all()}
    first_notice = Notice.objects.filter(superevent_id=announced.superevent_id).order_by("created").first()
    assert ready["EMBRIGHT_READY"] < download.finished and ready["PASTRO_READY"] < download.finished
    assert ready["SKYMAP_READY"] < first_notice.created

    via_messages, via_upload = outcome(announced), outcome(uploaded)
    assert announced.gpstime + SHIFT_S == pytest.approx(uploaded.gpstime, abs=1e-6)
    # Sky maps: both made here by BAYESTAR, from the same inputs at another
    # sidereal time: the same areas and distance, up to the sky grid.
    maps = via_messages.pop("skymap"), via_upload.pop("skymap")
    assert all(maps), "a sky map is missing"
    assert maps[0].area_90_deg2 == pytest.approx(maps[1].area_90_deg2, rel=0.1)
    assert maps[0].area_50_deg2 == pytest.approx(maps[1].area_50_deg2, rel=0.1)
    assert maps[0].distance_mean_mpc == pytest.approx(maps[1].distance_mean_mpc, rel=0.02)
    for what in ("event", "superevent", "event files", "superevent files", "em_bright", "p_astro", "bayestar"):
        assert via_messages[what] == via_upload[what], (what, via_messages[what], via_upload[what])
    assert via_messages["bayestar"] == 1
    assert {"bayestar.multiorder.fits", v.BAYESTAR_FLAT, "em_bright.json", "gstlal.p_astro.json", "coinc.xml",
            "psd.xml.gz"} <= set(via_messages["event files"])
    assert {"bayestar.multiorder.fits", "em_bright.json", "gstlal.p_astro.json", "preliminary-circular.txt"} <= \
        set(via_messages["superevent files"])
    assert via_messages["notices"] == via_upload["notices"]
    assert [n["kind"] for n in via_messages["notices"]] == [v.PRELIMINARY_ALERT]
    assert via_messages["notices"][0]["has_skymap"]
