"""IMAP sessions, secured and logged in through the SSRF guard, the translation of their
failures, and the check: login and `STATUS INBOX (MESSAGES UNSEEN)`.

STATUS costs the same for ten messages or fifty thousand; SELECT + SEARCH would not.
"""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import LoginError
from imapclient.tls import IMAP4_TLS, wrap_socket

from ..connections.records import ImapConnection, InboxCounts, Security, ServerSettings
from ..core.errors import Cause, ErrorCode
from .mailnet import (
    classify_network_error,
    open_connection,
    server_error,
    tls_context,
    whole_exchange_within,
)


class _GreetingCapabilities(imaplib.IMAP4):
    """Takes the capabilities from the greeting when the server lists them there (`* OK
    [CAPABILITY ...]`, as Dovecot and Cyrus do; Gmail's and Exchange's greetings do not, and
    cost the CAPABILITY command as before), saving the round trip that imaplib spends on
    every connection. imaplib offers no supported way to skip it, so this overrides the
    method its `_connect` calls."""

    _greeting_read = False

    def _get_capabilities(self) -> None:
        greeting = None
        if not self._greeting_read:
            # Only the greeting's: after STARTTLS what came before the handshake is
            # discarded (RFC 3501, 6.2.1), and imaplib's starttls, which imapclient 4 uses,
            # asks again.
            self._greeting_read = True
            greeting = self.untagged_responses.pop("CAPABILITY", None)
        listed = greeting[-1] if greeting else None
        if not isinstance(listed, bytes):
            super()._get_capabilities()  # type: ignore[misc]
            return
        self.capabilities = tuple(str(listed, self._encoding).upper().split())


class _IMAP4(_GreetingCapabilities):
    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return open_connection(self.host, self.port, timeout)


class _IMAP4_TLS(IMAP4_TLS, _GreetingCapabilities):  # type: ignore[misc]
    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = open_connection(self.host, self.port, timeout or self._timeout)
        return wrap_socket(sock, self.ssl_context, self.host)  # type: ignore[no-any-return]


class _IMAPClient(IMAPClient):  # type: ignore[misc]
    """Connects through open_connection, which checks where the host name leads."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        timeout = self._timeout.connect
        if self.ssl:
            return _IMAP4_TLS(self.host, self.port, self.ssl_context, timeout)  # type: ignore[call-arg]
        return _IMAP4(self.host, self.port, timeout)


def check_imap(connection: ImapConnection, password: str, timeout: float) -> InboxCounts:
    """Login and inbox counts, all within `timeout` seconds."""
    server = connection.imap
    with (
        whole_exchange_within(timeout, "IMAP", server),
        imap_errors(server),
        logged_in(connection, password, timeout) as client,
    ):
        status = client.folder_status("INBOX", [b"MESSAGES", b"UNSEEN"])
        return InboxCounts(total=status[b"MESSAGES"], unread=status[b"UNSEEN"])


@contextmanager
def imap_errors(server: ServerSettings) -> Iterator[None]:
    """Whatever the block's IMAP exchange fails with, as a MailServerError. An answer that is
    not the one asked for (a garbled STATUS, say) is the server's error, not ours."""
    try:
        yield
    except LoginError as error:
        raise server_error(ErrorCode.AUTH_FAILED, "IMAP", server) from error
    except OSError as error:
        raise classify_network_error(error, "IMAP", server) from error
    except (imaplib.IMAP4.error, KeyError, IndexError, TypeError, ValueError) as error:
        raise server_error(ErrorCode.SERVER_ERROR, "IMAP", server) from error


@contextmanager
def logged_in(connection: ImapConnection, password: str, timeout: float) -> Iterator[IMAPClient]:
    """A session secured and logged in; LOGOUT at the end. Use within `imap_errors`."""
    server = connection.imap
    client = _IMAPClient(
        server.host,
        port=server.port,
        ssl=server.security is Security.TLS,
        ssl_context=tls_context(),
        timeout=SocketTimeout(connect=timeout, read=timeout),
    )
    try:
        if server.security is Security.STARTTLS:
            # Never log in on a connection that stayed plain.
            if not client.has_capability("STARTTLS"):
                raise server_error(ErrorCode.STARTTLS_UNAVAILABLE, "IMAP", server)
            client.starttls(tls_context())
        if (connection.username + password).isascii():
            client.login(connection.username, password)
        elif client.has_capability("AUTH=PLAIN"):
            # LOGIN carries ASCII only, whether or not the server takes UTF8=ACCEPT (RFC 6855
            # section 5): AUTHENTICATE PLAIN carries UTF-8 (RFC 4616).
            client.plain_login(connection.username, password)
        else:
            cause = Cause.UTF8_LOGIN_UNSUPPORTED
            raise server_error(ErrorCode.AUTH_UNAVAILABLE, "IMAP", server, cause=cause)
        yield client
    finally:
        _close(client)


def _close(client: IMAPClient) -> None:
    """LOGOUT without waiting for the answer, which nothing needs (a round trip saved), then
    close: a courtesy to the server, whose failure changes no outcome."""
    with suppress(OSError):
        client.socket().sendall(b"bye LOGOUT\r\n")
    client.shutdown()
