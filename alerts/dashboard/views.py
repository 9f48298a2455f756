"""Dashboard pages. Thin: reads come from alerts.dashboard.queries, every
action goes through alerts.decisions (the rules live there, not here)."""
import json
import uuid

from astropy.time import Time
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpResponse, HttpResponseForbidden
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from alerts import models, products
from alerts.dashboard import queries
from alerts.dashboard.formatting import age_words, duration_words, far_words
from alerts.dashboard.forms import ListFilters
from alerts.roles import is_advocate
from alerts import vocabulary as vocab

PAGE_SIZE = 25
# Which alert each verdict label sends (the decision service decides; this
# only picks the preview shown before the advocate confirms).
VERDICT_ALERTS = {vocab.ADVOK: vocab.INITIAL_ALERT, vocab.ADVNO: vocab.RETRACTION_ALERT}


def _decisions():
    """The decision service (imported late: the dashboard needs nothing of it to read)."""
    from alerts import decisions
    return decisions


def _utc(gpstimes):
    """Naive UTC datetimes of GPS times, in one astropy conversion."""
    return [t.replace(tzinfo=None) for t in Time(list(gpstimes), format="gps").utc.to_datetime()] if gpstimes else []


def _list_context(request):
    form = ListFilters(request.GET or None, label_choices=queries.label_choices())
    filters = form.cleaned_data if form.is_valid() else {}
    queryset = queries.superevent_list(
        category=filters.get("category", ""), label=filters.get("label", ""),
        significance=filters.get("significance", ""), waiting=filters.get("waiting", False))
    paginator = Paginator(queryset, PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    rows = queries.decorate_rows(page.object_list)
    now = timezone.now().replace(tzinfo=None)
    for row, utc in zip(rows, _utc([row.t_0 for row in rows])):
        row.utc = utc
        row.age = age_words((now - utc).total_seconds())
        row.far_text = far_words(row.far)
    query = request.GET.copy()
    query.pop("page", None)
    return {"form": form, "page": page, "rows": rows, "query": query.urlencode()}


@login_required
def superevent_list(request):
    return render(request, "dashboard/list.html", _list_context(request))


@login_required
def superevent_rows(request):
    """The list's table body alone, for the page's polling refresh."""
    return render(request, "dashboard/_rows.html", _list_context(request))


def _newest(files):
    newest = {}
    for file in files:
        if file.name not in newest or file.version > newest[file.name].version:
            newest[file.name] = file
    return newest


def _find(newest_by_owner, name_test):
    for newest in newest_by_owner:
        for name, file in newest.items():
            if name_test(name):
                return file
    return None


def _timeline(superevent, events, logs, step_runs):
    start = min([event.created for event in events] or [superevent.created])
    items = []
    for log in logs:
        items.append({"time": log.created, "kind": "log", "owner": log.owner_id_text, "text": log.message})
    for run in step_runs:
        seconds = (run.finished - run.started).total_seconds() if run.finished else None
        owner = run.superevent.superevent_id if run.superevent_id else (run.event.graceid if run.event_id else "")
        items.append({"time": run.started, "kind": f"step ({run.status})", "owner": owner,
                      "text": run.step + (f": {run.error}" if run.error else ""),
                      "duration": duration_words(seconds)})
    items.sort(key=lambda item: item["time"])
    for item in items:
        item["offset"] = duration_words((item["time"] - start).total_seconds())
    return items


@login_required
def superevent_detail(request, superevent_id):
    superevent = get_object_or_404(models.Superevent.objects.select_related("preferred_event"),
                                   superevent_id=superevent_id)
    events = list(superevent.events.order_by("created").prefetch_related("labels"))
    event_pks = [event.pk for event in events]
    files = list(models.File.objects.filter(superevent=superevent).order_by("name", "-version"))
    preferred_files = list(models.File.objects.filter(event=superevent.preferred_event_id).order_by("name"))
    owners = [_newest(files), _newest(preferred_files)]
    skymap = _find(owners, lambda name: name.endswith(vocab.MULTIORDER_SUFFIX))
    plot = None
    if skymap is not None:
        plot_name = products.plot_name(skymap.name)
        plot = _find(owners, lambda name: name == plot_name)
    summary = products.stored_skymap_summary(skymap) if skymap else None
    p_astro_file = _find(owners, lambda name: name.endswith(vocab.P_ASTRO_SUFFIX))
    em_bright_file = _find(owners, lambda name: name == vocab.EM_BRIGHT_FILENAME)
    dq_file = _find(owners, lambda name: name == vocab.DATA_QUALITY_REPORT)
    dq_report = None
    if dq_file is not None:
        try:
            dq_report = json.loads(dq_file.read())
        except (OSError, ValueError):
            dq_report = None
    circulars = [file for file in owners[0].values() if file.name.endswith("-circular.txt")]
    for file in circulars:
        try:
            file.text = file.read().decode("utf-8", "replace")
        except OSError:
            file.text = ""
    logs = list(models.Log.objects.filter(superevent=superevent).select_related("superevent", "event")) + list(
        models.Log.objects.filter(event__in=event_pks).select_related("event", "superevent"))
    step_runs = list(models.StepRun.objects.filter(superevent=superevent).select_related("superevent", "event")) \
        + list(models.StepRun.objects.filter(event__in=event_pks).select_related("event", "superevent"))
    notices = list(superevent.notices.prefetch_related("deliveries", "payloads").order_by("serial"))
    labels = list(superevent.labels.order_by("created"))
    label_names = {label.name for label in labels}
    utc = _utc([superevent.t_0])[0]
    context = {
        "superevent": superevent, "events": events, "utc": utc, "far_text": far_words(superevent.far),
        "files": files, "skymap": skymap, "plot": plot, "summary": summary,
        "p_astro": _bars(queries.read_probabilities(p_astro_file)),
        "em_bright": _bars(queries.read_probabilities(em_bright_file, products.PROPERTY_NAMES)),
        "dq_report": dq_report, "dq_file": dq_file, "circulars": circulars,
        "timeline": _timeline(superevent, events, logs, step_runs), "notices": notices, "labels": labels,
        "waiting": vocab.ADVREQ in label_names and not label_names & set(vocab.VERDICT_LABELS),
        "can_act": is_advocate(request.user), "alert_files": [f for f in files if vocab.PUBLIC_TAG in f.tags],
        "instruments": sorted({ifo for event in events for ifo in event.instrument_list}),
        "detectors": sorted({ifo for event in events for ifo in event.instrument_list}),
        "label_vocabulary": sorted(set(vocab.VERDICT_LABELS) | set(vocab.DQ_LABELS) | {vocab.ADVREQ, vocab.DQR_REQUEST}),
    }
    return render(request, "dashboard/superevent.html", context)


def _bars(probabilities):
    if not probabilities:
        return None
    return [{"name": name, "value": value, "percent": round(100 * value, 1)}
            for name, value in sorted(probabilities.items(), key=lambda item: -item[1])]


@login_required
def event_detail(request, graceid):
    event = get_object_or_404(models.Event.objects.select_related("superevent"), graceid=graceid)
    context = {
        "event": event, "utc": _utc([event.gpstime])[0], "far_text": far_words(event.far),
        "files": models.File.objects.filter(event=event).order_by("name", "-version"),
        "labels": event.labels.order_by("created"),
        "logs": event.logs.order_by("created"),
        "can_act": is_advocate(request.user),
    }
    return render(request, "dashboard/event.html", context)


@login_required
def file_download(request, pk):
    """One stored file version, to signed-in users only (the sky map plot too)."""
    file = get_object_or_404(models.File, pk=pk)
    try:
        handle = file.content.open("rb")
    except (OSError, ValueError):
        raise Http404("file content missing")
    inline = file.name.endswith(vocab.PNG_SUFFIX) or file.name.endswith(".txt") or file.name.endswith(".json")
    return FileResponse(handle, as_attachment=not inline, filename=file.name)


PAYLOAD_TYPES = {"json": "application/json", "avro": "application/octet-stream", "voevent": "application/xml"}


@login_required
def payload_download(request, pk, format):
    payload = get_object_or_404(models.NoticePayload.objects.select_related("notice"), notice=pk, format=format)
    response = HttpResponse(bytes(payload.content), content_type=PAYLOAD_TYPES.get(format, "application/octet-stream"))
    extension = {"voevent": "xml"}.get(format, format)
    response["Content-Disposition"] = f'attachment; filename="{payload.notice.identity}.{extension}"'
    return response


# --- actions ----------------------------------------------------------------------


def _advocate_or_403(request):
    if not is_advocate(request.user):
        return HttpResponseForbidden("only advocates may do this", content_type="text/plain")
    return None


def _chosen_files(request):
    return [value for value in request.GET.getlist("files") + request.POST.getlist("files") if value] or None


@login_required
def confirm_alert(request, superevent_id, action):
    """The confirmation page: the dry-run preview of what would be sent."""
    forbidden = _advocate_or_403(request)
    if forbidden:
        return forbidden
    superevent = get_object_or_404(models.Superevent, superevent_id=superevent_id)
    alert_type = VERDICT_ALERTS.get(action.upper(), vocab.UPDATE_ALERT if action == "update" else None)
    if alert_type is None:
        raise Http404("no such action")
    files = _chosen_files(request)
    decisions = _decisions()
    preview = error = None
    try:
        preview = decisions.preview(superevent, alert_type, files)
    except decisions.Refused as refusal:
        error = str(refusal)
    notice = preview.notice if preview else {}
    fields = [(key, notice.get(key)) for key in ("alert_type", "superevent_id", "time_created", "urls")
              if key in notice]
    event = notice.get("event") or {}
    fields += [(key, event.get(key)) for key in ("time", "far", "significant", "instruments", "group", "pipeline",
                                                 "search", "classification", "properties") if key in event]
    return render(request, "dashboard/confirm.html", {
        "superevent": superevent, "action": action, "alert_type": alert_type, "preview": preview,
        "error": error, "fields": fields, "files": files or [], "idempotency_key": uuid.uuid4().hex,
    })


@require_POST
@login_required
def act(request, superevent_id):
    """Every advocate action on a superevent, through alerts.decisions."""
    forbidden = _advocate_or_403(request)
    if forbidden:
        return forbidden
    superevent = get_object_or_404(models.Superevent, superevent_id=superevent_id)
    decisions = _decisions()
    action = request.POST.get("action", "")
    reason = request.POST.get("reason", "")
    user = request.user
    try:
        if action in (vocab.ADVOK, vocab.ADVNO):
            notice = decisions.apply_verdict(superevent, action, user=user, reason=reason, via="dashboard")
            done = f"{action} applied" + (f"; notice {notice.identity} sent" if notice else "")
        elif action == "update":
            notice = decisions.send(superevent, vocab.UPDATE_ALERT, _chosen_files(request), user=user,
                                    reason=reason, idempotency_key=request.POST.get("idempotency_key") or None,
                                    via="dashboard")
            done = f"notice {notice.identity} sent"
        elif action == "preferred":
            event = get_object_or_404(models.Event, graceid=request.POST.get("event", ""))
            decisions.set_preferred_event(superevent, event, user=user, reason=reason, via="dashboard")
            done = f"preferred event is now {event.graceid}"
        elif action == "relocalize":
            event = get_object_or_404(models.Event, graceid=request.POST.get("event", ""))
            disabled = request.POST.getlist("disabled")
            decisions.relocalize(event, disabled, user=user, reason=reason, via="dashboard")
            done = f"re-localization of {event.graceid} without {', '.join(disabled) or 'no detector'} queued"
        elif action in ("label_add", "label_remove"):
            name = request.POST.get("label", "").strip()
            change = decisions.add_label if action == "label_add" else decisions.remove_label
            change(superevent, name, user=user, via="dashboard")
            done = f"label {name} {'added' if action == 'label_add' else 'removed'}"
        elif action == "comment":
            decisions.add_comment(superevent, request.POST.get("text", ""), user=user, via="dashboard")
            done = "comment added"
        else:
            return HttpResponse("unknown action", status=400, content_type="text/plain")
    except decisions.NotAllowed as refusal:
        return HttpResponseForbidden(str(refusal), content_type="text/plain")
    except decisions.Refused as refusal:
        messages.error(request, f"Refused: {refusal}")
    else:
        messages.success(request, done)
    return redirect("dashboard:superevent", superevent_id=superevent.superevent_id)
