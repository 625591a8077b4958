"""Deadlines on whole network exchanges, not only on each socket operation.

A socket timeout bounds one read: a server that answers one byte a second keeps every read
alive forever, and a TLS handshake or an HTTP response can be dripped the same way. A
Deadline bounds the whole exchange: when it passes, it shuts down every socket opened
under it, which ends the read in progress at once, TLS or not.

Deadlines nest, and an inner one never outlasts the one around it. The handler puts the
whole invocation under a deadline (the Lambda's remaining time, less what recording the
outcome needs), so no mail or provider exchange beneath it, nor a wait for the refresh
lock, can run the function into its own timeout. (AWS calls are bounded by botocore's own
timeouts; see mailbridge.storage.)
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import threading
import time

_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("deadline", default=None)


class Deadline:
    def __init__(self, seconds: float) -> None:
        ends_at = time.monotonic() + seconds
        outer = _current.get()
        self.ends_at: float = min(ends_at, outer.ends_at) if outer else ends_at
        self._lock = threading.Lock()
        # Duplicates of the watched sockets: shutting one down ends reads on the original
        # even after ssl has wrapped it (wrapping detaches the original socket object).
        self._sockets: list[socket.socket] = []
        self._timer: threading.Timer | None = None
        self._shut = False

    @property
    def expired(self) -> bool:
        return self._shut or time.monotonic() >= self.ends_at

    def __enter__(self) -> Deadline:
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            for duplicate in self._sockets:
                duplicate.close()
            self._sockets.clear()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                raise TimeoutError("the deadline passed")
            # A plain socket on a duplicate descriptor (an SSLSocket refuses dup()).
            self._sockets.append(socket.fromfd(sock.fileno(), sock.family, sock.type))
            if self._timer is None:  # only exchanges that open sockets need a timer
                self._timer = threading.Timer(self.ends_at - time.monotonic(), self._shut_down)
                self._timer.daemon = True
                self._timer.start()

    def _shut_down(self) -> None:
        with self._lock:
            self._shut = True
            for duplicate in self._sockets:
                with contextlib.suppress(OSError):
                    duplicate.shutdown(socket.SHUT_RDWR)


def watch(sock: socket.socket) -> None:
    """Put a socket under the current deadline, if there is one; raises TimeoutError (and
    leaves the socket to its owner) when that deadline has already passed."""
    deadline = _current.get()
    if deadline is not None:
        deadline.watch(sock)


def seconds_left(at_most: float) -> float:
    """`at_most`, or less if the current deadline (the invocation's) ends sooner: for waits
    that have no socket to watch."""
    deadline = _current.get()
    if deadline is None:
        return at_most
    return max(0.0, min(at_most, deadline.ends_at - time.monotonic()))
