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
from datetime import UTC, datetime, timedelta
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
from ..mail.models import Folder, MessagePage, MessageSummary
from ..mail.parsing import read_headers
from ..oauth.providers import REQUIRED_PERMISSIONS, Permission
from .provider_http import call, message_segment, path_segment, provider_id, reading_answer

_PROVIDER = "google"
_READ, _SEND = REQUIRED_PERMISSIONS[_PROVIDER][:2]
_MODIFY = Permission(
    "changing messages (marking them read)",
    frozenset({"gmail.modify", "mail.google.com"}),
    "https://www.googleapis.com/auth/gmail.modify",
)
_LABELS: dict[Folder, str] = {"inbox": "INBOX", "sent": "SENT", "drafts": "DRAFT", "trash": "TRASH"}
_SUMMARY_HEADERS = ["From", "To", "Subject", "Message-ID"]
# Gmail's message and thread ids: hex (16 digits today).
_ID = re.compile(r"[0-9a-fA-F]{1,32}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A page's summaries are fetched side by side: Gmail's list gives ids only.
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="gmail-summary")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _folder(labels: list[str]) -> Folder:
    found: list[Folder] = ["trash", "drafts", "sent"]
    return next((folder for folder in found if _LABELS[folder] in labels), "inbox")


def _received(message: dict[str, Any]) -> datetime:
    # A time past datetime's range is an OverflowError here, the provider's error within
    # `reading_answer` (fromtimestamp's would be an OSError, as if the network had failed).
    return _EPOCH + timedelta(milliseconds=int(message["internalDate"]))


def _thread_id(message: dict[str, Any]) -> str:
    return pack("gmail-thread", provider_id(str(message["threadId"]), _ID))


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
            next_cursor = pack_cursor("gmail-page", listing_key, str(token)) if token else None
        summaries = list(
            _executor.map(
                lambda gmail_id: contextvars.copy_context().run(self._summary, folder, gmail_id),
                ids,
            )
        )
        return MessagePage(messages=summaries, next_cursor=next_cursor)

    def _summary(self, folder: Folder, gmail_id: str) -> MessageSummary:
        params = [("format", "metadata"), *(("metadataHeaders", h) for h in _SUMMARY_HEADERS)]
        message = self._json("GET", f"/messages/{gmail_id}", _READ, params=params)
        with reading_answer(_PROVIDER):
            fields = [(str(h["name"]), str(h["value"])) for h in message["payload"]["headers"]]
            headers = read_headers(fields)
            return MessageSummary(
                id=pack("gmail", gmail_id),  # the id asked for: one of Gmail's
                thread_id=_thread_id(message),
                folder=folder,
                sender=headers.sender,
                to=headers.to,
                subject=headers.subject,
                received_at=_received(message),
                read="UNREAD" not in message.get("labelIds", []),
                message_id=headers.message_id,
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
                thread_id=_thread_id(message),
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
                id=pack("gmail", provider_id(str(sent["id"]), _ID)),
                thread_id=_thread_id(sent),
                refused=[],
            )


class GmailMailboxes:
    @contextmanager
    def open(self, connection: Connection, credential: str) -> Iterator[GmailMailbox]:
        yield GmailMailbox(credential)


ADAPTER = GmailMailboxes()
