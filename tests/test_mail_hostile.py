"""Hostile mail through the API, against Dovecot and a real SMTP server: messages whose headers
or structure the standard library chokes on are read (200) and replied to without a 500, a
large message's answer fits in Lambda's, hostile headers are listed within bounds, a
forwarded message is one attachment, no one-line field of a send takes a Unicode line
break, and no RFC 2047 encoded word, the agent's or a stranger's, becomes a header."""

from __future__ import annotations

import base64
import json
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from mailbridge_tools.sandbox import SmtpServer
from support import MailAgent

# What Lambda answers at most (a synchronous invocation's response).
LAMBDA_ANSWER_BYTES = 6 * 1024 * 1024


def _deep(depth: int) -> bytes:
    raw = b"From: Alice <alice@example.net>\r\nSubject: Deep\r\nMessage-ID: <deep@example.net>\r\n"
    for level in range(depth):
        raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
    return raw + b"Content-Type: text/plain\r\n\r\nAt the bottom.\r\n"


def _read_newest(agent: MailAgent, raw: bytes) -> dict[str, Any]:
    """Delivers `raw` and reads it back through the API."""
    agent.deliver(raw)
    listed = agent.runtime.get(agent.messages_path(limit=1))
    assert listed.status == 200, listed.text
    message_id = listed.json()["messages"][0]["id"]
    response = agent.runtime.get(agent.message_path(message_id))
    assert response.status == 200, response.text
    message: dict[str, Any] = response.json()
    return message


def _reply(agent: MailAgent, message_id: str) -> Any:
    return agent.runtime.request(
        "POST",
        agent.send_path,
        {"reply_to_message_id": message_id, "text": "Thanks."},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )


@pytest.mark.parametrize(
    "sender",
    [
        b"<=?utf-8?q?evil=0D=0ABcc:victim@example.org?=>",
        b"=?utf-8?q?a=0D=0ABcc=3A_victim=40example.org?=@example.net",
        b"a@",
        b"j\xc3\xb6rg@b\xc3\xbccher.de",
    ],
    ids=["an encoded line break", "an encoded word before the @", "no domain", "not ASCII"],
)
def test_a_message_from_no_real_address_is_read_and_not_replied_to(
    imap_agent: MailAgent, smtp: SmtpServer, sender: bytes
) -> None:
    raw = b"From: " + sender + b"\r\nSubject: Hostile\r\nMessage-ID: <h@example.net>\r\n\r\nHi.\r\n"
    message = _read_newest(imap_agent, raw)
    assert (message["subject"], message["sender"], message["text"]) == ("Hostile", None, "Hi.\r\n")
    before = len(smtp.messages)
    reply = _reply(imap_agent, message["id"])
    assert (reply.status, reply.error["field"]) == (422, "to"), reply.text
    assert len(smtp.messages) == before


def test_a_message_nested_past_the_parsers_recursion_is_read_and_replied_to(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    message = _read_newest(imap_agent, _deep(1000))
    assert message["sender"] == {"address": "alice@example.net", "name": "Alice"}
    assert (message["subject"], message["text"], message["truncated"]) == ("Deep", None, True)
    before = len(smtp.messages)
    reply = _reply(imap_agent, message["id"])
    assert reply.status == 200, reply.text
    (sent,) = smtp.messages[before:]
    assert sent.recipients == ["alice@example.net"]
    assert message_from_bytes(sent.content, policy=policy.default)["In-Reply-To"] == (
        "<deep@example.net>"
    )


def test_a_large_message_is_cut_to_what_lambda_can_answer(imap_agent: MailAgent) -> None:
    large = EmailMessage(policy=policy.SMTP)
    large["From"] = "alice@example.net"
    large["Subject"] = "Large"
    large.set_content("\x00\x1b" + "日本語" * 1_000_000, cte="base64")  # 9 MB of UTF-8
    large.add_alternative('<p a="' + '"' * 2_000_000 + '">', subtype="html", cte="base64")
    message = _read_newest(imap_agent, large.as_bytes())
    assert message["truncated"] is True
    assert message["text"].startswith("日本語日本語")  # without its control characters
    assert 4_000_000 < lambda_answer_bytes(message) < LAMBDA_ANSWER_BYTES


def lambda_answer_bytes(value: Any) -> int:
    """How many bytes `value` takes as Lambda's Python 3.12 runtime carries the API's JSON:
    a string in its own."""
    body = json.dumps(value, ensure_ascii=False)
    return len(json.dumps({"statusCode": 200, "body": body}, ensure_ascii=False).encode())


def test_summaries_of_hostile_headers_are_listed_within_bounds(imap_agent: MailAgent) -> None:
    """An encoded word that is not base64 (the decoder raised), one that decodes to a lone
    surrogate (no UTF-8 answer can carry it), and subjects of 400,000 characters (a page of
    megabytes): each is listed as a message read shows it."""
    head = b"From: Alice <alice@example.net>\r\nMessage-ID: <%d@example.net>\r\n"
    subjects = [b"=?utf-8?b?BYWJj?=", b"=?utf-7?q?+2AA-?=", *[b"x" * 400_000] * 6]
    for number, subject in enumerate(subjects):
        imap_agent.deliver(head % number + b"Subject: " + subject + b"\r\n\r\nHi.\r\n")
    listed = imap_agent.runtime.get(imap_agent.messages_path(limit=len(subjects)))
    assert listed.status == 200, listed.text
    summaries = listed.json()["messages"]
    assert [len(summary["subject"]) for summary in summaries] == [998] * 6 + [17, 5]
    assert all(summary["sender"]["address"] == "alice@example.net" for summary in summaries)
    assert lambda_answer_bytes(listed.json()) < 20_000
    for summary in summaries[-2:]:
        read = imap_agent.runtime.get(imap_agent.message_path(summary["id"])).json()
        assert (read["subject"], read["sender"]) == (summary["subject"], summary["sender"])


def test_a_forwarded_message_is_one_attachment(imap_agent: MailAgent) -> None:
    inner = EmailMessage(policy=policy.SMTP)
    inner["From"] = "carol@example.org"
    inner["Subject"] = "The original"
    inner.set_content("Inner words.")
    inner.add_attachment(b"%PDF", maintype="application", subtype="pdf", filename="inner.pdf")
    outer = EmailMessage(policy=policy.SMTP)
    outer["From"] = "alice@example.net"
    outer["Subject"] = "Fwd: The original"
    outer.set_content("See below.")
    outer.add_attachment(inner)
    message = _read_newest(imap_agent, outer.as_bytes())
    assert message["text"] == "See below.\r\n"
    (forwarded,) = message["attachments"]
    assert forwarded["content_type"] == "message/rfc822"
    download = imap_agent.runtime.get(
        f"{imap_agent.message_path(message['id'])}/attachments/{forwarded['id']}"
    )
    assert download.status == 200, download.text
    content = base64.b64decode(download.json()["content"])
    assert content == inner.as_bytes() and len(content) == forwarded["size"]


BREAKS = ["\u2028", "\u2029", "\x85", "\ud800"]


@pytest.mark.parametrize("character", BREAKS, ids=[f"U+{ord(c):04X}" for c in BREAKS])
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: {"subject": f"Hi{c}Bcc: victim@example.org"}, "subject"),
        (lambda c: {"sender_name": f"Agent{c}"}, "sender_name"),
        (lambda c: {"to": [f"victim@example.org{c}"]}, "to.0"),
        (
            lambda c: {"attachments": [{"filename": f"a{c}.txt", "content": "eA=="}]},
            "attachments.0.filename",
        ),
    ],
)
def test_a_line_break_in_any_header_field_is_refused_naming_it(
    imap_agent: MailAgent, smtp: SmtpServer, change: Any, field: str, character: str
) -> None:
    body = {"to": ["customer@example.org"], "subject": "Hi", "text": "Hello."} | change(character)
    before = len(smtp.messages)
    response = imap_agent.runtime.request(
        "POST", imap_agent.send_path, body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert (response.status, response.error.get("field")) == (422, field), response.text
    assert len(smtp.messages) == before


def test_a_lone_surrogate_in_a_body_is_refused_naming_it(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    for field in ("text", "html"):
        body = {"to": ["customer@example.org"], "subject": "Hi", field: "a\ud800b"}
        response = imap_agent.runtime.request(
            "POST", imap_agent.send_path, body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        assert (response.status, response.error.get("field")) == (422, field), response.text


# Each decodes to a line break and a header; the standard library wrote them as such (a Bcc
# that Gmail's and Graph's raw sends obey), before Python 3.13 for a subject or a name and in
# every version for a file name.
ENCODED_BCC = "=?utf-8?q?Hi=0D=0ABcc:_victim@example.org?="
ENCODED_HEADER = "=?utf-8?q?a=0D=0AX-Injected:_1?="
# What the standard library writes, and a receiving one reads, of a message we send.
SENT_HEADERS = {
    *("from", "to", "subject", "date", "message-id"),
    *("mime-version", "content-type", "content-transfer-encoding"),
}


def sent_headers(content: bytes) -> set[str]:
    """The names of the headers of `content`'s parts, lower-cased."""
    message = message_from_bytes(content, policy=policy.default)
    return {name.lower() for part in message.walk() for name in part}


def test_an_encoded_line_break_in_a_subject_or_file_name_is_sent_as_written(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    before = len(smtp.messages)
    body = {
        "to": ["customer@example.org"],
        "subject": ENCODED_BCC,
        "text": "Hello.",
        "attachments": [{"filename": ENCODED_HEADER, "content": "eA=="}],
    }
    response = imap_agent.runtime.request(
        "POST", imap_agent.send_path, body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert response.status == 200, response.text
    assert response.json()["recipients"] == ["customer@example.org"]
    (sent,) = smtp.messages[before:]
    assert sent.recipients == ["customer@example.org"]
    assert sent_headers(sent.content) == SENT_HEADERS | {"content-disposition"}
    assert f"\r\nSubject: {ENCODED_BCC}\r\n".encode() in sent.content
    assert f'filename="{ENCODED_HEADER}"'.encode() in sent.content


def test_a_sender_name_holding_an_encoded_word_is_refused_naming_it(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    before = len(smtp.messages)
    body = {"to": ["customer@example.org"], "subject": "Hi", "text": "Hello."}
    response = imap_agent.runtime.request(
        "POST",
        imap_agent.send_path,
        body | {"sender_name": ENCODED_BCC},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert (response.status, response.error.get("field")) == (422, "sender_name"), response.text
    assert len(smtp.messages) == before


@pytest.mark.parametrize("field", ["to", "cc", "bcc"])
def test_an_address_holding_an_encoded_word_is_refused_naming_it(
    imap_agent: MailAgent, smtp: SmtpServer, field: str
) -> None:
    # A valid local part (RFC 5322 allows "=" and "?"), which the library decoded as it wrote
    # it; RFC 2047 allows no encoded word in an address.
    before = len(smtp.messages)
    address = "=?utf-8?q?a=0D=0ABcc=3A_victim=40example.org?=@example.org"
    body = {"to": ["customer@example.org"], "subject": "Hi", "text": "Hello."} | {field: [address]}
    response = imap_agent.runtime.request(
        "POST", imap_agent.send_path, body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert (response.status, response.error.get("field")) == (422, f"{field}.0"), response.text
    assert len(smtp.messages) == before


def test_a_reply_to_a_strangers_encoded_subject_adds_no_header(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    # Encoded twice: read once, the subject is ENCODED_BCC, which a reply's "Re:" took on.
    subject = b"=?utf-8?q?=3D=3Futf-8=3Fq=3FHi=3D0D=3D0ABcc=3A=5Fvictim=40example.org=3F=3D?="
    raw = b"From: alice@example.net\r\nMessage-ID: <enc@example.net>\r\nSubject: "
    message = _read_newest(imap_agent, raw + subject + b"\r\n\r\nHi.\r\n")
    assert message["subject"] == ENCODED_BCC
    before = len(smtp.messages)
    reply = _reply(imap_agent, message["id"])
    assert reply.status == 200, reply.text
    (sent,) = smtp.messages[before:]
    assert sent.recipients == ["alice@example.net"]
    assert sent_headers(sent.content) == SENT_HEADERS | {"in-reply-to", "references"}
    assert f"\r\nSubject: Re: {ENCODED_BCC}\r\n".encode() in sent.content


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text": "a\x00b"}, "text"),
        ({"html": "<p>a\x00b</p>"}, "html"),
        (
            {"attachments": [{"filename": "a", "content_type": "multipart/mixed", "content": ""}]},
            "attachments.0.content_type",
        ),
        (
            {"attachments": [{"filename": "a", "content_type": "Message/RFC822", "content": ""}]},
            "attachments.0.content_type",
        ),
    ],
    ids=["NUL in text", "NUL in html", "a multipart attachment", "a message attachment"],
)
def test_what_mail_cannot_carry_is_refused_naming_it(
    imap_agent: MailAgent, smtp: SmtpServer, change: dict[str, Any], field: str
) -> None:
    before = len(smtp.messages)
    body = {"to": ["customer@example.org"], "subject": "Hi", "text": "Hello."} | change
    response = imap_agent.runtime.request(
        "POST", imap_agent.send_path, body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert (response.status, response.error.get("field")) == (422, field), response.text
    assert len(smtp.messages) == before
