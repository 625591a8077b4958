"""Mail domains on loopback, for email discovery in the tests and the sandbox: a DNS server
(dnslib) answering the records of its zone, and an https server answering, by host and path,
what a test puts there (autoconfig documents, an ISPDB, raw hostile answers); each records what
it was asked, and either can be told to stay silent for a name."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from dnslib import QTYPE, RCODE, RR, DNSError, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from .network import LOOPBACK, HttpsServer
from .tls import server_context

# How long a silent https answer waits, at most, before the server lets the connection go.
_SILENT_SECONDS = 30.0


class DnsServer:
    """Authoritative for its records only (anything else is NXDOMAIN), over UDP and TCP on
    a loopback port. `add` takes zone-file lines: "acme.test. 300 IN MX 10 mx.acme.test."."""

    def __init__(self) -> None:
        self.records: list[RR] = []
        self.silent: set[str] = set()  # names asked about and never answered
        self.queries: list[tuple[str, str]] = []  # (name without the final dot, type)
        self._lock = threading.Lock()
        self._servers: list[DNSServer] = []

    def add(self, *lines: str) -> None:
        with self._lock:
            for line in lines:
                self.records.extend(RR.fromZone(line))

    def silence(self, name: str) -> None:
        self.silent.add(name.rstrip(".").lower())

    def asked(self, name: str) -> list[str]:
        """The types of every query for `name`, in order."""
        return [kind for asked, kind in self.queries if asked == name]

    @property
    def address(self) -> str:
        """As DISCOVERY_DNS_SERVER takes it."""
        return f"{LOOPBACK}:{self.port}"

    def __enter__(self) -> Self:
        self.port = _free_udp_and_tcp_port()
        quiet = DNSLogger(log="-recv,-send,-request,-reply,-truncated,-error,-data")
        for tcp in (False, True):
            server = DNSServer(_Zone(self), port=self.port, address=LOOPBACK, tcp=tcp, logger=quiet)
            server.start_thread()
            self._servers.append(server)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for server in self._servers:
            server.stop()
            server.server.server_close()

    def answer(self, request: DNSRecord) -> DNSRecord:
        question = request.q
        name = str(question.qname).rstrip(".").lower()
        kind = QTYPE[question.qtype]
        with self._lock:
            self.queries.append((name, kind))
            known = [r for r in self.records if str(r.rname).rstrip(".").lower() == name]
        if name in self.silent:
            raise DNSError("silent")  # dnslib sends nothing back
        reply = request.reply()
        for record in known:
            if record.rtype == question.qtype:
                reply.add_answer(record)
        if not known:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply


class _Zone(BaseResolver):  # type: ignore[misc]  # dnslib is untyped
    def __init__(self, server: DnsServer) -> None:
        self._server = server

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        return self._server.answer(request)


def _free_udp_and_tcp_port() -> int:
    """A loopback port free for both: the DNS server listens on each."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket() as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port


@dataclass
class Page:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # A hostile answer: `raw` sent as it is (status line, headers and all), then `repeat`
    # `repeats` times unless the client goes first; `sent` counts the bytes it took.
    raw: bytes = b""
    repeat: bytes = b""
    repeats: int = 0
    sent: int = 0


class DomainWebServer:
    """One https server on loopback for many host names (its certificate names them all):
    answers each (host, path) with the page a test put there, else 404; a silent host gets
    its TLS handshake and never an answer. Every request is recorded as (host, path and
    query)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._context = server_context(cert, key)
        self.pages: dict[tuple[str, str], Page] = {}
        self.silent: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.stopped = threading.Event()

    def put(self, host: str, path: str, body: bytes | str, **page: Any) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.pages[(host, path)] = Page(body=data, **page)

    def asked(self, host: str) -> list[str]:
        """The paths (with queries) of every request for `host`, in order."""
        return [path for asked, path in self.requests if asked == host]

    @property
    def port(self) -> int:
        return self._server.port

    def __enter__(self) -> Self:
        self._server = _WebServer(self, self._context).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stopped.set()  # ends silent answers
        self._server.stop()


class _WebServer(HttpsServer):
    def __init__(self, site: DomainWebServer, context: ssl.SSLContext) -> None:
        super().__init__(_PageHandler, context)
        self.site = site


class _PageHandler(BaseHTTPRequestHandler):
    server: _WebServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        site = self.server.site
        host = self.headers.get("Host", "").rsplit(":", 1)[0]
        site.requests.append((host, self.path))
        if host in site.silent:
            site.stopped.wait(_SILENT_SECONDS)
            return
        page = site.pages.get((host, self.path.partition("?")[0]), Page(404, b"not here"))
        if page.raw:
            self._send_raw(page)
            return
        self.send_response(page.status, HTTPStatus(page.status).phrase)
        for name, value in page.headers.items():
            self.send_header(name, value)
        if "Content-Length" not in page.headers:
            self.send_header("Content-Length", str(len(page.body)))
        self.end_headers()
        self.wfile.write(page.body)

    def _send_raw(self, page: Page) -> None:
        self.close_connection = True
        try:
            self.wfile.write(page.raw)
            page.sent += len(page.raw)
            for _ in range(page.repeats):
                self.wfile.write(page.repeat)
                page.sent += len(page.repeat)
        except OSError:
            pass  # the client hung up: what it should do


def address_records(names: Iterable[str], address: str = LOOPBACK) -> list[str]:
    """Zone lines giving each name `address`."""
    return [f"{name}. 300 IN A {address}" for name in names]
