"""The fake mail APIs check what the real ones check: Gmail's message endpoints (scopes, ids,
paging, threading, exact bytes, throttling). Driven with plain requests, as the service's
adapters will drive them."""

from __future__ import annotations

import base64
import datetime
import uuid
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
import requests
from mailbridge_tools.sandbox import (
    CertificateAuthority,
    FakeGoogle,
    FakeMicrosoft,
)

GMAIL = "https://www.googleapis.com/auth/gmail."
IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}
SENT_FOLDER = "Gesendete Elemente"
START = datetime.datetime(2025, 3, 1, 9, 0, tzinfo=datetime.UTC)


def mail(
    subject: str,
    *,
    sender: str = "Ana Lima <ana@example.test>",
    to: str = "someone@example.test",
    message_id: str | None = None,
    answering: str | None = None,
    body: str = "Hello there.\r\n",
) -> bytes:
    """An RFC 5322 message, CRLF line ends, as a mail server holds one."""
    headers = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Sat, 01 Mar 2025 09:00:00 +0000",
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@example.test>'}",
    ]
    if answering:
        headers += [f"In-Reply-To: {answering}", f"References: {answering}"]
    return ("\r\n".join([*headers, "", ""]) + body).encode()


def with_attachment(subject: str) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"], message["To"], message["Subject"] = "ana@example.test", "me@x.test", subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@example.test>"
    message.set_content("See attached.")
    message.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="a.pdf")
    return message.as_bytes()


class Client:
    """A bearer token's caller of a fake's API, trusting the test CA."""

    def __init__(self, base: str, token: str, ca: CertificateAuthority) -> None:
        self.base, self.token, self.ca = base, token, str(ca.ca_path)

    def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **options: Any
    ) -> requests.Response:
        url = path if path.startswith("https://") else self.base + path
        sent = {"Authorization": f"Bearer {self.token}", **(headers or {})}
        return requests.request(method, url, headers=sent, verify=self.ca, timeout=10, **options)


def fresh_account(fake: FakeGoogle | FakeMicrosoft, domain: str) -> str:
    email = f"box-{uuid.uuid4().hex[:8]}@{domain}"
    fake.add_account(email, inbox_total=0, inbox_unread=0)
    return email


# -- Gmail


@pytest.fixture
def gmail(google: FakeGoogle, ca: CertificateAuthority) -> tuple[str, Client]:
    """A fresh account and a client holding gmail.modify for it."""
    email = fresh_account(google, "workspace.example")
    token = google.issue_token(email, [GMAIL + "modify"])
    return email, Client(google.base_url + "/gmail/v1/users/me", token, ca)


def deliver_in_order(fake: FakeGoogle | FakeMicrosoft, email: str, count: int) -> list[str]:
    return [
        fake.deliver(email, mail(f"Note {n}"), received_at=START + datetime.timedelta(minutes=n))
        for n in range(count)
    ]


def test_gmail_lists_newest_first_in_pages_of_opaque_tokens(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    ids = deliver_in_order(google, email, 5)
    pages, token = [], None
    while True:
        page = client.call(
            "GET",
            "/messages",
            params={"maxResults": 2, "pageToken": token} if token else {"maxResults": 2},
        ).json()
        pages.append([m["id"] for m in page["messages"]])
        assert page["resultSizeEstimate"] >= len(page["messages"])
        token = page.get("nextPageToken")
        if token is None:
            break
    assert pages == [ids[:2:-1], ids[2:0:-1], ids[:1]]
    refused = client.call("GET", "/messages", params={"pageToken": "12345"})
    assert refused.status_code == 400 and refused.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_gmail_caps_pages_at_500_and_answers_no_messages_key_when_empty(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    assert client.call("GET", "/messages").json() == {"resultSizeEstimate": 0}
    deliver_in_order(google, email, 3)
    assert len(client.call("GET", "/messages", params={"maxResults": 900}).json()["messages"]) == 3
    assert client.call("GET", "/messages", params={"maxResults": 0}).status_code == 400


def test_gmail_filters_by_labels_and_unread_only(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    unread = google.deliver(email, mail("Unread"))
    google.deliver(email, mail("Read"), unread=False)
    found = client.call("GET", "/messages", params={"labelIds": "INBOX", "q": "is:unread"})
    assert [m["id"] for m in found.json()["messages"]] == [unread]
    both = client.call("GET", "/messages", params=[("labelIds", "INBOX"), ("labelIds", "UNREAD")])
    assert [m["id"] for m in both.json()["messages"]] == [unread]
    assert "messages" not in client.call("GET", "/messages", params={"labelIds": "SENT"}).json()
    assert client.call("GET", "/messages", params={"q": "from:ana"}).status_code == 400


def test_gmail_metadata_holds_only_the_headers_asked_for(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    when = datetime.datetime(2025, 3, 2, 8, 30, tzinfo=datetime.UTC)
    message_id = google.deliver(email, mail("Quarterly numbers"), received_at=when)
    got = client.call(
        "GET",
        f"/messages/{message_id}",
        params=[
            ("format", "metadata"),
            ("metadataHeaders", "From"),
            ("metadataHeaders", "subject"),
        ],
    ).json()
    assert got["payload"]["headers"] == [
        {"name": "From", "value": "Ana Lima <ana@example.test>"},
        {"name": "Subject", "value": "Quarterly numbers"},
    ]
    assert got["threadId"] == message_id and set(got["labelIds"]) == {"INBOX", "UNREAD"}
    assert got["internalDate"] == str(int(when.timestamp() * 1000))
    assert got["snippet"] == "Hello there." and "raw" not in got


def test_gmail_raw_is_the_exact_bytes_in_base64url(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    raw = with_attachment("Bytes ~~~ ??? >>>")
    message_id = google.deliver(email, raw)
    got = client.call("GET", f"/messages/{message_id}", params={"format": "raw"}).json()
    assert base64.urlsafe_b64decode(got["raw"]) == raw
    assert "payload" not in got
    # The fake leaves format=full out: a client must ask for what it reads.
    assert client.call("GET", f"/messages/{message_id}").status_code == 400


def test_gmail_answers_unknown_ids_404_and_malformed_ones_400(gmail: tuple[str, Client]) -> None:
    _, client = gmail
    missing = client.call("GET", "/messages/0123456789abcdef", params={"format": "raw"})
    assert missing.status_code == 404
    assert missing.json()["error"]["errors"][0]["reason"] == "notFound"
    assert client.call("GET", "/messages/not-an-id", params={"format": "raw"}).status_code == 400


def test_gmail_unread_label_drives_the_read_flag(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    message_id = google.deliver(email, mail("Mark me"))
    read = client.call(
        "POST", f"/messages/{message_id}/modify", json={"removeLabelIds": ["UNREAD"]}
    )
    assert read.json() == {"id": message_id, "threadId": message_id, "labelIds": ["INBOX"]}
    assert google.messages(email)[0].read
    client.call("POST", f"/messages/{message_id}/modify", json={"addLabelIds": ["UNREAD"]})
    assert not google.messages(email)[0].read
    sent = client.call("POST", f"/messages/{message_id}/modify", json={"addLabelIds": ["SENT"]})
    assert sent.status_code == 400


@pytest.mark.parametrize(
    ("scope", "read", "modify", "send"),
    [
        (GMAIL + "readonly", 200, 403, 403),
        (GMAIL + "send", 403, 403, 200),
        (GMAIL + "compose", 403, 403, 200),
        (GMAIL + "modify", 200, 200, 200),
        ("https://mail.google.com/", 200, 200, 200),
        (GMAIL + "metadata", 200, 403, 403),
    ],
)
def test_gmail_enforces_scopes_as_google_does(
    google: FakeGoogle, ca: CertificateAuthority, scope: str, read: int, modify: int, send: int
) -> None:
    email = fresh_account(google, "workspace.example")
    message_id = google.deliver(email, mail("Scoped"))
    client = Client(google.base_url + "/gmail/v1/users/me", google.issue_token(email, [scope]), ca)
    outgoing = base64.urlsafe_b64encode(mail("Out", sender=email)).decode()
    answers = [
        client.call("GET", "/messages"),
        client.call("GET", f"/messages/{message_id}", params={"format": "metadata"}),
        client.call("POST", f"/messages/{message_id}/modify", json={}),
        client.call("POST", "/messages/send", json={"raw": outgoing}),
    ]
    assert [answer.status_code for answer in answers] == [read, read, modify, send]
    for refused in (answer for answer in answers if answer.status_code == 403):
        assert refused.json()["error"]["status"] == "PERMISSION_DENIED"


def test_gmail_metadata_scope_reads_no_bodies_and_searches_nothing(
    google: FakeGoogle, ca: CertificateAuthority
) -> None:
    email = fresh_account(google, "workspace.example")
    message_id = google.deliver(email, mail("Private"))
    client = Client(
        google.base_url + "/gmail/v1/users/me", google.issue_token(email, [GMAIL + "metadata"]), ca
    )
    assert client.call("GET", "/messages", params={"q": "is:unread"}).status_code == 403
    assert (
        client.call("GET", f"/messages/{message_id}", params={"format": "raw"}).status_code == 403
    )


def test_gmail_refuses_requests_without_a_live_token(gmail: tuple[str, Client]) -> None:
    _, client = gmail
    client.token = "not-a-token"
    refused = client.call("GET", "/messages")
    assert refused.status_code == 401 and refused.json()["error"]["status"] == "UNAUTHENTICATED"


def test_gmail_send_keeps_the_exact_bytes_under_the_sent_label(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    raw = mail("Exact", sender=email, to="Bob <bob@example.test>", body=".dot first\r\nä\r\n")
    encoded = base64.urlsafe_b64encode(raw).decode().rstrip("=")  # padding is optional
    sent = client.call("POST", "/messages/send", json={"raw": encoded}).json()
    assert sent["labelIds"] == ["SENT"] and sent["threadId"] == sent["id"]
    held = google.messages(email)[-1]
    assert (held.id, held.raw, held.labels) == (sent["id"], raw, {"SENT"})
    listed = client.call("GET", "/messages", params={"labelIds": "SENT"}).json()["messages"]
    assert [m["id"] for m in listed] == [sent["id"]]


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ("not+base64/url", "Base64 decoding failed"),
        (None, "Recipient address required"),
        (b"From: someone-else@example.test\r\nTo: bob@example.test\r\n\r\nHi\r\n", "From"),
    ],
)
def test_gmail_send_refuses_what_gmail_cannot_send(
    gmail: tuple[str, Client], raw: str | bytes | None, error: str
) -> None:
    email, client = gmail
    if raw is None:
        raw = f"From: {email}\r\nSubject: Nobody\r\n\r\nHi\r\n".encode()
    encoded = raw if isinstance(raw, str) else base64.urlsafe_b64encode(raw).decode()
    refused = client.call("POST", "/messages/send", json={"raw": encoded})
    assert refused.status_code == 400 and error in refused.json()["error"]["message"]


def test_gmail_send_joins_a_thread_only_as_gmail_documents(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, client = gmail
    original = google.deliver(email, mail("Order 7", message_id="<order7@example.test>"))

    def send(thread_id: str | None, subject: str, answering: str | None) -> str:
        raw = mail(subject, sender=email, answering=answering)
        body = {"raw": base64.urlsafe_b64encode(raw).decode()}
        if thread_id:
            body["threadId"] = thread_id
        thread: str = client.call("POST", "/messages/send", json=body).json()["threadId"]
        return thread

    assert send(original, "Re: Order 7", "<order7@example.test>") == original
    assert send(original, "RE: re: Order 7", "<order7@example.test>") == original
    assert send(original, "Re: Order 8", "<order7@example.test>") != original  # subject differs
    assert send(original, "Re: Order 7", None) != original  # no In-Reply-To/References
    assert send(None, "Re: Order 7", "<order7@example.test>") != original  # no threadId
    assert send("fedcba9876543210", "Re: Order 7", "<order7@example.test>") != original


def test_delivered_replies_join_the_thread_they_answer(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    email, _ = gmail
    first = google.deliver(email, mail("Plans", message_id="<plans@example.test>"))
    reply = google.deliver(email, mail("Re: Plans", answering="<plans@example.test>"))
    other = google.deliver(email, mail("Other plans", answering="<plans@example.test>"))
    threads = {held.id: held.thread_id for held in google.messages(email)}
    assert threads[reply] == threads[first] == first and threads[other] == other


def test_gmail_throttles_the_next_request_with_retry_after(
    google: FakeGoogle, gmail: tuple[str, Client]
) -> None:
    _, client = gmail
    google.throttle_next("/users/me/messages", retry_after=7)
    throttled = client.call("GET", "/messages")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert client.call("GET", "/messages").status_code == 200
