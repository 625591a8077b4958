"""Reading and writing messages, called directly: hostile messages read without raising and
within what Lambda can answer, forwarded messages listed whole, messages sent 7-bit with
their threading intact, and the one-line rule of every header field of a send."""

from __future__ import annotations

import base64
import json
import re
import sys
import time
import unicodedata
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mailbridge.core.fields import NOT_IN_ONE_LINE, email_address
from mailbridge.mail.compose import compose
from mailbridge.mail.ids import pack
from mailbridge.mail.mailboxes import Outgoing
from mailbridge.mail.models import (
    MAX_ATTACHMENTS_LISTED,
    MAX_BODIES_BYTES,
    Address,
    Message,
    MessagePage,
    MessageSummary,
    OutgoingAttachment,
    SendRequest,
)
from mailbridge.mail.parsing import (
    MESSAGE_ID,
    SUMMARY_RECIPIENTS,
    Headers,
    ParsedMessage,
    attachment,
    parse_message,
    read_fields,
    read_headers,
)
from pydantic import ValidationError

# What Lambda answers at most (a synchronous invocation's response).
LAMBDA_ANSWER_BYTES = 6 * 1024 * 1024


def _nested(depth: int, *, kind: str) -> bytes:
    """A message whose parts nest `depth` deep: multiparts, or forwarded messages."""
    raw = b"From: Alice <alice@example.net>\r\nSubject: Deep\r\n"
    for level in range(depth):
        if kind == "multipart":
            raw += b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (level, level)
        else:
            raw += b"Content-Type: message/rfc822\r\n\r\n"
    return raw + b"Content-Type: text/plain\r\n\r\nAt the bottom.\r\n"


def _multipart(*parts: bytes, headers: bytes = b"") -> bytes:
    body = b"".join(b"--frontier\r\n" + part + b"\r\n" for part in parts)
    head = headers + b"Content-Type: multipart/mixed; boundary=frontier\r\n\r\n"
    return head + body + b"--frontier--\r\n"


HOSTILE = {
    "an encoded line break in From": (
        b"From: <=?utf-8?q?evil=0D=0ABcc:victim@example.org?=>\r\nSubject: x\r\n\r\nHi.\r\n"
    ),
    "an address without a domain": b"From: a@\r\nTo: @, <>, <@>\r\n\r\nHi.\r\n",
    "multiparts nested 1000 deep": _nested(1000, kind="multipart"),
    "forwarded messages nested 1000 deep": _nested(1000, kind="message"),
    "multiparts nested 40 deep": _nested(40, kind="multipart"),
    "RFC 2231 parameters both whole and continued": _multipart(
        b"Content-Type: text/plain\r\nContent-Disposition: attachment; "
        b"filename*=utf-8''a.txt; filename*0=b\r\n\r\nx",
        headers=b"X-Case: 2231\r\n",
    ).replace(b"boundary=frontier", b"boundary*=utf-8''frontier; boundary*0=x"),
    "a file name in a charset that cannot decode": _multipart(
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
        b"filename*=idna''%ff%ff\r\n\r\nx"
    ),
    "a body in UTF-7 that decodes to a lone surrogate": (
        b"Content-Type: text/plain; charset=utf-7\r\n\r\n+2AA- and more\r\n"
    ),
    "an encoded word that decodes to a lone surrogate": (
        b"Subject: =?utf-7?q?+2AA-?=\r\nFrom: =?utf-7?q?+2AA-?= <a@example.net>\r\n\r\nx\r\n"
    ),
    "a charset no one knows": (
        b"Content-Type: text/plain; charset=x-unheard-of\r\n\r\ncaf\xc3\xa9\r\n"
    ),
    "a charset that is not a text encoding": (
        b"Content-Type: text/plain; charset=zlib_codec\r\n\r\nx\r\n"
    ),
    "base64 that is not": (
        b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!=\r\n"
    ),
    "dates out of range": (b"Date: Mon, 1 Jan 99999 00:00:00 +0000\r\nResent-Date: x\r\n\r\nx\r\n"),
    "an offset of days": b"Date: Mon, 1 Jan 2024 00:00:00 +9999\r\n\r\nx\r\n",
    "8-bit headers that are not UTF-8": b"Subject: caf\xe9 \xff\xfe\r\nFrom: \xff <a@b>\r\n\r\nx",
    "control characters everywhere": (
        b"Subject: a\x00b\x07c\x1bd\r\nContent-Type: text/plain\r\n\r\na\x00b\x0bc\x1b\x7fd\r\n"
    ),
    "nothing": b"",
    "no headers at all": b"\x00\xff" * 500,
    "a continuation before any header": b" folded\r\n: no name\r\nFrom x\r\n\r\nbody",
    "a multipart without a boundary": b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nx\r\n",
    "5000 parts": _multipart(
        *[
            b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=%d.txt"
            b"\r\n\r\n%d" % (n, n)
            for n in range(5000)
        ]
    ),
}


def _answer(parsed: ParsedMessage) -> bytes:
    """The message as Lambda answers it: the API's JSON, a string in Lambda's JSON (both
    unescaped, as the Python 3.12 runtime and the API's serializer write them)."""
    message = Message(
        id="m",
        thread_id="t",
        folder="inbox",
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        read=False,
        **{field: getattr(parsed, field) for field in ParsedMessage._fields},
    )
    body = json.dumps(message.model_dump(mode="json"), ensure_ascii=False)
    return json.dumps({"statusCode": 200, "body": body}, ensure_ascii=False).encode()


def _assert_clean(parsed: ParsedMessage) -> None:
    """What reading promises whatever the bytes: one-line texts, real addresses and ids,
    bodies without control characters, and an answer Lambda can give."""
    names = [address.name for address in [*parsed.to, *parsed.cc, *parsed.reply_to]]
    if parsed.sender:
        names.append(parsed.sender.name)
    for line in [parsed.subject, *names, *(a.filename for a in parsed.attachments)]:
        assert line is None or not re.search(NOT_IN_ONE_LINE, line), line
    for address in [*parsed.to, *parsed.cc, *parsed.reply_to, *filter(None, [parsed.sender])]:
        assert email_address(address.address) == address.address
    for message_id in [parsed.message_id, parsed.in_reply_to, *parsed.references]:
        assert message_id is None or re.fullmatch(MESSAGE_ID, message_id)
    for body in (parsed.text, parsed.html):
        assert body is None or not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", body)
    assert len(_answer(parsed)) < LAMBDA_ANSWER_BYTES  # UTF-8 too: no lone surrogate


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_messages_are_read_as_far_as_they_can_be(raw: bytes) -> None:
    parsed = parse_message(raw)
    _assert_clean(parsed)
    for listed in parsed.attachments[:1] + parsed.attachments[-1:]:
        found = attachment(raw, listed.id)
        assert found is not None and found[0] == listed


def test_what_hostile_messages_give() -> None:
    """Each gives what could be read of it, and says when something was left out."""
    for name in ("an encoded line break in From", "an address without a domain"):
        parsed = parse_message(HOSTILE[name])
        assert (parsed.sender, parsed.to, parsed.text) == (None, [], "Hi.\r\n")
    for kind in ("multiparts", "forwarded messages"):
        deep = parse_message(HOSTILE[f"{kind} nested 1000 deep"])
        assert deep.sender is not None and deep.sender.address == "alice@example.net"
        assert deep.subject == "Deep" and deep.truncated
    # Within Python's recursion but past the depth walked: left out, and said so.
    forty = parse_message(HOSTILE["multiparts nested 40 deep"])
    assert (forty.text, forty.truncated) == (None, True)
    assert parse_message(_nested(20, kind="multipart")).text == "At the bottom."
    utf7 = parse_message(HOSTILE["a body in UTF-7 that decodes to a lone surrogate"])
    assert utf7.text == "\ufffd and more\r\n"
    unknown = parse_message(HOSTILE["a charset no one knows"])
    assert unknown.text == "café\r\n"  # read as UTF-8
    controls = parse_message(HOSTILE["control characters everywhere"])
    assert (controls.subject, controls.text) == ("a b c d", "abcd\r\n")
    assert (
        parse_message(HOSTILE["8-bit headers that are not UTF-8"]).subject
        == "caf\ufffd \ufffd\ufffd"
    )
    many = parse_message(HOSTILE["5000 parts"])
    assert len(many.attachments) == MAX_ATTACHMENTS_LISTED and many.truncated
    assert [a.filename for a in many.attachments[:2]] == ["0.txt", "1.txt"]
    assert not parse_message(b"From: a@example.net\r\n\r\nHi.\r\n").truncated


_FRAGMENTS = st.sampled_from(
    [
        b"From: ",
        b"To: ",
        b"Reply-To: ",
        b"Subject: ",
        b"Date: ",
        b"References: ",
        b"Content-Type: ",
        b"Content-Disposition: attachment; ",
        b"Content-Transfer-Encoding: ",
        b"multipart/mixed; boundary=b",
        b"message/rfc822",
        b"text/plain; charset=",
        b"utf-7",
        b"idna",
        b"base64",
        b"quoted-printable",
        b"filename",
        b"*0=",
        b"*=",
        b"''",
        b"%ff",
        b"=?utf-8?q?",
        b"=?utf-8?b?",
        b"?=",
        b"=0D=0A",
        b"<",
        b">",
        b"@",
        b'"',
        b";",
        b",",
        b":",
        b"\r\n",
        b"\r\n ",
        b"\r\n\r\n",
        b"--b\r\n",
        b"--b--\r\n",
        b"\xff",
        b"\x00",
        b"\xe2\x80\xa8",
    ]
)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(st.lists(_FRAGMENTS | st.binary(max_size=6), max_size=80).map(b"".join))
def test_any_bytes_are_read_without_raising(raw: bytes) -> None:
    parsed = parse_message(raw)
    _assert_clean(parsed)
    for listed in parsed.attachments:
        assert attachment(raw, listed.id) is not None


def test_only_addresses_come_out_of_address_headers() -> None:
    raw = (
        "From: =?utf-8?q?J=C3=B6rg?= <Joerg@Example.DE.>\r\n"
        'To: a@, jörg@bücher.de, <x@localhost>, k@\u212aelvin.example, "Bob\x07 Smith" '
        "<bob@example.org>\r\n"
        "Cc: <=?utf-8?q?evil=0D=0ABcc:v@example.org?=>\r\n"
        "Reply-To: Line\u2028break <r@example.net>\r\n\r\nx"
    ).encode()
    parsed = parse_message(raw)
    assert (parsed.sender.address, parsed.sender.name) == ("Joerg@example.de", "Jörg")  # type: ignore[union-attr]
    assert [(a.address, a.name) for a in parsed.to] == [("bob@example.org", "Bob Smith")]
    assert parsed.cc == []
    assert [(a.address, a.name) for a in parsed.reply_to] == [("r@example.net", "Line break")]
    crowd = ", ".join(f"p{n}@example.org" for n in range(300)).encode()
    listed = parse_message(b"To: " + crowd + b"\r\n\r\nx")
    assert len(listed.to) == 200 and listed.truncated


def test_what_decodes_slowly_is_read_only_as_far_as_it_shows() -> None:
    """Punycode decodes in quadratic time: a megabyte of it anywhere would take minutes."""
    slow = b"a" * 1_000_000
    raw = _multipart(
        b"Content-Type: text/plain; charset=punycode\r\n\r\n" + slow * 2,
        b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
        b"filename*=punycode''" + slow + b"\r\n\r\nx",
        headers=b"Subject: =?punycode?q?" + slow + b"?=\r\nTo: " + b"x, " * 1_000_000 + b"\r\n",
    )
    started = time.monotonic()
    parsed = parse_message(raw)
    assert time.monotonic() - started < 5
    assert parsed.text is not None and parsed.text.startswith("aaaa")  # read as UTF-8
    assert parsed.truncated


@pytest.mark.parametrize(
    ("reply_to", "kept", "dropped"),
    [
        ("usér@exämple.org", [], True),
        ("Bob <bob@example.org>, not an address, <x@localhost>", ["bob@example.org"], True),
        (
            ", ".join(f"p{n}@example.org" for n in range(300)),
            [f"p{n}@example.org" for n in range(200)],
            True,
        ),
        (
            "Bob <bob@example.org>, carol@example.org",
            ["bob@example.org", "carol@example.org"],
            False,
        ),
        ("bob@example.org, ", ["bob@example.org"], False),  # a trailing comma names no one
        (None, [], False),
    ],
    ids=["not ASCII", "some not addresses", "past the bound", "all kept", "an empty entry", "none"],
)
def test_a_reply_to_that_named_someone_left_out_says_so(
    reply_to: str | None, kept: list[str], dropped: bool
) -> None:
    """A reply to what is left, or to From, would not go where the author asked."""
    header = f"Reply-To: {reply_to}\r\n" if reply_to is not None else ""
    parsed = parse_message(f"From: alice@example.net\r\n{header}\r\nHi.\r\n".encode())
    assert [address.address for address in parsed.reply_to] == kept
    assert parsed.reply_to_dropped is dropped


def _body_message(text: str, html: str) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "a@example.net"
    message.set_content(text, cte="base64")
    message.add_alternative(html, subtype="html", cte="base64")
    return message.as_bytes()


def test_bodies_are_cut_to_what_lambda_can_answer() -> None:
    """Six million bytes of three-byte characters, and three million quotes: each costs
    Lambda's answer more than it says (3 bytes; 4 for a quote in JSON in JSON)."""
    text, html = "€" * 2_000_000, '"' * 3_000_000
    parsed = parse_message(_body_message(text, html))
    assert parsed.truncated
    assert parsed.text and parsed.html and text.startswith(parsed.text)
    assert html.startswith(parsed.html)
    # Each took its half of the budget.
    assert len(parsed.text) * 3 > MAX_BODIES_BYTES // 2 - 4
    assert len(parsed.html) * 4 > MAX_BODIES_BYTES // 2 - 4
    answer = _answer(parsed)
    assert MAX_BODIES_BYTES - 8 < len(answer) < LAMBDA_ANSWER_BYTES
    # A short text leaves the rest to the HTML.
    short = parse_message(_body_message("Short.\n", "<p>" + "é" * 3_000_000))
    assert short.text == "Short.\r\n" and short.truncated
    assert len(short.html.encode()) > MAX_BODIES_BYTES - 100  # type: ignore[union-attr]


def test_the_largest_message_read_fits_in_lambdas_answer() -> None:
    """Every field at the most reading gives, of the costliest characters."""
    quote = "😀"  # four bytes of UTF-8, as many as a quote in JSON in JSON
    people = ", ".join(f"{quote * 300} <p{n}@{'d' * 60}.example.org>" for n in range(300))
    # Ids as long as a header line can hold (983 characters in the brackets).
    ids = " ".join(f"<{n:03}{'i' * 978}@x>" for n in range(40))
    headers = (
        f"From: {people}\r\nTo: {people}\r\nCc: {people}\r\nReply-To: {people}\r\n"
        f"Subject: {quote * 2000}\r\nMessage-ID: <{'m' * 981}@x>\r\nReferences: {ids}\r\n"
    ).encode()
    parts = [
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(('"\\' * 2_000_000).encode()),
        b"Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(("\n" * 3_000_000).encode()),
        *[
            (
                f"Content-Type: application/pdf\r\nContent-ID: <{n:03}{'c' * 978}@x>\r\n"
                f"Content-Disposition: attachment; filename*=utf-8''{'%F0%9F%98%80' * 300}\r\n"
                "\r\nx"
            ).encode()
            for n in range(150)
        ],
    ]
    parsed = parse_message(_multipart(*parts, headers=headers))
    assert len(parsed.to) == len(parsed.cc) == len(parsed.reply_to) == 200
    assert len(parsed.attachments) == MAX_ATTACHMENTS_LISTED
    assert len(parsed.references) == 20 and parsed.truncated
    assert len(_answer(parsed)) < LAMBDA_ANSWER_BYTES - 512 * 1024  # with room to spare


def test_attachments_are_listed_with_their_names_bounded() -> None:
    raw = _multipart(
        b"Content-Type: text/plain\r\n\r\nSee attached.",
        b"Content-Type: application/pdf\r\nContent-ID: <logo@x>\r\n"
        b'Content-Disposition: inline; filename="a\xe2\x80\xa8b.pdf"\r\n\r\n%PDF',
        b"Content-Type: application/" + b"x" * 128 + b"\r\n"
        b"Content-Disposition: attachment; filename=" + b"n" * 400 + b"\r\n\r\ny",
        b"Content-Type: application/pdf\r\n"  # as Outlook names it
        b'Content-Disposition: attachment; filename="=?utf-8?B?w6TDtsO8LnBkZg==?="\r\n\r\nz',
    )
    parsed = parse_message(raw)
    first, second, third = parsed.attachments
    assert third.filename == "äöü.pdf"
    assert (first.filename, first.inline, first.content_id, first.size) == (
        "a b.pdf",
        True,
        "<logo@x>",
        4,
    )
    assert second.filename == "n" * 255 and second.content_type == "application/octet-stream"
    assert parsed.truncated and parsed.text == "See attached."
    assert attachment(raw, first.id) == (first, b"%PDF")
    assert attachment(raw, "0") is None  # the multipart itself


def _forwarding() -> tuple[bytes, bytes]:
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
    outer.add_attachment(b"after", maintype="text", subtype="plain", filename="after.txt")
    return outer.as_bytes(), inner.as_bytes()


def test_a_forwarded_message_is_one_attachment_given_back_whole() -> None:
    raw, inner = _forwarding()
    parsed = parse_message(raw)
    assert parsed.text == "See below.\r\n" and not parsed.truncated
    forwarded, after = parsed.attachments
    assert (forwarded.content_type, forwarded.size) == ("message/rfc822", len(inner))
    assert after.filename == "after.txt"  # the parts after it are still counted
    found = attachment(raw, forwarded.id)
    assert found is not None and found[1] == inner
    assert message_from_bytes(found[1], policy=policy.default)["Subject"] == "The original"


# ---- composing ---------------------------------------------------------------------------


def _compose(replying_to: ParsedMessage | None = None, **fields: Any) -> Outgoing:
    given: dict[str, Any] = {
        "sender": "agent@example.com",
        "sender_name": "Agent",
        "to": ["customer@example.org"],
        "cc": [],
        "bcc": [],
        "subject": "Hello",
        "text": "Hello.",
        "html": None,
        "attachments": [],
        "replying_to": replying_to,
        "now": datetime(2026, 1, 1, tzinfo=UTC),
        "message_key": "agent\nkey",
    } | fields
    return compose(**given)


def test_a_message_is_sent_7_bit_and_reads_back_the_same() -> None:
    # Short lines: what the standard library sends as 8bit unless told otherwise.
    text = "Grüße aus Köln — ✓ 😀\nZweite Zeile.\n"
    html = "<p>Grüße — <b>é</b></p>\n"
    outgoing = _compose(
        sender_name="Jörg Müller",
        subject="Grüße — ünïcødé " + "ö" * 200,
        text=text,
        html=html,
        attachments=[
            OutgoingAttachment(
                filename="Bericht für Köln.txt",
                content_type="text/plain",
                content=base64.b64encode("Grüße".encode()).decode(),
            )
        ],
    )
    raw = outgoing.as_bytes(with_bcc=True)
    raw.decode("ascii")  # every part 7-bit: no server needs 8BITMIME or SMTPUTF8
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    read = message_from_bytes(raw, policy=policy.default)
    assert isinstance(read, EmailMessage)
    assert read["Subject"] == "Grüße — ünïcødé " + "ö" * 200
    assert read["From"].addresses[0].display_name == "Jörg Müller"
    plain, rich = read.get_body(("plain",)), read.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content().replace("\r\n", "\n") == text
    assert rich.get_content().replace("\r\n", "\n") == html
    (attached,) = read.iter_attachments()
    assert attached.get_filename() == "Bericht für Köln.txt"
    assert attached.get_payload(decode=True) == "Grüße".encode()


def test_a_name_holding_an_encoded_word_is_left_out_of_from() -> None:
    # An agent's name saved before names were checked for one (core.fields.display_name).
    name = "=?utf-8?q?a=0D=0ABcc:_victim@example.org?="
    read = message_from_bytes(_compose(sender_name=name).as_bytes(), policy=policy.default)
    assert "Bcc" not in read
    assert (read["From"].addresses[0].display_name, read["From"]) == ("", "agent@example.com")


def test_a_reply_threads_with_ids_as_the_original_wrote_them() -> None:
    outlook = (
        "<DM6PR11MB4073D5B0C8E3C6F3C1A2B3C4D5E6F7A8B9@DM6PR11MB4073.namprd11.prod.outlook.com>"
    )
    over_long = "<" + "x" * 2000 + "@example.net>"
    chain = [f"<{n}@example.net>" for n in range(500)]
    references = " ".join([chain[0], over_long, "<not an id", "<jörg@x>", *chain[1:]])
    original = parse_message(
        (
            f"From: a@example.net\r\nMessage-ID: {outlook}\r\nReferences: {references}\r\n"
            "\r\nQuestion?\r\n"
        ).encode()
    )
    raw = _compose(original).as_bytes()
    assert b"=?" not in raw  # no id folded into encoded words
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    read = message_from_bytes(raw, policy=policy.default)
    assert read["In-Reply-To"] == outlook
    assert read["References"].split() == [chain[0], *chain[-18:], outlook]
    # An original whose own id cannot be written: no In-Reply-To, its thread still kept.
    unnamed = parse_message(f"Message-ID: {over_long}\r\nReferences: {chain[0]}\r\n\r\nx".encode())
    assert unnamed.message_id is None
    read = message_from_bytes(_compose(unnamed).as_bytes(), policy=policy.default)
    assert (read["In-Reply-To"], read["References"]) == (None, chain[0])


# ---- summaries ---------------------------------------------------------------------------

# What summaries once read wrong: an encoded word that is not base64, one that decodes to a lone
# surrogate (which no UTF-8 answer can carry), a subject of 400,000 characters.
SUMMARY_PROBES = {
    "not base64": b"Subject: =?utf-8?b?BYWJj?=\r\nFrom: =?utf-8?b?BYWJj?= <a@example.net>\r\n\r\n",
    "a lone surrogate": (
        b"Subject: =?utf-7?q?+2AA-?=\r\nFrom: =?utf-7?q?+2AA-?= <a@example.net>\r\n\r\n"
    ),
    "400,000 characters": b"Subject: " + b"x" * 400_000 + b"\r\nFrom: <a@example.net>\r\n\r\n",
}


def _assert_clean_summary(headers: Headers) -> None:
    """What a summary promises whatever it was read from: one-line text a header line holds
    (no lone surrogate), real addresses and ids, the first recipients only."""
    people = [*headers.to, *filter(None, [headers.sender])]
    for line in [headers.subject, *(person.name for person in people)]:
        assert line is None or not re.search(NOT_IN_ONE_LINE, line), line
    assert len(headers.subject) <= 998 and len(headers.to) <= SUMMARY_RECIPIENTS
    for person in people:
        assert email_address(person.address) == person.address
        assert person.name is None or len(person.name) <= 200
    for message_id in [headers.message_id, headers.in_reply_to, *headers.references]:
        assert message_id is None or re.fullmatch(MESSAGE_ID, message_id)


@pytest.mark.parametrize("raw", SUMMARY_PROBES.values(), ids=SUMMARY_PROBES.keys())
def test_a_summary_is_read_as_the_message_is(raw: bytes) -> None:
    summary, message = read_headers(raw), parse_message(raw)
    _assert_clean_summary(summary)
    assert (summary.subject, summary.sender) == (message.subject, message.sender)
    assert summary.sender is not None and summary.sender.address == "a@example.net"


def test_what_providers_give_as_json_is_held_to_the_same_rules() -> None:
    """Gmail's header values and Graph's fields are JSON strings, whose escapes can make lone
    surrogates: each is a character that could not be read."""
    gmail = read_headers(
        [("Subject", "Hi \ud800" + " there" * 100_000), ("From", "Al\udc80 <a@example.net>")]
    )
    assert gmail.subject.startswith("Hi \ufffd there") and len(gmail.subject) == 998
    assert gmail.sender == Address(address="a@example.net", name="Al\ufffd")
    crowd = [(f"P\ud800{n}", f"p{n}@example.org") for n in range(1000)]
    graph = read_fields(
        subject="Hi\ud800\nthere",
        sender=("\ud800" * 500, "a@example.net"),
        to=[("", "not an address"), *crowd],
        message_id="<m\ud800@x> <m@x>",
    )
    assert (graph.subject, graph.message_id) == ("Hi\ufffd there", "<m@x>")
    assert graph.sender == Address(address="a@example.net", name="\ufffd" * 200)
    assert [person.address for person in graph.to] == [f"p{n}@example.org" for n in range(10)]
    assert graph.to[0].name == "P\ufffd0"


_ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)


@settings(max_examples=300, derandomize=True, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["From", "To", "Subject", "Message-ID", "References"]), _ANY_TEXT)
    ),
    _ANY_TEXT,
    st.lists(st.tuples(_ANY_TEXT, _ANY_TEXT), max_size=12),
)
def test_any_text_is_read_into_a_clean_summary(
    fields: list[tuple[str, str]], text: str, people: list[tuple[str, str]]
) -> None:
    _assert_clean_summary(read_headers(fields))
    _assert_clean_summary(
        read_headers("\r\n".join(f"{n}: {v}" for n, v in fields).encode(errors="surrogatepass"))
    )
    _assert_clean_summary(
        read_fields(subject=text, sender=(text, text), to=people, message_id=text)
    )


def test_a_page_of_the_largest_summaries_fits_well_within_lambdas_answer() -> None:
    """Every field of 100 summaries at the most reading gives, of the costliest characters
    (a quote: 4 bytes in JSON in JSON), with ids and a cursor as long as the API takes."""
    address = f"{'l' * 64}@{'d' * 63}.{'e' * 63}.{'f' * 63}.{'g' * 61}"  # 64 and 253
    people = ", ".join(f"{'😀' * 300} <{address}>" for _ in range(1000))
    raw = (
        f"From: {people}\r\nTo: {people}\r\nSubject: {chr(34) * 400_000}\r\n"
        f"Message-ID: <{chr(34) * 983}>\r\n\r\n"
    ).encode()
    headers = read_headers(raw)
    assert (len(headers.subject), len(headers.to), len(headers.message_id or "")) == (998, 10, 985)
    assert headers.sender is not None and len(headers.sender.name or "") == 200
    graph_id = "A" * 512  # the longest Graph id the adapter takes
    summary = MessageSummary(
        id=pack("graph", "drafts", graph_id),
        thread_id=pack("graph-thread", graph_id),
        folder="drafts",
        sender=headers.sender,
        to=headers.to,
        subject=headers.subject,
        received_at=datetime(2026, 1, 1, tzinfo=UTC),
        read=False,
        message_id=headers.message_id,
    )
    page = MessagePage(messages=[summary] * 100, next_cursor="c" * 2048)
    body = json.dumps(page.model_dump(mode="json"), ensure_ascii=False)
    answer = json.dumps({"statusCode": 200, "body": body}, ensure_ascii=False).encode()
    assert len(answer) < LAMBDA_ANSWER_BYTES // 2


# ---- the one-line rule -------------------------------------------------------------------


def test_one_line_text_is_refused_every_unicode_break_and_control() -> None:
    every = "".join(chr(point) for point in range(sys.maxunicode + 1))
    refused = set(re.findall(NOT_IN_ONE_LINE, every))
    assert refused == {c for c in every if unicodedata.category(c) in {"Cc", "Cs", "Zl", "Zp"}}
    assert {c for c in every if len(f"a{c}b".splitlines()) > 1} <= refused


BREAKS = ["\u2028", "\u2029", "\x85", "\x0b", "\x1c", "\r", "\ud800"]


@pytest.mark.parametrize("character", BREAKS, ids=[f"U+{ord(c):04X}" for c in BREAKS])
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: {"subject": f"Hi{c}there"}, "subject"),
        (lambda c: {"sender_name": f"Agent{c}"}, "sender_name"),
        (lambda c: {"to": [f"a{c}b@example.org"]}, "to.0"),
        (lambda c: {"cc": [f"a@example.org{c}"]}, "cc.0"),
        (lambda c: {"bcc": [f"{c}a@example.org"]}, "bcc.0"),
        (
            lambda c: {"attachments": [{"filename": f"a{c}.txt", "content": "eA=="}]},
            "attachments.0.filename",
        ),
        (
            lambda c: {
                "attachments": [{"filename": "a", "content_type": f"a/b{c}", "content": "eA=="}]
            },
            "attachments.0.content_type",
        ),
    ],
)
def test_no_header_field_takes_a_line_break(change: Any, field: str, character: str) -> None:
    body = {"to": ["customer@example.org"], "subject": "Hi", "text": "Hello."} | change(character)
    with pytest.raises(ValidationError) as refused:
        SendRequest.model_validate(body)
    assert [".".join(map(str, error["loc"])) for error in refused.value.errors()] == [field]


def test_bodies_take_line_breaks_but_not_lone_surrogates() -> None:
    fine = SendRequest.model_validate({"to": ["a@example.org"], "subject": "x", "text": "a\u2028b"})
    assert fine.text == "a\u2028b"
    for field in ("text", "html"):
        with pytest.raises(ValidationError) as refused:
            SendRequest.model_validate({"to": ["a@example.org"], "subject": "x", field: "\ud800"})
        assert refused.value.errors()[0]["loc"] == (field,)
