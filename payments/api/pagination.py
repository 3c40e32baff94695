"""The list's pages: `?page=` is a positive integer written in ASCII digits, or absent.

DRF's PageNumberPagination reads an empty `page` as the first page, `last` as the last, and
anything int() takes (" 1", "+1", "١") as a number; the schema says `page` is an integer, so
everything else is the documented 404, as a page past the last is.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request


class ChargePagination(PageNumberPagination):
    last_page_strings = ()

    def get_page_number(self, request: Request, paginator: Any) -> str | int:
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if not (raw.isascii() and raw.isdigit()):
            raise NotFound(self.invalid_page_message.format(page_number=raw, message="Not a page number."))
        return raw  # Django's paginator answers 0, and a page past the last, with InvalidPage: 404
