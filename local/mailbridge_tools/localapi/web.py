"""What the local run serves beside the API, without a token: the reference Email tab, the
API's OpenAPI document and the events recorded from the bus."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from ..template import TEMPLATE_PATH, Route
from .gateway import HttpResponse

# The API's OpenAPI document, public like the web files.
OPENAPI_ROUTE = "/openapi.json"
# The events put on the template's buses since the start: the local run's own page.
MAIL_EVENTS_ROUTE = "/local/mail-events"
# The reference Email tab (web/), served beside the API as the platform's UI would be.
WEB_DIR = TEMPLATE_PATH.parent / "web"
_WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


class WebPages:
    """The web files, the OpenAPI document of the functions this run serves and the events
    recorded from the bus."""

    def __init__(
        self, api_routes: list[Route], mail_events: Callable[[], list[dict[str, Any]]]
    ) -> None:
        self._routes = api_routes
        self._mail_events = mail_events
        self._openapi = b""
        self._openapi_lock = threading.Lock()

    def get(self, path: str) -> HttpResponse | None:
        """The answer to a GET of `path`, if it is one of these pages."""
        if path in _WEB_FILES:
            return _web_file(path)
        if path == OPENAPI_ROUTE:
            return self._openapi_document()
        if path == MAIL_EVENTS_ROUTE:
            return self._mail_events_page()
        return None

    def _mail_events_page(self) -> HttpResponse:
        """`{"events": [...]}`: every event put on the template's buses since the start, as
        EventBridge delivers it to a target, oldest first. It does not exist in AWS: there a
        rule of your own on the bus (MailEventBusName) sends them where you want."""
        body = json.dumps({"events": self._mail_events()}).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        return HttpResponse(200, headers, body)

    def _openapi_document(self) -> HttpResponse:
        """The API's contract, generated from the functions this run serves (once: they do not
        change while it runs)."""
        # Imported at the first request for it: the generator loads every function.
        from ..openapi import build_document, render

        with self._openapi_lock:
            if not self._openapi:
                self._openapi = render(build_document(self._routes)).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        return HttpResponse(200, headers, self._openapi)


def _web_file(path: str) -> HttpResponse:
    name, content_type = _WEB_FILES[path]
    headers = [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
        # The page runs only its own files and talks only to this origin.
        ("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'"),
    ]
    return HttpResponse(200, headers, (WEB_DIR / name).read_bytes())
