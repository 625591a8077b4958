"""The fake mail APIs check what the real ones check: Gmail's and Graph's message endpoints
(scopes, ids, paging, threading, exact bytes, throttling), Dovecot's special-use Sent folder
and mail delivery, and the SMTP server's exact bytes and temporary refusals. Driven with plain
requests, imaplib and smtplib, as the service's adapters will drive them."""

from __future__ import annotations

import base64
import datetime
import imaplib
import smtplib
import ssl
import uuid
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
import requests
from mailbridge_tools.sandbox import (
    CertificateAuthority,
    DovecotServer,
    FakeGoogle,
    FakeMicrosoft,
    Sandbox,
    SmtpServer,
    dovecot_binary,
)
from support import require_component

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


@pytest.mark.parametrize(
    ("reason", "message"),
    [(None, "Rate Limit Exceeded"), ("dailyLimitExceeded", "Daily Limit Exceeded")],
)
def test_gmail_also_throttles_with_a_403_that_names_a_rate_limit_or_a_spent_quota(
    google: FakeGoogle, gmail: tuple[str, Client], reason: str | None, message: str
) -> None:
    _, client = gmail
    google.throttle_next("/users/me/messages", status=403, retry_after=None, reason=reason)
    throttled = client.call("GET", "/messages")
    assert throttled.status_code == 403 and "Retry-After" not in throttled.headers
    error = throttled.json()["error"]
    (detail,) = error["errors"]
    assert (detail["domain"], detail["reason"]) == ("usageLimits", reason or "rateLimitExceeded")
    assert error["message"] == detail["message"] == message
    assert client.call("GET", "/messages").status_code == 200


# -- Microsoft Graph


@pytest.fixture
def graph(microsoft: FakeMicrosoft, ca: CertificateAuthority) -> tuple[str, Client]:
    """A fresh account and a client holding Mail.ReadWrite and Mail.Send for it."""
    email = fresh_account(microsoft, "contoso.example")
    token = microsoft.issue_token(email, ["Mail.ReadWrite", "Mail.Send"])
    return email, Client(microsoft.base_url + "/v1.0/me", token, ca)


def mime(raw: bytes) -> dict[str, Any]:
    """A request body of MIME, as Graph takes it."""
    return {"data": base64.b64encode(raw), "headers": {**IMMUTABLE, "Content-Type": "text/plain"}}


def test_graph_answers_immutable_ids_only_to_requests_that_prefer_them(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    message_id = microsoft.deliver(email, mail("Ids"))
    before = len(microsoft.mail_requests)
    path = "/mailFolders/inbox/messages"
    immutable = client.call("GET", path, headers=IMMUTABLE).json()["value"][0]["id"]
    regular = client.call("GET", path).json()["value"][0]["id"]
    assert immutable == message_id and immutable.startswith("AAkALg")
    assert regular == microsoft.regular_id(message_id) and regular.startswith("AAMk")
    for either in (immutable, regular):
        assert (
            client.call("GET", f"/messages/{either}", headers=IMMUTABLE).json()["id"] == immutable
        )
    asked = [r.immutable_ids for r in microsoft.mail_requests[before:]]
    assert asked == [True, False, True, True]


def test_graph_regular_ids_change_when_a_sent_draft_moves_and_immutable_ones_stay(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    raw = mail("Draft", sender=email, to="bob@example.test")
    draft = client.call("POST", "/messages", **mime(raw))
    assert draft.status_code == 201 and draft.json()["isDraft"]
    immutable, regular = draft.json()["id"], microsoft.regular_id(draft.json()["id"])
    assert client.call("POST", f"/messages/{immutable}/send", headers=IMMUTABLE).status_code == 202
    sent = client.call("GET", f"/messages/{immutable}", headers=IMMUTABLE).json()
    folder = client.call("GET", "/mailFolders/sentitems/messages", headers=IMMUTABLE).json()
    assert (sent["isDraft"], folder["value"][0]["id"]) == (False, immutable)
    assert sent["parentFolderId"] == folder["value"][0]["parentFolderId"]
    gone = client.call("GET", f"/messages/{regular}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ErrorItemNotFound"
    assert microsoft.messages(email)[-1].raw == raw  # it had a From, a Date and a Message-ID


def test_graph_pages_a_folder_newest_first_through_absolute_next_links(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    ids = deliver_in_order(microsoft, email, 5)
    page = client.call("GET", "/mailFolders/Inbox/messages", headers=IMMUTABLE, params={"$top": 2})
    seen = []
    while True:
        answer = page.json()
        seen += [m["id"] for m in answer["value"]]
        link = answer.get("@odata.nextLink")
        if link is None:
            break
        assert link.startswith(microsoft.base_url + "/v1.0/me/mailFolders/") and "%24skip=" in link
        page = client.call("GET", link, headers=IMMUTABLE)
    assert seen == ids[::-1]
    folder_id = answer["value"][0]["parentFolderId"]
    by_id = client.call("GET", f"/mailFolders/{folder_id}/messages", headers=IMMUTABLE)
    assert len(by_id.json()["value"]) == 5
    for refused in ({"$top": 1001}, {"$skip": 2**31}, {"$skip": "1e3"}, {"$skiptoken": "x"}):
        assert client.call("GET", "/mailFolders/inbox/messages", params=refused).status_code == 400
    assert client.call("GET", "/mailFolders/nowhere/messages").status_code == 404


def test_graph_select_answers_only_the_properties_named(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    microsoft.deliver(email, mail("Selected"))
    path = "/mailFolders/inbox/messages"
    selected = client.call("GET", path, params={"$select": "subject,isRead"}).json()["value"][0]
    assert set(selected) == {"@odata.etag", "id", "subject", "isRead"}
    unknown = client.call("GET", path, params={"$select": "subject,mood"})
    assert unknown.status_code == 400 and "mood" in unknown.json()["error"]["message"]


def test_graph_filters_unread_and_refuses_to_sort_on_what_the_filter_does_not_start_with(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    unread = microsoft.deliver(email, mail("Unread"), received_at=START)
    microsoft.deliver(email, mail("Read"), unread=False, received_at=START)
    path = "/mailFolders/inbox/messages"

    def listed(**params: str) -> requests.Response:
        return client.call("GET", path, headers=IMMUTABLE, params=params)

    assert [m["id"] for m in listed(**{"$filter": "isRead eq false"}).json()["value"]] == [unread]
    inefficient = listed(**{"$filter": "isRead eq false", "$orderby": "receivedDateTime desc"})
    assert inefficient.status_code == 400
    assert inefficient.json()["error"]["code"] == "InefficientFilter"
    ordered = listed(
        **{
            "$filter": "receivedDateTime ge 1900-01-01T00:00:00Z and isRead eq false",
            "$orderby": "receivedDateTime desc",
        }
    )
    assert [m["id"] for m in ordered.json()["value"]] == [unread]
    assert listed(**{"$filter": "subject eq 'Read'"}).status_code == 400


def test_graph_message_holds_graphs_properties_and_its_mime(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    raw = with_attachment("Report")
    when = datetime.datetime(2025, 3, 4, 16, 5, 9, 123000, tzinfo=datetime.UTC)
    message_id = microsoft.deliver(email, raw, received_at=when)
    got = client.call("GET", f"/messages/{message_id}", headers=IMMUTABLE).json()
    assert (
        got["from"]
        == got["sender"]
        == {"emailAddress": {"name": "ana@example.test", "address": "ana@example.test"}}
    )
    assert got["toRecipients"] == [{"emailAddress": {"name": "me@x.test", "address": "me@x.test"}}]
    assert (got["receivedDateTime"], got["hasAttachments"], got["isRead"]) == (
        "2025-03-04T16:05:09Z",
        True,
        False,
    )
    assert got["bodyPreview"] == "See attached." and got["body"]["contentType"] == "html"
    assert (
        got["internetMessageId"] == BytesParser(policy=policy.default).parsebytes(raw)["Message-ID"]
    )
    as_text = client.call(
        "GET",
        f"/messages/{message_id}",
        headers={"Prefer": 'IdType="ImmutableId", outlook.body-content-type="text"'},
    )
    assert as_text.json()["body"] == {"contentType": "text", "content": "See attached.\r\n"}
    value = client.call("GET", f"/messages/{message_id}/$value", headers=IMMUTABLE)
    assert value.headers["Content-Type"] == "text/plain" and value.content == raw


def test_graph_answers_malformed_ids_400_and_unknown_ones_404(graph: tuple[str, Client]) -> None:
    _, client = graph
    malformed = client.call("GET", "/messages/12345")
    assert malformed.json()["error"]["code"] == "ErrorInvalidIdMalformed"
    unknown = client.call("GET", "/messages/AAkALgunknown=", headers=IMMUTABLE)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "ErrorItemNotFound"


def test_graph_patch_marks_read_and_changes_only_drafts(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    message_id = microsoft.deliver(email, mail("Patch me"))
    path = f"/messages/{message_id}"
    assert client.call("PATCH", path, headers=IMMUTABLE, json={"isRead": True}).json()["isRead"]
    assert microsoft.messages(email)[0].read
    assert client.call("PATCH", path, json={"isRead": "yes"}).status_code == 400
    assert client.call("PATCH", path, json={"subject": "New"}).status_code == 400


def test_graph_delete_takes_the_message_out_of_every_folder(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    draft = client.call("POST", "/messages", **mime(mail("Drop me", sender=email))).json()
    path = f"/messages/{draft['id']}"
    assert client.call("DELETE", path).status_code == 204
    assert microsoft.messages(email) == []
    assert client.call("GET", path, headers=IMMUTABLE).status_code == 404
    assert client.call("DELETE", path).status_code == 404
    assert client.call("DELETE", "/messages/12345").status_code == 400


def test_graph_create_reply_drafts_in_the_conversation_with_threading_headers(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    original = microsoft.deliver(email, mail("Order 9", message_id="<order9@example.test>"))
    conversation = client.call("GET", f"/messages/{original}", headers=IMMUTABLE).json()
    body = {"message": {"body": {"contentType": "text", "content": "Friday works."}}}
    reply = client.call("POST", f"/messages/{original}/createReply", headers=IMMUTABLE, json=body)
    assert reply.status_code == 201
    draft = reply.json()
    assert (draft["conversationId"], draft["subject"], draft["isDraft"]) == (
        conversation["conversationId"],
        "RE: Order 9",
        True,
    )
    assert draft["toRecipients"] == [conversation["from"]]
    headers = BytesParser(policy=policy.default).parsebytes(microsoft.messages(email)[-1].raw)
    assert headers["In-Reply-To"] == headers["References"] == "<order9@example.test>"
    attachment = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": "quote.txt",
        "contentType": "text/plain",
        "contentBytes": base64.b64encode(b"12 boxes").decode(),
    }
    attached = client.call("POST", f"/messages/{draft['id']}/attachments", json=attachment)
    assert attached.status_code == 201 and attached.json()["size"] == 8
    assert client.call("GET", f"/messages/{draft['id']}", headers=IMMUTABLE).json()[
        "hasAttachments"
    ]
    assert (
        client.call("POST", f"/messages/{draft['id']}/send", headers=IMMUTABLE).status_code == 202
    )
    sent = microsoft.messages(email)[-1]
    assert (sent.folder, sent.thread_id) == ("sentitems", microsoft.messages(email)[0].thread_id)
    both = {"comment": "Yes", **body}
    refused = client.call("POST", f"/messages/{original}/createReply", json=both)
    assert refused.status_code == 400


def test_graph_send_checks_recipients_and_the_sender(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    nobody = client.call("POST", "/messages", **mime(f"From: {email}\r\n\r\nHi\r\n".encode()))
    refused = client.call("POST", f"/messages/{nobody.json()['id']}/send", headers=IMMUTABLE)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "ErrorInvalidRecipients"
    foreign = client.call("POST", "/messages", **mime(mail("Spoof", sender="boss@contoso.example")))
    denied = client.call("POST", f"/messages/{foreign.json()['id']}/send", headers=IMMUTABLE)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "ErrorSendAsDenied"
    bad = client.call("POST", "/messages", data=b"%%%", headers={"Content-Type": "text/plain"})
    assert bad.json()["error"]["code"] == "ErrorMimeContentInvalidBase64String"


def test_graph_send_mail_saves_to_sent_items_unless_told_not_to(
    microsoft: FakeMicrosoft, graph: tuple[str, Client]
) -> None:
    email, client = graph
    message = {
        "subject": "Hello",
        "body": {"contentType": "HTML", "content": "<p>Hi</p>"},
        "toRecipients": [{"emailAddress": {"address": "bob@example.test"}}],
    }
    assert client.call("POST", "/sendMail", json={"message": message}).status_code == 202
    unsaved = {"message": message, "saveToSentItems": False}
    assert client.call("POST", "/sendMail", json=unsaved).status_code == 202
    assert client.call("POST", "/sendMail", **mime(mail("MIME", sender=email))).status_code == 202
    sent = [held for held in microsoft.messages(email) if held.folder == "sentitems"]
    assert [held.parsed()["Subject"] for held in sent] == ["Hello", "MIME"]


@pytest.mark.parametrize(
    ("scopes", "read", "write", "send"),
    [
        (["Mail.Read"], 200, 403, 403),
        (["Mail.ReadWrite"], 200, 201, 403),
        (["Mail.Send"], 403, 403, 202),
        (["User.Read"], 403, 403, 403),
    ],
)
def test_graph_enforces_delegated_scopes(
    microsoft: FakeMicrosoft,
    ca: CertificateAuthority,
    scopes: list[str],
    read: int,
    write: int,
    send: int,
) -> None:
    email = fresh_account(microsoft, "contoso.example")
    message_id = microsoft.deliver(email, mail("Scoped"))
    client = Client(microsoft.base_url + "/v1.0/me", microsoft.issue_token(email, scopes), ca)
    outgoing = {"message": {"toRecipients": [{"emailAddress": {"address": "b@example.test"}}]}}
    assert [
        client.call("GET", "/mailFolders/inbox/messages").status_code,
        client.call("GET", f"/messages/{message_id}/$value").status_code,
        client.call("POST", f"/messages/{message_id}/createReply").status_code,
        client.call("POST", "/sendMail", json=outgoing).status_code,
    ] == [read, read, write, send]
    patched = client.call("PATCH", f"/messages/{message_id}", json={"isRead": True})
    assert patched.status_code == (200 if write == 201 else 403)


@pytest.mark.parametrize(
    ("status", "code"), [(429, "TooManyRequests"), (503, "serviceNotAvailable")]
)
def test_graph_throttles_the_next_request_with_retry_after(
    microsoft: FakeMicrosoft, graph: tuple[str, Client], status: int, code: str
) -> None:
    _, client = graph
    microsoft.throttle_next("/mailFolders/inbox/messages", retry_after=3, status=status)
    throttled = client.call("GET", "/mailFolders/inbox/messages")
    assert throttled.status_code == status and throttled.headers["Retry-After"] == "3"
    assert throttled.json()["error"]["code"] == code
    assert client.call("GET", "/mailFolders/inbox/messages").status_code == 200


# -- Dovecot

USER, PASSWORD = "imap-user@example.com", "imap-pass-5b1d"


@pytest.fixture(scope="module")
def mailbox(server_cert: tuple[Path, Path]) -> Iterator[DovecotServer]:
    """A Dovecot of its own (deliveries change counts other tests assert), its Sent folder
    named as a German Outlook names it."""
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    with DovecotServer(*server_cert, {USER: PASSWORD}, sent_folder=SENT_FOLDER) as server:
        yield server


def imap(server: DovecotServer) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=10)
    client.login(USER, PASSWORD)
    return client


def test_dovecot_flags_its_sent_folder_whatever_its_name(mailbox: DovecotServer) -> None:
    with imap(mailbox) as client:
        _, special = client.list('(SPECIAL-USE) ""', "*")
        _, everything = client.list('""', "*")
    assert b'(\\Sent) "." "Gesendete Elemente"' in special
    assert b'(\\Drafts) "." Drafts' in special and b'(\\Trash) "." Trash' in special
    # A plain LIST says so too, for clients that do not ask for SPECIAL-USE.
    assert b'(\\HasNoChildren \\Sent) "." "Gesendete Elemente"' in everything


def test_dovecot_delivers_the_exact_bytes_seen_or_unseen(mailbox: DovecotServer) -> None:
    before = len(mailbox.folder_messages(USER, "INBOX"))
    unseen, seen = mail("Unseen"), mail("Seen", body=".leading dot\r\n")
    mailbox.deliver(USER, unseen)
    mailbox.deliver(USER, seen, unseen=False)
    held = mailbox.folder_messages(USER, "INBOX")
    assert [(m.raw, m.flags) for m in held[before:]] == [(unseen, ()), (seen, ("\\Seen",))]
    unread = sum("\\Seen" not in m.flags for m in held)
    with imap(mailbox) as client:
        _, status = client.status("INBOX", "(MESSAGES UNSEEN)")
    assert status == [f"INBOX (MESSAGES {len(held)} UNSEEN {unread})".encode()]


def test_dovecot_reads_back_what_a_client_files_in_sent(mailbox: DovecotServer) -> None:
    raw = mail("Filed", sender=USER)
    with imap(mailbox) as client:
        status, _ = client.append(f'"{SENT_FOLDER}"', "(\\Seen)", None, raw)
    assert status == "OK"
    filed = mailbox.folder_messages(USER, SENT_FOLDER)
    assert [(m.raw, m.flags) for m in filed][-1] == (raw, ("\\Seen",))


# -- SMTP


@pytest.fixture(scope="module")
def submission(server_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """An SMTP server of its own: a refusal left over must not reach other tests."""
    with SmtpServer(*server_cert, {USER: PASSWORD}) as server:
        yield server


def smtp_client(server: SmtpServer, ca: CertificateAuthority) -> smtplib.SMTP:
    client = smtplib.SMTP("localhost", server.starttls_port, timeout=10)
    client.starttls(context=ssl.create_default_context(cafile=str(ca.ca_path)))
    client.login(USER, PASSWORD)
    return client


def test_smtp_keeps_the_exact_bytes_the_client_sent(
    submission: SmtpServer, ca: CertificateAuthority
) -> None:
    raw = mail("Exact", sender=USER, body=".starts with a dot\r\n..two\r\nlast line\r\n")
    with smtp_client(submission, ca) as client:
        client.sendmail(USER, ["bob@example.test"], raw)
    received = submission.messages[-1]
    assert (received.sender, received.recipients, received.content) == (
        USER,
        ["bob@example.test"],
        raw,
    )


@pytest.mark.parametrize("command", ["MAIL", "RCPT", "DATA"])
def test_smtp_refuses_the_next_command_with_a_temporary_error(
    submission: SmtpServer, ca: CertificateAuthority, command: Any
) -> None:
    before = len(submission.messages)
    submission.refuse_next(command, "451 4.7.1 Slow down")
    with smtp_client(submission, ca) as client:
        with pytest.raises(smtplib.SMTPException) as refused:
            client.sendmail(USER, ["bob@example.test"], mail("Throttled", sender=USER))
        client.rset()
        client.sendmail(USER, ["bob@example.test"], mail("Retried", sender=USER))
    assert "451" in str(refused.value) and len(submission.messages) == before + 1


def test_smtp_hangs_up_after_a_421(submission: SmtpServer, ca: CertificateAuthority) -> None:
    submission.refuse_next("MAIL", "421 4.7.0 Too many connections")
    client = smtp_client(submission, ca)
    with pytest.raises(smtplib.SMTPSenderRefused):
        client.sendmail(USER, ["bob@example.test"], mail("Refused", sender=USER))
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()


# -- The sandbox


def test_the_sandbox_accounts_hold_mail_to_read() -> None:
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    with Sandbox() as sandbox:
        assert len(sandbox.dovecot.folder_messages("demo@example.com", "INBOX")) == 12
        for fake, email in (
            (sandbox.microsoft, "demo@contoso.example"),
            (sandbox.google, "demo@workspace.example"),
        ):
            held = fake.messages(email)
            threads = [message.thread_id for message in held]
            assert len(held) == 5 and len(set(threads)) == 4  # a reply joined its order
            assert any(any(True for _ in m.parsed().iter_attachments()) for m in held)
