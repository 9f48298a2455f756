"""REST ways into the decision service (alerts.decisions): alerts, the
preferred event, labels, comments and re-localization. Thin: parse, call the
service, answer; a refusal is ``{"error": reason}`` with its status."""
import hashlib
import json

from django.core.cache import cache
from django.shortcuts import get_object_or_404
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from alerts import decisions, roles
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


def as_bool(value):
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true", "yes", "on")


class SupereventAlerts(APIView):
    """POST {alert_type, files, dry_run}: a preview, or a sent notice."""

    write_role = roles.ADVOCATE

    def post(self, request, superevent_id):
        superevent = get_object_or_404(Superevent, superevent_id=superevent_id)
        if not isinstance(request.data, dict):
            return bad("the body must be a JSON object")
        alert_type, files = request.data.get("alert_type"), request.data.get("files") or None
        if hasattr(request.data, "getlist") and request.data.getlist("files"):
            files = request.data.getlist("files")
        key = request.headers.get("Idempotency-Key") or None
        cache_key = None
        if key:
            cache_key = "idem:" + hashlib.sha256(f"{request.user.pk}|{superevent_id}|{key}".encode()).hexdigest()
            first = cache.get(cache_key)
            if first is not None:
                return Response(json.loads(first[1]), status=first[0])
        try:
            if as_bool(request.data.get("dry_run", False)):
                if not roles.is_advocate(request.user):
                    raise decisions.NotAllowed("only advocates may preview alerts")
                answer = decisions.preview(superevent, alert_type, files).as_json()
                code = status.HTTP_200_OK
            else:
                notice = decisions.send(superevent, alert_type, files, user=request.user,
                                        reason=str(request.data.get("reason", "")), idempotency_key=key, via=VIA)
                answer, code = notice_state(notice), status.HTTP_201_CREATED
        except decisions.Refused as error:
            answer, code = {"error": str(error)}, error.status
        if cache_key:
            cache.set(cache_key, (code, json.dumps(answer)), IDEMPOTENCY_TTL_S)
        return Response(answer, status=code)


class PreferredEvent(APIView):
    write_role = roles.ADVOCATE

    def put(self, request, superevent_id):
        superevent = get_object_or_404(Superevent, superevent_id=superevent_id)
        graceid = request.data.get("event") if isinstance(request.data, dict) else None
        if not isinstance(graceid, str) or not graceid:
            return bad("event: give the graceid of the new preferred event")
        event = Event.objects.filter(graceid=graceid).first()
        if event is None:
            return bad(f"event: no event {graceid}")
        try:
            decisions.set_preferred_event(superevent, event, user=request.user,
                                          reason=str(request.data.get("reason", "")), via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response({"superevent_id": superevent.superevent_id, "preferred_event": event.graceid})


class LabelDetail(APIView):
    """DELETE .../labels/<name>/"""

    write_role = roles.ADVOCATE

    def delete(self, request, name, **kwargs):
        try:
            decisions.remove_label(owner_of(kwargs), name, user=request.user, via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response(status=status.HTTP_204_NO_CONTENT)


class Localize(APIView):
    """POST {disabled_detectors: [...]}: a new sky map without them."""

    write_role = roles.ADVOCATE

    def post(self, request, graceid):
        event = get_object_or_404(Event, graceid=graceid)
        detectors = request.data.get("disabled_detectors") if isinstance(request.data, dict) else None
        if hasattr(request.data, "getlist"):
            detectors = request.data.getlist("disabled_detectors") or detectors
        if not isinstance(detectors, list) or not all(isinstance(d, str) for d in detectors):
            return bad("disabled_detectors: a list of detector names")
        try:
            decisions.relocalize(event, detectors, user=request.user, reason=str(request.data.get("reason", "")),
                                 via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response({"graceid": event.graceid, "disabled_detectors": detectors},
                        status=status.HTTP_202_ACCEPTED)


class NoticeRetry(APIView):
    write_role = roles.ADVOCATE

    def post(self, request, identity):
        notice = get_object_or_404(Notice, identity=identity)
        try:
            decisions.retry_delivery(notice, user=request.user, via=VIA)
        except decisions.Refused as error:
            return refused(error)
        return Response(notice_state(notice), status=status.HTTP_202_ACCEPTED)
