"""``/health/``: the status word for anyone (load balancers, uptime probes),
every check's result for staff. HTTP 503 when CRITICAL."""
from django.http import JsonResponse

from alerts.health import CRITICAL, STATE_NAMES, overall, run_checks


def health(request):
    results = run_checks()
    state = overall(results)
    body = {"status": STATE_NAMES[state]}
    if request.user.is_authenticated and request.user.is_staff:
        body["checks"] = [result.as_dict() for result in results]
    return JsonResponse(body, status=503 if state == CRITICAL else 200)


def metrics(request):
    """Prometheus exposition; access by METRICS_TOKEN, METRICS_ALLOWED_IPS or staff."""
    from django.http import HttpResponse

    from alerts.metrics import allowed, exposition

    if not allowed(request):
        return JsonResponse({"error": "metrics are restricted (token, allowed address or staff)"}, status=403)
    body, content_type = exposition()
    return HttpResponse(body, content_type=content_type)
