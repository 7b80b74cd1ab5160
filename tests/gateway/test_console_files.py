"""The console's files as the gateway serves them, read as a reviewer would: only these
new routes answer without a key; no inline script or style (the Content-Security-Policy
would block it); nothing from another origin; user strings never go in as HTML; the key
stays in sessionStorage. The browser test (tests/browser) drives the page itself."""
from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from gateway.main import create_app
from gateway.routes.console import FILES, FOLDER
from ssdstack.settings import GatewaySettings


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(GatewaySettings(api_keys="console-test-key-000:read"))) as client:
        yield client


def test_the_console_is_served_without_a_key_and_nothing_else_is(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for file, media_type in FILES.items():
        served = client.get(f"/console/{file}")
        assert served.status_code == 200 and served.headers["content-type"].startswith(media_type)
        assert served.content == (FOLDER / file).read_bytes()
    for path in ("/console/index.html", "/console/../main.py", "/console/%2e%2e%2fmain.py", "/console/"):
        assert client.get(path).status_code == 404, path
    for path in ("/v1/jobs", "/v1/models", "/v1/datasets", "/v1/backends"):
        assert client.get(path).status_code == 401, path


@pytest.mark.parametrize("path", ["/", "/console/console.js", "/healthz", "/v1/jobs", "/nowhere"])
def test_every_response_carries_the_security_headers(client, path):
    headers = client.get(path).headers
    policy = dict(part.strip().split(" ", 1) for part in headers["content-security-policy"].split(";"))
    assert policy["frame-ancestors"] == "'none'"
    assert policy["script-src"] == "'self'" and policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self'" and policy["default-src"] == "'none'"
    assert headers["x-content-type-options"] == "nosniff"


def test_the_page_has_no_inline_script_style_or_handler():
    html = (FOLDER / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"<style\b|\sstyle=", html)
    assert not re.search(r"\son[a-z]+\s*=", html, re.IGNORECASE)
    for control in re.findall(r"<(?:input|select|progress)\b[^>]*\bid=\"([^\"]+)\"", html):
        assert f'for="{control}"' in html, f"#{control} has no label"


def test_the_script_writes_text_never_html_and_keeps_the_key_in_the_session():
    script = (FOLDER / "console.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "localStorage", "EventSource"):
        assert sink not in script, sink
    assert "sessionStorage.setItem(KEY_STORE" in script
    assert not re.search(r"[?&](api_?key|key)=", script, re.IGNORECASE)


def test_nothing_comes_from_another_origin():
    for path in FOLDER.iterdir():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", path.read_text()), path.name
