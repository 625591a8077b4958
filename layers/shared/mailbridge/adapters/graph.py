"""An agent's Microsoft 365 mailbox, behind the `mail.mailboxes` port: Microsoft Graph with
the agent's access token.

Every request asks for immutable ids (`Prefer: IdType="ImmutableId"`), so a message keeps its
id when it moves (a draft sent to Sent Items, say); threads are Graph's conversations. A
message is read whole as MIME ($value), and sent from MIME: a draft, or a reply draft that
Graph puts in the original's conversation, then sent.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..connections.models import Connection
from ..core.deadline import Deadline
from ..core.errors import ErrorCode, MailbridgeError, ProviderError
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
from ..mail.parsing import read_fields
from ..oauth.providers import REQUIRED_PERMISSIONS, Permission
from .provider_http import call, message_segment, path_segment, provider_id, reading_answer

_PROVIDER = "microsoft"
_READ, _SEND = REQUIRED_PERMISSIONS[_PROVIDER][:2]
_WRITE = Permission("changing messages and drafts", frozenset({"Mail.ReadWrite"}), "Mail.ReadWrite")
_FOLDERS: dict[Folder, str] = {
    "inbox": "inbox",
    "sent": "sentitems",
    "drafts": "drafts",
    "trash": "deleteditems",
}
_IMMUTABLE_IDS = {"Prefer": 'IdType="ImmutableId"'}
_SUMMARY_FIELDS = (
    "id,conversationId,subject,from,toRecipients,receivedDateTime,isRead,internetMessageId"
)
# Where Graph's next page starts, in its nextLink: the only part of it we keep, so that a
# cursor can never send the agent's token anywhere but to Graph.
_PAGE_PARAMETERS = ("$skip", "$skiptoken")
# A $skip Graph takes: an OData Int32.
_SKIP, _MAX_SKIP = re.compile(r"[0-9]{1,10}"), 2**31 - 1
# Graph's ids (immutable or not) and conversation ids: base64url, padded.
_ID = re.compile(r"[A-Za-z0-9_=-]{1,512}")


def _recipient(entry: dict[str, Any]) -> tuple[str, str]:
    """A recipient as Graph gives one ({"emailAddress": {"name", "address"}}): its name and
    address."""
    email = entry["emailAddress"]
    return str(email.get("name") or ""), str(email.get("address") or "")


def _thread_id(message: dict[str, Any]) -> str:
    return pack("graph-thread", provider_id(str(message["conversationId"]), _ID))


def _received(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _valid_skip(value: str) -> bool:
    return _SKIP.fullmatch(value) is not None and int(value) <= _MAX_SKIP


class GraphMailbox:
    def __init__(self, access_token: str) -> None:
        self._token = access_token
        self._base = f"{settings().graph_base_url}/me"

    def _call(self, method: str, path: str, needs: Permission, **arguments: Any) -> Any:
        headers = {**_IMMUTABLE_IDS, **arguments.pop("headers", {})}
        return call(
            _PROVIDER,
            method,
            f"{self._base}{path}",
            self._token,
            needs=needs,
            headers=headers,
            **arguments,
        )

    def _json(self, method: str, path: str, needs: Permission, **arguments: Any) -> Any:
        response = self._call(method, path, needs, **arguments)
        with reading_answer(_PROVIDER):
            return response.json()

    def list_messages(
        self, folder: Folder, *, unread_only: bool, cursor: str | None, limit: int
    ) -> MessagePage:
        listing_key = (folder, "unread" if unread_only else "all")
        params: dict[str, Any] = {
            "$top": limit,
            "$select": _SUMMARY_FIELDS,
            "$orderby": "receivedDateTime desc",
        }
        if unread_only:
            # Graph refuses a filter whose first property is not the order's ("inefficient").
            params["$filter"] = "receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false"
        if cursor is not None:
            name, _, value = unpack_cursor(cursor, "graph-page", listing_key).partition("=")
            if name not in _PAGE_PARAMETERS or (name == "$skip" and not _valid_skip(value)):
                raise invalid_cursor()
            params[name] = value
        # Graph refuses a $skiptoken it did not give (400): a forged cursor.
        page = self._json(
            "GET",
            f"/mailFolders/{_FOLDERS[folder]}/messages",
            _READ,
            params=params,
            unknown=invalid_cursor if cursor else None,
        )
        next_cursor = None
        with reading_answer(_PROVIDER):
            summaries = [self._summary(folder, message) for message in page["value"]]
            next_link = page.get("@odata.nextLink")
            found = dict(parse_qsl(urlsplit(str(next_link)).query)) if next_link else {}
            position = next((f"{n}={found[n]}" for n in _PAGE_PARAMETERS if n in found), None)
            if position:
                next_cursor = pack_cursor("graph-page", listing_key, position)
        return MessagePage(messages=summaries, next_cursor=next_cursor)

    @staticmethod
    def _summary(folder: Folder, message: dict[str, Any]) -> MessageSummary:
        sender = message.get("from")
        headers = read_fields(
            subject=str(message.get("subject") or ""),
            sender=_recipient(sender) if sender else None,
            to=map(_recipient, message.get("toRecipients") or []),
            message_id=str(message.get("internetMessageId") or ""),
        )
        return MessageSummary(
            id=pack("graph", folder, provider_id(str(message["id"]), _ID)),
            thread_id=_thread_id(message),
            folder=folder,
            sender=headers.sender,
            to=headers.to,
            subject=headers.subject,
            received_at=_received(str(message["receivedDateTime"])),
            read=bool(message.get("isRead")),
            message_id=headers.message_id,
        )

    @staticmethod
    def _graph_id(message_id: str) -> tuple[Folder, str]:
        """The message's folder as listed, and its Graph id, ready for a URL's path."""
        folder, graph_id = unpack_message_id(message_id, "graph", 2)
        if folder not in _FOLDERS:
            raise message_not_found()
        return folder, message_segment(graph_id, _ID)

    def fetch(self, message_id: str) -> FetchedMessage:
        folder, graph_id = self._graph_id(message_id)
        path = f"/messages/{graph_id}"
        message = self._json(
            "GET",
            path,
            _READ,
            params={"$select": "conversationId,isRead,receivedDateTime"},
            unknown=message_not_found,
        )
        raw = self._call("GET", f"{path}/$value", _READ, unknown=message_not_found).content
        with reading_answer(_PROVIDER):
            return FetchedMessage(
                id=message_id,
                thread_id=_thread_id(message),
                folder=folder,
                read=bool(message.get("isRead")),
                received_at=_received(str(message["receivedDateTime"])),
                raw=raw,
            )

    def set_read(self, message_id: str, read: bool) -> None:
        _, graph_id = self._graph_id(message_id)
        change = {"isRead": read}
        self._call("PATCH", f"/messages/{graph_id}", _WRITE, unknown=message_not_found, json=change)

    def send(self, outgoing: Outgoing, *, replying_to: FetchedMessage | None) -> Delivered:
        # A draft from MIME (Graph reads Bcc from it), then sent: the draft's immutable id is
        # the sent message's.
        mime = base64.b64encode(outgoing.as_bytes(with_bcc=True))
        path = "/messages"
        if replying_to is not None:
            _, original = self._graph_id(replying_to.id)
            path = f"/messages/{original}/createReply"
        # A reply's original may be gone since it was read (404); a 400 is the MIME's (its
        # recipients, its content), unless Graph says it is the id's.
        draft = self._json(
            "POST",
            path,
            _WRITE,
            data=mime,
            headers={"Content-Type": "text/plain"},
            unknown=message_not_found if replying_to is not None else None,
            refused=ErrorCode.MESSAGE_REFUSED,
        )
        with reading_answer(_PROVIDER):
            draft_id, thread_id = provider_id(str(draft["id"]), _ID), _thread_id(draft)
            draft_path = f"/messages/{path_segment(draft_id, _ID)}"
        try:
            self._call("POST", f"{draft_path}/send", _SEND, refused=ErrorCode.MESSAGE_REFUSED)
        except ProviderError:
            self._discard(draft_path)
            raise
        return Delivered(id=pack("graph", "sent", draft_id), thread_id=thread_id, refused=[])

    def _discard(self, draft_path: str) -> None:
        """Deletes a draft whose send failed, so that retries leave none behind in Drafts:
        best effort, within one provider timeout. Only while it is still a draft: a send that
        timed out may have gone through, and then it is the copy in Sent Items."""
        try:
            with Deadline(settings().provider_timeout_seconds):
                draft = self._json("GET", draft_path, _READ, params={"$select": "isDraft"})
                with reading_answer(_PROVIDER):
                    still_a_draft = draft["isDraft"] is True
                if still_a_draft:
                    self._call("DELETE", draft_path, _WRITE)
        except MailbridgeError:
            pass  # the caller hears of the failed send, not of this


class GraphMailboxes:
    @contextmanager
    def open(self, connection: Connection, credential: str) -> Iterator[GraphMailbox]:
        yield GraphMailbox(credential)


ADAPTER = GraphMailboxes()
