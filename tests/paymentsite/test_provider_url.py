"""Provider URLs are read the way the HTTP client reads them (issue 18: production mode accepted
`http://provider.example.net\\@127.0.0.1/v1/charges`: the check saw 127.0.0.1, requests would
send the provider key over plain HTTP to provider.example.net)."""

from __future__ import annotations

import environ
import pytest
import requests

from paymentsite.config import EnvReader
from tests.support.config import run_check

ISSUE_URL = "http://provider.example.net\\@127.0.0.1/v1/charges"


def read(monkeypatch: pytest.MonkeyPatch, value: str) -> tuple[str, list[str]]:
    monkeypatch.setenv("PAYMENT_SERVICE_URL", value)
    reader = EnvReader(environ.Env())
    return reader.provider_url("PAYMENT_SERVICE_URL", required=True), reader.errors


def test_the_issues_url_would_go_to_another_host_than_the_one_checked() -> None:
    """Why it must be refused: what requests would actually connect to."""
    prepared = requests.Request("POST", ISSUE_URL).prepare()

    assert prepared.url.startswith("http://provider.example.net/")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        (ISSUE_URL, "without backslashes"),
        ("http://provider.example.net\\\\@127.0.0.1/v1/charges", "without backslashes"),
        ("http://user@127.0.0.1:8099/v1/charges", "no user or password"),
        ("https://user:s3cr3t@api.provider.example/v1/charges", "no user or password"),
        ("http://127.0.0.1:8099/v1/charges?x=1", "no query or fragment"),
        ("http://127.0.0.1#@provider.example.net/v1/charges", "no query or fragment"),
        ("http://127.0.0.1 /v1/charges", "without backslashes, spaces"),
        ("https://api.provider.example:99999/v1/charges", "expected a URL such as"),
        ("http://pay.example.com/v1", "http:// is allowed only for loopback hosts"),
        ("ftp://127.0.0.1/v1", "expected an https:// URL"),
    ],
)
def test_a_provider_url_the_client_would_read_otherwise_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    value, errors = read(monkeypatch, url)

    assert value == ""
    [error] = errors
    assert error.startswith("PAYMENT_SERVICE_URL=") and why in error
    assert "s3cr3t" not in error and "user" not in error.split(" is invalid")[0], "userinfo is masked"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.provider.example/v1/charges",
        "https://api.provider.example:8443/v1/charges",
        "http://127.0.0.1:8099/v1/charges",
        "http://localhost:8099/v1/charges",
        "http://[::1]:8099/v1/charges",
        "https://bücher.example/v1/charges",
    ],
)
def test_ordinary_provider_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    assert read(monkeypatch, url) == (url, [])


def test_production_mode_refuses_to_start_with_the_issues_url() -> None:
    result = run_check(PAYMENT_SERVICE_URL=ISSUE_URL)

    assert result.returncode != 0
    assert "PAYMENT_SERVICE_URL='http://<masked>@127.0.0.1/v1/charges' is invalid" in result.stderr
    assert "without backslashes" in result.stderr
