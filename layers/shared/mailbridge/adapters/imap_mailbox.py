"""An agent's mailbox over IMAP and SMTP, behind the `mail.mailboxes` port.

Reading goes by UID and by sequence ranges from the end of the folder, never by a
whole-mailbox FETCH, so a page costs the same round trips in a 10-message and a
50,000-message mailbox. Unread messages are found by a SEARCH whose answer is bounded where
the server allows it (RFC 5267's CONTEXT=SEARCH: their count, then the page's UIDs by
position); elsewhere the SEARCH answers every unread UID. Ids are the folder, UIDVALIDITY and
UID (never sequence numbers, which shift); a changed UIDVALIDITY makes old ids and cursors
find nothing rather than the wrong message. Sending goes by SMTP, and the sent copy to the
folder the server marks `\\Sent` (RFC 6154): found by its flag, never guessed by its name.

Every operation is one exchange under its own deadline, which watches the session whichever
exchange opened it; the invocation's deadline watches it too.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from imapclient import IMAPClient
from imapclient.imapclient import ANSWERED, SEEN
from imapclient.response_parser import parse_response

from ..connections.records import Connection, ImapConnection
from ..core.deadline import watch
from ..core.errors import ErrorCode, MailbridgeError
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
from ..mail.parsing import Headers, read_headers
from ..newmail.models import Subscription
from .imap import imap_errors, logged_in
from .mailnet import whole_exchange_within
from .smtp import send

_SPECIAL_USE = {"sent": b"\\Sent", "drafts": b"\\Drafts", "trash": b"\\Trash"}
_FOLDERS = frozenset({"inbox", *_SPECIAL_USE})
# What a summary shows (and IMAP threads by) of a message's headers, and no more than 64 KiB
# of them, far more than any mail client writes: what the server sends for a page is bounded
# (a header can be megabytes long), and so is what the page reads.
_SUMMARY_HEADERS = b"BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT MESSAGE-ID IN-REPLY-TO REFERENCES)]"
_SUMMARY = [b"UID", b"FLAGS", b"INTERNALDATE", _SUMMARY_HEADERS + b"<0.65536>"]
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
# UIDs and UIDVALIDITY are RFC 3501's nz-number: 1 to 2^32 - 1, in ASCII digits.
_NZ_NUMBER = re.compile(r"[1-9][0-9]{0,9}")
_MAX_NUMBER = 2**32 - 1
# Arrival times read at a time when a look must find what arrived after a moment.
_TIMES_CHUNK = 200
# A folder as imapclient lists it: its flags, its hierarchy delimiter and its name.
_Listed = list[tuple[tuple[bytes, ...], bytes, str]]
# The sent copy's folder is looked up while SMTP sends: one worker per invocation is enough.
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imap-sent-folder")


def thread_id(headers: Headers) -> str:
    """IMAP has no thread ids: a thread is named by its root, the first message its latest
    one refers to (RFC 5322's References, else In-Reply-To), else the message itself."""
    root = next(iter(headers.references), headers.in_reply_to or headers.message_id)
    return pack("imap-thread", hashlib.sha256((root or "").encode()).hexdigest()[:32])


def _nz_number(text: str) -> int | None:
    """A UID or UIDVALIDITY from an id or cursor (caller's input); None if it cannot be one."""
    if _NZ_NUMBER.fullmatch(text) is None or int(text) > _MAX_NUMBER:
        return None
    return int(text)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ImapMailbox:
    def __init__(self, connection: ImapConnection, password: str, stack: ExitStack) -> None:
        self._connection = connection
        self._password = password
        self._stack = stack
        self._timeout = settings().mail_timeout_seconds
        self._client: IMAPClient | None = None
        self._folders: dict[Folder, str] | None = None
        # Where the mailbox was opened: under the invocation's deadline, which must watch the
        # session too, whichever exchange (and thread) opens it.
        self._opened_in = contextvars.copy_context()

    # -- the session
    @contextmanager
    def _exchange(self) -> Iterator[None]:
        """One operation: within the mail timeout, its failures MailServerErrors. A deadline
        watches only the sockets it is given: a session an earlier exchange opened (another
        thread's, or a read's before a reply) is given to this one's."""
        server = self._connection.imap
        with whole_exchange_within(self._timeout, "IMAP", server), imap_errors(server):
            if self._client is not None:
                watch(self._client.socket())
            yield

    def _session(self) -> IMAPClient:
        """Logged in at first use, logged out when the request is done."""
        if self._client is None:
            client = self._stack.enter_context(
                logged_in(self._connection, self._password, self._timeout)
            )
            self._opened_in.run(watch, client.socket())
            client.normalise_times = False  # INTERNALDATE with its zone, made UTC here
            self._client = client
        return self._client

    def _folder_name(self, folder: Folder) -> str:
        if folder == "inbox":
            return "INBOX"
        if self._folders is None:
            self._folders = {}
            for flags, _, name in _special_use_folders(self._session()):
                for known, flag in _SPECIAL_USE.items():
                    if flag in flags:
                        self._folders.setdefault(cast(Folder, known), name)
        found = self._folders.get(folder)
        if found is None:
            raise MailbridgeError(
                ErrorCode.FOLDER_NOT_FOUND,
                f"This mailbox marks no folder as its {folder} folder (RFC 6154).",
            )
        return found

    def _select(self, folder: Folder, *, readonly: bool) -> int:
        """Select the folder; its UIDVALIDITY."""
        selected = self._session().select_folder(self._folder_name(folder), readonly=readonly)
        return int(selected[b"UIDVALIDITY"])

    # -- reading
    def list_messages(
        self, folder: Folder, *, unread_only: bool, cursor: str | None, limit: int
    ) -> MessagePage:
        with self._exchange():
            client = self._session()
            name = self._folder_name(folder)
            # Asked before SELECT, which discards the capabilities the login's answer listed
            # (most servers list them there): after it, asking costs a round trip.
            bounded = unread_only and client.has_capability("CONTEXT=SEARCH")
            selected = client.select_folder(name, readonly=True)
            validity, exists = int(selected[b"UIDVALIDITY"]), int(selected[b"EXISTS"])
            listing_key = (folder, "unread" if unread_only else "all", str(validity))
            before = None
            if cursor is not None:
                # Refused before any command carries it: a server answers BAD to what is
                # not a UID, which would be its error, not the caller's.
                before = _nz_number(unpack_cursor(cursor, "imap-page", listing_key))
                if before is None:
                    raise invalid_cursor()
            if unread_only:
                uids, more = self._unread(client, before, limit, bounded=bounded)
                fetched = client.fetch(uids, _SUMMARY) if uids else {}
            else:
                fetched, more = self._newest(client, exists, before, limit)
            summaries = sorted(
                (self._summary(folder, validity, uid, data) for uid, data in fetched.items()),
                key=lambda summary: summary[0],
                reverse=True,
            )
        next_cursor = None
        if more and summaries:
            next_cursor = pack_cursor("imap-page", listing_key, str(summaries[-1][0]))
        return MessagePage(messages=[summary for _, summary in summaries], next_cursor=next_cursor)

    @staticmethod
    def _unread(
        client: IMAPClient, before: int | None, limit: int, *, bounded: bool
    ) -> tuple[list[int], bool]:
        """The newest `limit` unread UIDs below `before`, and whether there are more; with
        `bounded` (the server has CONTEXT=SEARCH), from answers bounded by the page."""
        if before is not None and before <= 1:
            return [], False
        criteria = [b"UNSEEN"]
        if before is not None:
            criteria += [b"UID", f"1:{before - 1}".encode()]
        if not bounded:
            # Only the UIDs, answered from the server's index, but every unread one of them.
            found = sorted(uid for uid in client.search(criteria) if before is None or uid < before)
            return found[-limit:], len(found) > limit
        # Their count, then the last `limit` of them by position (RFC 5267's PARTIAL counts
        # from the lowest UID): two bounded answers, whatever the mailbox holds.
        count = _esearch(client, b"COUNT", criteria)
        if not isinstance(count, int) or count < 0:
            raise ValueError("the server's COUNT is not a count")
        if count == 0:
            return [], False
        window = f"{max(1, count - limit + 1)}:{count}".encode()
        answer = _esearch(client, b"PARTIAL " + window, criteria)
        if not isinstance(answer, tuple) or len(answer) != 2:
            raise ValueError("the server's PARTIAL is not a range and its UIDs")
        uids = _uid_set(answer[1], limit)
        if before is not None and any(uid >= before for uid in uids):
            raise ValueError("the server's UIDs are not below the cursor")
        return sorted(uids), count > limit

    @staticmethod
    def _newest(
        client: IMAPClient, exists: int, before: int | None, limit: int
    ) -> tuple[dict[int, Any], bool]:
        """The `limit` messages before the cursor's by position, fetched by sequence range
        from the end: what any mailbox size costs the same."""
        top = exists
        if before is not None:
            located = client.fetch([before], [b"UID"])
            if located:
                top = int(next(iter(located.values()))[b"SEQ"]) - 1
            else:  # the cursor's message was expunged: count what came after it
                top = exists - len(
                    [uid for uid in client.search(["UID", f"{before}:*"]) if uid >= before]
                )
        if top < 1:
            return {}, False
        low = max(1, top - limit + 1)
        client.use_uid = False  # a range of positions, not of UIDs
        try:
            # A list, not a range: imapclient keeps only the answers for the numbers asked.
            by_position = client.fetch(list(range(low, top + 1)), _SUMMARY)
        finally:
            client.use_uid = True
        # By UID, as a fetch by UID gives them (which leaves UID out of each message's data).
        return {int(data[b"UID"]): data for data in by_position.values()}, low > 1

    def _summary(
        self, folder: Folder, validity: int, uid: int, data: dict[bytes, Any]
    ) -> tuple[int, MessageSummary]:
        # The server names the partial fetch after what was asked (`...]<0>`); an answer
        # without it (ValueError) is not the one asked for.
        (fetched,) = [v for k, v in data.items() if k.upper().startswith(b"BODY[HEADER.FIELDS")]
        headers = read_headers(bytes(fetched))
        summary = MessageSummary(
            id=pack("imap", folder, str(validity), str(uid)),
            thread_id=thread_id(headers),
            folder=folder,
            sender=headers.sender,
            to=headers.to,
            subject=headers.subject,
            received_at=_utc(data[b"INTERNALDATE"]),
            read=SEEN in data[b"FLAGS"],
            message_id=headers.message_id,
        )
        return uid, summary

    def _locate(self, message_id: str, *, readonly: bool) -> tuple[Folder, int]:
        """Select the message's folder; its folder and UID, or not found."""
        name, validity_text, uid_text = unpack_message_id(message_id, "imap", 3)
        validity, uid = _nz_number(validity_text), _nz_number(uid_text)
        # Refused before any command: no server holds such a message.
        if name not in _FOLDERS or validity is None or uid is None:
            raise message_not_found()
        folder = cast(Folder, name)
        if self._select(folder, readonly=readonly) != validity:
            raise message_not_found()
        return folder, uid

    def fetch(self, message_id: str) -> FetchedMessage:
        with self._exchange():
            folder, uid = self._locate(message_id, readonly=True)
            found = self._session().fetch([uid], [b"BODY.PEEK[]", b"FLAGS", b"INTERNALDATE"])
            data = found.get(uid)
            if data is None:
                raise message_not_found()
        raw = bytes(data[b"BODY[]"])
        return FetchedMessage(
            id=message_id,
            thread_id=thread_id(read_headers(raw)),
            folder=folder,
            read=SEEN in data[b"FLAGS"],
            received_at=_utc(data[b"INTERNALDATE"]),
            raw=raw,
        )

    def set_read(self, message_id: str, read: bool) -> None:
        with self._exchange():
            _, uid = self._locate(message_id, readonly=False)
            client = self._session()
            if not client.fetch([uid], [b"UID"]):
                raise message_not_found()
            (client.add_flags if read else client.remove_flags)([uid], [SEEN])

    # -- new mail
    def new_messages(self, position: str | None, *, since: datetime, limit: int) -> NewMessages:
        """By UID: the inbox's UIDNEXT moved since the position's, the UIDs from there are
        new. An unchanged inbox costs the login and one STATUS. Should UIDVALIDITY change
        (the server renumbered the folder), the new numbers say nothing: the messages that
        arrived after the newest one seen are new, by their arrival time, and the rest are
        not announced again under new ids."""
        with self._exchange():
            client = self._session()
            status = client.folder_status("INBOX", [b"UIDVALIDITY", b"UIDNEXT"])
            validity, uid_next = int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"])
            known = _InboxPosition.parse(position) if position is not None else None
            if known is not None and (known.validity, known.uid_next) == (validity, uid_next):
                return NewMessages(messages=[], position=known.text(), more=False)
            # Kept from the login's answer before SELECT flushes it: the commands below ask
            # (LITERAL+), and asking the server would cost a round trip.
            client.capabilities()
            validity = int(client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"])
            if known is not None and known.validity == validity:
                # `n:*` always includes the last message, even below n.
                found = client.search([b"UID", f"{known.uid_next}:*".encode()])
                uids = sorted(uid for uid in found if uid >= known.uid_next)
            else:
                # INTERNALDATE counts whole seconds: the connection's own second is after it.
                moment = known.newest if known else since.replace(microsecond=0)
                uids = _arrived_after(client, moment, since=known is None)
            taken, more = uids[:limit], len(uids) > limit
            fetched = client.fetch(taken, _SUMMARY) if taken else {}
            summaries = [
                self._summary("inbox", validity, uid, fetched[uid])[1]
                for uid in taken
                if uid in fetched  # expunged meanwhile
            ]
        newest = max(
            [known.newest if known is not None else since, *(s.received_at for s in summaries)]
        )
        after_taken = taken[-1] + 1 if taken else 0
        following = after_taken if more else max(uid_next, after_taken)
        return NewMessages(
            messages=summaries,
            position=_InboxPosition(validity, following, newest).text(),
            more=more,
        )

    def subscribe(self, current: Subscription | None) -> None:
        return None  # IMAP is polled

    def unsubscribe(self, subscription: Subscription) -> None:
        pass  # nothing to stop: IMAP is polled

    # -- sending
    def send(self, outgoing: Outgoing, *, replying_to: FetchedMessage | None) -> Delivered:
        # The sent folder is found while SMTP sends, so the copy costs one APPEND more.
        sent_folder = _executor.submit(contextvars.copy_context().run, self._sent_folder)
        raw = outgoing.as_bytes()
        try:
            refused = send(
                self._connection, self._password, outgoing.recipients, raw, self._timeout
            )
        finally:
            wait([sent_folder])  # the session is the worker's until it is done
        copy_id = None
        try:
            # The message has left: nothing after this may fail the send (a retry would
            # send it twice), so the copy and the flag are best effort.
            with self._exchange():
                copy_id = self._keep_sent_copy(outgoing, sent_folder.result())
                if replying_to is not None:
                    _, uid = self._locate(replying_to.id, readonly=False)
                    self._session().add_flags([uid], [ANSWERED])
        except MailbridgeError as error:
            logger.warning(
                "sent; keeping the copy or marking the original answered failed",
                extra={"error_code": error.code},
            )
        # Read as its copy will be read back: the same thread.
        return Delivered(id=copy_id, thread_id=thread_id(read_headers(raw)), refused=refused)

    def _sent_folder(self) -> str | None:
        with self._exchange():
            try:
                return self._folder_name("sent")
            except MailbridgeError as missing:
                if missing.code != ErrorCode.FOLDER_NOT_FOUND:
                    raise
                return None  # no folder marked \\Sent: sent, with no copy kept

    def _keep_sent_copy(self, outgoing: Outgoing, name: str | None) -> str | None:
        if name is None:
            return None
        answer = self._session().append(
            name, outgoing.as_bytes(with_bcc=True), flags=[SEEN], msg_time=datetime.now(UTC)
        )
        appended = _APPENDUID.search(answer or b"")
        if appended is None:  # no UIDPLUS: the copy is there, its UID unknown
            return None
        return pack("imap", "sent", appended[1].decode(), appended[2].decode())


@dataclass(frozen=True)
class _InboxPosition:
    """Where the inbox was: its UIDVALIDITY, the UID the next message gets, and the arrival
    time of the newest message seen (for when UIDVALIDITY changes)."""

    validity: int
    uid_next: int
    newest: datetime

    def text(self) -> str:
        return f"{self.validity}:{self.uid_next}:{self.newest.isoformat()}"

    @classmethod
    def parse(cls, text: str) -> _InboxPosition:
        validity, uid_next, newest = text.split(":", 2)  # our own, stored: trusted
        return cls(int(validity), int(uid_next), datetime.fromisoformat(newest))


def _arrived_after(client: IMAPClient, moment: datetime, *, since: bool) -> list[int]:
    """The inbox's UIDs that arrived after `moment` (at it or after, with `since`), by their
    INTERNALDATE. SEARCH SINCE compares dates alone, in the server's zone: a day earlier
    finds them all, and their times decide. What arrived after `moment` is at the top of
    the UID order, so the times are read from the newest down, a chunk at a time, until a
    chunk reaches back before it: a busy day's thousands of messages cost one chunk, and
    no command line grows with them."""

    def arrived(data: dict[bytes, Any]) -> bool:
        at = _utc(data[b"INTERNALDATE"])
        return at > moment or (since and at == moment)

    candidates = sorted(client.search([b"SINCE", moment - timedelta(days=1)]))
    found: list[int] = []
    while candidates:
        chunk, candidates = candidates[-_TIMES_CHUNK:], candidates[:-_TIMES_CHUNK]
        times = client.fetch(chunk, [b"INTERNALDATE"])
        newer = [uid for uid, data in times.items() if arrived(data)]
        found += newer
        if len(newer) < len(chunk):
            break
    return sorted(found)


def _special_use_folders(client: IMAPClient) -> _Listed:
    """The folders that may have a special use. A server with SPECIAL-USE lists just those,
    with their flags, for the selection option (RFC 6154), and need not flag them in a plain
    LIST; a server without it flags them in a plain LIST, if at all."""
    if not client.has_capability("SPECIAL-USE"):
        return cast(_Listed, client.list_folders())
    # imapclient has no call for LIST's selection options; its parsing of LIST serves.
    answer = client._raw_command_untagged(b"LIST", [b"(SPECIAL-USE)", b'""', b'"*"'], uid=False)
    return cast(_Listed, client._proc_folder_list(answer))


def _esearch(client: IMAPClient, returning: bytes, criteria: list[bytes]) -> object:
    """`UID SEARCH RETURN (returning) criteria` (RFC 4731): what the answer gives for the
    option named first in `returning`, or None if it gives nothing for it."""
    lines = client._raw_command_untagged(
        b"SEARCH", [b"RETURN", b"(" + returning + b")", *criteria], response_name="ESEARCH"
    )
    if len(lines) != 1 or not isinstance(lines[0], bytes):
        raise ValueError("not one ESEARCH answer")
    # Its words in any case (the values are numbers); after the command's tag (a correlator)
    # and the UID marker: names and values, in pairs.
    items = [item.upper() if isinstance(item, bytes) else item for item in parse_response(lines)]
    if items and isinstance(items[0], tuple):
        items = items[1:]
    if items[:1] == [b"UID"]:
        items = items[1:]
    answered = dict(zip(items[::2], items[1::2], strict=True))
    return answered.get(returning.split()[0])


def _uid_set(found: object, most: int) -> list[int]:
    """The UIDs of a set as ESEARCH answers it (`3:5,9`; NIL when empty), at most `most` of
    them: what was asked for. A server's answer is not trusted to be that small."""
    if found is None:
        return []
    # A set of one UID parses as a number.
    text = found.decode("ascii") if isinstance(found, bytes) else str(found)
    uids: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        first, last = sorted((int(low), int(high or low)))
        if first < 1 or len(uids) + last - first + 1 > most:
            raise ValueError("the server's UID set is not the page asked for")
        uids.extend(range(first, last + 1))
    return uids


class ImapMailboxes:
    @contextmanager
    def open(self, connection: Connection, credential: str) -> Iterator[ImapMailbox]:
        assert isinstance(connection, ImapConnection)
        with ExitStack() as stack:
            yield ImapMailbox(connection, credential, stack)


ADAPTER = ImapMailboxes()
