"""SMTP: the check (EHLO, TLS, AUTH and QUIT; nothing sent) and sending a message, both over
the same logged-in dialogue, each within its timeout."""

from __future__ import annotations

import base64
import smtplib
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from ..connections.records import ImapConnection, Security, ServerSettings
from ..core.errors import Cause, ErrorCode, MailServerError
from .mailnet import (
    classify_network_error,
    open_connection,
    server_error,
    tls_context,
    whole_exchange_within,
)

if TYPE_CHECKING:
    from smtplib import _AuthObject  # typeshed's: the mechanisms' auth_* methods

# smtplib would otherwise call socket.getfqdn(), a DNS round trip that can stall a Lambda.
_EHLO_NAME = "mailbridge.invalid"
# A server that answers 4xx asks to try again later; it rarely says when.
_RETRY_AFTER_SECONDS = 60
# Exchange Online's enhanced status codes (RFC 3463, opening the reply's text) for an AUTH
# it refuses whatever the password: a new one cannot help, OAuth can.
_PASSWORDS_REFUSED = {b"5.7.139": Cause.SMTP_AUTH_DISABLED, b"5.7.30": Cause.BASIC_AUTH_UNSUPPORTED}


def _temporary(code: int) -> bool:
    """RFC 5321: a 4xx reply is a transient failure, whatever the command; the same may
    succeed later."""
    return 400 <= code < 500


def _busy(server: ServerSettings) -> MailServerError:
    return server_error(ErrorCode.SERVER_BUSY, "SMTP", server, retry_after=_RETRY_AFTER_SECONDS)


class _Auth(smtplib.SMTP):
    def auth(
        self,
        mechanism: str,
        authobject: _AuthObject,
        *,
        initial_response_ok: bool = True,
    ) -> tuple[int, bytes]:
        """smtplib's login() tries the next mechanism after any refusal; a 4xx (RFC 4954's
        454) ends it instead: a server asking to wait is not asked again at once."""
        try:
            return super().auth(mechanism, authobject, initial_response_ok=initial_response_ok)
        except smtplib.SMTPAuthenticationError as refused:
            if not _temporary(refused.smtp_code):
                raise
            raise smtplib.SMTPResponseException(refused.smtp_code, refused.smtp_error) from refused


class _SMTP(_Auth):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return open_connection(host, port, timeout)


class _SMTP_SSL(_Auth, smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.context.wrap_socket(
            open_connection(host, port, timeout),
            server_hostname=self._host,  # type: ignore[attr-defined]  # set by connect()
        )


def check_smtp(connection: ImapConnection, password: str, timeout: float) -> None:
    """EHLO, TLS and AUTH, all within `timeout` seconds."""
    with (
        whole_exchange_within(timeout, "SMTP", connection.smtp),
        _logged_in(connection, password, timeout),
    ):
        pass


def send(
    connection: ImapConnection, password: str, recipients: list[str], data: bytes, timeout: float
) -> list[str]:
    """Submit `data` from the connection's address to `recipients`, within `timeout` seconds;
    the recipients the server refused while taking the others."""
    server = connection.smtp
    with (
        whole_exchange_within(timeout, "SMTP", server),
        _logged_in(connection, password, timeout) as client,
    ):
        try:
            refused = client.sendmail(connection.email, recipients, data)
        except smtplib.SMTPRecipientsRefused as error:
            raise _refusal(server, error.recipients) from error
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as error:
            raise _refusal(server, {}, error.smtp_code) from error
    return sorted(refused)


def _refusal(
    server: ServerSettings, recipients: dict[str, tuple[int, bytes]], code: int = 0
) -> MailServerError:
    """A 4xx anywhere means "later"; a 5xx is final, and names the recipients it was for
    (our own addresses, never the server's words)."""
    codes = [code] if code else [answer[0] for answer in recipients.values()]
    if codes and all(_temporary(found) for found in codes):
        return _busy(server)
    if recipients:
        return server_error(
            ErrorCode.RECIPIENTS_REFUSED, "SMTP", server, detail=", ".join(sorted(recipients))
        )
    return server_error(ErrorCode.MESSAGE_REFUSED, "SMTP", server)


def _answered(server: ServerSettings, error: smtplib.SMTPResponseException) -> MailServerError:
    """A reply that ended the dialogue: a 4xx at any step asks to try again later (and says
    nothing of the connection); a refused AUTH is the credentials', unless the server takes
    no password at all; anything else, the server's error."""
    if _temporary(error.smtp_code):
        return _busy(server)
    if isinstance(error, smtplib.SMTPAuthenticationError):
        words = error.smtp_error.split() if isinstance(error.smtp_error, bytes) else []
        cause = _PASSWORDS_REFUSED.get(words[0]) if words else None
        if cause is not None:
            return server_error(ErrorCode.AUTH_UNAVAILABLE, "SMTP", server, cause=cause)
        return server_error(ErrorCode.AUTH_FAILED, "SMTP", server)
    return server_error(ErrorCode.SERVER_ERROR, "SMTP", server)


def _ehlo(client: smtplib.SMTP) -> None:
    """EHLO, raising a 4xx, which smtplib returns rather than raises (after a 5xx the server
    offers no extension, which the steps after it report)."""
    code, reply = client.ehlo()
    if _temporary(code):
        raise smtplib.SMTPHeloError(code, reply)


def _quit(client: smtplib.SMTP) -> None:
    """QUIT without waiting for the answer, which nothing needs: a round trip saved."""
    with suppress(OSError, smtplib.SMTPException):
        client.send("QUIT\r\n")
    client.close()


def _log_in(client: smtplib.SMTP, server: ServerSettings, username: str, password: str) -> None:
    if (username + password).isascii():
        client.login(username, password)
        return
    # smtplib sends AUTH in ASCII only; AUTH PLAIN carries UTF-8 (RFC 4616).
    if "PLAIN" not in client.esmtp_features.get("auth", "").upper().split():
        cause = Cause.UTF8_LOGIN_UNSUPPORTED
        raise server_error(ErrorCode.AUTH_UNAVAILABLE, "SMTP", server, cause=cause)
    plain = base64.b64encode(f"\0{username}\0{password}".encode()).decode("ascii")
    code, reply = client.docmd("AUTH", f"PLAIN {plain}")
    if code == 334:  # a server that asks for the response after all (as smtplib answers it)
        code, reply = client.docmd(plain)
    if code in (235, 503):  # 503: already authenticated
        return
    if _temporary(code):
        raise smtplib.SMTPResponseException(code, reply)
    raise smtplib.SMTPAuthenticationError(code, reply)


@contextmanager
def _logged_in(connection: ImapConnection, password: str, timeout: float) -> Iterator[smtplib.SMTP]:
    """A dialogue secured and authenticated; QUIT at the end. Failures are MailServerErrors."""
    server = connection.smtp
    try:
        client: smtplib.SMTP
        if server.security is Security.TLS:
            client = _SMTP_SSL(
                server.host,
                server.port,
                local_hostname=_EHLO_NAME,
                timeout=timeout,
                context=tls_context(),
            )
        else:
            client = _SMTP(server.host, server.port, local_hostname=_EHLO_NAME, timeout=timeout)
        try:
            _ehlo(client)
            if server.security is Security.STARTTLS:
                if not client.has_extn("starttls"):
                    raise server_error(ErrorCode.STARTTLS_UNAVAILABLE, "SMTP", server)
                client.starttls(context=tls_context())
                _ehlo(client)
            if not client.has_extn("auth"):
                raise server_error(ErrorCode.AUTH_UNAVAILABLE, "SMTP", server)
            _log_in(client, server, connection.username, password)
            yield client
        finally:
            _quit(client)
    except smtplib.SMTPResponseException as error:  # the greeting's too (SMTPConnectError)
        raise _answered(server, error) from error
    except smtplib.SMTPServerDisconnected as error:
        # smtplib reports a read timeout mid-dialogue as a disconnect with the timeout as cause.
        timed_out = isinstance(error.__context__, TimeoutError)
        code = ErrorCode.TIMEOUT if timed_out else ErrorCode.SERVER_ERROR
        raise server_error(code, "SMTP", server) from error
    except smtplib.SMTPException as error:
        raise server_error(ErrorCode.SERVER_ERROR, "SMTP", server) from error
    except OSError as error:
        raise classify_network_error(error, "SMTP", server) from error
