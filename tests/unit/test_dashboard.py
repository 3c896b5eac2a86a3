"""The dashboard's shell as the server sees it: open without a token but nothing else with it, a strict CSP on
every answer, only the files it ships, and scripts that never parse data as HTML. (The page itself is tested in
a real browser: tests/browser.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import Route

from hatchway.api.app import create_app
from hatchway.api.auth import install_authentication, required_role
from hatchway.api.errors import install_error_handlers
from hatchway.observability.metrics import Metrics
from hatchway.settings import ApiToken, Role, Settings
from hatchway.web import dashboard
from hatchway.web.dashboard import CONTENT_SECURITY_POLICY, STATIC_FILES

SECRET = "read-secret-0123456789"
OPEN = {("GET", "/"), ("GET", "/ui/{name}"), ("GET", "/health")}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(dashboard.router)

    @app.get("/jobs")
    async def jobs() -> list[str]:
        return []

    install_authentication(app, [ApiToken(token=SECRET, role=Role.READ, name="reader")])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://worker") as http:
        yield http


async def test_the_page_and_its_files_load_without_a_token_and_the_data_does_not(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="/ui/app.js">' in page.text
    script = await client.get("/ui/app.js")
    assert script.status_code == 200 and script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert (await client.get("/ui/style.css")).headers["content-type"] == "text/css; charset=utf-8"
    assert (await client.get("/jobs")).status_code == 401
    assert (await client.get("/jobs", headers={"Authorization": f"Bearer {SECRET}"})).status_code == 200


async def test_every_answer_carries_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    for path in ("/", "/ui/app.js", "/ui/style.css"):
        headers = (await client.get(path)).headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    directives = dict(item.split(" ", 1) for item in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == directives["style-src"] == directives["connect-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_only_the_shipped_files_are_served(client: httpx.AsyncClient) -> None:
    for path in ("/ui/nope.js", "/ui/index.html", "/ui/..%2fdashboard.py", "/ui/%2e%2e/__init__.py", "/ui/"):
        answer = await client.get(path)
        assert answer.status_code in (401, 404), path  # 401: not the shell's path at all, so it needs a token
        assert "import" not in answer.text
    missing = await client.get("/ui/nope.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await client.get("/ui/a/b.js")).status_code == 401  # one path segment only is open


async def test_a_file_the_browser_has_is_answered_304(client: httpx.AsyncClient) -> None:
    first = await client.get("/ui/app.js")
    again = await client.get("/ui/app.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_the_shell_is_the_only_open_thing_besides_health() -> None:
    """Every route of the real app (its OpenAPI document, and the routes it leaves out): the open ones are the
    shell and /health, and nothing else lives under /ui/, since auth.py opens `/ui/{name}` as a template."""
    fake = SimpleNamespace(settings=Settings(), system=SimpleNamespace(metrics=Metrics()))
    app = create_app(fake)  # type: ignore[arg-type]  # routes only: no request reaches the worker here
    documented = {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}
    undocumented = {
        (method, route.path)
        for route in [*app.routes, *dashboard.router.routes]
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    routes = documented | undocumented
    assert ("GET", "/jobs/{job_id}") in routes and ("GET", "/") in routes
    assert {(method, path) for method, path in routes if required_role(method, path) is None} == OPEN
    assert [path for _, path in routes if path.startswith("/ui")] == ["/ui/{name}"]


def test_every_file_a_page_or_module_names_is_shipped() -> None:
    for name, file in STATIC_FILES.items():
        text = file.content.decode()
        named = re.findall(r'from "\./([\w.-]+)"', text) + re.findall(r'(?:href|src)="/ui/([\w.-]+)"', text)
        missing = [item for item in named if item not in STATIC_FILES]
        assert not missing, f"{name} names {missing}, which the package does not ship"
    assert {"index.html", "app.js", "style.css", "charts.js", "favicon.svg"} <= set(STATIC_FILES)


def test_no_script_parses_text_as_html() -> None:
    """Job output, labels and messages are untrusted: the scripts put text in the page with textContent only."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|DOMParser")
    for name, file in STATIC_FILES.items():
        if name.endswith(".js"):
            assert not forbidden.findall(file.content.decode()), name
    page = STATIC_FILES["index.html"].content.decode()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page), "no inline script"
    assert not re.search(r"<[^>]*\s(style|on\w+)=", page), "no inline style or handler"
