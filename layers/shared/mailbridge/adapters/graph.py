"""An agent's Microsoft 365 mailbox, behind the `mail.mailboxes` port: Microsoft Graph with
the agent's access token.

Every request asks for immutable ids (`Prefer: IdType="ImmutableId"`), so a message keeps its
id when it moves (a draft sent to Sent Items, say); threads are Graph's conversations. A
message is read whole as MIME ($value), and sent from MIME: a draft, or a reply draft that
Graph puts in the original's conversation, then sent.

New mail is the inbox's delta query, asked for created messages only (a message read, flagged
or deleted is no news), and a change-notification subscription on the inbox's messages that
tells when to look.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from ..connections.records import Connection
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
from ..mail.mailboxes import Delivered, FetchedMessage, NewMessages, Outgoing
from ..mail.models import Folder, MessagePage, MessageSummary
from ..mail.parsing import read_fields
from ..newmail.models import Subscription
from ..oauth.scopes import REQUIRED_PERMISSIONS, Permission
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

# -- new mail
_INBOX_DELTA = "/mailFolders('inbox')/messages/delta"
_SUBSCRIBED_RESOURCE = "me/mailFolders('inbox')/messages"
# The public route Graph posts the subscription's change and lifecycle notifications to
# (functions/graph_notifications).
_NOTIFICATION_PATH = "/api/engine/push/microsoft"
# Graph keeps a subscription on messages at most 4,230 minutes (70.5 hours); the daily
# renewal round renews ours long before this ends.
_SUBSCRIPTION_LIFETIME = timedelta(hours=70)
# Graph's subscription ids: GUIDs.
_SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
# When Graph has lost a delta's state, the messages received since this long before the
# last complete round are listed again: a message's arrival time and its appearing in the
# delta are not quite the same instant, nor Graph's clock ours. Those announced already are
# not announced again (the feed claims each message).
_RESYNC_MARGIN = timedelta(minutes=10)


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


def _graph_time(moment: datetime) -> str:
    """A moment as Graph's filters and subscriptions take it: UTC, to the second (Graph
    keeps received times to the second: rounded down, a moment finds what arrived in its
    second)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _StateLost(ProviderError):
    """Graph no longer has the delta's state (an expired or forgotten token)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.PROVIDER_ERROR, _PROVIDER)


class _SubscriptionGone(ProviderError):
    """Graph no longer knows the subscription (removed, or lapsed)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.PROVIDER_ERROR, _PROVIDER)


@dataclass(frozen=True)
class _DeltaPosition:
    """Where the inbox's delta query is: the link Graph gave for its next page or its next
    round; the moment before which every message received has been listed (where a resync
    starts); and, while a round is paged, when that round began."""

    link: str
    listed_until: datetime
    round_began: datetime | None = None

    def text(self) -> str:
        began = self.round_began.isoformat() if self.round_began else None
        return json.dumps(
            {"link": self.link, "listed_until": self.listed_until.isoformat(), "began": began}
        )

    @classmethod
    def parse(cls, text: str) -> _DeltaPosition:
        found = json.loads(text)  # our own, stored: trusted
        began = found["began"]
        return cls(
            found["link"],
            datetime.fromisoformat(found["listed_until"]),
            datetime.fromisoformat(began) if began else None,
        )


class GraphMailbox:
    def __init__(self, access_token: str) -> None:
        self._token = access_token
        self._graph = settings().graph_base_url
        self._base = f"{self._graph}/me"

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

    # -- new mail
    def new_messages(self, position: str | None, *, since: datetime, limit: int) -> NewMessages:
        """A round of the inbox's delta query, a page per look: first the messages received
        since the connection (`since`), then at each round those created in the inbox since
        the last. An unchanged inbox costs one request. Should Graph have lost the delta's
        state, a new round lists what arrived since shortly before the last complete one."""
        now = datetime.now(UTC)
        if position is None:
            known = _DeltaPosition(self._delta_start(since), since)
        else:
            known = _DeltaPosition.parse(position)
        began = known.round_began or now
        try:
            page = self._delta(known.link, limit)
        except _StateLost:
            began = now
            restart = max(since, known.listed_until - _RESYNC_MARGIN)
            page = self._delta(self._delta_start(restart), limit)
        with reading_answer(_PROVIDER):
            messages = sorted(
                (
                    self._summary("inbox", entry)
                    for entry in page["value"]
                    if "@removed" not in entry
                ),
                key=lambda message: message.received_at,
            )
            following = page.get("@odata.nextLink")
            if following is not None:
                after = _DeltaPosition(str(following), known.listed_until, began)
            else:
                # The round is complete: whatever was received before it began is listed.
                after = _DeltaPosition(str(page["@odata.deltaLink"]), began)
        # The baseline's filter is Graph's, to the second: what arrived earlier is not new.
        received_since = since.replace(microsecond=0)
        fresh = [message for message in messages if message.received_at >= received_since]
        return NewMessages(messages=fresh, position=after.text(), more=following is not None)

    def _delta_start(self, since: datetime) -> str:
        """The first request of a round of delta queries: the inbox's messages received
        since `since` (the only filter Graph's message delta takes), and in the following
        rounds only those created (read, flagged or deleted ones are no news)."""
        query = {
            "changeType": "created",
            "$select": _SUMMARY_FIELDS,
            "$filter": f"receivedDateTime ge {_graph_time(since)}",
        }
        return f"{self._base}{_INBOX_DELTA}?{urlencode(query, quote_via=quote, safe='$,:')}"

    def _delta(self, link: str, limit: int) -> Any:
        """A page of the delta query at `link`, Graph's own (the query of the round is in its
        token), at most `limit` messages."""
        # Only ever to Graph's delta: the agent's token goes nowhere else.
        if not link.startswith(f"{self._graph}/") or "/messages/delta?" not in link.lower():
            raise _StateLost()
        prefer = f"{_IMMUTABLE_IDS['Prefer']}, odata.maxpagesize={limit}"
        response = call(
            _PROVIDER,
            "GET",
            link,
            self._token,
            needs=_READ,
            gone=_StateLost,
            headers={"Prefer": prefer},
        )
        with reading_answer(_PROVIDER):
            return response.json()

    def subscribe(self, current: Subscription | None) -> Subscription | None:
        """Renews `current` if Graph still has it, else subscribes anew: to the messages
        created in the inbox, notified at the deployment's public route, whose answer to
        Graph's validation request (sent while it subscribes) decides whether Graph takes it.
        Without a public URL there is no push, and new mail waits for the daily round."""
        public_url = settings().public_base_url
        if not public_url:
            return None
        now = datetime.now(UTC)
        expires = _graph_time(now + _SUBSCRIPTION_LIFETIME)
        if current is not None:
            try:
                answer = self._at_subscription(
                    "PATCH", current.id, json={"expirationDateTime": expires}
                )
            except _SubscriptionGone:
                pass  # removed by Graph, or lapsed: a new one
            else:
                with reading_answer(_PROVIDER):
                    renewed = _received(str(answer["expirationDateTime"]))
                return current.model_copy(update={"expires_at": renewed, "renewed_at": now})
        # A secret of Graph's and ours: each notification carries it; only its hash is kept.
        client_state = secrets.token_urlsafe(48)
        notification_url = f"{public_url}{_NOTIFICATION_PATH}"
        created = self._subscriptions(
            "POST",
            "",
            json={
                "changeType": "created",
                "resource": _SUBSCRIBED_RESOURCE,
                "notificationUrl": notification_url,
                "lifecycleNotificationUrl": notification_url,
                "expirationDateTime": expires,
                "clientState": client_state,
            },
            refused=ErrorCode.SUBSCRIPTION_REFUSED,
        )
        with reading_answer(_PROVIDER):
            return Subscription(
                id=provider_id(str(created["id"]), _SUBSCRIPTION_ID),
                expires_at=_received(str(created["expirationDateTime"])),
                renewed_at=now,
                client_state_sha256=hashlib.sha256(client_state.encode()).hexdigest(),
            )

    def unsubscribe(self, subscription: Subscription) -> None:
        with suppress(_SubscriptionGone):  # stopped already
            self._at_subscription("DELETE", subscription.id)

    def _at_subscription(self, method: str, subscription_id: str, **arguments: Any) -> Any:
        """PATCH or DELETE the subscription: Graph's answer (JSON, if any), or
        _SubscriptionGone if Graph does not know it."""
        try:
            segment = path_segment(subscription_id, _SUBSCRIPTION_ID)
        except ValueError:
            raise _SubscriptionGone() from None  # not one of Graph's: there is none to change
        return self._subscriptions(method, f"/{segment}", unknown=_SubscriptionGone, **arguments)

    def _subscriptions(self, method: str, path: str, **arguments: Any) -> Any:
        # Immutable ids asked for here too: the notifications then name messages by them.
        response = call(
            _PROVIDER,
            method,
            f"{self._graph}/subscriptions{path}",
            self._token,
            needs=_READ,
            headers=_IMMUTABLE_IDS,
            **arguments,
        )
        if response.status_code == 204:
            return None
        with reading_answer(_PROVIDER):
            return response.json()


class GraphMailboxes:
    @contextmanager
    def open(self, connection: Connection, credential: str) -> Iterator[GraphMailbox]:
        yield GraphMailbox(credential)


ADAPTER = GraphMailboxes()
