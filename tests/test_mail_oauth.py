"""The agent's mailbox through Microsoft Graph and the Gmail API (the fake providers check
what the real ones do: scopes, ids, raw RFC 5322, threads): the same routes and answers as
over IMAP, with immutable Graph ids, Gmail threads, throttling (and Gmail's spent quotas) and
broken grants; forged ids and cursors find nothing, hostile summaries and impossible answers
are bounded or refused, a reply Graph refuses is refused, and a failed Graph send leaves no
draft behind."""

from __future__ import annotations

import base64
import json
import re
import uuid
from email import message_from_bytes, policy
from typing import Any

import pytest
from mailbridge_tools.sandbox import FakeGoogle, FakeMicrosoft
from support import GOOGLE_ACCOUNT, MS_ACCOUNT, MailAgent, Mailbox, OAuthAgent
from test_mail_hostile import (
    ENCODED_BCC,
    ENCODED_HEADER,
    LAMBDA_ANSWER_BYTES,
    SENT_HEADERS,
    lambda_answer_bytes,
    sent_headers,
)


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


def _forged(*parts: str) -> str:
    """An opaque id or cursor as a caller can make one: the parts, packed as mail.ids does."""
    return base64.urlsafe_b64encode("\x1f".join(parts).encode()).decode().rstrip("=")


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


def test_an_encoded_line_break_adds_no_header_to_a_raw_send(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    # Gmail and Graph take a raw message's Bcc as recipients: the policy's way around, once.
    sent = connected.send(
        {
            "to": ["customer@example.org"],
            "subject": ENCODED_BCC,
            "text": "Hello.",
            "attachments": [{"filename": ENCODED_HEADER, "content": "eA=="}],
        },
        key=uuid.uuid4().hex,
    )
    assert sent["recipients"] == ["customer@example.org"]
    held = next(
        m for m in agent.fake.messages(connected.login) if sent["message_id"].encode() in m.raw
    )
    assert sent_headers(held.raw) == SENT_HEADERS | {"content-disposition"}


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


def test_an_answer_that_is_no_answer_is_a_provider_error(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    # A redirect not followed (no Location) was read as the API's answer: an empty page.
    agent.fake.answer_next("/messages", 302, '{"messages": [], "value": []}')
    answer = connected.runtime.get(connected.messages_path())
    assert (answer.status, answer.error["code"]) == (502, "provider_error")


def test_throttling_asks_to_retry_and_leaves_the_status_alone(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    agent.fake.throttle_next("/messages", retry_after=7)
    throttled = connected.runtime.get(connected.messages_path())
    assert (throttled.status, throttled.error["code"]) == (429, "provider_throttled")
    assert throttled.headers["Retry-After"] == "7"
    assert agent.get()["status"] == "connected"


# Ids a caller can forge, for each provider ("{id}" is a real message's): paths that would
# take the agent's token elsewhere on the provider's host (its sign-in page, a thread's trash,
# another mailbox), an id the provider finds malformed (400) and one it does not know (404).
_FORGED_IDS = {
    "google": [
        ("gmail", "../../../../../o/oauth2/v2/auth?"),
        ("gmail", "../threads/{id}/trash?"),
        ("gmail", "../../other@example.com/messages/{id}"),
        ("gmail", "{id}/../../../../../token"),
        ("gmail", "abc"),
        ("gmail", "0123456789abcdef"),
    ],
    "microsoft": [
        ("graph", "inbox", "../../../../common/oauth2/v2.0/authorize?"),
        ("graph", "inbox", ".."),
        ("graph", "inbox", "../../users/other@contoso.example/messages/{id}"),
        ("graph", "inbox", "{id}/move?"),
        ("graph", "inbox", "12345"),
        ("graph", "inbox", "AAkALgunknown="),
    ],
}
# What the message routes the mailbox may reach look like, at each fake.
_MESSAGE_ROUTES = {
    "google": re.compile(r"/gmail/v1/users/me/messages/[0-9a-f]+(/modify)?"),
    "microsoft": re.compile(r"/v1\.0/me/messages/[A-Za-z0-9=_-]+(/\$value)?"),
}


def test_unknown_or_forged_ids_find_nothing(connected: MailAgent, agent: OAuthAgent) -> None:
    real = agent.fake.deliver(connected.login, _raw("Keep me", to=connected.login))
    before = len(agent.fake.requests)
    forged = [
        _forged(*(part.format(id=real) for part in parts)) for parts in _FORGED_IDS[agent.provider]
    ]
    for message_id in [*forged, "bm90LWFuLWlk", "A" * 40]:
        path = connected.message_path(message_id)
        for response in (
            connected.runtime.get(path),
            connected.runtime.request("PATCH", path, {"read": True}),
        ):
            assert (response.status, response.error["code"]) == (404, "message_not_found")
    seen = agent.fake.requests[before:]
    assert seen and all(_MESSAGE_ROUTES[agent.provider].fullmatch(path) for _, path in seen)
    (held,) = agent.fake.messages(connected.login)
    assert not held.read and held.folder == "inbox" and "TRASH" not in held.labels
    assert agent.get()["status"] == "connected"


def test_an_id_gmail_lists_that_is_not_gmails_is_never_requested(
    google_agent: OAuthAgent, google: FakeGoogle, local_api: Any
) -> None:
    assert google_agent.connect().status == 200
    mail = MailAgent(
        local_api, google_agent.org, Mailbox(GOOGLE_ACCOUNT, ""), deliver=lambda *_, **__: None
    )
    hostile = {"messages": [{"id": "../../../../../o/oauth2/v2/auth?", "threadId": "1"}]}
    google.answer_next("/users/me/messages", 200, json.dumps(hostile))
    before = len(google.requests)
    failed = mail.runtime.get(mail.messages_path())
    assert (failed.status, failed.error["code"]) == (502, "provider_error")
    assert google.requests[before:] == [("GET", "/gmail/v1/users/me/messages")]


_FORGED_POSITIONS = {
    "google": ["12345"],  # a page token Gmail never gave
    "microsoft": ["$skip=-1", "$skip=1e3", f"$skip={2**31}", "$skiptoken=forged", "$top=1"],
}


def test_forged_cursors_are_invalid_cursors(connected: MailAgent, agent: OAuthAgent) -> None:
    kind = "gmail-page" if agent.provider == "google" else "graph-page"
    for position in _FORGED_POSITIONS[agent.provider]:
        cursor = _forged(kind, "inbox", "all", position)
        response = connected.runtime.get(connected.messages_path(cursor=cursor))
        assert (response.status, response.error["field"]) == (422, "cursor"), position
    assert agent.get()["status"] == "connected"


# Summaries as a hostile provider could give them, at the most they can hold: subjects that
# are not base64, lone surrogates (JSON's \ud800 escapes), 400,000 characters; 50 recipients
# with 300-quote names and addresses of 64 and 253 characters; the longest ids the adapters take.
_SUBJECTS = ["=?utf-8?b?BYWJj?=", "=?utf-7?q?+2AA-?=", "Hi \ud800", *["x" * 400_000] * 6]
_LONGEST = f"{'l' * 64}@{'d' * 63}.{'e' * 63}.{'f' * 63}.{'g' * 61}"
_PEOPLE = [('"' * 300, _LONGEST)] * 50
_MESSAGE_ID = "<" + '"' * 983 + ">"


def _gmail_metadata(gmail_id: str, subject: str) -> str:
    quoted = '"' + '\\"' * 300 + '"'  # a quoted string of 300 quotes
    headers = [
        {"name": "From", "value": f"\ud800{'😀' * 300} <{_LONGEST}>"},
        {"name": "To", "value": ", ".join(f"{quoted} <{address}>" for _, address in _PEOPLE)},
        {"name": "Subject", "value": subject},
        {"name": "Message-ID", "value": _MESSAGE_ID},
    ]
    answer = {
        "id": gmail_id,
        "threadId": "f" * 32,
        "labelIds": ["INBOX", "UNREAD"],
        "internalDate": "1764493200000",
        "payload": {"mimeType": "text/plain", "headers": headers},
    }
    return json.dumps(answer)


def _graph_page(count: int) -> str:
    def recipient(name: str, address: str) -> dict[str, Any]:
        return {"emailAddress": {"name": name, "address": address}}

    messages = [
        {
            "id": "A" * 511 + "=",
            "conversationId": "Q" * 512,
            "subject": _SUBJECTS[number % len(_SUBJECTS)],
            "from": recipient("\ud800" + "😀" * 300, _LONGEST),
            "toRecipients": [recipient(*person) for person in _PEOPLE],
            "receivedDateTime": "2026-11-30T09:00:00Z",
            "isRead": False,
            "internetMessageId": _MESSAGE_ID,
        }
        for number in range(count)
    ]
    return json.dumps({"value": messages})


def test_a_page_of_hostile_summaries_is_listed_within_bounds(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    if agent.provider == "microsoft":
        agent.fake.answer_next("/mailFolders/inbox/messages", 200, _graph_page(100))
    else:
        for number in range(100):
            gmail_id = agent.fake.deliver(connected.login, _raw(f"N{number}", to=connected.login))
            subject = _SUBJECTS[number % len(_SUBJECTS)]
            agent.fake.answer_next(f"/messages/{gmail_id}", 200, _gmail_metadata(gmail_id, subject))
    listed = connected.runtime.get(connected.messages_path(limit=100))
    assert listed.status == 200, listed.text
    summaries = listed.json()["messages"]
    assert len(summaries) == 100
    assert {len(summary["subject"]) for summary in summaries} >= {998}
    assert {len(summary["to"]) for summary in summaries} == {10}
    assert all(len(summary["sender"]["name"]) == 200 for summary in summaries)
    assert lambda_answer_bytes(listed.json()) < LAMBDA_ANSWER_BYTES // 2


# How each provider also throttles, besides 429: (status, Retry-After it sends, Retry-After
# answered). Gmail: 403 with a rate limit's reason, usually without a Retry-After; Graph: 503.
_THROTTLED_OTHERWISE = {"google": (403, None, "60"), "microsoft": (503, 5, "5")}


def test_throttling_by_another_status_is_throttling_too(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    status, retry_after, answered = _THROTTLED_OTHERWISE[agent.provider]
    agent.fake.throttle_next("/messages", status=status, retry_after=retry_after)
    throttled = connected.runtime.get(connected.messages_path())
    assert (throttled.status, throttled.error["code"]) == (429, "provider_throttled")
    assert throttled.headers["Retry-After"] == answered
    assert agent.get()["status"] == "connected"


@pytest.mark.parametrize("reason", ["dailyLimitExceeded", "quotaExceeded"])
def test_a_spent_gmail_quota_asks_to_retry_in_an_hour_and_leaves_the_status_alone(
    google_agent: OAuthAgent, google: FakeGoogle, local_api: Any, reason: str
) -> None:
    assert google_agent.connect().status == 200
    mail = MailAgent(
        local_api, google_agent.org, Mailbox(GOOGLE_ACCOUNT, ""), deliver=lambda *_, **__: None
    )
    google.throttle_next("/messages", status=403, retry_after=None, reason=reason)
    throttled = mail.runtime.get(mail.messages_path())
    assert (throttled.status, throttled.error["code"]) == (429, "provider_throttled")
    assert throttled.headers["Retry-After"] == "3600"
    assert google_agent.get()["status"] == "connected"


# Answers that cannot be what they say: a receipt time past any date, and a page token longer
# than any cursor the API takes back (so that no page can go on from it).
_IMPOSSIBLE = {
    "google": [
        (
            "/messages/{id}",
            {
                "id": "{id}",
                "threadId": "{id}",
                "internalDate": "1" + "0" * 20,
                "payload": {"headers": []},
            },
        ),
        ("/users/me/messages", {"messages": [], "nextPageToken": "1" * 2000}),
    ],
    "microsoft": [
        (
            "/mailFolders/inbox/messages",
            {"value": [], "@odata.nextLink": "https://graph/?$skiptoken=" + "s" * 2000},
        ),
    ],
}


def test_answers_that_cannot_be_what_they_say_are_the_providers_error(
    connected: MailAgent, agent: OAuthAgent
) -> None:
    real = agent.fake.deliver(connected.login, _raw("Listed", to=connected.login))
    for suffix, answer in _IMPOSSIBLE[agent.provider]:
        agent.fake.answer_next(
            suffix.format(id=real), 200, json.dumps(answer).replace("{id}", real)
        )
        failed = connected.runtime.get(connected.messages_path())
        assert (failed.status, failed.error["code"]) == (502, "provider_error"), suffix
    assert agent.get()["status"] == "connected"


@pytest.mark.parametrize(
    ("status", "code", "answer"),
    [
        (400, "ErrorInvalidRecipients", (422, "message_refused")),
        (400, "ErrorMimeContentInvalidBase64String", (422, "message_refused")),
        (400, "ErrorInvalidIdMalformed", (404, "message_not_found")),
        (404, "ErrorItemNotFound", (404, "message_not_found")),
    ],
)
def test_a_reply_graph_refuses_is_refused_and_only_a_lost_original_is_not_found(
    microsoft_agent: OAuthAgent,
    microsoft: FakeMicrosoft,
    local_api: Any,
    status: int,
    code: str,
    answer: tuple[int, str],
) -> None:
    assert microsoft_agent.connect().status == 200
    mail = MailAgent(
        local_api,
        microsoft_agent.org,
        Mailbox(MS_ACCOUNT, ""),
        deliver=lambda address, raw, *, unseen: microsoft.deliver(address, raw, unread=unseen),
    )
    mail.deliver(_raw("Question"))
    original = _first(mail)
    error = {"error": {"code": code, "message": "Refused."}}
    microsoft.answer_next("/createReply", status, json.dumps(error))
    refused = mail.runtime.request(
        "POST",
        mail.send_path,
        {"reply_to_message_id": original["id"], "text": "An answer."},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert (refused.status, refused.error["code"]) == answer, refused.text
    assert [m.folder for m in microsoft.messages(MS_ACCOUNT)] == ["inbox"]
    assert microsoft_agent.get()["status"] == "connected"


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
    before = len(agent.fake.requests)
    refused = mail.runtime.request(
        "POST",
        mail.send_path,
        {"to": ["a@example.org"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert (refused.status, refused.error["code"]) == (409, "send_permission_missing")
    assert "not sending" in refused.error["message"]
    assert "Re-authorize" in refused.error["hint"]
    # Refused before the provider was asked; the agent still receives, so stays Connected.
    sends = [p for _, p in agent.fake.requests[before:] if p.endswith(("/sendMail", "/send"))]
    assert not sends
    assert agent.get()["status"] == "connected"


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


@pytest.mark.parametrize(
    ("failure", "answer", "went_out"),
    [
        ("throttled", (429, "provider_throttled"), False),
        ("server_error", (502, "provider_error"), False),
        # The fake sends it, then never answers: the answer is lost, not the message.
        ("timeout", (502, "timeout"), True),
    ],
)
def test_a_failed_graph_send_leaves_no_draft_behind(
    microsoft_agent: OAuthAgent,
    microsoft: FakeMicrosoft,
    local_api: Any,
    failure: str,
    answer: tuple[int, str],
    went_out: bool,
) -> None:
    assert microsoft_agent.connect().status == 200
    mail = MailAgent(
        local_api, microsoft_agent.org, Mailbox(MS_ACCOUNT, ""), deliver=lambda *_, **__: None
    )
    if failure == "throttled":
        microsoft.throttle_next("/send")
    elif failure == "server_error":
        microsoft.answer_next("/send", 500, "{}")
    else:
        microsoft.stall_next("/send", "silent")
    body = {"to": ["customer@example.org"], "subject": "Once", "text": "Only once."}
    key = uuid.uuid4().hex
    failed = mail.runtime.request("POST", mail.send_path, body, headers={"Idempotency-Key": key})
    assert (failed.status, failed.error["code"]) == answer

    def held(folder: str) -> int:
        return sum(m.folder == folder for m in microsoft.messages(MS_ACCOUNT))

    # A draft that went out is the copy in Sent Items, and stays.
    assert (held("drafts"), held("sentitems")) == (0, int(went_out))
    sent = mail.send(body, key=key)
    assert (held("drafts"), held("sentitems")) == (0, int(went_out) + 1)
    assert mail.runtime.get(mail.message_path(sent["id"])).json()["folder"] == "sent"
