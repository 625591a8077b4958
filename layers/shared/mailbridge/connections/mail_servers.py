"""The port to IMAP and SMTP servers: what the connection test asks of them, and the protocol
the adapter (`adapters.mail_servers`) implements.

The adapter is loaded by `mail_servers` at the first use, so a handler's cold start and
OAuth connections never pay for imapclient and smtplib.
"""

from __future__ import annotations

from typing import Protocol

from ..core.adapters import load_adapter
from .records import ImapConnection, InboxCounts


class MailServers(Protocol):
    """Each call ends within `timeout` seconds; failures are `MailServerError`s."""

    def check_imap(self, connection: ImapConnection, password: str, timeout: float) -> InboxCounts:
        """Log in over TLS and count the inbox's messages and unread ones."""
        ...

    def check_smtp(self, connection: ImapConnection, password: str, timeout: float) -> None:
        """Greet, secure the connection and log in; send nothing."""
        ...


def mail_servers() -> MailServers:
    """The IMAP and SMTP adapter, loaded at first use."""
    adapter: MailServers = load_adapter("mail_servers")
    return adapter
