"""REST endpoints: pipelines upload events and files; scripts read state,
add labels and fetch files. Errors are HTTP 400 with ``{"error": ...}``."""
from collections import defaultdict

from django.conf import settings
from django.db.models import Prefetch
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import decisions, listing, roles, store
from alerts.api.errors import flatten, invalid
from alerts.api.serializers import (EVENT_BRIEF_FIELDS, CommentRequestSerializer, EventSerializer,
                                    EventUploadSerializer, FileSerializer, FileUploadSerializer,
                                    LabelAddedSerializer, LabelSerializer, LogSerializer,
                                    SupereventDetailSerializer, SupereventRowSerializer)
from alerts.events import (PSD_FILENAME, RANKING_DATA_FILENAME, UploadError, add_event_file,
                           create_event, reject, validate_file, validate_file_name, validate_tags,
                           validate_text)
from alerts.models import Category, Event, File, Label, Notice, Superevent
from alerts.vocabulary import MULTIORDER_SUFFIX, SKY_LOC_TAG

API_SOURCE = "api"


def bad_request(message, excerpt=b""):
    reject(API_SOURCE, message, excerpt)
    return Response({"error": message}, status=status.HTTP_400_BAD_REQUEST)


def event_or_404(graceid):
    return get_object_or_404(Event, graceid=graceid)


def superevent_or_404(superevent_id):
    return get_object_or_404(Superevent, superevent_id=superevent_id)


@extend_schema_view(post=extend_schema(request={"multipart/form-data": EventUploadSerializer},
                                       responses={201: EventSerializer}))
class EventList(generics.ListAPIView):
    serializer_class = EventSerializer
    write_role = roles.PIPELINE

    def get_queryset(self):
        queryset = Event.objects.select_related("superevent").prefetch_related("labels")
        for field in ("group", "pipeline", "search", "category"):
            if field in self.request.query_params:
                queryset = queryset.filter(**{field: self.request.query_params[field]})
        return queryset

    def post(self, request):
        form = EventUploadSerializer(data=request.data)
        if not form.is_valid():
            return bad_request(flatten(form.errors))
        fields = form.validated_data
        coinc = fields["coinc"].read() if "coinc" in fields else None
        files = [(name, fields[key].read()) for key, name in (("psd", PSD_FILENAME),
                                                             ("ranking_data", RANKING_DATA_FILENAME))
                 if key in fields]
        attributes = None
        if coinc is None:
            attributes = {key: fields.get(key) for key in ("gpstime", "far", "snr", "instruments")}
        try:
            event = create_event(group=fields["group"], pipeline=fields["pipeline"], search=fields["search"],
                                 offline=fields["offline"], category=fields.get("category") or None,
                                 coinc=coinc, attributes=attributes, files=files)
        except UploadError as error:
            return bad_request(str(error), coinc or b"")
        # The manager may have grouped it already (inline tasks, a fast worker).
        event.refresh_from_db()
        return Response(EventSerializer(event).data, status=status.HTTP_201_CREATED)


class EventDetail(generics.RetrieveAPIView):
    serializer_class = EventSerializer
    queryset = Event.objects.all()
    lookup_field = "graceid"


class SupereventPagination(CursorPagination):
    """Newest first, keyset paging on the (t_0, id) index: a page costs the
    same at the head and deep down, nothing counts the whole table, and a
    superevent created meanwhile neither shifts nor repeats rows. Follow
    ``next``/``previous``; ``limit`` sets the page size."""

    ordering = listing.NEWEST_FIRST
    page_size_query_param = "limit"
    max_page_size = 1000


LIST_FILTERS = [
    OpenApiParameter("category", str, enum=Category.values),
    OpenApiParameter("label", str, description="only superevents with this label"),
    OpenApiParameter("t_0_min", float, description="GPS seconds"),
    OpenApiParameter("t_0_max", float, description="GPS seconds"),
    OpenApiParameter("far_min", float, description="Hz"),
    OpenApiParameter("far_max", float, description="Hz"),
    OpenApiParameter("alert_sent", bool, description="a notice was issued (true) or none yet (false)"),
    OpenApiParameter("waiting", bool, description="waiting for an advocate: ADVREQ and no ADVOK/ADVNO yet"),
]


@extend_schema_view(get=extend_schema(parameters=LIST_FILTERS))
class SupereventList(generics.ListAPIView):
    """Superevents, newest first. Filters: category, label, t_0_min/t_0_max
    (GPS s), far_min/far_max (Hz), alert_sent (true/false), waiting (ADVREQ
    without a verdict: true/false). Pages: follow next/previous; limit rows
    a page (default 100, at most 1000)."""

    # The conditions are EXISTS in WHERE only and the rows are decorated per
    # page (decorate_rows): no join to the events before the page is cut.

    serializer_class = SupereventRowSerializer
    pagination_class = SupereventPagination

    def list(self, request, *args, **kwargs):
        try:
            return super().list(request, *args, **kwargs)
        except ValueError as error:
            return Response({"error": str(error)}, status=status.HTTP_400_BAD_REQUEST)

    def paginate_queryset(self, queryset):
        return decorate_rows(super().paginate_queryset(queryset))

    def get_queryset(self):
        params = self.request.query_params
        queryset = Superevent.objects.all()
        if "category" in params:
            queryset = queryset.filter(category=params["category"])
        for name, lookup in (("t_0_min", "t_0__gte"), ("t_0_max", "t_0__lte"),
                             ("far_min", "far__gte"), ("far_max", "far__lte")):
            if name in params:
                queryset = queryset.filter(**{lookup: number_param(params, name)})
        if "label" in params:
            queryset = queryset.filter(listing.has_label(params["label"]))
        for name, condition in (("alert_sent", listing.alert_sent), ("waiting", listing.waiting)):
            if name in params:
                queryset = queryset.filter(condition() if bool_param(params, name) else ~condition())
        return queryset


def decorate_rows(rows):
    """Attach to a page of superevents their preferred events, labels,
    member events, whether a notice exists and the newest sky map, in five
    queries of plain values (model instances for the 1,000 member events of
    a page cost more than the rest of the request)."""
    pks = [row.pk for row in rows]
    preferred = Event.objects.only(*EVENT_BRIEF_FIELDS).in_bulk(
        [row.preferred_event_id for row in rows if row.preferred_event_id])
    labels, members, skymaps = defaultdict(list), defaultdict(list), {}
    for pk, name in Label.objects.filter(superevent__in=pks).values_list("superevent", "name"):
        labels[pk].append(name)
    for pk, graceid in Event.objects.filter(superevent__in=pks).values_list("superevent", "graceid"):
        members[pk].append(graceid)
    sent = set(Notice.objects.filter(superevent__in=pks).values_list("superevent", flat=True))
    for file in (File.objects.filter(superevent__in=pks, name__endswith=MULTIORDER_SUFFIX)
                 .only("event", "superevent", "name", "version", "tags").order_by("created", "pk")):
        if SKY_LOC_TAG in file.tags:
            skymaps[file.superevent_id] = file  # the newest wins
    for row in rows:
        row.preferred_event = preferred.get(row.preferred_event_id)
        row.label_names_sorted = sorted(labels[row.pk])
        row.member_graceids = sorted(members[row.pk])
        row.alert_sent = row.pk in sent
        row.skymap_file = skymaps.get(row.pk)
        if row.skymap_file:
            row.skymap_file.superevent = row
    return rows


def number_param(params, name):
    try:
        value = float(params[name])
    except ValueError:
        raise ValueError(f"{name} must be a number, not {params[name]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be a finite number")
    return value


def bool_param(params, name):
    value = params[name].lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError(f"{name} must be true or false, not {params[name]!r}")
    return value in ("true", "1")


class SupereventDetail(generics.RetrieveAPIView):
    serializer_class = SupereventDetailSerializer
    queryset = Superevent.objects.select_related("preferred_event").prefetch_related(
        "labels", "events", "files", "logs", "step_runs",
        Prefetch("notices", queryset=Notice.objects.prefetch_related("deliveries")))
    lookup_field = "superevent_id"


class OwnerMixin:
    """Views under /events/<graceid>/ or /superevents/<superevent_id>/."""

    def owner(self):
        if "graceid" in self.kwargs:
            return event_or_404(self.kwargs["graceid"])
        return superevent_or_404(self.kwargs["superevent_id"])


class FileList(OwnerMixin, APIView):
    write_role = roles.PIPELINE

    @extend_schema(responses={200: FileSerializer(many=True)})
    def get(self, request, **kwargs):
        files = File.objects.filter(**store.owner_kwargs(self.owner()))
        return Response(FileSerializer(files, many=True).data)

    @extend_schema(request={"multipart/form-data": FileUploadSerializer}, responses={201: FileSerializer})
    def post(self, request, **kwargs):
        owner = self.owner()
        form = FileUploadSerializer(data=request.data)
        if not form.is_valid():
            return bad_request(flatten(form.errors))
        upload = form.validated_data["file"]
        name = form.validated_data.get("filename") or upload.name
        tags = [t.strip() for t in form.validated_data.get("tags", "").split(",") if t.strip()] or None
        data = upload.read()
        try:
            if isinstance(owner, Event):
                stored = add_event_file(owner, name, data, tags=tags,
                                        message=form.validated_data.get("comment") or None)
            else:
                validate_file(name, data)
                validate_tags(tags)
                if form.validated_data.get("comment"):
                    validate_text(form.validated_data["comment"], "comment", settings.MAX_TEXT_CHARS, multiline=True)
                stored = store.add_file(owner, name, data, tags=tags or [],
                                        message=form.validated_data.get("comment") or None)
        except UploadError as error:
            return bad_request(str(error), data)
        return Response(FileSerializer(stored).data, status=status.HTTP_201_CREATED)


class FileContent(OwnerMixin, APIView):
    """``<name>`` is the newest version; ``<name>,<version>`` a given one."""

    @extend_schema(responses={
        (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, description="the file's bytes")})
    def get(self, request, filename, **kwargs):
        name, _, version = filename.rpartition(",")
        files = File.objects.filter(**store.owner_kwargs(self.owner()))
        if name and version.isdigit():
            stored = get_object_or_404(files, name=name, version=int(version))
        else:
            stored = files.filter(name=filename).order_by("-version").first()
            if stored is None:
                return Response({"error": f"no file named {filename}"}, status=status.HTTP_404_NOT_FOUND)
        response = HttpResponse(stored.read(), content_type="application/octet-stream")
        response["Content-Disposition"] = f'attachment; filename="{stored.name}"'
        return response


class LabelList(OwnerMixin, APIView):
    write_role = roles.ADVOCATE

    @extend_schema(responses={200: {"type": "array", "items": {"type": "string"}}})
    def get(self, request, **kwargs):
        return Response(sorted(self.owner().label_names()))

    @extend_schema(request=LabelSerializer, responses={200: LabelAddedSerializer, 201: LabelAddedSerializer})
    def post(self, request, **kwargs):
        owner = self.owner()
        form = LabelSerializer(data=request.data)
        if not form.is_valid():
            return bad_request("label name must be 1-32 letters, digits or underscores")
        try:
            created = decisions.add_label(owner, form.validated_data["name"], user=request.user)
        except decisions.Refused as error:
            return Response({"error": str(error)}, status=error.status)
        created = created is not False
        return Response({"name": form.validated_data["name"], "created": created},
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class LogList(OwnerMixin, generics.ListAPIView):
    serializer_class = LogSerializer
    pagination_class = None
    write_role = roles.ADVOCATE

    @extend_schema(request=CommentRequestSerializer, responses={201: LogSerializer})
    def post(self, request, **kwargs):
        form = CommentRequestSerializer(data=request.data)
        if not form.is_valid():
            return invalid(form)
        text = form.validated_data.get("comment", form.validated_data.get("message"))
        try:
            entry = decisions.add_comment(self.owner(), text, user=request.user)
        except decisions.Refused as error:
            return Response({"error": str(error)}, status=error.status)
        return Response(LogSerializer(entry).data, status=status.HTTP_201_CREATED)

    def get_queryset(self):
        return self.owner().logs.select_related("file")
