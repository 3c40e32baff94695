"""The DRF API: views, serializers, OpenAPI declarations, parsers, permissions and the
exception handler. Entry point only: it calls payments.services and never the provider."""
