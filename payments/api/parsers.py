from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from payments.api.exceptions import PayloadTooLarge


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


class LimitedJSONParser(JSONParser):
    """JSON with a hard size limit, and only JSON.

    DRF reads the WSGI stream itself, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE
    never applies to API bodies; without this a client could post megabytes.
    Python's json module also reads NaN and Infinity, which are not JSON (a
    description of NaN became "nan"). A lone surrogate escape such as "\\ud800" is
    JSON, but no text: the charge serializer refuses it, naming the field.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict | None = None) -> Any:
        limit = settings.API_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit // 1024} KiB.")
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"Request body is larger than {limit // 1024} KiB.")
        try:
            return json.loads(raw.decode("utf-8"), parse_constant=_not_json)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: deep nesting
            raise ParseError("Request body is not valid JSON.") from exc
