"""GraceDB's REST endpoints, each a thin layer over the orchestrator's
services (``alerts.events``, ``alerts.store``, the decision service).

Errors are GraceDB's status codes with ``{"error": ...}``: 400 bad input,
401 anonymous, 403 missing role, 404 unknown object, 501 an endpoint of
GraceDB's API this surface does not serve (the body names it).
"""
import mimetypes
import os
from urllib.parse import urlencode

from django.db.models import Q
from django.http import FileResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions, permissions, status
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import roles, store, vocabulary
from alerts.events import (LABEL_NAME, UploadError, add_event_file, create_event, reject,
                           validate_file_name, validate_origin)
from alerts.gracedb_api import decide, query, serializers as shapes
from alerts.gracedb_api.auth import PasswordOrTokenBasicAuthentication
from alerts.models import Event, File, Label, Log, Notice, Superevent
from alerts.science.burst_files import BurstFileError, parse_burst_event_file
from alerts.config import policy

SOURCE = "gracedb_api"
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
INSTRUMENTS = {"H1": "LHO", "L1": "LLO", "V1": "Virgo", "K1": "KAGRA", "G1": "GEO"}
SIGNOFF_TYPES = {"OP": "operator", "ADV": "advocate"}
SIGNOFF_STATUSES = {"OK": "OKAY", "NO": "NOT OKAY"}
SUPEREVENT_CATEGORIES = {"P": "Production", "T": "Test", "M": "MDC"}
# GraceDB's spelling of the pipelines whose name is not all lower case.
PIPELINE_SPELLING = {"mbta": "MBTA", "cwb": "CWB", "olib": "oLIB", "mly": "MLy"}
EVENT_SORT = {"gpstime", "far", "created", "graceid", "id"}
ROLE_GROUPS = {roles.PIPELINE: vocabulary.PIPELINES_GROUP, roles.ADVOCATE: vocabulary.ADVOCATES_GROUP}
SUPEREVENT_SORT = {"t_0", "t_start", "t_end", "far", "created", "superevent_id", "id"}


def not_served(method, path):
    return {"error": f"{method} {path} is not served by this GraceDB-compatible surface"}


@csrf_exempt
def unserved(request, rest=""):
    """Any path of GraceDB's API with no endpoint here: 501 naming it."""
    return JsonResponse(not_served(request.method, request.path), status=501)


class Readers(permissions.BasePermission):
    """Signed-in users; anonymous requests answer 401 (basic challenge)."""

    def has_permission(self, request, view):
        return roles.is_reader(request.user)


class GraceView(APIView):
    authentication_classes = [PasswordOrTokenBasicAuthentication, TokenAuthentication, SessionAuthentication]
    permission_classes = [Readers]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        if request.method in ("POST", "PUT", "PATCH") and not hasattr(request.data, "get"):
            raise exceptions.ValidationError({"error": "the request body must be a form or a JSON object"})

    def http_method_not_allowed(self, request, *args, **kwargs):
        raise NotServed(not_served(request.method, request.path)["error"])

    @property
    def urls(self):
        return shapes.Urls(self.request.build_absolute_uri(reverse("gracedb_api:root")))

    def need(self, *any_of):
        if not any(roles.allowed(self.request.user, role) for role in any_of):
            groups = " or ".join(f"'{ROLE_GROUPS[role]}'" for role in any_of)
            raise exceptions.PermissionDenied(f"only users in the group {groups} may do this")

    def bad(self, message, excerpt=b""):
        reject(SOURCE, message, excerpt)
        raise exceptions.ValidationError({"error": message})

    def owner(self):
        if "graceid" in self.kwargs:
            event = Event.objects.select_related("superevent").filter(graceid=self.kwargs["graceid"]).first()
            if event is None:
                raise exceptions.NotFound(f"no event {self.kwargs['graceid']}")
            return event
        superevent = Superevent.objects.filter(superevent_id=self.kwargs["superevent_id"]).first()
        if superevent is None:
            raise exceptions.NotFound(f"no superevent {self.kwargs['superevent_id']}")
        return superevent

    def decided(self, call, *args, **kwargs):
        """Run a decision; its refusal answers 403 (role) or 400 (GraceDB's
        status for a request the rules refuse; the client would retry 409).
        The decision service checks the role itself (and records refusals),
        so the views do not check it first."""
        try:
            return call(*args, **kwargs)
        except decide.NotAllowed as error:
            raise exceptions.PermissionDenied(str(error)) from None
        except decide.Refused as error:
            raise exceptions.ValidationError({"error": str(error)}) from None


class NotServed(exceptions.APIException):
    status_code = 501
    default_detail = "not served"


def page(request, queryset, key, render):
    """GraceDB's paging: ``start`` and ``count`` in, ``numRows`` and
    ``links`` (self, first, next, last) out."""
    try:
        count = min(max(int(request.GET.get("count", DEFAULT_PAGE_SIZE)), 1), MAX_PAGE_SIZE)
        start = max(int(request.GET.get("start", 0)), 0)
    except ValueError:
        raise exceptions.ValidationError({"error": "start and count must be integers"}) from None
    total = queryset.count()
    items = [render(item) for item in queryset[start:start + count]]

    def link(at):
        params = {k: v for k, v in request.GET.items() if k not in ("start", "count")}
        return request.build_absolute_uri(request.path) + "?" + urlencode({**params, "start": at, "count": count})

    links = {"self": link(start), "first": link(0), "last": link(max(total - 1, 0) // count * count)}
    if start + count < total:
        links["next"] = link(start + count)
    return {"start": start, "numRows": total, key: items, "links": links}


def ordering(request, allowed, default):
    sort = request.GET.get("sort")
    if not sort:
        return default
    fields = [field.strip() for field in sort.split(",") if field.strip()]
    for field in fields:
        if field.lstrip("-") not in allowed:
            raise exceptions.ValidationError({"error": f"cannot sort by {field!r}; "
                                                       f"served: {', '.join(sorted(allowed))}"})
    return fields


def filtered(queryset, text, fields):
    try:
        filters = query.parse(text, fields)
    except query.QueryError as error:
        raise exceptions.ValidationError({"error": str(error)}) from None
    for condition in filters:
        queryset = queryset.filter(condition)
    # Superevents filtered by their events' fields join them: one row each.
    return queryset.distinct() if filters and fields.origin_prefix else queryset


# --- the API root -----------------------------------------------------------------

def label_names():
    return sorted(vocabulary.LABELS)


class Root(GraceView):
    def get(self, request):
        base = self.urls.base
        event, superevent = base + "events/{graceid}", base + "superevents/{superevent_id}/"
        pipelines = sorted({PIPELINE_SPELLING.get(p, p) for names in policy()["PIPELINES"].values()
                            for p in names})
        return Response({
            "links": {"self": base, "events": base + "events/", "superevents": base + "superevents/",
                      "user-info": base + "user-info/", "tag": base + "tag/", "gwtc": base + "gwtc/"},
            "templates": {
                "event-detail-template": event,
                "event-log-template": event + "/log/",
                "event-log-detail-template": event + "/log/{N}",
                "event-label-template": event + "/labels/{label}",
                "files-template": event + "/files/{filename}",
                "taglist-template": event + "/log/{N}/tag/",
                "tag-template": event + "/log/{N}/tag/{tag_name}",
                "voevent-list-template": event + "/voevent/",
                "voevent-detail-template": event + "/voevent/{N}",
                "emobservation-list-template": event + "/emobservation/",
                "emobservation-detail-template": event + "/emobservation/{N}",
                "update-grbevent-template": event + "/grbevent/",
                "event-upload-template": event + "/upload/",
                "event-reserve-template": base + "events/reserve/",
                "superevent-detail-template": superevent,
                "superevent-event-list-template": superevent + "events/",
                "superevent-event-detail-template": superevent + "events/{graceid}/",
                "superevent-label-list-template": superevent + "labels/",
                "superevent-label-detail-template": superevent + "labels/{label_name}/",
                "superevent-log-list-template": superevent + "logs/",
                "superevent-log-detail-template": superevent + "logs/{N}/",
                "superevent-log-tag-list-template": superevent + "logs/{N}/tags/",
                "superevent-log-tag-detail-template": superevent + "logs/{N}/tags/{tag_name}/",
                "superevent-file-list-template": superevent + "files/",
                "superevent-file-detail-template": superevent + "files/{file_name}",
                "superevent-voevent-list-template": superevent + "voevents/",
                "superevent-voevent-detail-template": superevent + "voevents/{N}/",
                "superevent-emobservation-list-template": superevent + "emobservations/",
                "superevent-emobservation-detail-template": superevent + "emobservations/{N}/",
                "superevent-signoff-list-template": superevent + "signoffs/",
                "superevent-signoff-detail-template": superevent + "signoffs/{typeinst}/",
                "superevent-permission-list-template": superevent + "permissions/",
                "superevent-permission-modify-template": superevent + "permissions/modify/",
                "superevent-confirm-as-gw-template": superevent + "confirm-as-gw/",
                "superevent-pipeline-preferred-event-list-template": superevent + "pipeline_preferred_events/",
                "superevent-pipeline-preferred-event-detail-template":
                    superevent + "pipeline_preferred_events/{graceid}/",
                "superevent-notice-list-template": superevent + "notices/",
                "superevent-notice-detail-template": superevent + "notices/{N}/",
                "gwtc-number-list": base + "gwtc/{number}/",
                "gwtc-version-detail": base + "gwtc/{number}/{version}/",
            },
            "groups": list(policy()["PIPELINES"]),
            "pipelines": pipelines,
            "searches": list(policy()["SEARCHES"]),
            "labels": label_names(),
            "em-groups": [],
            "instruments": INSTRUMENTS,
            "superevent-categories": SUPEREVENT_CATEGORIES,
            "voevent-types": shapes.VOEVENT_TYPES,
            "signoff-types": SIGNOFF_TYPES,
            "signoff-statuses": SIGNOFF_STATUSES,
            "server-version": "orchestrator",
            "api-versions": [],
        })


class UserInfo(GraceView):
    def get(self, request):
        return Response({"username": request.user.get_username()})


# --- events -------------------------------------------------------------------------

def form_bool(value, what):
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", ""):
        return False
    raise exceptions.ValidationError({"error": f"{what} must be True or False, got {str(value)[:40]!r}"})


class Events(GraceView):
    def get(self, request):
        queryset = Event.objects.select_related("superevent").prefetch_related("labels")
        queryset = filtered(queryset, request.GET.get("query", ""), query.EVENT_FIELDS)
        queryset = queryset.order_by(*ordering(request, EVENT_SORT, ["-id"]))
        urls = self.urls
        return Response(page(request, queryset, "events", lambda event: shapes.event_json(event, urls)))

    def post(self, request):
        """create_event: group, pipeline, search, offline, labels and the
        event file (``eventFile``): a coinc.xml for CBC, a Burst pipeline's
        JSON or ``key: value`` text."""
        self.need(roles.PIPELINE)
        upload = request.FILES.get("eventFile")
        if upload is None:
            self.bad("the event file (eventFile) is missing")
        data = upload.read()
        group, pipeline = request.data.get("group", ""), request.data.get("pipeline", "")
        search = request.data.get("search") or vocabulary.ALLSKY
        offline = form_bool(request.data.get("offline", "False"), "offline")
        labels = request.data.getlist("labels") if hasattr(request.data, "getlist") else []
        try:
            validate_origin(group, pipeline, search)
            if group == vocabulary.CBC:
                event = create_event(group=group, pipeline=pipeline, search=search, coinc=data,
                                     offline=offline, labels=labels)
            else:
                try:
                    attributes = parse_burst_event_file(data)
                except BurstFileError as error:
                    raise UploadError(f"{os.path.basename(upload.name)}: {error}") from None
                event = create_event(group=group, pipeline=pipeline, search=search, attributes=attributes,
                                     offline=offline, labels=labels,
                                     files=[(os.path.basename(upload.name), data)])
        except UploadError as error:
            self.bad(str(error), data)
        # Grouped at upload (or by an inline task): read its superevent.
        event = Event.objects.select_related("superevent").get(pk=event.pk)
        return Response(shapes.event_json(event, self.urls, labels=sorted(set(labels))),
                        status=status.HTTP_201_CREATED)


class EventDetail(GraceView):
    def get(self, request, graceid):
        return Response(shapes.event_json(self.owner(), self.urls))


class SupereventEvents(GraceView):
    def get(self, request, superevent_id):
        urls = self.urls
        events = self.owner().events.select_related("superevent").prefetch_related("labels").order_by("id")
        return Response({"events": [shapes.event_json(event, urls) for event in events]})


# --- superevents ----------------------------------------------------------------------

SUPEREVENT_FIELDS_NOT_SERVED = ("t_start", "t_0", "t_end", "em_type", "time_coinc_far", "space_coinc_far")


class Superevents(GraceView):
    def get(self, request):
        queryset = Superevent.objects.select_related("preferred_event__superevent").prefetch_related(
            "labels", "events", "preferred_event__labels")
        queryset = filtered(queryset, request.GET.get("query", ""), query.SUPEREVENT_FIELDS)
        queryset = queryset.order_by(*ordering(request, SUPEREVENT_SORT, ["-t_0"]))
        urls = self.urls
        return Response(page(request, queryset, "superevents", lambda s: shapes.superevent_json(s, urls)))


class SupereventDetail(GraceView):
    def get(self, request, superevent_id):
        return Response(shapes.superevent_json(self.owner(), self.urls))

    def patch(self, request, superevent_id):
        """update_superevent: the preferred event (decision service)."""
        superevent = self.owner()
        others = [name for name in SUPEREVENT_FIELDS_NOT_SERVED if request.data.get(name) not in (None, "")]
        if others:
            raise NotServed(f"PATCH {request.path} with {', '.join(others)} is not served by this "
                            f"GraceDB-compatible surface (only preferred_event)")
        graceid = request.data.get("preferred_event")
        if not graceid:
            self.bad("give the preferred_event to change")
        event = Event.objects.filter(graceid=graceid).first()
        if event is None:
            self.bad(f"no event {graceid}")
        self.decided(decide.set_preferred_event, superevent, event, user=request.user)
        superevent = Superevent.objects.get(pk=superevent.pk)
        return Response(shapes.superevent_json(superevent, self.urls))


# --- logs and tags ----------------------------------------------------------------------

def owner_logs(owner):
    return Log.objects.filter(**store.owner_kwargs(owner)).select_related("file").order_by("created", "id")


def log_number(owner, log):
    return owner_logs(owner).filter(Q(created__lt=log.created) | Q(created=log.created, id__lte=log.id)).count()


class Logs(GraceView):
    def get(self, request, **kwargs):
        owner, urls = self.owner(), self.urls
        logs = [shapes.log_json(log, n, owner, urls) for n, log in enumerate(owner_logs(owner), start=1)]
        key = "log" if isinstance(owner, Event) else "logs"
        return Response({"start": 0, "numRows": len(logs), key: logs, "links": {"self": urls.logs(owner)}})

    def post(self, request, **kwargs):
        """write_log: a comment, tags, a file (``upload``), a label."""
        owner = self.owner()
        comment = request.data.get("comment", "") or ""
        tags = [t for t in (request.data.getlist("tagname") if hasattr(request.data, "getlist")
                            else request.data.get("tagname") or []) if t]
        label = request.data.get("label")
        upload = request.FILES.get("upload")
        if label:
            if not LABEL_NAME.match(label):
                self.bad(f"label name must be 1-32 letters, digits or underscores, got {label[:40]!r}")
            self.need(roles.ADVOCATE)  # before anything is stored
        if upload is not None:
            self.need(roles.PIPELINE)
            name, data = os.path.basename(upload.name), upload.read()
            try:
                if isinstance(owner, Event):
                    stored = add_event_file(owner, name, data, tags=tags or None, message=comment or None)
                else:
                    validate_file_name(name)
                    stored = store.add_file(owner, name, data, tags=tags, message=comment or None)
            except UploadError as error:
                self.bad(str(error), data)
            log = Log.objects.filter(file=stored).order_by("id").first()
        elif comment:
            log = self.decided(decide.add_comment, owner, comment, user=request.user, tags=tags)
        else:
            self.bad("a log message needs a comment or a file")
        if label:
            self.decided(decide.add_label, owner, label, user=request.user)
        log = Log.objects.select_related("file").get(pk=log.pk)
        return Response(shapes.log_json(log, log_number(owner, log), owner, self.urls),
                        status=status.HTTP_201_CREATED)


class LogDetail(GraceView):
    def log(self):
        owner = self.owner()
        number = int(self.kwargs["N"])
        log = owner_logs(owner)[number - 1:number].first() if number >= 1 else None
        if log is None:
            raise exceptions.NotFound(f"no log message {number} on {owner}")
        return owner, number, log

    def get(self, request, N, **kwargs):
        owner, number, log = self.log()
        return Response(shapes.log_json(log, number, owner, self.urls))


class Tags(LogDetail):
    def get(self, request, N, **kwargs):
        _, _, log = self.log()
        return Response({"tags": [shapes.tag_json(tag) for tag in log.tags]})


# --- labels --------------------------------------------------------------------------

class Labels(GraceView):
    """Event labels live at /labels/{label} (empty: the list), superevent
    labels at /labels/ (list, POST) and /labels/{label_name}/."""

    def label_name(self):
        return self.kwargs.get("label") or self.kwargs.get("label_name") or ""

    def get(self, request, **kwargs):
        owner, urls, name = self.owner(), self.urls, self.label_name()
        labels = Label.objects.filter(**store.owner_kwargs(owner))
        if name:
            label = labels.filter(name=name).first()
            if label is None:
                raise exceptions.NotFound(f"no label {name} on {owner}")
            return Response(shapes.label_json(label, owner, urls))
        return Response({"labels": [shapes.label_json(label, owner, urls) for label in labels],
                         "links": {"self": urls.labels(owner)}})

    def put(self, request, **kwargs):
        return self.write(self.label_name())

    def post(self, request, **kwargs):
        return self.write(self.label_name() or request.data.get("name", ""))

    def write(self, name):
        owner = self.owner()
        if not LABEL_NAME.match(name or ""):
            self.bad(f"label name must be 1-32 letters, digits or underscores, got {str(name)[:40]!r}")
        self.decided(decide.add_label, owner, name, user=self.request.user)
        label = Label.objects.get(name=name, **store.owner_kwargs(owner))
        return Response(shapes.label_json(label, owner, self.urls), status=status.HTTP_201_CREATED)

    def delete(self, request, **kwargs):
        owner, name = self.owner(), self.label_name()
        if not Label.objects.filter(name=name, **store.owner_kwargs(owner)).exists():
            raise exceptions.NotFound(f"no label {name} on {owner}")
        self.decided(decide.remove_label, owner, name, user=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- files -----------------------------------------------------------------------------

class Files(GraceView):
    """The list ({name: url, "name,version": url}) or one file's bytes;
    versions count from 0 as in GraceDB."""

    def get(self, request, filename="", **kwargs):
        owner, urls = self.owner(), self.urls
        files = File.objects.filter(**store.owner_kwargs(owner))
        if not filename:
            listing = {}
            for stored in files.order_by("name", "version"):
                url = urls.file(stored, owner)
                listing[f"{stored.name},{shapes.gracedb_version(stored.version)}"] = url
                listing[stored.name] = url
            return Response(listing)
        name, _, version = filename.rpartition(",")
        if name and version.isdigit():
            stored = files.filter(name=name, version=shapes.store_version(int(version))).first()
        else:
            stored = files.filter(name=filename).order_by("-version").first()
        if stored is None:
            raise exceptions.NotFound(f"no file {filename} on {owner}")
        content_type = mimetypes.guess_type(stored.name)[0] or "application/octet-stream"
        response = FileResponse(stored.content.open("rb"), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="{stored.name}"'
        return response


# --- VOEvents ----------------------------------------------------------------------------

class VOEvents(GraceView):
    """The notices sent for a superevent (none for events: alerts are the superevents')."""

    def notices(self):
        owner = self.owner()
        if isinstance(owner, Event):
            return owner, Notice.objects.none()
        return owner, Notice.objects.filter(superevent=owner).select_related("superevent").prefetch_related(
            "payloads").order_by("serial")

    def get(self, request, N=None, **kwargs):
        owner, notices = self.notices()
        urls = self.urls
        if N is not None:
            notice = notices.filter(serial=int(N)).first()
            if notice is None:
                raise exceptions.NotFound(f"no VOEvent {N} on {owner}")
            return Response(shapes.voevent_json(notice, owner, urls))
        voevents = [shapes.voevent_json(notice, owner, urls) for notice in notices]
        return Response({"voevents": voevents, "numRows": len(voevents), "links": {"self": urls.voevents(owner)}})


# --- signoffs ------------------------------------------------------------------------------

class Signoffs(GraceView):
    """The advocate signoff (ADV): OK is the ADVOK verdict, NO ADVNO."""

    def signoffs(self, superevent):
        labels = Label.objects.filter(superevent=superevent, name__in=vocabulary.VERDICT_LABELS)
        comment = (Log.objects.filter(superevent=superevent, tags__contains=[vocabulary.SIGNOFF_TAG])
                   .order_by("-created", "-id").values_list("message", flat=True).first() or "")
        return [shapes.signoff_json(label, comment, superevent, self.urls) for label in labels]

    def get(self, request, superevent_id, typeinst=None):
        superevent = self.owner()
        signoffs = self.signoffs(superevent)
        if typeinst is None:
            return Response({"signoffs": signoffs})
        if typeinst != "ADV" or not signoffs:
            raise exceptions.NotFound(f"no signoff {typeinst} on {superevent}")
        return Response(signoffs[0])

    def post(self, request, superevent_id, typeinst=None):
        if typeinst is not None:
            raise NotServed(not_served(request.method, request.path)["error"])
        superevent = self.owner()
        signoff_type = request.data.get("signoff_type", "")
        if signoff_type != "ADV":
            raise NotServed(f"{signoff_type or 'untyped'} signoffs are not served by this GraceDB-compatible "
                            f"surface (only ADV)")
        signoff_status = request.data.get("status", "")
        if signoff_status not in shapes.SIGNOFF_STATUS_LABEL:
            self.bad(f"signoff status must be OK or NO, got {signoff_status[:40]!r}")
        comment = request.data.get("comment", "") or ""
        label = shapes.SIGNOFF_STATUS_LABEL[signoff_status]
        self.decided(decide.apply_verdict, superevent, label, user=request.user, reason=comment)
        store.log(superevent, comment or f"ADV signoff {signoff_status} by {request.user.get_username()}",
                  tags=[vocabulary.SIGNOFF_TAG])
        signoff = next(s for s in self.signoffs(superevent) if s["status"] == signoff_status)
        return Response(signoff, status=status.HTTP_201_CREATED)

