"""Writing the RFC 5322 message an agent sends, the same bytes whichever way it leaves (SMTP,
Gmail's raw send, a Graph draft from MIME): From the connection's address, a Message-ID of
ours, threading headers for a reply, text and HTML alternatives, attachments.

Every header value comes from a validated field (no line breaks, no control characters),
and the standard library refuses a header that could still start another one. An RFC 2047
encoded word, which could still decode to one, is written as given or left out (`_verbatim`,
`_sender_address`); an address holds none (`core.fields.email_address`). The message is
7-bit: non-ASCII text goes as quoted-printable or base64 and headers as RFC 2047 encoded
words, which every server and API takes (no SMTP 8BITMIME or SMTPUTF8 needed).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime
from typing import Any

from ..core.fields import holds_encoded_word
from .mailboxes import Outgoing
from .models import OutgoingAttachment
from .parsing import ParsedMessage, thread_references


class _MessageIds(BaseHeader):
    """In-Reply-To and References, written as message ids must be: whole, one a line when they
    do not fit on one. (The standard library folds an id longer than a line into RFC 2047
    encoded words, which no longer name the message: Outlook's ids are that long.)"""

    max_count = 1  # RFC 5322 3.6

    @classmethod
    def parse(cls, value: str, kwds: dict[str, Any]) -> None:
        kwds["decoded"] = value
        kwds["parse_tree"] = None

    def fold(self, *, policy: Policy) -> str:
        ids = str(self).split()
        line = f"{self.name}: {' '.join(ids)}"
        if len(line) <= (policy.max_line_length or len(line)):
            return line + policy.linesep
        return f"{self.name}: " + f"{policy.linesep} ".join(ids) + policy.linesep


_HEADERS = HeaderRegistry()
_HEADERS.map_to_type("In-Reply-To", _MessageIds)
_HEADERS.map_to_type("References", _MessageIds)
_POLICY = policy.default.clone(cte_type="7bit", header_factory=_HEADERS)


def reply_subject(subject: str) -> str:
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}"


def compose(
    *,
    sender: str,
    sender_name: str | None,
    to: list[str],
    cc: list[str],
    bcc: list[str],
    subject: str,
    text: str | None,
    html: str | None,
    attachments: list[OutgoingAttachment],
    replying_to: ParsedMessage | None,
    now: datetime,
    message_key: str,
) -> Outgoing:
    """`message_key` names this send (the agent and its Idempotency-Key): the Message-ID is
    made from it, so a send that had to be done again goes out as the same message, which
    mailboxes recognize."""
    message = EmailMessage(policy=_POLICY)
    _, _, domain = sender.rpartition("@")
    message["From"] = _sender_address(sender, sender_name)
    if to:
        message["To"] = [_address(address) for address in to]
    if cc:
        message["Cc"] = [_address(address) for address in cc]
    message["Subject"] = _verbatim(subject)
    message["Date"] = format_datetime(now)
    message_id = f"<{hashlib.sha256(message_key.encode()).hexdigest()[:40]}@{domain}>"
    message["Message-ID"] = message_id
    if replying_to is not None:
        # Parsing gives only ids that a header line can hold (`parsing.MESSAGE_ID`): an
        # original's over-long or malformed ones are not there to break the reply's headers.
        parent = [replying_to.message_id] if replying_to.message_id else []
        if parent:
            message["In-Reply-To"] = parent[0]
        if thread := thread_references([*replying_to.references, *parent]):
            message["References"] = " ".join(thread)
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    for attached in attachments:
        maintype, _, subtype = attached.content_type.partition("/")
        # As RFC 2231's (charset, language, value): a parameter's value the library takes as
        # written, where it decodes the encoded words of a plain one (`_verbatim` says why).
        message.add_attachment(
            attached.data,
            maintype=maintype,
            subtype=subtype,
            filename=("utf-8", "", attached.filename),
        )
    return Outgoing(message=message, sender=sender, bcc=bcc, message_id=message_id)


def _verbatim(subject: str) -> str:
    """`subject`, to be written as given. The standard library decodes the RFC 2047 encoded
    words of a value it is given, and (before Python 3.11.10 and 3.12.5, CVE-2024-6923)
    writes what they decode to as it is: "=?utf-8?q?Hi=0D=0ABcc:_x@evil.example?=" would
    become a Bcc header, which Gmail's and Graph's raw sends obey, past the client
    organization's recipients. A reply's subject is a stranger's. Encoded once more, it
    decodes to the text as given, which is written as such."""
    if not holds_encoded_word(subject):
        return subject
    return f"=?utf-8?b?{base64.b64encode(subject.encode()).decode()}?="


def _sender_address(sender: str, name: str | None) -> HeaderAddress:
    """From: the connection's address, with `name` unless it holds an encoded word, which the
    library would decode as a subject's (`_verbatim`), and cannot take encoded once more (it
    would write the name unquoted: a comma in it would make two addresses). Such names are
    refused where they are given (`core.fields.display_name`); an agent's name saved before
    that is left out."""
    return _address(sender, "" if name is None or holds_encoded_word(name) else name)


def _address(address: str, name: str = "") -> HeaderAddress:
    local, _, domain = address.rpartition("@")
    return HeaderAddress(display_name=name, username=local, domain=domain)
