"""SMTP check: EHLO, TLS, AUTH and QUIT. No message is sent."""

from __future__ import annotations

import smtplib
import socket

from ..connections.models import ImapConnection, Security
from ..core.errors import ErrorCode
from .mailnet import (
    classify_network_error,
    open_connection,
    server_error,
    tls_context,
    whole_exchange_within,
)

# smtplib would otherwise call socket.getfqdn(), a DNS round trip that can stall a Lambda.
_EHLO_NAME = "mailbridge.invalid"


class _SMTP(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return open_connection(host, port, timeout)


class _SMTP_SSL(smtplib.SMTP_SSL):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return self.context.wrap_socket(
            open_connection(host, port, timeout),
            server_hostname=self._host,  # type: ignore[attr-defined]  # set by connect()
        )


def check_smtp(connection: ImapConnection, password: str, timeout: float) -> None:
    """EHLO, TLS and AUTH, all within `timeout` seconds."""
    with whole_exchange_within(timeout, "SMTP", connection.smtp):
        _check(connection, password, timeout)


def _check(connection: ImapConnection, password: str, timeout: float) -> None:
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
        with client:
            client.ehlo()
            if server.security is Security.STARTTLS:
                if not client.has_extn("starttls"):
                    raise server_error(ErrorCode.STARTTLS_UNAVAILABLE, "SMTP", server)
                client.starttls(context=tls_context())
                client.ehlo()
            if not client.has_extn("auth"):
                raise server_error(ErrorCode.AUTH_UNAVAILABLE, "SMTP", server)
            client.login(connection.username, password)
    except smtplib.SMTPAuthenticationError as error:
        raise server_error(ErrorCode.AUTH_FAILED, "SMTP", server) from error
    except smtplib.SMTPServerDisconnected as error:
        # smtplib reports a read timeout mid-dialogue as a disconnect with the timeout as cause.
        timed_out = isinstance(error.__context__, TimeoutError)
        code = ErrorCode.TIMEOUT if timed_out else ErrorCode.SERVER_ERROR
        raise server_error(code, "SMTP", server) from error
    except smtplib.SMTPException as error:
        raise server_error(ErrorCode.SERVER_ERROR, "SMTP", server) from error
    except OSError as error:
        raise classify_network_error(error, "SMTP", server) from error
