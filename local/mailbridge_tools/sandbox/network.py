"""Loopback ports for sandbox servers, and servers that misbehave: one that never answers,
one that answers a byte at a time, and an IMAP server that says what it is told."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
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
        for byte in self._greeting:
            if self._stopped.wait(self._interval):
                return
            client.sendall(bytes([byte]))


class ScriptedImapServer(_ThreadPerConnection):
    """An IMAP server over implicit TLS that takes any login and answers STATUS with the
    lines it is given: what a broken or hostile server may say, for the tests."""

    def __init__(self, tls: ssl.SSLContext, status_lines: list[bytes]) -> None:
        super().__init__(tls)
        self._status_lines = status_lines

    def _serve(self, client: socket.socket) -> None:
        with client.makefile("rwb") as stream:
            stream.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted\r\n")
            stream.flush()
            for line in stream:
                tag, _, rest = line.partition(b" ")
                command = rest.split(maxsplit=1)[0].upper() if rest.strip() else b""
                answers = {
                    b"CAPABILITY": [b"* CAPABILITY IMAP4rev1 AUTH=PLAIN"],
                    b"STATUS": self._status_lines,
                    b"LOGOUT": [b"* BYE scripted"],
                }.get(command, [])
                stream.write(b"".join(answer + b"\r\n" for answer in answers))
                stream.write(tag + b" OK done\r\n")
                stream.flush()
                if command == b"LOGOUT":
                    return
