"""The agent's mailbox through Microsoft Graph and the Gmail API (the fake providers check
what the real ones do: scopes, ids, raw RFC 5322, threads): the same routes and answers as
over IMAP, with immutable Graph ids, Gmail threads, throttling and broken grants."""

from __future__ import annotations

import base64
import uuid
from email import message_from_bytes, policy
from typing import Any

import pytest
from mailbridge_tools.sandbox import FakeMicrosoft
from support import GOOGLE_ACCOUNT, MS_ACCOUNT, MailAgent, Mailbox, OAuthAgent


@pytest.fixture
def connected(agent: OAuthAgent, local_api: Any) -> MailAgent:
    """The org's agent signed in to its Microsoft or Google account, with its runtime."""
    page = agent.connect()
    assert page.status == 200, page.text
    login = MS_ACCOUNT if agent.provider == "microsoft" else GOOGLE_ACCOUNT

    def deliver(address: str, raw: bytes, *, unseen: bool) -> object:
        return agent.fake.deliver(address, raw, unread=unseen)

    return MailAgent(local_api, agent.org, Mailbox(login, ""), deliver=deliver)


def _raw(subject: str, *, message_id: str | None = None, to: str = MS_ACCOUNT) -> bytes:
    return (
        f"From: Alice <alice@example.net>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id or f'<{uuid.uuid4().hex}@example.net>'}\r\n"
        "Date: Mon, 30 Nov 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\n\r\nHello there.\r\n'
    ).encode()


def _first(agent: MailAgent, **query: Any) -> dict[str, Any]:
    response = agent.runtime.get(agent.messages_path(limit=1, **query))
    assert response.status == 200, response.text
    message: dict[str, Any] = response.json()["messages"][0]
    return message


def test_reading_marking_and_paging(connected: MailAgent) -> None:
    for number in range(3):
        connected.deliver(_raw(f"Number {number}", to=connected.login))
    page = connected.runtime.get(connected.messages_path(limit=2)).json()
    assert [m["subject"] for m in page["messages"]] == ["Number 2", "Number 1"]
    rest = connected.runtime.get(connected.messages_path(limit=2, cursor=page["next_cursor"]))
    assert rest.json()["messages"][0]["subject"] == "Number 0"
    newest = page["messages"][0]
    message = connected.runtime.get(connected.message_path(newest["id"])).json()
    assert message["text"].strip() == "Hello there."
    assert message["thread_id"] == newest["thread_id"]
    assert message["read"] is False
    marked = connected.runtime.request(
        "PATCH", connected.message_path(newest["id"]), {"read": True}
    )
    assert marked.status == 204, marked.text
    assert _first(connected)["read"] is True
    unread = connected.runtime.get(connected.messages_path(unread="true")).json()["messages"]
    assert newest["id"] not in [m["id"] for m in unread]


def test_a_reply_stays_in_the_conversation(connected: MailAgent, agent: OAuthAgent) -> None:
    original_id = f"<{uuid.uuid4().hex}@example.net>"
    connected.deliver(_raw("Question", message_id=original_id, to=connected.login))
    original = _first(connected)
    sent = connected.send(
        {"reply_to_message_id": original["id"], "text": "An answer.", "bcc": ["audit@example.org"]},
        key=uuid.uuid4().hex,
    )
    assert sent["thread_id"] == original["thread_id"]
    assert sent["recipients"] == ["alice@example.net", "audit@example.org"]
    held = next(
        m for m in agent.fake.messages(connected.login) if sent["message_id"].encode() in m.raw
    )
    reply = message_from_bytes(held.raw, policy=policy.default)
    assert reply["In-Reply-To"] == original_id
    assert reply["Subject"] == "Re: Question"
    assert reply["From"].addresses[0].addr_spec == connected.login
    read_back = connected.runtime.get(connected.message_path(sent["id"])).json()
    assert read_back["folder"] == "sent" and read_back["message_id"] == sent["message_id"]


def test_graph_is_always_asked_for_immutable_ids(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, local_api: Any
) -> None:
    assert microsoft_agent.connect().status == 200

    def deliver(address: str, raw: bytes, *, unseen: bool) -> object:
        return microsoft.deliver(address, raw, unread=unseen)

    mail = MailAgent(local_api, microsoft_agent.org, Mailbox(MS_ACCOUNT, ""), deliver=deliver)
    mail.deliver(_raw("Keep my id"))
    before = len(microsoft.mail_requests)
    listed = _first(mail)
    sent = mail.send({"reply_to_message_id": listed["id"], "text": "Yes."}, key=uuid.uuid4().hex)
    assert mail.runtime.get(mail.message_path(sent["id"])).status == 200  # moved, same id
    asked = microsoft.mail_requests[before:]
    assert asked and all(request.immutable_ids for request in asked)


def test_throttling_asks_to_retry_and_leaves_the_status_alone(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    agent.fake.throttle_next("/messages", retry_after=7)
    throttled = connected.runtime.get(connected.messages_path())
    assert (throttled.status, throttled.error["code"]) == (429, "provider_throttled")
    assert throttled.headers["Retry-After"] == "7"
    assert agent.get()["status"] == "connected"


def test_a_revoked_grant_turns_the_agent_to_error(connected: MailAgent, agent: OAuthAgent) -> None:
    agent.fake.revoke_all_grants()
    failed = connected.runtime.get(connected.messages_path())
    assert (failed.status, failed.error["code"]) == (409, "reauthorization_required")
    config = agent.get()
    assert config["status"] == "error"
    assert config["last_error"]["code"] == "reauthorization_required"


def test_a_grant_without_sending_cannot_send_and_says_so(agent: OAuthAgent, local_api: Any) -> None:
    # Microsoft: reading and drafts, no Mail.Send; Google: reading only.
    read_only = (
        ["Mail.ReadWrite", "User.Read", "openid", "profile", "offline_access"]
        if agent.provider == "microsoft"
        else ["openid", "email", "https://www.googleapis.com/auth/gmail.readonly"]
    )
    agent.fake.grant_scopes_next(read_only)
    assert agent.connect().status == 200
    login = MS_ACCOUNT if agent.provider == "microsoft" else GOOGLE_ACCOUNT
    mail = MailAgent(local_api, agent.org, Mailbox(login, ""), deliver=lambda *_, **__: None)
    refused = mail.runtime.request(
        "POST",
        mail.send_path,
        {"to": ["a@example.org"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert (refused.status, refused.error["code"]) == (409, "permission_missing")
    assert "sending" in refused.error["message"]


def test_gmail_is_sent_the_message_raw_with_its_attachment(
    google_agent: OAuthAgent, local_api: Any
) -> None:
    assert google_agent.connect().status == 200
    mail = MailAgent(
        local_api, google_agent.org, Mailbox(GOOGLE_ACCOUNT, ""), deliver=lambda *_, **__: None
    )
    content = base64.b64encode(b"label").decode()
    attachment = {"filename": "label.txt", "content_type": "text/plain", "content": content}
    body = {"to": ["customer@example.org"], "subject": "Label", "text": "Attached."}
    sent = mail.send(body | {"attachments": [attachment]}, key=uuid.uuid4().hex)
    held = next(
        m
        for m in google_agent.fake.messages(GOOGLE_ACCOUNT)
        if sent["message_id"].encode() in m.raw
    )
    assert "SENT" in held.labels
    raw = message_from_bytes(held.raw, policy=policy.default)
    assert raw["Subject"] == "Label" and raw["To"] == "customer@example.org"
    (attached,) = mail.runtime.get(mail.message_path(sent["id"])).json()["attachments"]
    assert (attached["filename"], attached["size"]) == ("label.txt", 5)
