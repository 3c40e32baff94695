from __future__ import annotations

from django.db import models


class ProviderCredentials(models.Model):
    """The service's last verdict on its provider credentials, shared by all its processes.

    One row per provider configuration (`fingerprint`: a SHA-256 of the adapter, URL and key,
    never the key itself), so that a refusal of an old key does not outlive the deploy that
    replaced it. Written and read by health.credentials; a row that says `refused` makes the
    `payment-provider:credentials` check fail in every process that uses that configuration.
    """

    fingerprint = models.CharField(max_length=64, primary_key=True)
    refused = models.BooleanField()
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)  # of the refusal
    at = models.DateTimeField()  # when the provider gave the answer this verdict rests on

    class Meta:
        verbose_name_plural = "provider credentials"

    def __str__(self) -> str:
        return f"{'refused' if self.refused else 'accepted'} at {self.at.isoformat()}"
