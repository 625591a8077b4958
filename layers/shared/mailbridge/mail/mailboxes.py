"""The port to an agent's mailbox, whichever way it is reached: IMAP and SMTP with a password
(`adapters.imap_mailbox`), the Gmail API (`adapters.gmail`) or Microsoft Graph
(`adapters.graph`) with an access token. The adapter a connection needs is loaded when it is
first opened, so a mail handler never loads the libraries of the providers it does not serve.
"""

from __future__ import annotations

import copy
from contextlib import AbstractContextManager
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ..core.adapters import load_adapter
from .models import Folder, MessagePage, MessageSummary

if TYPE_CHECKING:  # annotations only: new mail's models stay out of the mail routes
    from ..connections.records import Connection
    from ..newmail.models import Subscription

_ADAPTERS = {"imap": "imap_mailbox", "google": "gmail", "microsoft": "graph"}


class FetchedMessage(NamedTuple):
    id: str  # opaque, as listed
    thread_id: str  # opaque
    folder: Folder
    read: bool
    received_at: datetime
    raw: bytes  # RFC 5322, as the mailbox holds it


class Outgoing(NamedTuple):
    """A composed message: its headers and body as they go out, and its envelope."""

    message: EmailMessage  # without Bcc: every recipient sees this
    sender: str
    bcc: list[str]
    message_id: str

    @property
    def recipients(self) -> list[str]:
        """Everyone it goes to, Bcc included, each once."""
        listed = [
            str(address.addr_spec)
            for name in ("To", "Cc")
            for address in _listed(self.message, name)
        ]
        return list(dict.fromkeys([*listed, *self.bcc]))

    def as_bytes(self, *, with_bcc: bool = False) -> bytes:
        """The message as sent (CRLF line ends); `with_bcc` keeps the Bcc header, for the
        sender's own copy and for APIs that read the recipients from it."""
        message = self.message
        if with_bcc and self.bcc:
            message = copy.deepcopy(message)
            message["Bcc"] = [HeaderAddress(addr_spec=address) for address in self.bcc]
        return message.as_bytes(policy=policy.SMTP)


def _listed(message: EmailMessage, name: str) -> list[HeaderAddress]:
    header = message[name]
    return list(header.addresses) if header is not None else []


class Delivered(NamedTuple):
    id: str | None  # the sent copy's id in the mailbox, if one was kept
    thread_id: str
    refused: list[str]  # recipients the server refused while taking the others


class NewMessages(NamedTuple):
    messages: list[MessageSummary]  # oldest first
    position: str  # where the next look starts (the adapter's own string)
    more: bool  # more were new than the look took: look again from `position`


class Mailbox(Protocol):
    """One agent's mailbox, open for a request. Ids and cursors are the adapter's own opaque
    strings (`mail.ids`); a foreign or stale one is `message_not_found`. Failures are
    `MailServerError`s or `ProviderError`s; each call ends within the mail timeout."""

    def list_messages(
        self, folder: Folder, *, unread_only: bool, cursor: str | None, limit: int
    ) -> MessagePage:
        """Newest first, at most `limit`, from where `cursor` left off."""
        ...

    def fetch(self, message_id: str) -> FetchedMessage:
        """The message, whole, without marking it read."""
        ...

    def set_read(self, message_id: str, read: bool) -> None: ...

    def new_messages(self, position: str | None, *, since: datetime, limit: int) -> NewMessages:
        """The inbox's messages that arrived after `position` (what this answered last
        time), at most `limit`; with no position, those received at `since` or later. An
        unchanged inbox should cost the least the provider allows."""
        ...

    def subscribe(self, current: Subscription | None) -> Subscription | None:
        """Start, or renew, the provider's push of news of the inbox (Gmail's watch, Graph's
        subscription), replacing `current` if it cannot be renewed; None where there is no
        push (IMAP is polled)."""
        ...

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop it; one the provider no longer knows is stopped already."""
        ...

    def send(self, outgoing: Outgoing, *, replying_to: FetchedMessage | None) -> Delivered:
        """Send it, keep the sent copy where the provider keeps them, and for a reply put it
        in the original's thread (and mark the original answered where that exists)."""
        ...


class MailboxOpener(Protocol):
    def open(self, connection: Connection, credential: str) -> AbstractContextManager[Mailbox]:
        """The mailbox of `connection`, with its password (IMAP) or access token (OAuth)."""
        ...


def open_mailbox(connection: Connection, credential: str) -> AbstractContextManager[Mailbox]:
    opener: MailboxOpener = load_adapter(_ADAPTERS[connection.provider])
    return opener.open(connection, credential)
