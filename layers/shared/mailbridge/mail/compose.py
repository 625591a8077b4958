"""Writing the RFC 5322 message an agent sends, the same bytes whichever way it leaves (SMTP,
Gmail's raw send, a Graph draft from MIME): From the connection's address, a Message-ID of
ours, threading headers for a reply, text and HTML alternatives, attachments.

Every header value comes from a validated field (no line breaks, no control characters),
and the standard library refuses a header that could still start another one.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from email import policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime

from .mailboxes import Outgoing
from .models import OutgoingAttachment
from .parsing import ParsedMessage

# The References header keeps the thread's root and its latest messages (RFC 5322 3.6.4
# asks for all; long threads are trimmed as mail clients do).
_REFERENCES_KEPT = 20


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
    message = EmailMessage(policy=policy.default)
    local, _, domain = sender.rpartition("@")
    message["From"] = HeaderAddress(display_name=sender_name or "", username=local, domain=domain)
    if to:
        message["To"] = [_address(address) for address in to]
    if cc:
        message["Cc"] = [_address(address) for address in cc]
    message["Subject"] = subject
    message["Date"] = format_datetime(now)
    message_id = f"<{hashlib.sha256(message_key.encode()).hexdigest()[:40]}@{domain}>"
    message["Message-ID"] = message_id
    if replying_to is not None and replying_to.message_id:
        message["In-Reply-To"] = replying_to.message_id
        thread = [*replying_to.references, replying_to.message_id]
        kept = (
            thread
            if len(thread) <= _REFERENCES_KEPT
            else [thread[0], *thread[-(_REFERENCES_KEPT - 1) :]]
        )
        message["References"] = " ".join(kept)
    if text is not None:
        message.set_content(text)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    for attached in attachments:
        maintype, _, subtype = attached.content_type.partition("/")
        message.add_attachment(
            attached.data, maintype=maintype, subtype=subtype, filename=attached.filename
        )
    return Outgoing(message=message, sender=sender, bcc=bcc, message_id=message_id)


def _address(address: str) -> HeaderAddress:
    local, _, domain = address.rpartition("@")
    return HeaderAddress(username=local, domain=domain)
