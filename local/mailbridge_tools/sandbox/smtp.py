"""A real SMTP submission server (aiosmtpd) on loopback: STARTTLS and implicit TLS. It keeps
what it receives, byte for byte, and refuses the next step a test names (the greeting or a
command), as a throttling server does, or every password, as Exchange Online does where
SMTP AUTH is off."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session, syntax

from .network import LOOPBACK, free_port
from .tls import server_context

# aiosmtpd logs every session, and warns about the configuration below, which is deliberate.
logging.getLogger("mail.log").setLevel(logging.ERROR)


# The greeting, then each command of a submission in its order.
Command = Literal["GREETING", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA"]


@dataclass(frozen=True)
class ReceivedMessage:
    sender: str
    recipients: list[str]
    # The message as the client sent it in DATA, dot-unstuffed, CRLFs and all.
    content: bytes


class _Mailroom:
    """The handler and authenticator both controllers share."""

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        self._lock = threading.Lock()
        self.messages: list[ReceivedMessage] = []
        self.auth_attempts = 0
        self._refusals: dict[Command, str] = {}
        self.password_refusal: str | None = None

    def set_password(self, login: str, password: str) -> None:
        with self._lock:
            self._users[login] = password

    def refuse_next(self, command: Command, reply: str) -> None:
        with self._lock:
            self._refusals[command] = reply

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        with self._lock:
            self.auth_attempts += 1
            refusal = self.password_refusal
        if refusal is not None:  # once the credentials are in, whatever they are
            return AuthResult(success=False, handled=False, message=refusal)
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        return AuthResult(success=self._users.get(login) == password, handled=False)

    def refusal(self, server: SMTP, command: Command) -> str | None:
        """The reply a test asked the next `command` to get, if any; after a 421 the server
        closes the connection, as RFC 5321 has it."""
        with self._lock:
            reply = self._refusals.pop(command, None)
        if reply is not None and reply.startswith("421") and server.transport is not None:
            # Once the reply is written: closing flushes what is buffered first.
            asyncio.get_running_loop().call_soon(server.transport.close)
        return reply

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, replies: list[str]
    ) -> list[str]:
        refusal = self.refusal(server, "EHLO")
        if refusal is not None:
            return [refusal]
        session.host_name = hostname  # what aiosmtpd does without this hook
        return replies

    async def handle_AUTH(
        self, server: SMTP, session: Session, envelope: Envelope, args: list[str]
    ) -> object:
        refusal = self.refusal(server, "AUTH")
        return MISSING if refusal is None else refusal  # MISSING: authenticate as usual

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        refusal = self.refusal(server, "MAIL")
        if refusal is not None:
            return refusal
        # What aiosmtpd does without this hook.
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        refusal = self.refusal(server, "RCPT")
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self.refusal(server, "DATA")
        if refusal is not None:
            return refusal
        # aiosmtpd's original_content: the DATA bytes, dot-unstuffed and otherwise untouched.
        content = envelope.original_content or b""
        with self._lock:
            self.messages.append(
                ReceivedMessage(envelope.mail_from or "", list(envelope.rcpt_tos), content)
            )
        return "250 Message accepted for delivery"


class _Server(SMTP):
    """aiosmtpd's server, refusing what it has no handler hook for: the greeting (after which
    it hangs up) and STARTTLS."""

    async def _handle_client(self) -> None:
        refusal = self.event_handler.refusal(self, "GREETING")
        if refusal is None:
            await super()._handle_client()
        elif self.transport is not None:
            await self.push(refusal)
            self.transport.close()

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        refusal = self.event_handler.refusal(self, "STARTTLS")
        if refusal is None:
            await super().smtp_STARTTLS(arg)
        else:
            await self.push(refusal)


class _Controller(Controller):
    def factory(self) -> SMTP:
        # The implicit-TLS port and the no-STARTTLS trap advertise AUTH without STARTTLS
        # on purpose; aiosmtpd warns about that for every connection.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return _Server(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """Submission with AUTH for `users` ({address: password}) on two ports:
    `starttls_port` (STARTTLS required before AUTH) and `tls_port` (implicit TLS).

    With `offer_starttls=False` the STARTTLS port offers no TLS but still advertises AUTH,
    the trap a careful client must not fall into; `auth_attempts` shows whether it did. With
    `offer_plain=False` AUTH offers LOGIN only, as some servers do.
    """

    def __init__(
        self,
        cert: Path,
        key: Path,
        users: dict[str, str],
        *,
        offer_starttls: bool = True,
        offer_plain: bool = True,
    ) -> None:
        self._mailroom = _Mailroom(users)
        context = server_context(cert, key)
        # aiosmtpd cannot listen on port 0 (its readiness probe needs the real port).
        self.starttls_port, self.tls_port = free_port(), free_port()
        self._controllers = [
            _Controller(
                self._mailroom,
                hostname=LOOPBACK,
                port=self.starttls_port,
                server_hostname="localhost",
                tls_context=context if offer_starttls else None,
                require_starttls=offer_starttls,
                authenticator=self._mailroom.authenticate,
                auth_required=True,
                auth_require_tls=offer_starttls,
                auth_exclude_mechanism=[] if offer_plain else ["PLAIN"],
            ),
            _Controller(
                self._mailroom,
                hostname=LOOPBACK,
                port=self.tls_port,
                server_hostname="localhost",
                ssl_context=context,
                authenticator=self._mailroom.authenticate,
                auth_required=True,
                # With True, aiosmtpd hides AUTH on an implicit-TLS port.
                auth_require_tls=False,
                auth_exclude_mechanism=[] if offer_plain else ["PLAIN"],
            ),
        ]

    @property
    def messages(self) -> list[ReceivedMessage]:
        return self._mailroom.messages

    @property
    def auth_attempts(self) -> int:
        return self._mailroom.auth_attempts

    def set_password(self, login: str, password: str) -> None:
        """Adds the user, or changes its password, at once."""
        self._mailroom.set_password(login, password)

    def refuse_next(self, command: Command, reply: str = "451 4.7.1 Try again later") -> None:
        """The next greeting or command so named (on either port) gets `reply` instead: a
        temporary error such as 451 or 454, or 421, after which the server hangs up."""
        self._mailroom.refuse_next(command, reply)

    @contextmanager
    def refusing_passwords(self, reply: str) -> Iterator[None]:
        """Within the block every AUTH, on either port and with any mechanism, is answered
        `reply` once the credentials are sent, right or wrong: Exchange Online's
        "535 5.7.139 ..." where SMTP AUTH is off, or "550 5.7.30 ..." where basic
        authentication is gone."""
        self._mailroom.password_refusal = reply
        try:
            yield
        finally:
            self._mailroom.password_refusal = None

    def __enter__(self) -> SmtpServer:
        for controller in self._controllers:
            controller.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for controller in self._controllers:
            controller.stop()
