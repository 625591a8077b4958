"""An agent's Gmail mailbox, behind the `mail.mailboxes` port: the Gmail API with the
agent's access token. Ids are Gmail's message and thread ids; a message is read whole in the
raw format (the same RFC 5322 bytes every provider gives), and sent raw, in its thread."""

from __future__ import annotations

import base64
import contextvars
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from email.header import decode_header, make_header
from email.utils import getaddresses
from typing import Any

from ..connections.models import Connection
from ..core.errors import ErrorCode
from ..core.settings import settings
from ..mail.ids import (
    invalid_cursor,
    message_not_found,
    pack,
    pack_cursor,
    unpack_cursor,
    unpack_message_id,
)
from ..mail.mailboxes import Delivered, FetchedMessage, Outgoing
from ..mail.models import Address, Folder, MessagePage, MessageSummary
from ..oauth.providers import REQUIRED_PERMISSIONS, Permission
from .provider_http import call, message_segment, path_segment, reading_answer

_PROVIDER = "google"
_READ, _SEND = REQUIRED_PERMISSIONS[_PROVIDER][:2]
_MODIFY = Permission(
    "changing messages (marking them read)",
    frozenset({"gmail.modify", "mail.google.com"}),
    "https://www.googleapis.com/auth/gmail.modify",
)
_LABELS: dict[Folder, str] = {"inbox": "INBOX", "sent": "SENT", "drafts": "DRAFT", "trash": "TRASH"}
_SUMMARY_HEADERS = ["From", "To", "Subject", "Message-ID"]
# Gmail's message ids: hex (16 digits today).
_ID = re.compile(r"[0-9a-fA-F]{1,32}")
# A page's summaries are fetched side by side: Gmail's list gives ids only.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gmail-summary")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decoded(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except (LookupError, UnicodeError, ValueError):
        return value


def _addresses(value: str | None) -> list[Address]:
    return [
        Address(address=address, name=_decoded(name) or None)
        for name, address in getaddresses([value or ""])
        if "@" in address
    ]


def _folder(labels: list[str]) -> Folder:
    found: list[Folder] = ["trash", "drafts", "sent"]
    return next((folder for folder in found if _LABELS[folder] in labels), "inbox")


def _received(message: dict[str, Any]) -> datetime:
    return datetime.fromtimestamp(int(message["internalDate"]) / 1000, UTC)


def _gmail_id(message_id: str) -> str:
    """The Gmail id an opaque message id holds, ready for a URL's path."""
    (gmail_id,) = unpack_message_id(message_id, "gmail", 1)
    return message_segment(gmail_id, _ID)


class GmailMailbox:
    def __init__(self, access_token: str) -> None:
        self._token = access_token
        self._base = f"{settings().gmail_base_url}/users/me"

    def _json(self, method: str, path: str, needs: Permission, **arguments: Any) -> Any:
        response = call(
            _PROVIDER, method, f"{self._base}{path}", self._token, needs=needs, **arguments
        )
        with reading_answer(_PROVIDER):
            return response.json()

    def list_messages(
        self, folder: Folder, *, unread_only: bool, cursor: str | None, limit: int
    ) -> MessagePage:
        params: dict[str, Any] = {"labelIds": _LABELS[folder], "maxResults": limit}
        if unread_only:
            params["q"] = "is:unread"
        listing_key = (folder, "unread" if unread_only else "all")
        if cursor is not None:
            params["pageToken"] = unpack_cursor(cursor, "gmail-page", listing_key)
        # Gmail refuses a page token it did not give (400): a forged cursor.
        listing = self._json(
            "GET", "/messages", _READ, params=params, unknown=invalid_cursor if cursor else None
        )
        with reading_answer(_PROVIDER):
            ids = [path_segment(str(entry["id"]), _ID) for entry in listing.get("messages", [])]
            token = listing.get("nextPageToken")
        summaries = list(
            _executor.map(
                lambda gmail_id: contextvars.copy_context().run(self._summary, folder, gmail_id),
                ids,
            )
        )
        next_cursor = pack_cursor("gmail-page", listing_key, str(token)) if token else None
        return MessagePage(messages=summaries, next_cursor=next_cursor)

    def _summary(self, folder: Folder, gmail_id: str) -> MessageSummary:
        params = [("format", "metadata"), *(("metadataHeaders", h) for h in _SUMMARY_HEADERS)]
        message = self._json("GET", f"/messages/{gmail_id}", _READ, params=params)
        with reading_answer(_PROVIDER):
            headers = {h["name"].lower(): str(h["value"]) for h in message["payload"]["headers"]}
            senders = _addresses(headers.get("from"))
            return MessageSummary(
                id=pack("gmail", str(message["id"])),
                thread_id=pack("gmail-thread", str(message["threadId"])),
                folder=folder,
                sender=senders[0] if senders else None,
                to=_addresses(headers.get("to")),
                subject=_decoded(headers.get("subject", "")),
                received_at=_received(message),
                read="UNREAD" not in message.get("labelIds", []),
                message_id=headers.get("message-id"),
            )

    def fetch(self, message_id: str) -> FetchedMessage:
        message = self._json(
            "GET",
            f"/messages/{_gmail_id(message_id)}",
            _READ,
            params={"format": "raw"},
            unknown=message_not_found,
        )
        with reading_answer(_PROVIDER):
            labels = list(message.get("labelIds", []))
            raw = base64.urlsafe_b64decode(message["raw"] + "=" * (-len(message["raw"]) % 4))
            return FetchedMessage(
                id=message_id,
                thread_id=pack("gmail-thread", str(message["threadId"])),
                folder=_folder(labels),
                read="UNREAD" not in labels,
                received_at=_received(message),
                raw=raw,
            )

    def set_read(self, message_id: str, read: bool) -> None:
        change = {"removeLabelIds" if read else "addLabelIds": ["UNREAD"]}
        call(
            _PROVIDER,
            "POST",
            f"{self._base}/messages/{_gmail_id(message_id)}/modify",
            self._token,
            needs=_MODIFY,
            unknown=message_not_found,
            json=change,
        )

    def send(self, outgoing: Outgoing, *, replying_to: FetchedMessage | None) -> Delivered:
        # Gmail reads Bcc recipients from the raw message and leaves the header out of what
        # they receive.
        body: dict[str, str] = {"raw": _b64url(outgoing.as_bytes(with_bcc=True))}
        if replying_to is not None:
            (body["threadId"],) = unpack_message_id(replying_to.thread_id, "gmail-thread", 1)
        sent = self._json(
            "POST", "/messages/send", _SEND, json=body, refused=ErrorCode.MESSAGE_REFUSED
        )
        with reading_answer(_PROVIDER):
            return Delivered(
                id=pack("gmail", str(sent["id"])),
                thread_id=pack("gmail-thread", str(sent["threadId"])),
                refused=[],
            )


class GmailMailboxes:
    @contextmanager
    def open(self, connection: Connection, credential: str) -> Iterator[GmailMailbox]:
        yield GmailMailbox(credential)


ADAPTER = GmailMailboxes()
