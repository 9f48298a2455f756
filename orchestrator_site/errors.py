"""Request ids and error pages: no traceback, debug page or SQL reaches a
client. Each request gets an id (X-Request-ID response header); an error is
logged server-side with it, and the client gets only the id to quote."""
import logging
import re
import uuid

from django.http import HttpResponse, JsonResponse

logger = logging.getLogger("orchestrator_site.errors")
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    """Give each request an id (a proxy's X-Request-ID if it is well formed)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        request.request_id = given if SAFE_ID.match(given) else uuid.uuid4().hex
        response = self.get_response(request)
        response["X-Request-ID"] = request.request_id
        return response

    def process_exception(self, request, exception):
        logger.error("request %s %s %s failed", getattr(request, "request_id", "-"), request.method,
                     request.path, exc_info=exception)
        return None


def request_id(request):
    return getattr(request, "request_id", "") or uuid.uuid4().hex


def answer(request, status, message):
    """JSON under /api/, a plain page elsewhere; only the message and the id."""
    rid = request_id(request)
    if request.path.startswith("/api/"):
        response = JsonResponse({"error": message, "request_id": rid}, status=status)
    else:
        response = HttpResponse(f"{message} (request id {rid})\n", status=status,
                                content_type="text/plain; charset=utf-8")
    response["X-Request-ID"] = rid
    return response


def server_error(request):
    return answer(request, 500, "internal error; the server log has the details under this request id")


def not_found(request, exception=None):
    return answer(request, 404, f"not found: {request.path[:200]}")


def bad_request(request, exception=None):
    return answer(request, 400, "bad request")


def permission_denied(request, exception=None):
    return answer(request, 403, "forbidden")
