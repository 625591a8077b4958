"""What the IMAP and SMTP adapters share: connections only to allowed addresses, the TLS
context, and the classification of network failures.

Every failure becomes a `MailServerError`, so the user sees a stable code, our own sentence
and a fix hint, never the server's raw text and never a credential.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from ..connections.records import ServerSettings
from ..core.addresses import address_allowed
from ..core.deadline import Deadline, watch
from ..core.errors import Cause, ErrorCode, MailServerError
from ..core.settings import settings


@cache
def tls_context() -> ssl.SSLContext:
    """Verifying context (hostname and chain), TLS 1.2+, plus the deployment's extra CA."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    extra_ca = settings().mail_extra_ca_file
    if extra_ca:
        context.load_verify_locations(cafile=extra_ca)
    return context


class AddressNotAllowed(OSError):
    """The host resolved to an address outside what the deployment may connect to."""


def open_connection(
    host: str, port: int, timeout: float | None, *, allow_private: bool | None = None
) -> socket.socket:
    """socket.create_connection, but every address is checked before it is used, and the
    connection goes to the checked address itself: a DNS answer that changes between a
    check and a connect (rebinding) cannot slip through."""
    if allow_private is None:
        allow_private = settings().mail_allow_private_networks
    last_error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if not address_allowed(str(address[0]), allow_private=allow_private):
            last_error = AddressNotAllowed(f"{host} resolves to a refused address")
            continue
        sock = socket.socket(family, kind, proto)
        try:
            watch(sock)
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as error:
            sock.close()
            last_error = error
    raise last_error or OSError(f"{host} has no address")


def classify_network_error(
    error: OSError, protocol: str, server: ServerSettings
) -> MailServerError:
    # Most specific first: the SSL errors and TimeoutError are all OSErrors.
    if isinstance(error, AddressNotAllowed):
        code = ErrorCode.ADDRESS_NOT_ALLOWED
    elif isinstance(error, ssl.SSLCertVerificationError):
        code = ErrorCode.TLS_CERTIFICATE_INVALID
    elif isinstance(error, ssl.SSLError):
        code = ErrorCode.TLS_HANDSHAKE_FAILED
    elif isinstance(error, TimeoutError):
        code = ErrorCode.TIMEOUT
    elif isinstance(error, socket.gaierror):
        code = ErrorCode.DNS_FAILURE
    elif isinstance(error, ConnectionRefusedError):
        code = ErrorCode.CONNECTION_REFUSED
    else:
        code = ErrorCode.CONNECTION_FAILED
    return server_error(code, protocol, server)


def server_error(
    code: ErrorCode,
    protocol: str,
    server: ServerSettings,
    *,
    cause: Cause | None = None,
    detail: str = "",
    retry_after: int | None = None,
) -> MailServerError:
    return MailServerError(
        code,
        protocol,
        server.host,
        server.port,
        cause=cause,
        detail=detail,
        retry_after=retry_after,
    )


@contextmanager
def whole_exchange_within(timeout: float, protocol: str, server: ServerSettings) -> Iterator[None]:
    """The block's whole exchange with the server ends within `timeout` seconds; whatever it
    fails with once the deadline has passed (a socket shut under a read) is a timeout."""
    with Deadline(timeout) as deadline:
        try:
            yield
        except MailServerError as problem:
            if deadline.expired:
                raise server_error(ErrorCode.TIMEOUT, protocol, server) from problem
            raise
