"""What the mail routes take and give: messages and their summaries, pages, attachments, and
what sending takes and returns. Ids and cursors are opaque strings (see `ids`)."""

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from ..core.fields import DisplayName, EmailAddress, encodable, printable
from ..core.types import OPAQUE_ID_PATTERN, Model, StrictModel, example

Folder = Literal["inbox", "sent", "drafts", "trash"]
# Gmail and Exchange take at most 100 recipients per message; one address list of an agent
# should never come near it.
MAX_RECIPIENTS = 100
# What one message may carry in attachments, decoded: well inside Lambda's 6 MB request
# limit once base64 and JSON are around it.
MAX_ATTACHMENT_BYTES = 3 * 1024 * 1024
# A message read answers its text and HTML bodies within this many bytes together, counted as
# they travel in Lambda's answer (6 MB at most): UTF-8, in JSON that Lambda's own JSON carries
# as a string, so a quote or backslash takes 4 bytes and a line end or tab 3. The rest of the
# message read stays far below the remaining 2 MB (`parsing` bounds every part of it).
MAX_BODIES_BYTES = 4 * 1024 * 1024
# How many attachments a message read lists (its first ones), and how long a file name is.
MAX_ATTACHMENTS_LISTED = 100
MAX_FILENAME_CHARACTERS = 255


class Address(Model):
    address: str
    name: str | None = None


class MessageSummary(Model):
    id: str = Field(description="Opaque and stable; use it to read, mark or reply.")
    thread_id: str = Field(description="Opaque; the same for every message of a conversation.")
    folder: Folder
    sender: Address | None = Field(description="The From address.")
    to: list[Address]
    subject: str
    received_at: datetime
    read: bool
    message_id: str | None = Field(description="The Message-ID header.")


class MessagePage(Model):
    messages: list[MessageSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass it as `cursor` for the next page.")


class AttachmentInfo(Model):
    id: str = Field(description="Download it at .../attachments/{id}.")
    filename: str | None
    content_type: str
    size: int = Field(description="Decoded size in bytes.")
    inline: bool = Field(description="Shown in the body (an image, say) rather than attached.")
    content_id: str | None = None


class AttachmentContent(AttachmentInfo):
    content: str = Field(description="The attachment's bytes, in base64.")


class Message(MessageSummary):
    cc: list[Address]
    reply_to: list[Address]
    date: datetime | None = Field(description="The Date header, as the sender wrote it.")
    in_reply_to: str | None
    references: list[str]
    text: str | None = Field(description="The text/plain body, decoded to UTF-8.")
    html: str | None = Field(description="The text/html body, decoded to UTF-8.")
    truncated: bool = Field(
        description="Part of the message is left out: bodies cut to fit the answer, attachments "
        f"past the first {MAX_ATTACHMENTS_LISTED}, or headers and parts too long or too deep "
        "to read."
    )
    attachments: list[AttachmentInfo]


class ReadState(StrictModel):
    """PATCH body of a message."""

    model_config = example({"read": True})

    read: bool


# ---- sending ---------------------------------------------------------------------------


_FILENAME_FORBIDDEN = r'[\\/"]'


def _filename(value: str) -> str:
    printable(value)
    if re.search(_FILENAME_FORBIDDEN, value) or value in {".", ".."}:
        raise ValueError("must be a file name: no path separators or quotes")
    return value


def _single_part_type(value: str) -> str:
    if value.partition("/")[0].lower() in {"multipart", "message"}:
        # Either would need a structure (a boundary, an unencoded body) that bytes sent as a
        # base64 attachment do not have.
        raise ValueError(
            "must be a single part's type, not multipart/* or message/* (a saved message "
            "goes as application/octet-stream)"
        )
    return value


def _mail_text(value: str) -> str:
    encodable(value)
    if "\x00" in value:
        raise ValueError("must not hold a NUL character, which mail cannot carry")
    return value


def _base64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None
    return value


# Header text is one line (`printable`), which the email package can write; what an encoded
# word in it decodes to is not written (mail.compose).
Subject = Annotated[str, Field(max_length=998), AfterValidator(printable)]
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"  # RFC 6838
CONTENT_TYPE_PATTERN = rf"^{_MIME_NAME}/{_MIME_NAME}$"
ContentType = Annotated[
    str, Field(max_length=255, pattern=CONTENT_TYPE_PATTERN), AfterValidator(_single_part_type)
]


class OutgoingAttachment(StrictModel):
    filename: Annotated[
        str, Field(min_length=1, max_length=MAX_FILENAME_CHARACTERS), AfterValidator(_filename)
    ]
    content_type: ContentType = "application/octet-stream"
    content: Annotated[str, AfterValidator(_base64)] = Field(description="Base64.")

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.content)


class SendRequest(StrictModel):
    """POST body: a new message, or a reply when `reply_to_message_id` is given (its `to`
    then defaults to the original's Reply-To or sender, and its subject to the original's).
    `text` or `html` is required, and at most 100 recipients in all."""

    model_config = example(
        {
            "to": ["customer@example.com"],
            "subject": "Your order",
            "text": "It shipped today.",
        }
    )

    to: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    cc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    bcc: list[EmailAddress] = Field(default_factory=list, max_length=MAX_RECIPIENTS)
    subject: Subject | None = Field(
        default=None,
        description="Required for a new message; a reply's defaults to the original's.",
    )
    text: Annotated[str, Field(max_length=1_000_000), AfterValidator(_mail_text)] | None = None
    html: Annotated[str, Field(max_length=2_000_000), AfterValidator(_mail_text)] | None = None
    attachments: list[OutgoingAttachment] = Field(default_factory=list, max_length=20)
    reply_to_message_id: Annotated[str, Field(pattern=OPAQUE_ID_PATTERN)] | None = Field(
        default=None, description="Reply in this message's thread."
    )
    sender_name: DisplayName | None = Field(
        default=None,
        description="Shown with the connection's address; defaults to the agent's name.",
    )


class SentMessage(Model):
    id: str | None = Field(
        description="The sent message's id in the mailbox; null when the server kept no copy."
    )
    thread_id: str
    message_id: str = Field(description="The Message-ID header it was sent with.")
    recipients: list[str] = Field(description="Everyone it was sent to, Bcc included.")
    refused: list[str] = Field(
        description="Recipients the mail server refused while taking the others (IMAP/SMTP)."
    )
    sent_at: datetime
