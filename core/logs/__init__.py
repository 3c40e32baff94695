"""How log records look and where they go: JSON (or console) lines on stdout, secrets
redacted, the request id on every line, and CloudWatch through watchtower.

`core.events.log_event` writes the records; `core.logs.config.logging_config()` builds
settings.LOGGING. One module per job: request_id, redaction, formatters, cloudwatch, config.
"""
