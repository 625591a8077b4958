"""HTTP in and out of the gateway: a threading server on the API's address whose handler turns
each request into an HttpRequest and the gateway's HttpResponse back into bytes."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .gateway import Gateway, HttpRequest, HttpResponse, gateway_error

MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit for HTTP APIs


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], gateway: Gateway) -> None:
        super().__init__(address, _RequestHandler)
        self.gateway = gateway


def serve(stack: ExitStack, server: HttpServer) -> None:
    """Serves on a thread of its own until `stack` closes."""
    # A short poll so that stop() returns at once.
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name="localapi",
        daemon=True,
    )
    thread.start()
    stack.callback(thread.join)
    stack.callback(server.shutdown)


class _RequestHandler(BaseHTTPRequestHandler):
    """Only HTTP in and out; everything else is the Gateway's."""

    protocol_version = "HTTP/1.1"
    server: HttpServer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The path without its query: the OAuth callback's carries a code and a state.
        self.log_message('"%s %s" %s', self.command, urlsplit(self.path).path, code)

    def _handle(self) -> None:
        response = self._read_and_handle()
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _read_and_handle(self) -> HttpResponse:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            # Unread chunks would corrupt the next request on this connection.
            self.close_connection = True
            return gateway_error(411, "Length Required")
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self.close_connection = True
            return gateway_error(400, "Bad Request")
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is never read
            return gateway_error(413, "Request Entity Too Large")
        request = HttpRequest(
            method=self.command,
            target=self.path,
            headers=list(self.headers.items()),
            body=self.rfile.read(length) if length > 0 else b"",
            source_ip=self.client_address[0],
            protocol=self.request_version,
        )
        return self.server.gateway.handle(request)

    # Every method reaches the gateway, which answers 405 where a path does not allow it
    # (http.server would answer 501 for methods without a do_ method).
    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle
    do_TRACE = do_QUERY = _handle
