"""Prometheus metrics at ``/metrics``.

Workers are separate processes (django-q2 forks them), so the orchestrator's
series are computed from the database at scrape time rather than counted in
memory: events, superevents, step durations (StepRun), notices and their
deliveries, upload-to-notice latency, queue depth. This needs no
multiprocess directory, survives restarts, and every web process answers
the same. Only request latency is measured in the web process itself
(``RequestLatencyMiddleware``; per process, as Prometheus scrapes each).
Scrape cost grows with the tables: fine for a day's operations, to be moved
to recorded counters if the tables grow large.
"""
import time
from collections import defaultdict

from django.conf import settings
from django.db.models import Count, F
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

# Seconds; BAYESTAR and the slow queue run for minutes.
STEP_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
LATENCY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)

REQUEST_LATENCY = Histogram("orchestrator_request_seconds", "HTTP request latency by endpoint",
                            ["endpoint", "method"], buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


def histogram(name, documentation, labels, samples, buckets):
    """A HistogramMetricFamily from ``{label values: [seconds, ...]}``."""
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for values, seconds in sorted(samples.items()):
        counts = [sum(1 for s in seconds if s <= bound) for bound in buckets]
        family.add_metric(list(values), [(str(float(b)), c) for b, c in zip(buckets, counts)]
                          + [("+Inf", len(seconds))], sum(seconds))
    return family


class DatabaseCollector:
    """The orchestrator's series, read from its tables at each scrape."""

    def collect(self):
        from alerts.models import Event, Notice, NoticeDelivery, StepRun, Superevent

        events = CounterMetricFamily("orchestrator_events_received", "Events received", labels=["group", "pipeline"])
        for row in Event.objects.values("group", "pipeline").annotate(n=Count("id")).order_by():
            events.add_metric([row["group"], row["pipeline"]], row["n"])
        yield events
        yield CounterMetricFamily("orchestrator_superevents_created", "Superevents created",
                                  value=Superevent.objects.count())

        steps = defaultdict(list)
        for step, status, started, finished in StepRun.objects.filter(finished__isnull=False).values_list(
                "step", "status", "started", "finished"):
            steps[(step, status)].append((finished - started).total_seconds())
        yield histogram("orchestrator_step_seconds", "Step durations (StepRun)", ["step", "status"], steps,
                        STEP_BUCKETS)

        latency = defaultdict(list)
        for alert_type, made, uploaded in Notice.objects.filter(
                superevent__preferred_event__isnull=False).values_list(
                "alert_type", "created", "superevent__preferred_event__created"):
            latency[(alert_type,)].append(max((made - uploaded).total_seconds(), 0.0))
        yield histogram("orchestrator_upload_to_notice_seconds",
                        "From the preferred event's upload to the notice", ["alert_type"], latency, LATENCY_BUCKETS)

        sent = CounterMetricFamily("orchestrator_notices", "Notice deliveries by type, destination and status",
                                   labels=["alert_type", "destination", "status"])
        retries = CounterMetricFamily("orchestrator_delivery_retries", "Delivery attempts beyond the first",
                                      labels=["destination"])
        retried = defaultdict(int)
        for row in NoticeDelivery.objects.values("notice__alert_type", "destination", "status").annotate(
                n=Count("id")).order_by():
            sent.add_metric([row["notice__alert_type"], row["destination"], row["status"]], row["n"])
        for destination, attempts in NoticeDelivery.objects.filter(attempts__gt=1).values_list(
                "destination", F("attempts") - 1):
            retried[destination] += attempts
        for destination, count in sorted(retried.items()):
            retries.add_metric([destination], count)
        yield sent
        yield retries
        failures = CounterMetricFamily("orchestrator_delivery_failures", "Deliveries that failed",
                                       labels=["destination"])
        for row in NoticeDelivery.objects.filter(status=NoticeDelivery.Status.FAILED).values(
                "destination").annotate(n=Count("id")).order_by():
            failures.add_metric([row["destination"]], row["n"])
        yield failures

        depth = GaugeMetricFamily("orchestrator_queue_depth", "Tasks waiting in django-q2's queues", labels=["queue"])
        try:
            from django_q.brokers import get_broker

            from alerts.health import queues

            for name in queues():
                depth.add_metric([name], get_broker(name).queue_size() or 0)
        except Exception:  # the broker is down: no sample, the health check says why
            pass
        yield depth


def registry():
    from prometheus_client import REGISTRY

    scrape = CollectorRegistry()
    scrape.register(DatabaseCollector())
    return scrape, REGISTRY


def exposition():
    """The text answered at /metrics: database series plus this process's own."""
    scrape, own = registry()
    return generate_latest(scrape) + generate_latest(own), CONTENT_TYPE_LATEST


def allowed(request):
    """METRICS_TOKEN as a bearer token, a client in METRICS_ALLOWED_IPS, or staff."""
    token = settings.METRICS_TOKEN
    if token and request.headers.get("Authorization", "") == f"Bearer {token}":
        return True
    if request.META.get("REMOTE_ADDR") in settings.METRICS_ALLOWED_IPS:
        return True
    return request.user.is_authenticated and request.user.is_staff


class RequestLatencyMiddleware:
    """Observes each request's duration under its URL pattern's name."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        began = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        endpoint = (match.view_name or match.route) if match else "unmatched"
        REQUEST_LATENCY.labels(endpoint, request.method).observe(time.perf_counter() - began)
        return response
