"""An agent's Gmail mailbox, behind the `mail.mailboxes` port: the Gmail API with the
agent's access token. Ids are Gmail's message and thread ids; a message is read whole in the
raw format (the same RFC 5322 bytes every provider gives), and sent raw, in its thread.

New mail: `users.watch` has Gmail announce the inbox's changes on the deployment's Pub/Sub
topic, and `users.history.list` says what was added since the history id the feed keeps."""

from __future__ import annotations

import base64
import contextvars
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..connections.records import Connection, OAuthConnection
from ..core.errors import ErrorCode, MailbridgeError, ProviderError
from ..core.observability import logger
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
from ..mail.parsing import read_headers
from ..newmail.models import Subscription
from ..oauth.scopes import REQUIRED_PERMISSIONS, Permission
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
# Gmail's history ids: decimal, increasing with each change of the mailbox.
_HISTORY_ID = re.compile(r"[0-9]{1,20}")
# Records a page of history holds, and ids a page of a listing: Gmail's most.
_PAGE = 500
# Pages one look reads: history beyond them is the next look's; a resync's listing beyond
# them (more than 10,000 new messages) is announced from the oldest of the newest 10,000,
# and the gap logged.
_MAX_PAGES = 20
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


class _Unknown(MailbridgeError):
    """Gmail does not know what the request named (a history id too old to list from, a
    watch stopped already): the caller decides what that means."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.PROVIDER_ERROR, "Gmail does not know it.")


def _topic_refused() -> ProviderError:
    return ProviderError(ErrorCode.PUSH_TOPIC_REFUSED, _PROVIDER)


@dataclass(frozen=True)
class _InboxPosition:
    """Where the feed is in the mailbox: the history id its next look lists from ("": none
    usable, the next look finds new mail by time) and the arrival time of the newest message
    seen (for when Gmail no longer keeps the history from that id)."""

    history_id: str
    newest: datetime

    def text(self) -> str:
        return f"{self.history_id}:{self.newest.isoformat()}"

    @classmethod
    def parse(cls, text: str) -> _InboxPosition:
        history_id, newest = text.split(":", 1)  # our own, stored: trusted
        return cls(history_id, datetime.fromisoformat(newest))


class GmailMailbox:
    def __init__(self, access_token: str, address: str | None = None) -> None:
        self._token = access_token
        self._base = f"{settings().gmail_base_url}/users/me"
        self._address = address  # the account's, as Google said at sign-in

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

    def _summary(
        self, folder: Folder, gmail_id: str, *, unknown: type[_Unknown] | None = None
    ) -> MessageSummary:
        params = [("format", "metadata"), *(("metadataHeaders", h) for h in _SUMMARY_HEADERS)]
        message = self._json("GET", f"/messages/{gmail_id}", _READ, params=params, unknown=unknown)
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

    # -- new mail
    def new_messages(self, position: str | None, *, since: datetime, limit: int) -> NewMessages:
        """From the history id of the last look: what history.list says was added to the
        inbox since (an unchanged mailbox costs that one call). Where Gmail no longer keeps
        that history (404), and for the first look, by arrival time instead: the inbox's
        messages received after the newest one seen (at `since` or later, the first time)."""
        if position is None:
            return self._arrived_after(since, limit, inclusive=True)
        known = _InboxPosition.parse(position)
        if known.history_id:
            try:
                return self._added_since(known, limit)
            except _Unknown:
                logger.info("gmail history expired: resync by arrival time")
        return self._arrived_after(known.newest, limit, inclusive=False)

    def _added_since(self, known: _InboxPosition, limit: int) -> NewMessages:
        """The messages history.list says were added to the inbox after the position's
        history id, oldest first; whole records only, so a look that stops early resumes
        after the last record it took."""
        params: dict[str, Any] = {
            "startHistoryId": known.history_id,
            "historyTypes": "messageAdded",
            "labelId": _LABELS["inbox"],
            "maxResults": _PAGE,
        }
        added: list[str] = []
        resume = known.history_id  # the last record taken
        current: str | None = None  # the mailbox's history id, once its last page is read
        for _ in range(_MAX_PAGES):
            page = self._json("GET", "/history", _READ, params=params, unknown=_Unknown)
            full = False
            with reading_answer(_PROVIDER):
                for record in page.get("history", []):
                    ids = [
                        path_segment(str(entry["message"]["id"]), _ID)
                        for entry in record.get("messagesAdded", [])
                    ]
                    fresh = [gmail_id for gmail_id in dict.fromkeys(ids) if gmail_id not in added]
                    if added and len(added) + len(fresh) > limit:
                        full = True
                        break
                    added += fresh
                    resume = provider_id(str(record["id"]), _HISTORY_ID)
                token = page.get("nextPageToken")
                if not (full or token):
                    current = provider_id(str(page["historyId"]), _HISTORY_ID)
            if full or current is not None:
                break
            params["pageToken"] = str(token)
        messages = [summary for summary in self._new_summaries(added) if summary is not None]
        newest = max([known.newest, *(message.received_at for message in messages)])
        # More: the records after the last one taken are the next look's.
        following = _InboxPosition(current or resume, newest)
        return NewMessages(messages=messages, position=following.text(), more=current is None)

    def _arrived_after(self, moment: datetime, limit: int, *, inclusive: bool) -> NewMessages:
        """The inbox's messages received after `moment` (at it or after, `inclusive`), oldest
        first, by Gmail's arrival time (internalDate), and the history id to go on from."""
        # First: whatever arrives after it is in the history from its id, so nothing falls
        # between the two (what is in both is announced once: deliveries are claimed).
        profile = self._json("GET", "/profile", _READ)
        with reading_answer(_PROVIDER):
            history_id = provider_id(str(profile["historyId"]), _HISTORY_ID)
        # Gmail's `after:` counts whole seconds: a second earlier finds them all, and each
        # message's own time decides.
        query = f"in:inbox after:{int(moment.timestamp()) - 1}"
        params: dict[str, Any] = {"q": query, "maxResults": _PAGE}
        listed: list[str] = []
        for _ in range(_MAX_PAGES):
            listing = self._json("GET", "/messages", _READ, params=params)
            with reading_answer(_PROVIDER):
                listed += [path_segment(str(m["id"]), _ID) for m in listing.get("messages", [])]
                token = listing.get("nextPageToken")
            if not token:
                break
            params["pageToken"] = str(token)
        else:
            logger.warning("gmail resync: only the newest messages are announced")
        candidates = list(dict.fromkeys(reversed(listed)))  # Gmail lists newest first
        found: list[MessageSummary] = []
        # Summaries a batch at a time, oldest first, until one more than a look takes.
        for start in range(0, len(candidates), limit):
            batch = self._new_summaries(candidates[start : start + limit])
            found += [
                summary
                for summary in batch
                if summary is not None
                and (summary.received_at > moment or (inclusive and summary.received_at == moment))
            ]
            if len(found) > limit:
                break
        found.sort(key=lambda summary: summary.received_at)
        taken, more = found[:limit], len(found) > limit
        if more:
            # The next look starts after the newest taken: never between two messages that
            # arrived in the same millisecond (unless a whole look's worth did).
            cut = [m for m in taken if m.received_at < found[limit].received_at]
            taken = cut or [m for m in found if m.received_at == found[0].received_at]
        newest = max([moment, *(message.received_at for message in taken)])
        # While more remain, the next look goes on by time, from the newest taken.
        following = _InboxPosition("" if more else history_id, newest)
        return NewMessages(messages=taken, position=following.text(), more=more)

    def _new_summaries(self, gmail_ids: list[str]) -> list[MessageSummary | None]:
        """The inbox summaries of these messages, side by side; None for one deleted since."""

        def summary(gmail_id: str) -> MessageSummary | None:
            try:
                return self._summary("inbox", gmail_id, unknown=_Unknown)
            except _Unknown:
                return None

        return list(
            _executor.map(
                lambda gmail_id: contextvars.copy_context().run(summary, gmail_id), gmail_ids
            )
        )

    def subscribe(self, current: Subscription | None) -> Subscription | None:
        """Gmail's watch of the inbox, on the deployment's topic: started, or renewed (a
        watch lapses after 7 days). Without a topic the deployment has no Gmail push: None,
        and a watch started before the topic was removed is stopped."""
        topic = settings().gmail_push_topic
        if not topic:
            if current is not None:
                self.unsubscribe(current)
            return None
        watch = {"topicName": topic, "labelIds": ["INBOX"], "labelFilterBehavior": "include"}
        try:
            # A 400 or 404 is about the topic (the request names nothing else of ours)...
            answer = self._json("POST", "/watch", _READ, json=watch, unknown=_topic_refused)
        except ProviderError as error:
            # ...and so is a 403 that is not a rate limit: the grant reads mail, so it may
            # watch; Gmail's push account may not publish to the topic.
            if error.code is ErrorCode.PERMISSION_MISSING:
                raise _topic_refused() from error
            raise
        with reading_answer(_PROVIDER):
            expires_at = _EPOCH + timedelta(milliseconds=int(answer["expiration"]))
        return Subscription(
            id=self._watched_address().lower(),
            expires_at=expires_at,
            renewed_at=datetime.now(UTC),
        )

    def _watched_address(self) -> str:
        """The address Gmail's notifications name: the account's."""
        if self._address is not None:
            return self._address
        profile = self._json("GET", "/profile", _READ)
        with reading_answer(_PROVIDER):
            return str(profile["emailAddress"])

    def unsubscribe(self, subscription: Subscription) -> None:
        with suppress(_Unknown):  # no watch: stopped already
            call(
                _PROVIDER, "POST", f"{self._base}/stop", self._token, needs=_READ, unknown=_Unknown
            )

    # -- sending
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
        authorization = (
            connection.authorization if isinstance(connection, OAuthConnection) else None
        )
        yield GmailMailbox(credential, authorization.email if authorization else None)


ADAPTER = GmailMailboxes()
