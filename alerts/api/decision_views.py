"""REST ways into the decision service (alerts.decisions): alerts, the
preferred event, labels, comments and re-localization. Thin: parse, call the
service, answer; a refusal is ``{"error": reason}`` with its status."""
import hashlib
import json

from django.core.cache import cache
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import decisions, roles
from alerts.api.errors import invalid
from alerts.api.serializers import (AlertRequestSerializer, LocalizeRequestSerializer, LocalizeSerializer,
                                    NoticeStateSerializer, PreferredEventRequestSerializer,
                                    PreferredEventSerializer, PreviewSerializer)
from alerts.models import Event, Notice, Superevent

IDEMPOTENCY_TTL_S = 24 * 3600
VIA = "api"


def refused(error):
    return Response({"error": str(error)}, status=error.status)


def bad(message):
    return Response({"error": message}, status=status.HTTP_400_BAD_REQUEST)


def notice_state(notice):
    """A notice's identity and the state of each of its deliveries."""
    return {"identity": notice.identity, "alert_type": notice.alert_type, "serial": notice.serial,
            "reason": notice.reason, "role": notice.role,
            "deliveries": [{"destination": d.destination, "format": d.format, "status": d.status,
                            "attempts": d.attempts} for d in notice.deliveries.order_by("destination", "format")]}


def owner_of(kwargs):
    if "graceid" in kwargs:
        return get_object_or_404(Event, graceid=kwargs["graceid"])
    return get_object_or_404(Superevent, superevent_id=kwargs["superevent_id"])


IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER,
    description="a retried request with the same key answers the first answer again")


class SupereventAlerts(APIView):
    """POST {alert_type, files, dry_run}: a preview, or a sent notice."""

    write_role = roles.ADVOCATE

    @extend_schema(request=AlertRequestSerializer, parameters=[IDEMPOTENCY_KEY],
                   responses={200: PreviewSerializer, 201: NoticeStateSerializer})
    def post(self, request, superevent_id):
        superevent = get_object_or_404(Superevent, superevent_id=superevent_id)
        form = AlertRequestSerializer(data=request.data)
        if not form.is_valid():
            return invalid(form)
        body = form.validated_data
        alert_type, files = body["alert_type"], body.get("files") or None
        key = request.headers.get("Idempotency-Key") or None
        cache_key = None
        if key:
            cache_key = "idem:" + hashlib.sha256(f"{request.user.pk}|{superevent_id}|{key}".encode()).hexdigest()
            first = cache.get(cache_key)
            if first is not None:
                return Response(json.loads(first[1]), status=first[0])
        try:
            if body["dry_run"]:
                if not roles.is_advocate(request.user):
                    raise decisions.NotAllowed("only advocates may preview alerts")
                answer = decisions.preview(superevent, alert_type, files).as_json()
                code = status.HTTP_200_OK
            else:
                notice = decisions.send(superevent, alert_type, files, user=request.user,
                                        reason=body["reason"], idempotency_key=key, via=VIA)
                answer, code = notice_state(notice), status.HTTP_201_CREATED
        except decisions.Refused as error:
            answer, code = {"error": str(error)}, error.status
        if cache_key:
            cache.set(cache_key, (code, json.dumps(answer)), IDEMPOTENCY_TTL_S)
        return Response(answer, status=code)


class PreferredEvent(APIView):
    write_role = roles.ADVOCATE

    @extend_schema(request=PreferredEventRequestSerializer, responses={200: PreferredEventSerializer})
    def put(self, request, superevent_id):
        superevent = get_object_or_404(Superevent, superevent_id=superevent_id)
        form = PreferredEventRequestSerializer(data=request.data)
        if not form.is_valid():
            return invalid(form)
        graceid = form.validated_data["event"]
        event = Event.objects.filter(graceid=graceid).first()
        if event is None:
            return bad(f"event: no event {graceid}")
        try:
            decisions.set_preferred_event(superevent, event, user=request.user,
                                          reason=form.validated_data["reason"], via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response({"superevent_id": superevent.superevent_id, "preferred_event": event.graceid})


class LabelDetail(APIView):
    """DELETE .../labels/<name>/"""

    write_role = roles.ADVOCATE

    @extend_schema(request=None, responses={204: None})
    def delete(self, request, name, **kwargs):
        try:
            decisions.remove_label(owner_of(kwargs), name, user=request.user, via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response(status=status.HTTP_204_NO_CONTENT)


class Localize(APIView):
    """POST {disabled_detectors: [...]}: a new sky map without them."""

    write_role = roles.ADVOCATE

    @extend_schema(request=LocalizeRequestSerializer, responses={202: LocalizeSerializer})
    def post(self, request, graceid):
        event = get_object_or_404(Event, graceid=graceid)
        form = LocalizeRequestSerializer(data=request.data)
        if not form.is_valid():
            return invalid(form)
        detectors = form.validated_data["disabled_detectors"]
        try:
            decisions.relocalize(event, detectors, user=request.user, reason=form.validated_data["reason"],
                                 via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response({"graceid": event.graceid, "disabled_detectors": detectors},
                        status=status.HTTP_202_ACCEPTED)


class NoticeRetry(APIView):
    write_role = roles.ADVOCATE

    @extend_schema(request=None, responses={202: NoticeStateSerializer})
    def post(self, request, identity):
        notice = get_object_or_404(Notice, identity=identity)
        try:
            decisions.retry_delivery(notice, user=request.user, via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response(notice_state(notice), status=status.HTTP_202_ACCEPTED)
