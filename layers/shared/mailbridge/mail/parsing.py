"""Reading an RFC 5322 message, whichever provider it came from (IMAP's BODY[], Gmail's raw
format, Graph's $value): headers, the text and HTML bodies decoded to UTF-8, and attachments.

Messages are input from anyone on the internet: a header that does not parse is left out, a
body in an unknown charset is decoded with replacement characters, and nothing here raises.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from .models import MAX_BODY_CHARACTERS, Address, AttachmentInfo

_MESSAGE_ID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class ParsedMessage:
    subject: str
    sender: Address | None
    to: list[Address]
    cc: list[Address]
    reply_to: list[Address]
    date: datetime | None
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    text: str | None
    html: str | None
    truncated: bool
    attachments: list[AttachmentInfo]


def _parse(raw: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(message, EmailMessage)  # policy.default makes EmailMessages
    return message


def _header(message: EmailMessage, name: str) -> str | None:
    """A header's decoded value, or None when it is missing or does not parse."""
    try:
        value = message[name]
    except (ValueError, IndexError, TypeError, AttributeError, LookupError):
        return None
    return None if value is None else " ".join(str(value).split())


def addresses(message: EmailMessage, name: str) -> list[Address]:
    """The addresses a header lists; the raw header is read with getaddresses, which takes
    what the structured parser may choke on."""
    values = message.get_all(name) or []
    found = []
    for display, address in getaddresses([str(value) for value in values]):
        if "@" in address:
            found.append(Address(address=address, name=display or None))
    return found


def message_ids(value: str | None) -> list[str]:
    """The <ids> a References or In-Reply-To header lists, in order."""
    return _MESSAGE_ID.findall(value or "")


def _date(message: EmailMessage) -> datetime | None:
    text = _header(message, "Date")
    if text is None:
        return None
    try:
        parsed = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _text_of(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, ValueError, AssertionError):
        # An unknown or lying charset: the bytes, decoded as best UTF-8 can.
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _body(message: EmailMessage, subtype: str) -> EmailMessage | None:
    try:
        body = message.get_body(preferencelist=(subtype,))
    except (KeyError, IndexError, TypeError):
        return None
    return body if isinstance(body, EmailMessage) else None


def _parts(message: EmailMessage) -> list[EmailMessage]:
    return [part for part in message.walk() if isinstance(part, EmailMessage)]


def _is_attachment(part: EmailMessage, bodies: list[EmailMessage]) -> bool:
    if part.is_multipart() or any(part is body for body in bodies):
        return False
    return part.get_content_disposition() in ("attachment", "inline") or bool(part.get_filename())


def parse_message(raw: bytes) -> ParsedMessage:
    message = _parse(raw)
    bodies = [body for body in (_body(message, "plain"), _body(message, "html")) if body]
    text_part, html_part = _body(message, "plain"), _body(message, "html")
    text = _text_of(text_part) if text_part else None
    html = _text_of(html_part) if html_part else None
    truncated = any(len(body or "") > MAX_BODY_CHARACTERS for body in (text, html))
    attachments = []
    for index, part in enumerate(_parts(message)):
        if not _is_attachment(part, bodies):
            continue
        payload = part.get_payload(decode=True)
        attachments.append(
            AttachmentInfo(
                id=str(index),
                filename=part.get_filename(),
                content_type=part.get_content_type(),
                size=len(payload) if isinstance(payload, bytes) else 0,
                inline=part.get_content_disposition() == "inline",
                content_id=_header(part, "Content-ID"),
            )
        )
    senders = addresses(message, "From")
    message_id = message_ids(_header(message, "Message-ID"))
    in_reply_to = message_ids(_header(message, "In-Reply-To"))
    return ParsedMessage(
        subject=_header(message, "Subject") or "",
        sender=senders[0] if senders else None,
        to=addresses(message, "To"),
        cc=addresses(message, "Cc"),
        reply_to=addresses(message, "Reply-To"),
        date=_date(message),
        message_id=message_id[0] if message_id else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=message_ids(_header(message, "References")),
        text=text[:MAX_BODY_CHARACTERS] if text is not None else None,
        html=html[:MAX_BODY_CHARACTERS] if html is not None else None,
        truncated=truncated,
        attachments=attachments,
    )


def attachment(raw: bytes, attachment_id: str) -> tuple[AttachmentInfo, bytes] | None:
    """One attachment's description and content, by the id `parse_message` gave it."""
    parsed = parse_message(raw)
    info = next((found for found in parsed.attachments if found.id == attachment_id), None)
    if info is None:
        return None
    part = _parts(_parse(raw))[int(info.id)]
    payload = part.get_payload(decode=True)
    return info, payload if isinstance(payload, bytes) else b""
