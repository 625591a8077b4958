"""Loopback ports for sandbox servers, the https server of the fake providers and the mail
domains, and servers that misbehave: one that never answers, one that answers a byte at a
time, and an IMAP server that says what it is told (and may answer one command a byte at a
time)."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, *, alive: object = None) -> None:
    """Waits until something accepts connections on `port`; `alive()` may abort early."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(alive) and not alive():
            raise RuntimeError(f"the server for port {port} exited while starting")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


class HttpsServer(ThreadingHTTPServer):
    """An https server on a free loopback port, answering with `handler` on a thread of its
    own from `start` to `stop`."""

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext) -> None:
        super().__init__((LOOPBACK, 0), handler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        # A short poll, so that `stop` returns at once.
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join()


class BlackholeServer:
    """Completes TCP handshakes (the kernel does, from the backlog) and never says a word:
    the shape of a firewall that swallows traffic, or a hung server."""

    def __init__(self) -> None:
        self._socket = socket.socket()

    def __enter__(self) -> BlackholeServer:
        self._socket.bind((LOOPBACK, 0))
        self._socket.listen(64)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._socket.close()

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])


class _ThreadPerConnection:
    """A loopback server handing each connection (after a TLS handshake with `tls`) to
    `_serve` on a thread of its own."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self._tls = tls
        self._socket = socket.socket()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        self._socket.bind((LOOPBACK, 0))
        self._socket.listen(16)
        self._socket.settimeout(0.1)
        self._start(self._accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()
        for thread in self._threads:
            thread.join()
        self._socket.close()

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._socket.accept()
            except TimeoutError:
                continue
            self._start(self._connected, client)

    def _connected(self, client: socket.socket) -> None:
        if self._tls is not None:
            try:
                client = self._tls.wrap_socket(client, server_side=True)
            except OSError:
                client.close()
                return
        with client:
            try:
                self._serve(client)
            except OSError:
                return  # the client gave up: what a test of giving up wants

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _drip(self, client: socket.socket, data: bytes, interval: float) -> None:
        """Sends `data` one byte per `interval` seconds: each read succeeds, so only a
        deadline on the whole exchange ends it."""
        for byte in data:
            if self._stopped.wait(interval):
                return
            client.sendall(bytes([byte]))


class SlowDripServer(_ThreadPerConnection):
    """Answers every connection with a greeting one byte per `interval` seconds (after a TLS
    handshake with `tls`): each read succeeds, so only a deadline on the whole exchange ends
    it."""

    def __init__(
        self,
        greeting: bytes = b"* OK IMAP4rev1 ready, eventually\r\n",
        interval: float = 0.5,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(tls)
        self._greeting = greeting
        self._interval = interval

    def _serve(self, client: socket.socket) -> None:
        self._drip(client, self._greeting, self._interval)


class ScriptedImapServer(_ThreadPerConnection):
    """An IMAP server over implicit TLS that takes any login and answers each command with
    the untagged lines `answers` names for it, then OK: what a broken or hostile server may
    say, for the tests. The command named `drip` is answered with `dripped` instead, one byte
    per `interval` seconds, after which the server hangs up. The greeting lists the
    capabilities, as most servers' do, unless `greeting` says otherwise. With `starttls`, the
    connection starts plain and STARTTLS secures it. `commands` records the commands
    received, in order."""

    def __init__(
        self,
        tls: ssl.SSLContext,
        answers: dict[bytes, list[bytes]],
        *,
        drip: bytes | None = None,
        dripped: bytes = b"+ go ahead, slowly\r\n",
        interval: float = 0.5,
        greeting: bytes = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted",
        starttls: bool = False,
    ) -> None:
        super().__init__(None if starttls else tls)
        self._starttls = tls if starttls else None
        self._greeting = greeting
        self.commands: list[bytes] = []
        self._answers = {
            b"CAPABILITY": [b"* CAPABILITY IMAP4rev1 AUTH=PLAIN"],
            b"LOGOUT": [b"* BYE scripted"],
            **answers,
        }
        self._drip_command, self._dripped, self._interval = drip, dripped, interval

    def _serve(self, client: socket.socket) -> None:
        stream = client.makefile("rwb")
        stream.write(self._greeting + b"\r\n")
        stream.flush()
        while line := stream.readline():
            tag, _, rest = line.partition(b" ")
            command = rest.split(maxsplit=1)[0].upper() if rest.strip() else b""
            self.commands.append(command)
            if command == self._drip_command:
                self._drip(client, self._dripped, self._interval)
                return
            answers = self._answers.get(command, [])
            stream.write(b"".join(answer + b"\r\n" for answer in answers))
            stream.write(tag + b" OK done\r\n")
            stream.flush()
            if command == b"STARTTLS" and self._starttls is not None:
                client = self._starttls.wrap_socket(client, server_side=True)
                stream = client.makefile("rwb")
            if command == b"LOGOUT":
                return
