"""The Prometheus endpoint (`/prometheus/metrics`): figures read from the database at scrape
time by one custom collector (prometheus_client's own exposition format and types), guarded by
a bearer token from SIGNOFF_METRICS_TOKEN. No token configured: the endpoint does not exist (404).
"""

from __future__ import annotations

import hmac
import itertools
from collections.abc import Iterator

from django.apps import apps
from django.conf import settings
from django.db.models import Count, Min
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from api.models import WebhookDelivery
from approvals.models import Decision, Review
from workflows.models import Run
from workflows.timings import BUCKETS as WRITE_BUCKETS
from workflows.timings import WriteTimings

# Run durations (finished - started), seconds: from a quick step to a long human-paced run.
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0, 3600.0)


def email_failures() -> int:
    """Emails whose sending failed for good (the notifications app's send records). Looked up
    by name: notifications sits above this app, which must not import it."""
    if not apps.is_installed("notifications"):
        return 0
    send = apps.get_model("notifications", "Send")
    return int(send.objects.filter(channel="email", status="failed").count())


def write_latency() -> HistogramMetricFamily:
    """The runs' checkpoint writes as their workers timed them (workflows.timings), per workflow."""
    family = HistogramMetricFamily(
        "signoff_checkpoint_write_seconds",
        "Checkpoint writes of runs (statements and commit), as timed in the workers.",
        labels=["workflow"],
    )
    totals: dict[str, WriteTimings] = {}
    tallies = Run.objects.exclude(checkpoint_writes={}).values_list("thread__workflow", "checkpoint_writes")
    for workflow, tally in tallies.iterator():
        totals.setdefault(workflow, WriteTimings()).add(WriteTimings.from_json(tally))
    for workflow, total in sorted(totals.items()):
        cumulative = list(itertools.accumulate(total.buckets))
        buckets = [(str(bound), count) for bound, count in zip(WRITE_BUCKETS, cumulative, strict=False)]
        family.add_metric([workflow], [*buckets, ("+Inf", total.count)], total.seconds)
    return family


class SignoffCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        now = timezone.now()
        open_reviews = GaugeMetricFamily("signoff_open_reviews", "Open reviews.", labels=["workflow"])
        oldest = GaugeMetricFamily(
            "signoff_oldest_open_review_age_seconds", "Age of the oldest open review.", labels=["workflow"]
        )
        rows = Review.objects.filter(status=Review.Status.OPEN).values("workflow")
        for row in rows.annotate(count=Count("id"), first=Min("created_at")).order_by("workflow"):
            open_reviews.add_metric([row["workflow"]], row["count"])
            oldest.add_metric([row["workflow"]], (now - row["first"]).total_seconds())
        yield open_reviews
        yield oldest

        runs = GaugeMetricFamily("signoff_runs", "Runs by status.", labels=["status"])
        counted = dict(Run.objects.values_list("status").annotate(count=Count("id")).order_by())
        for status in Run.Status.values:
            runs.add_metric([status], counted.get(status, 0))
        yield runs

        durations = sorted(
            (finished - started).total_seconds()
            for started, finished in Run.objects.filter(started_at__isnull=False, finished_at__isnull=False)
            .values_list("started_at", "finished_at")
            .iterator()
            if started is not None and finished is not None
        )
        buckets = [(str(bound), sum(1 for d in durations if d <= bound)) for bound in RUN_BUCKETS]
        yield HistogramMetricFamily(
            "signoff_run_duration_seconds",
            "Durations of finished runs.",
            buckets=[*buckets, ("+Inf", len(durations))],
            sum_value=sum(durations),
        )

        yield write_latency()

        decisions = CounterMetricFamily("signoff_decisions", "Decisions by outcome.", labels=["action"])
        for action, count in (
            Decision.objects.values_list("action").annotate(count=Count("id")).order_by("action")
        ):
            decisions.add_metric([action], count)
        yield decisions

        failed = WebhookDelivery.objects.filter(status=WebhookDelivery.Status.FAILED).count()
        # Deliveries still pending that have already failed at least once (retrying).
        retrying = WebhookDelivery.objects.filter(
            status=WebhookDelivery.Status.PENDING, attempts__gt=0
        ).count()
        webhooks = CounterMetricFamily(
            "signoff_webhook_failures", "Webhook deliveries that failed for good.", labels=[]
        )
        webhooks.add_metric([], failed)
        yield webhooks
        yield GaugeMetricFamily(
            "signoff_webhook_retrying", "Webhook deliveries being retried.", value=retrying
        )
        emails = CounterMetricFamily("signoff_email_failures", "Emails that failed for good.", labels=[])
        emails.add_metric([], email_failures())
        yield emails


def exposition() -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SignoffCollector())
    return generate_latest(registry)


@require_GET
@never_cache
def prometheus_metrics(request: HttpRequest) -> HttpResponse:
    token = settings.SIGNOFF_METRICS_TOKEN
    if not token:
        raise Http404("No metrics token is configured.")
    given = request.headers.get("Authorization", "")
    scheme, _, secret = given.partition(" ")
    if scheme.lower() != "bearer" or not secret:
        response = HttpResponse("A bearer token is needed.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not hmac.compare_digest(secret.strip().encode(), token.encode()):
        return HttpResponse("Wrong token.\n", status=403, content_type="text/plain")
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
