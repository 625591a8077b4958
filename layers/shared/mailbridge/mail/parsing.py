"""Reading an RFC 5322 message, whichever provider it came from (IMAP's BODY[], Gmail's raw
format, Graph's $value): headers, the text and HTML bodies decoded to UTF-8, and attachments;
and what a message list shows of one (`read_headers`, `read_fields`), by the same rules.

Messages are input from anyone on the internet, and the standard library's email package is
not total on them: a few hundred levels of nesting exhaust its parser's recursion, and
malformed parameters, charsets or encoded words make the parser and its accessors raise
TypeError, UnicodeError, IndexError... So every call into the package goes through
`_tolerant`, and what it cannot read is left out: nothing here raises, on any bytes. Headers
are read as they came, never through the package's structured header parser, and only what
holds to the service's own rules comes out: addresses that are addresses, message ids a header
line can hold, one-line text, never a lone surrogate (which no UTF-8 answer can carry).
Everything that comes out is bounded, so that a message read, or a page of 100 summaries, fits
in Lambda's answer, and `truncated` says when anything was left out.
"""

from __future__ import annotations

import codecs
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from email import policy
from email.generator import BytesGenerator
from email.message import Message
from email.parser import BytesParser
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime
from functools import partial
from io import BytesIO
from itertools import islice
from typing import NamedTuple, TypeVar

from ..core.fields import LONE_SURROGATES, NOT_IN_ONE_LINE, email_address
from .models import (
    CONTENT_TYPE_PATTERN,
    MAX_ATTACHMENTS_LISTED,
    MAX_BODIES_BYTES,
    MAX_FILENAME_CHARACTERS,
    Address,
    AttachmentInfo,
)

_Read = TypeVar("_Read")


# A message id (RFC 5322's msg-id: printable ASCII in angle brackets) that one header line
# (998 characters) can hold after "In-Reply-To: ", so that a reply can always write it back.
MESSAGE_ID = r"<[!-;=?-~]{1,983}>"
# A References header keeps the thread's root and its latest messages (RFC 5322 3.6.4 asks
# for all; long threads are trimmed as mail clients do), so no chain makes it too long.
REFERENCES_KEPT = 20

# What is read of a message at most: levels of MIME nesting, parts, addresses per header (twice
# what a message may be sent to: a reply can still tell there are too many), characters of a
# header's text (what a line holds) and of a display name.
_MAX_DEPTH = 32
_MAX_PARTS = 1000
_MAX_ADDRESSES = 200
_MAX_LINE = 998
_MAX_NAME = 200
# A summary's recipients: the first ones. A summary at its largest (its subject, Message-ID and
# 11 names, every character 4 bytes in Lambda's answer, addresses and ids) takes about 22 KB,
# so that a page of 100 takes at most about 2.2 MB of Lambda's 6 MB.
SUMMARY_RECIPIENTS = 10
# How much of a header is decoded: what can still show once cut (RFC 2047 takes at most 12
# characters for one: four bytes, each =XX), and what the package's accessors see of a header
# (content types and dispositions with their parameters). Of an address list, what getaddresses
# reads: enough for each address asked for to show whole with its name, within a bound for the
# whole list. Decoding takes time in proportion, or more: punycode's is quadratic.
_ENCODED_PER_CHARACTER = 12
_MAX_FETCHED = 16 * 1024
_READ_PER_ADDRESS = 4096
_MAX_ADDRESS_LIST = 256 * 1024
# Read as UTF-8 when a body names it: no mail is written in it, and it decodes in quadratic
# time (a hostile body would take minutes).
_NOT_A_MAIL_CHARSET = "punycode"
_UNKNOWN_TYPE = "application/octet-stream"
# Control characters other than tab and line ends mean nothing to a reader, and JSON would
# write each as a six-byte escape.
_CONTROL_IN_BODY = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]"
# What JSON escapes of what is left: each takes up to 3 bytes more in Lambda's answer (a quote
# is \" in the message's JSON, then \\\" in Lambda's).
_ESCAPED = (b'"', b"\\", b"\n", b"\r", b"\t")


def _utf8(text: str) -> str:
    """Header text with the parser's stand-ins for 8-bit bytes (surrogate escapes) read as
    UTF-8, as RFC 6532 has headers write it."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Utf8Headers(Compat32):
    """compat32 keeps headers as the strings they came as: its parser takes a tenth of the
    time the default policy's takes, and its accessors parse nothing they could fail on. Its
    8-bit header text is read as UTF-8 (RFC 6532), rather than lost to replacement
    characters."""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return _utf8(value[:_MAX_FETCHED])


_UTF8_HEADERS = _Utf8Headers()
_PARSER = BytesParser(policy=_UTF8_HEADERS)
# RFC 2047 encoded words decoded, as an unstructured header's text.
_DECODE = policy.default.header_factory
# A forwarded message is given back as it came: headers never refolded, CRLF line ends.
_WRITE_BACK = policy.SMTP.clone(refold_source="none")


class ParsedMessage(NamedTuple):
    subject: str
    sender: Address | None
    to: list[Address]
    cc: list[Address]
    reply_to: list[Address]
    # Reply-To named someone `reply_to` leaves out (not an address, or past the bound): a reply
    # to the rest, or to From, would not go where the author asked.
    reply_to_dropped: bool
    date: datetime | None
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    text: str | None
    html: str | None
    truncated: bool
    attachments: list[AttachmentInfo]


class Headers(NamedTuple):
    """What a message list shows of a message (and IMAP threads it by), read as a whole
    message's headers are: `to` holds the first SUMMARY_RECIPIENTS recipients."""

    subject: str
    sender: Address | None
    to: list[Address]
    message_id: str | None
    in_reply_to: str | None
    references: list[str]


def _tolerant(read: Callable[[], _Read], unreadable: _Read) -> _Read:
    """What `read` gives, or `unreadable` when the email package fails on the message."""
    try:
        return read()
    except Exception:  # the package's failures on hostile input have no common class
        return unreadable


def thread_references(ids: list[str]) -> list[str]:
    """The ids a References header keeps of a thread's: its root and its latest."""
    return ids if len(ids) <= REFERENCES_KEPT else [ids[0], *ids[-(REFERENCES_KEPT - 1) :]]


def _parse(raw: bytes) -> tuple[Message, bool]:
    """The message's tree, and whether any of it was left out."""
    whole: Message | None = _tolerant(lambda: _PARSER.parsebytes(raw), None)
    if whole is not None:
        return whole, False
    return _headers_only(raw), True


def _headers_only(raw: bytes) -> Message:
    # Its headers alone (and a single part's body): nothing there for the parser to fail on.
    return _PARSER.parsebytes(raw, headersonly=True)


def _given(text: str) -> str:
    """Text a provider gave as a JSON string, whose \\ud800 escapes can make lone surrogates:
    each is a character that could not be read, as in a body."""
    return re.sub(LONE_SURROGATES, "\ufffd", text)


def _fields(pairs: Iterable[tuple[str, str]]) -> Message:
    """Header fields a provider gave as (name, value) strings, held as parsed ones are."""
    message = Message(policy=_UTF8_HEADERS)
    for name, value in pairs:
        message[name] = _given(value)
    return message


def _header_values(part: Message, name: str) -> list[str]:
    """A header's values as they came, unfolded."""
    return [
        _utf8(re.sub(r"\r\n|\r|\n", "", str(value)))
        for key, value in part.raw_items()
        if key.lower() == name
    ]


def _content_type(part: Message) -> str:
    found = _tolerant(part.get_content_type, _UNKNOWN_TYPE)
    return found if re.fullmatch(CONTENT_TYPE_PATTERN, found) else _UNKNOWN_TYPE


def _filename(part: Message) -> str:
    """A part's file name (RFC 2231, or RFC 2047 as Outlook writes it); empty when none."""
    return _tolerant(lambda: part.get_filename(""), "")


def _one_line(text: str, limit: int, *, encoded: bool) -> tuple[str, bool]:
    """Text as one line of at most `limit` characters (RFC 2047 encoded words decoded, if it is
    `encoded` header text), without control characters, line breaks or lone surrogates; and
    whether any of it was cut."""
    read = text[: limit * _ENCODED_PER_CHARACTER]
    decoded = _tolerant(lambda: str(_DECODE("x-text", read)), read) if encoded else read
    line = " ".join(re.sub(NOT_IN_ONE_LINE, " ", decoded).split())
    return line[:limit], len(line) > limit or len(read) < len(text)


def _address(text: str, name: str, *, encoded: bool) -> tuple[Address | None, bool]:
    """An address by the service's own rule (ASCII, a domain with its top level) with its
    display name, None for anything else; and whether the name was cut."""
    try:
        address = email_address(text)
    except ValueError:
        return None, False
    line, cut = _one_line(name, _MAX_NAME, encoded=encoded)
    return Address(address=address, name=line or None), cut


def _body_text(part: Message) -> str:
    """A body decoded from its charset (UTF-8 when it names none or an unknown one),
    without control characters or lone surrogates, which no reader wants."""
    payload = _tolerant(lambda: part.get_payload(decode=True), None)
    if not isinstance(payload, bytes):
        return ""
    named = _tolerant(lambda: codecs.lookup(part.get_content_charset("utf-8")).name, "utf-8")
    charset = "utf-8" if named == _NOT_A_MAIL_CHARSET else named
    text = _tolerant(lambda: payload.decode(charset, "replace"), None)
    if text is None:
        text = payload.decode("utf-8", "replace")
    return re.sub(LONE_SURROGATES, "\ufffd", re.sub(_CONTROL_IN_BODY, "", text))


def _answer_bytes(data: bytes, end: int) -> int:
    """What the first `end` bytes of a body's UTF-8 take in Lambda's answer (see
    `models.MAX_BODIES_BYTES`)."""
    return end + 3 * sum(data.count(escaped, 0, end) for escaped in _ESCAPED)


def _cut(text: str, budget: int) -> str:
    """The longest start of `text` within `budget`."""
    data = text.encode()
    starts = range(min(len(data), budget) + 1)  # a byte takes one at least
    end = bisect_right(starts, budget, key=partial(_answer_bytes, data)) - 1
    return data[:end].decode("utf-8", "ignore")  # a character cut in two is left out


def _fit(text: str | None, html: str | None) -> tuple[str | None, str | None, bool]:
    """Both bodies within MAX_BODIES_BYTES: each may take half, and what the other leaves;
    and whether either was cut."""
    text_bytes, html_bytes = (
        _answer_bytes(data, len(data)) for data in ((text or "").encode(), (html or "").encode())
    )
    if text_bytes + html_bytes <= MAX_BODIES_BYTES:
        return text, html, False
    if text is not None:
        text = _cut(text, max(MAX_BODIES_BYTES // 2, MAX_BODIES_BYTES - html_bytes))
        text_bytes = _answer_bytes(text.encode(), len(text.encode()))
    if html is not None:
        html = _cut(html, MAX_BODIES_BYTES - text_bytes)
    return text, html, True


def _written(message: Message) -> bytes:
    buffer = BytesIO()
    # The default policy's generator writes compat32's messages as well.
    generator: BytesGenerator[Message] = BytesGenerator(
        buffer, mangle_from_=False, policy=_WRITE_BACK
    )
    generator.flatten(message)
    return buffer.getvalue()


def _content(part: Message) -> bytes | None:
    """An attachment's bytes: decoded, or a forwarded message (message/*) written back whole;
    None when the email package cannot give them."""
    payload = _tolerant(part.get_payload, None)
    if isinstance(payload, list):
        held = [inner for inner in payload if isinstance(inner, Message)]
        return _tolerant(lambda: b"".join(_written(inner) for inner in held), None)
    decoded = _tolerant(lambda: part.get_payload(decode=True), None)
    return decoded if isinstance(decoded, bytes) else None


class _HeaderReader:
    """A message's headers, read as they came; `cut` turns true when anything is left out."""

    def __init__(self, message: Message, cut: bool = False) -> None:
        self.message, self.cut = message, cut

    def _line(self, text: str, limit: int) -> str:
        line, cut = _one_line(text, limit, encoded=True)
        self.cut |= cut
        return line

    def text(self, name: str) -> str:
        values = _header_values(self.message, name)
        return self._line(values[0], _MAX_LINE) if values else ""

    def addresses(self, name: str, most: int = _MAX_ADDRESSES) -> tuple[list[Address], bool]:
        """The first `most` addresses a header lists that are addresses, and whether it listed
        anything else (not an address, or past them)."""
        listed = ", ".join(_header_values(self.message, name))
        read = listed[: min(most * _READ_PER_ADDRESS, _MAX_ADDRESS_LIST)]
        cut_short = len(read) < len(listed)
        pairs: list[tuple[str, str]] | None = _tolerant(lambda: getaddresses([read]), None)
        if pairs is None:  # unreadable: whatever it lists is left out
            return [], bool(listed.strip())
        # An empty entry (a list's trailing comma, an empty group) names no one.
        entries = [(display, text) for display, text in pairs if display or text]
        if cut_short:
            entries = entries[:-1]  # cut in two: what is left may be another address
        found: list[Address] = []
        for display, text in entries:
            address, name_cut = _address(text, display, encoded=True)
            if address is not None and len(found) == most:
                cut_short = True
                break
            if address is not None:
                self.cut |= name_cut
                found.append(address)
        self.cut |= cut_short
        return found, cut_short or len(found) < len(entries)

    def sender(self) -> Address | None:
        """From's first address: a message may name several authors."""
        senders, _ = self.addresses("from", 1)
        return senders[0] if senders else None

    def message_ids(self, name: str) -> list[str]:
        """The ids a header lists (References, In-Reply-To...), in order."""
        return re.findall(MESSAGE_ID, " ".join(_header_values(self.message, name)))

    def message_id(self, name: str) -> str | None:
        found = self.message_ids(name)
        return found[0] if found else None

    def date(self) -> datetime | None:
        values = _header_values(self.message, "date")
        parsed = _tolerant(lambda: parsedate_to_datetime(values[0]), None)
        if parsed is None:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    def summary(self) -> Headers:
        return Headers(
            subject=self.text("subject"),
            sender=self.sender(),
            to=self.addresses("to", SUMMARY_RECIPIENTS)[0],
            message_id=self.message_id("message-id"),
            in_reply_to=self.message_id("in-reply-to"),
            references=thread_references(self.message_ids("references")),
        )


class _Reader(_HeaderReader):
    """One message, read as far as it can be."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(*_parse(raw))
        self.parts = self._walk()

    def _walk(self) -> list[Message]:
        """Its parts in order, a forwarded message (message/*) as one: not past _MAX_DEPTH
        levels or _MAX_PARTS parts."""
        parts: list[Message] = []
        pending = [(self.message, 0)]
        while pending:
            if len(parts) == _MAX_PARTS:
                self.cut = True
                break
            part, depth = pending.pop()
            parts.append(part)
            if _content_type(part).startswith("multipart/"):
                children = _tolerant(part.get_payload, None)
                if isinstance(children, list) and depth == _MAX_DEPTH:
                    self.cut = True
                elif isinstance(children, list):
                    pending += [
                        (child, depth + 1)
                        for child in reversed(children)
                        if isinstance(child, Message)
                    ]
        return parts

    def _body_part(self, content_type: str) -> Message | None:
        return next(
            (
                part
                for part in self.parts
                if _content_type(part) == content_type
                and _tolerant(part.get_content_disposition, None) != "attachment"
            ),
            None,
        )

    def bodies(self) -> tuple[Message | None, Message | None]:
        """The text/plain and text/html parts shown as the message (outside any forwarded
        one): the first of each that is not an attachment."""
        return self._body_part("text/plain"), self._body_part("text/html")

    def attachments(self) -> Iterator[tuple[AttachmentInfo, bytes]]:
        """The first MAX_ATTACHMENTS_LISTED attachments and their content; a forwarded
        message is one. Ids are positions among the parts."""
        bodies = self.bodies()
        listed = 0
        for index, part in enumerate(self.parts):
            content_type = _content_type(part)
            disposition = _tolerant(part.get_content_disposition, None)
            filename = _filename(part)
            if content_type.startswith("multipart/") or any(part is body for body in bodies):
                continue
            forwarded = content_type.startswith("message/")
            if not (forwarded or disposition in ("attachment", "inline") or filename):
                continue
            content = _content(part) if listed < MAX_ATTACHMENTS_LISTED else None
            if content is None:
                self.cut = True
                continue
            content_ids = re.findall(MESSAGE_ID, " ".join(_header_values(part, "content-id")))
            info = AttachmentInfo(
                id=str(index),
                filename=self._line(filename, MAX_FILENAME_CHARACTERS) or None,
                content_type=content_type,
                size=len(content),
                inline=disposition == "inline",
                content_id=content_ids[0] if content_ids else None,
            )
            listed += 1
            yield info, content


def parse_message(raw: bytes) -> ParsedMessage:
    reader = _Reader(raw)
    text_part, html_part = reader.bodies()
    text, html, bodies_cut = _fit(
        _body_text(text_part) if text_part else None,
        _body_text(html_part) if html_part else None,
    )
    subject = reader.text("subject")
    sender = reader.sender()
    (to, _), (cc, _), (reply_to, reply_to_dropped) = (
        reader.addresses(name) for name in ("to", "cc", "reply-to")
    )
    references = reader.message_ids("references")
    attachments = [info for info, _ in reader.attachments()]
    return ParsedMessage(
        subject=subject,
        sender=sender,
        to=to,
        cc=cc,
        reply_to=reply_to,
        reply_to_dropped=reply_to_dropped,
        date=reader.date(),
        message_id=reader.message_id("message-id"),
        in_reply_to=reader.message_id("in-reply-to"),
        references=thread_references(references),
        text=text,
        html=html,
        # Once everything above was read.
        truncated=bodies_cut or reader.cut or len(references) > REFERENCES_KEPT,
        attachments=attachments,
    )


def read_headers(headers: bytes | Iterable[tuple[str, str]]) -> Headers:
    """What a list shows of a message: from its header block as it came (IMAP's fetch of some
    header fields, or a whole message), or from header fields as (name, value) pairs (Gmail's
    metadata)."""
    if not isinstance(headers, bytes):
        return _HeaderReader(_fields(headers)).summary()
    # Up to the first empty line, where the headers end: the body would be parsed for nothing.
    ends = [end for end in (headers.find(b"\n\n"), headers.find(b"\n\r\n")) if end >= 0]
    return _HeaderReader(_headers_only(headers[: min(ends) + 1] if ends else headers)).summary()


def read_fields(
    *,
    subject: str,
    sender: tuple[str, str] | None,
    to: Iterable[tuple[str, str]],
    message_id: str,
) -> Headers:
    """The same from what a provider gives already decoded (Graph's JSON): a subject,
    addresses as (name, address) pairs, and the Message-ID header's text."""
    found = (_address(address, _given(name), encoded=False)[0] for name, address in to)
    first_id = re.search(MESSAGE_ID, message_id)
    return Headers(
        subject=_one_line(_given(subject), _MAX_LINE, encoded=False)[0],
        sender=_address(sender[1], _given(sender[0]), encoded=False)[0] if sender else None,
        to=list(islice(filter(None, found), SUMMARY_RECIPIENTS)),
        message_id=first_id[0] if first_id else None,
        in_reply_to=None,
        references=[],
    )


def attachment(raw: bytes, attachment_id: str) -> tuple[AttachmentInfo, bytes] | None:
    """One attachment's description and content, by the id `parse_message` gave it."""
    return next(
        (found for found in _Reader(raw).attachments() if found[0].id == attachment_id), None
    )
