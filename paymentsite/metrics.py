"""Prometheus metrics of the charge path. Exposed at /metrics by the health app."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CHARGES = Counter(
    "paymentsite_charges_total",
    "Charge tries by outcome (succeeded, declined, provider_timeout, …).",
    ["outcome"],
)
PROVIDER_REQUEST_SECONDS = Histogram(
    "paymentsite_provider_request_duration_seconds",
    "Duration of each HTTP attempt to the payment provider.",
    ["kind", "outcome"],
    buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13),
)
PROVIDER_RETRIES = Counter(
    "paymentsite_provider_retries_total",
    "HTTP attempts to the provider beyond the first of a call.",
    ["kind"],
)
