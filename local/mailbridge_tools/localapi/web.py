"""What the local run serves beside the API, without a token: the reference Email tab and the
API's OpenAPI document."""

from __future__ import annotations

import threading

from ..template import TEMPLATE_PATH, Route
from .gateway import HttpResponse

# The API's OpenAPI document, public like the web files.
OPENAPI_ROUTE = "/openapi.json"
# The reference Email tab (web/), served beside the API as the platform's UI would be.
WEB_DIR = TEMPLATE_PATH.parent / "web"
_WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


class WebPages:
    """The web files and the OpenAPI document of the functions this run serves."""

    def __init__(self, api_routes: list[Route]) -> None:
        self._routes = api_routes
        self._openapi = b""
        self._openapi_lock = threading.Lock()

    def get(self, path: str) -> HttpResponse | None:
        """The answer to a GET of `path`, if it is one of these pages."""
        if path in _WEB_FILES:
            return _web_file(path)
        if path == OPENAPI_ROUTE:
            return self._openapi_document()
        return None

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
