"""IMAP and SMTP behind the `connections.mail_servers.MailServers` port; `imap` and `smtp`
do the talking."""

from __future__ import annotations

from ..connections.records import ImapConnection, InboxCounts
from .imap import check_imap
from .smtp import check_smtp


class MailServersAdapter:
    def check_imap(self, connection: ImapConnection, password: str, timeout: float) -> InboxCounts:
        return check_imap(connection, password, timeout)

    def check_smtp(self, connection: ImapConnection, password: str, timeout: float) -> None:
        check_smtp(connection, password, timeout)


ADAPTER = MailServersAdapter()
