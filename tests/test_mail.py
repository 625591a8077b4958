"""The agent's mailbox through its IMAP/SMTP connection, against Dovecot and a real SMTP
server: listing and paging, reading, attachments, read and unread, sending and replying with
the sent copy in the folder marked \\Sent, exactly once per Idempotency-Key, under the client
organization's policy, and the status each use leaves."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest
from mailbridge_tools.sandbox import DovecotServer, FolderMessage, SmtpServer
from support import SENT_FOLDER, ApiClient, MailAgent, Mailbox, Org, make_org, register_agent


def _message(
    *,
    subject: str = "Hello",
    sender: str = "alice@example.net",
    to: str = "agent@example.com",
    text: str | None = "Plain words.",
    html: str | None = None,
    message_id: str | None = None,
    reply_to: str | None = None,
    in_reply_to: str | None = None,
    attachment: tuple[str, bytes] | None = None,
    charset: str = "utf-8",
) -> bytes:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = f"Alice <{sender}>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.net>"
    message["Date"] = "Mon, 30 Nov 2026 09:00:00 +0000"
    if reply_to:
        message["Reply-To"] = reply_to
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    if text is not None:
        message.set_content(text, charset=charset)
    if html is not None:
        if text is None:
            message.set_content(html, subtype="html")
        else:
            message.add_alternative(html, subtype="html")
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return message.as_bytes()


def _held(dovecot: DovecotServer, login: str, folder: str, marker: bytes) -> FolderMessage:
    """The one message of `folder` whose bytes hold `marker`."""
    (found,) = [m for m in dovecot.folder_messages(login, folder) if marker in m.raw]
    return found


def _page(agent: MailAgent, **query: Any) -> dict[str, Any]:
    response = agent.runtime.get(agent.messages_path(**query))
    assert response.status == 200, response.text
    page: dict[str, Any] = response.json()
    return page


# ---- reading -----------------------------------------------------------------------------


def test_the_inbox_lists_newest_first_page_by_page(imap_agent: MailAgent) -> None:
    for number in range(7):
        imap_agent.deliver(_message(subject=f"Number {number}"))
    seen: list[str] = []
    cursor = None
    while True:
        page = _page(imap_agent, limit=3, cursor=cursor)
        seen += [message["subject"] for message in page["messages"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"Number {number}" for number in reversed(range(7))]
    first = _page(imap_agent, limit=1)["messages"][0]
    assert first["sender"] == {"address": "alice@example.net", "name": "Alice"}
    assert first["to"] == [{"address": "agent@example.com", "name": None}]
    assert first["read"] is False and first["folder"] == "inbox"
    assert first["message_id"].endswith("@example.net>")
    # The same message has the same id in every listing: ids are UIDs, not positions.
    imap_agent.deliver(_message(subject="Newer"))
    assert _page(imap_agent, limit=2)["messages"][1]["id"] == first["id"]


def test_unread_only_lists_what_was_not_read(imap_agent: MailAgent) -> None:
    imap_agent.deliver(_message(subject="Read already"), unseen=False)
    imap_agent.deliver(_message(subject="Still new"))
    unread = _page(imap_agent, unread="true")["messages"]
    assert [message["subject"] for message in unread] == ["Still new"]


def test_a_message_is_read_whole_without_being_marked_read(imap_agent: MailAgent) -> None:
    original = "<original@example.net>"
    imap_agent.deliver(
        _message(
            subject="Invoice =?",
            text="Grüße aus Köln",
            html="<p>Grüße</p>",
            in_reply_to=original,
            attachment=("invoice.pdf", b"%PDF-1.7 not really"),
            charset="iso-8859-1",
        )
    )
    listed = _page(imap_agent, limit=1)["messages"][0]
    response = imap_agent.runtime.get(imap_agent.message_path(listed["id"]))
    assert response.status == 200, response.text
    message = response.json()
    assert message["text"].strip() == "Grüße aus Köln"  # decoded from ISO-8859-1 to UTF-8
    assert message["html"].strip() == "<p>Grüße</p>"
    assert message["in_reply_to"] == original and message["references"] == [original]
    assert message["thread_id"] == listed["thread_id"]
    (attachment,) = message["attachments"]
    assert (attachment["filename"], attachment["content_type"]) == (
        "invoice.pdf",
        "application/pdf",
    )
    assert attachment["size"] == len(b"%PDF-1.7 not really")
    download = imap_agent.runtime.get(
        f"{imap_agent.message_path(listed['id'])}/attachments/{attachment['id']}"
    )
    assert download.status == 200, download.text
    assert base64.b64decode(download.json()["content"]) == b"%PDF-1.7 not really"
    assert _page(imap_agent, limit=1)["messages"][0]["read"] is False


def test_unknown_or_forged_ids_find_nothing(imap_agent: MailAgent) -> None:
    imap_agent.deliver(_message())
    listed = _page(imap_agent, limit=1)["messages"][0]
    forged = base64.urlsafe_b64encode(b"imap\x1finbox\x1f1\x1f999999").decode().rstrip("=")
    for message_id in (forged, "bm90LWFuLWlk", "A" * 40):
        response = imap_agent.runtime.get(imap_agent.message_path(message_id))
        assert (response.status, response.error["code"]) == (404, "message_not_found")
    missing = imap_agent.runtime.get(f"{imap_agent.message_path(listed['id'])}/attachments/7")
    assert (missing.status, missing.error["code"]) == (404, "attachment_not_found")
    cursor = imap_agent.runtime.get(imap_agent.messages_path(cursor=listed["id"]))
    assert (cursor.status, cursor.error["field"]) == (422, "cursor")


def test_marking_read_and_unread_sets_the_seen_flag(
    imap_agent: MailAgent, dovecot: DovecotServer
) -> None:
    imap_agent.deliver(_message(subject="Flag me"))
    listed = _page(imap_agent, limit=1)["messages"][0]

    def seen() -> bool:
        return "\\Seen" in _held(dovecot, imap_agent.login, "INBOX", b"Flag me").flags

    path = imap_agent.message_path(listed["id"])
    assert imap_agent.runtime.request("PATCH", path, {"read": True}).status == 204
    assert seen()
    assert imap_agent.runtime.request("PATCH", path, {"read": False}).status == 204
    assert not seen()


# ---- sending -----------------------------------------------------------------------------


def test_a_message_goes_out_once_and_its_copy_lands_in_the_sent_folder(
    imap_agent: MailAgent, smtp: SmtpServer, dovecot: DovecotServer
) -> None:
    body = {
        "to": ["customer@example.org"],
        "cc": ["team@example.org"],
        "bcc": ["audit@example.org"],
        "subject": "Your order",
        "text": "It shipped.",
        "html": "<p>It shipped.</p>",
        "attachments": [
            {"filename": "label.txt", "content_type": "text/plain", "content": "TGFiZWw="}
        ],
    }
    before = len(smtp.messages)
    sent = imap_agent.send(body, key="order-1")
    assert sent["recipients"] == ["customer@example.org", "team@example.org", "audit@example.org"]
    assert sent["refused"] == []
    (received,) = smtp.messages[before:]
    assert received.sender == imap_agent.login
    assert sorted(received.recipients) == sorted(sent["recipients"])
    delivered = message_from_bytes(received.content, policy=policy.default)
    assert delivered["From"] == f"Support agent <{imap_agent.login}>"
    assert delivered["Message-ID"] == sent["message_id"]
    assert delivered["Bcc"] is None  # the envelope carries it; the message shows no one
    assert delivered.get_body(("plain",)).get_content().strip() == "It shipped."  # type: ignore[union-attr]
    copy = _held(dovecot, imap_agent.login, SENT_FOLDER, sent["message_id"].encode())
    assert "\\Seen" in copy.flags
    # The sender's own copy is what was sent, byte for byte, and keeps the Bcc.
    assert copy.raw.replace(b"Bcc: audit@example.org\r\n", b"") == received.content
    assert b"Bcc: audit@example.org" in copy.raw
    assert sent["id"] is not None  # the copy's id (UIDPLUS)
    read_back = imap_agent.runtime.get(imap_agent.message_path(sent["id"])).json()
    assert read_back["folder"] == "sent" and read_back["message_id"] == sent["message_id"]
    # The same key again: the first result, and nothing sent twice.
    assert imap_agent.send(body, key="order-1") == sent
    assert len(smtp.messages) == before + 1


def test_an_idempotency_key_goes_with_one_message(imap_agent: MailAgent, local_api: Any) -> None:
    body = {"to": ["customer@example.org"], "subject": "One", "text": "One."}
    imap_agent.send(body, key="key-1")
    # Replayed by anyone who may not send as this agent, the key reveals nothing: the first
    # result is the agent's own.
    org_id, path = imap_agent.org.org_id, imap_agent.send_path
    strangers = {
        "another organization": make_org(local_api).client.token,
        "another agent": local_api.issuer.mint(
            sub="r", org_id=org_id, agent_id="someone-else", scopes=("mail.send",)
        ),
        "a member": local_api.issuer.mint(
            sub="m", org_id=org_id, role="member", scopes=("mail.send",)
        ),
    }
    for who, token in strangers.items():
        for text in ("One.", "Other."):
            replay = ApiClient(local_api.url, token).request(
                "POST", path, {**body, "text": text}, headers={"Idempotency-Key": "key-1"}
            )
            assert replay.status in (403, 404), (who, replay.text)
            assert "message_id" not in replay.text, who
    other = imap_agent.runtime.request(
        "POST", imap_agent.send_path, {**body, "text": "Two."}, headers={"Idempotency-Key": "key-1"}
    )
    assert (other.status, other.error["code"]) == (422, "idempotency_key_reused")
    missing = imap_agent.runtime.post(imap_agent.send_path, body)
    assert (missing.status, missing.error["code"]) == (422, "missing_field")


def test_concurrent_retries_of_one_send_send_it_once(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    """A client retrying impatiently: eight requests with one key at once (separate Lambda
    instances in production; threads here)."""
    body = {"to": ["customer@example.org"], "subject": "Once", "text": "Only once."}
    before = len(smtp.messages)

    def attempt(_: int) -> tuple[int, str]:
        response = imap_agent.runtime.request(
            "POST", imap_agent.send_path, body, headers={"Idempotency-Key": "race-1"}
        )
        return response.status, response.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(attempt, range(8)))
    statuses = sorted(status for status, _ in answers)
    assert set(statuses) <= {200, 409} and 200 in statuses, answers
    assert len(smtp.messages) == before + 1
    # Whoever was told "in progress" gets the one result by retrying.
    results = {text for status, text in answers if status == 200}
    assert len(results) == 1
    assert imap_agent.send(body, key="race-1") == json.loads(results.pop())


def test_a_reply_threads_with_the_original_and_marks_it_answered(
    imap_agent: MailAgent, smtp: SmtpServer, dovecot: DovecotServer
) -> None:
    original_id = f"<{uuid.uuid4().hex}@example.net>"
    imap_agent.deliver(
        _message(
            subject="Question",
            message_id=original_id,
            reply_to="replies@example.net",
            in_reply_to="<root@example.net>",
        )
    )
    listed = _page(imap_agent, limit=1)["messages"][0]
    before = len(smtp.messages)
    sent = imap_agent.send({"reply_to_message_id": listed["id"], "text": "An answer."}, key="r-1")
    (received,) = smtp.messages[before:]
    reply = message_from_bytes(received.content, policy=policy.default)
    assert reply["Subject"] == "Re: Question"
    assert reply["To"] == "replies@example.net"  # Reply-To before From (RFC 5322)
    assert reply["In-Reply-To"] == original_id
    assert reply["References"] == f"<root@example.net> {original_id}"
    assert sent["thread_id"] == listed["thread_id"]
    assert "\\Answered" in _held(dovecot, imap_agent.login, "INBOX", original_id.encode()).flags


def test_a_reply_never_falls_back_from_an_unusable_reply_to(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    """The sender asked for replies elsewhere, to an address this service cannot write to:
    writing to the sender instead would be writing to whom they asked not to be."""
    imap_agent.deliver(
        b"From: Alice <alice@example.net>\r\nReply-To: us\xc3\xa9r@ex\xc3\xa4mple.org\r\n"
        b"Subject: Elsewhere\r\nMessage-ID: <elsewhere@example.net>\r\n\r\nReply there.\r\n"
    )
    original = _page(imap_agent, limit=1)["messages"][0]
    before = len(smtp.messages)
    refused = imap_agent.runtime.request(
        "POST",
        imap_agent.send_path,
        {"reply_to_message_id": original["id"], "text": "Hello."},
        headers={"Idempotency-Key": "elsewhere-1"},
    )
    assert (refused.status, refused.error["field"]) == (422, "to"), refused.text
    assert len(smtp.messages) == before


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subject": "Hi\r\nBcc: victim@example.org"}, "subject"),
        ({"to": ["victim@example.org\r\nX: y"]}, "to.0"),
        ({"sender_name": "Agent\nBcc: x@example.org"}, "sender_name"),
        (
            {"attachments": [{"filename": "../etc/passwd", "content": "eA=="}]},
            "attachments.0.filename",
        ),
        (
            {"attachments": [{"filename": "a.txt", "content": "not base64!"}]},
            "attachments.0.content",
        ),
        ({"text": None}, "text"),
        ({"to": []}, "to"),
        ({"subject": None}, "subject"),
    ],
)
def test_what_cannot_be_sent_is_refused_naming_the_field(
    imap_agent: MailAgent, smtp: SmtpServer, change: dict[str, Any], field: str
) -> None:
    body = {"to": ["customer@example.org"], "subject": "Hi", "text": "Hello."} | change
    before = len(smtp.messages)
    response = imap_agent.runtime.request(
        "POST", imap_agent.send_path, body, headers={"Idempotency-Key": uuid.uuid4().hex}
    )
    assert (response.status, response.error.get("field")) == (422, field), response.text
    assert len(smtp.messages) == before


# ---- the client organization's policy ----------------------------------------------------


def _client_org_agent(
    local_api: Any,
    org: Org,
    mailbox: Mailbox,
    imap_body: Callable[..., dict[str, Any]],
    dovecot: DovecotServer,
    policy_body: dict[str, Any],
) -> MailAgent:
    assert org.client.put("/bridge/client-orgs/acme/email-policy", policy_body).status == 200
    agent_id = register_agent(org.org_id, client_org_id="acme")
    body = imap_body(email=mailbox.login, password=mailbox.password)
    assert org.client.put(f"/bridge/agents/{agent_id}/email-config", body).status == 200
    return MailAgent(local_api, org, mailbox, deliver=dovecot.deliver, agent_id=agent_id)


def test_the_policy_is_checked_before_anything_leaves(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    imap_body: Callable[..., dict[str, Any]],
    dovecot: DovecotServer,
    smtp: SmtpServer,
) -> None:
    policy_body = {
        "name": "Acme",
        "email_domain": "example.com",
        "allowed_recipients": ["partner.example", "boss@example.org"],
        "limits": {"per_hour": 2},
    }
    agent = _client_org_agent(local_api, org, mailbox_factory(), imap_body, dovecot, policy_body)
    before = len(smtp.messages)
    refused = agent.runtime.request(
        "POST",
        agent.send_path,
        {"to": ["boss@example.org", "eve@elsewhere.example"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": "p-1"},
    )
    assert (refused.status, refused.error["code"]) == (422, "recipients_not_allowed")
    assert "eve@elsewhere.example" in refused.error["message"]
    assert "boss@example.org" not in refused.error["message"]
    for number in range(2):
        message = {"to": [f"x{number}@partner.example"], "subject": "x", "text": "x"}
        agent.send(message, key=f"ok-{number}")
    limited = agent.runtime.request(
        "POST",
        agent.send_path,
        {"to": ["boss@example.org"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": "p-3"},
    )
    assert (limited.status, limited.error["code"]) == (429, "sending_limit_reached")
    # A reply is checked against whom it goes to: the original's sender, here not allowed.
    agent.deliver(_message(sender="stranger@elsewhere.example"))
    original = _page(agent, limit=1)["messages"][0]
    reply = agent.runtime.request(
        "POST",
        agent.send_path,
        {"reply_to_message_id": original["id"], "text": "x"},
        headers={"Idempotency-Key": "p-4"},
    )
    assert (reply.status, reply.error["code"]) == (422, "recipients_not_allowed")
    assert int(limited.headers["Retry-After"]) >= 1
    assert len(smtp.messages) == before + 2


def test_concurrent_sends_never_exceed_the_limit(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    imap_body: Callable[..., dict[str, Any]],
    dovecot: DovecotServer,
    smtp: SmtpServer,
) -> None:
    policy_body = {"name": "Acme", "limits": {"per_hour": 3}}
    agent = _client_org_agent(local_api, org, mailbox_factory(), imap_body, dovecot, policy_body)
    before = len(smtp.messages)

    def attempt(number: int) -> int:
        message = {"to": [f"x{number}@example.org"], "subject": "x", "text": "x"}
        headers = {"Idempotency-Key": f"burst-{number}"}
        return agent.runtime.request("POST", agent.send_path, message, headers=headers).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [200] * 3 + [429] * 5
    assert len(smtp.messages) == before + 3


def test_an_agent_whose_client_org_is_gone_sends_nothing(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    imap_body: Callable[..., dict[str, Any]],
    dovecot: DovecotServer,
    smtp: SmtpServer,
) -> None:
    """Its policy deleted since it was registered: sending as if there were none would fail
    open."""
    policy_body = {"name": "Acme", "allowed_recipients": ["partner.example"]}
    agent = _client_org_agent(local_api, org, mailbox_factory(), imap_body, dovecot, policy_body)
    assert org.client.delete("/bridge/client-orgs/acme/email-policy").status == 204
    before = len(smtp.messages)
    refused = agent.runtime.request(
        "POST",
        agent.send_path,
        {"to": ["anyone@elsewhere.example"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": "gone-1"},
    )
    assert (refused.status, refused.error["code"]) == (409, "client_org_missing")
    assert len(smtp.messages) == before
    # The Email tab and a test say so too, worked out at each (nothing was written).
    config_path = f"/bridge/agents/{agent.agent_id}/email-config"
    view = org.client.get(config_path).json()
    assert (view["status"], view["reason"]) == ("error", "client_org_missing")
    assert "acme" in view["last_error"]["message"]
    tested = org.client.post(config_path + "/test").json()
    assert (tested["ok"], tested["status"], tested["error"]["code"]) == (
        False,
        "error",
        "client_org_missing",
    )
    assert [check["name"] for check in tested["checks"] if not check["ok"]] == ["policy"]


def test_a_policy_changed_after_the_connection_reaches_it_at_read_test_and_send(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    imap_body: Callable[..., dict[str, Any]],
    dovecot: DovecotServer,
) -> None:
    agent = _client_org_agent(
        local_api, org, mailbox_factory(), imap_body, dovecot, {"name": "Acme"}
    )
    config_path = f"/bridge/agents/{agent.agent_id}/email-config"
    assert org.client.post(config_path + "/test").json()["status"] == "connected"
    # The domain rule arrives after the connection was made: nothing of the agent is written.
    policy = {"name": "Acme", "email_domain": "acme.example"}
    assert org.client.put("/bridge/client-orgs/acme/email-policy", policy).status == 200
    shown = org.client.get(config_path).json()
    assert (shown["status"], shown["last_error"]["code"]) == ("error", "email_domain_not_allowed")
    assert "acme.example" in shown["last_error"]["hint"]
    assert shown["delivery"] is None  # shown as Error: its delivery is not shown

    tested = org.client.post(config_path + "/test").json()
    assert (tested["ok"], tested["status"]) == (False, "error")
    assert tested["error"]["code"] == "email_domain_not_allowed"
    # The mailbox itself works: the servers' checks pass, the policy's fails.
    assert [(c["name"], c["ok"]) for c in tested["checks"]] == [
        ("imap", True),
        ("smtp", True),
        ("policy", False),
    ]
    refused = agent.runtime.request(
        "POST",
        agent.send_path,
        {"to": ["a@example.org"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": "d-1"},
    )
    assert (refused.status, refused.error["code"]) == (409, "email_domain_not_allowed")

    # The rule lifted: the agent is connected again at once, no test needed (the status
    # recorded what the servers said; the policy is worked out at each read).
    assert org.client.put("/bridge/client-orgs/acme/email-policy", {"name": "Acme"}).status == 200
    shown = org.client.get(config_path).json()
    assert (shown["status"], shown["last_error"]) == ("connected", None)
    last_check = shown["last_test"]["checks"][-1]  # the test as it ran
    assert (last_check["name"], last_check["ok"]) == ("policy", False)


def test_a_login_outside_the_domain_is_refused_and_tests_say_what_they_confirmed(
    local_api: Any, org: Org, mailbox_factory: Callable[[], Mailbox], imap_body: Any
) -> None:
    policy = {"name": "Acme", "email_domain": "acme.example"}
    assert org.client.put("/bridge/client-orgs/acme/email-policy", policy).status == 200
    path = f"/bridge/agents/{register_agent(org.org_id, client_org_id='acme')}/email-config"
    outside = org.client.put(
        path, imap_body(email="support@acme.example", username="jo@other.example")
    )
    assert (outside.status, outside.error["field"]) == (422, "username")
    box = mailbox_factory()
    alias = imap_body(email="support@example.com", username=box.login, password=box.password)
    assert org.client.put(org.config_path, alias).status == 200
    tested = org.client.post(org.config_path + "/test").json()
    # The server confirmed the login, not the address saved beside it.
    assert (tested["ok"], tested["login"], tested["email"]) == (True, box.login, box.login)


# ---- who may use it, and the status it leaves ---------------------------------------------


def test_only_the_agents_runtime_and_admins_reach_its_mail(
    imap_agent: MailAgent, local_api: Any
) -> None:
    org = imap_agent.org
    path = imap_agent.messages_path()
    other_agent = local_api.issuer.mint(
        sub="runtime", org_id=org.org_id, agent_id="someone-else", scopes=("mail.read",)
    )
    assert ApiClient(local_api.url, other_agent).get(path).status == 404
    member = local_api.issuer.mint(sub="m", org_id=org.org_id, role="member", scopes=("mail.read",))
    assert ApiClient(local_api.url, member).get(path).error["code"] == "admin_required"
    no_scope = local_api.issuer.mint(sub="r", org_id=org.org_id, agent_id=org.agent_id)
    assert ApiClient(local_api.url, no_scope).get(path).status == 403  # API Gateway's own
    reader = local_api.issuer.mint(
        sub="r", org_id=org.org_id, agent_id=org.agent_id, scopes=("mail.read",)
    )
    cannot_send = ApiClient(local_api.url, reader).request(
        "POST",
        imap_agent.send_path,
        {"to": ["a@example.org"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": "x"},
    )
    assert cannot_send.status == 403
    assert org.client.get(path).status == 200  # the organization's admin
    config = imap_agent.runtime.get(org.config_path)
    assert (config.status, config.error["code"]) == (403, "agent_token_not_allowed")
    foreign = make_org(local_api)
    assert foreign.client.get(path).status == 404


def test_a_broken_login_turns_the_agent_to_error_and_a_success_clears_it(
    imap_agent: MailAgent, dovecot: DovecotServer, smtp: SmtpServer
) -> None:
    config_path = imap_agent.org.config_path
    dovecot.set_password(imap_agent.login, "changed-elsewhere")
    failed = imap_agent.runtime.get(imap_agent.messages_path())
    assert (failed.status, failed.error["code"]) == (409, "auth_failed")
    status = imap_agent.org.client.get(config_path).json()
    assert status["status"] == "error"
    assert status["last_error"]["code"] == "auth_failed" and status["last_error"]["hint"]
    dovecot.set_password(imap_agent.login, imap_agent.password)
    assert imap_agent.runtime.get(imap_agent.messages_path()).status == 200
    status = imap_agent.org.client.get(config_path).json()
    assert (status["status"], status["last_error"]) == ("connected", None)


def test_reading_does_not_clear_a_failure_to_send(imap_agent: MailAgent, smtp: SmtpServer) -> None:
    """Reading says nothing of sending (an IMAP login is not SMTP's): only a send that works
    clears a failed one."""
    config_path = imap_agent.org.config_path
    message = {"to": ["a@example.org"], "subject": "x", "text": "x"}
    smtp.set_password(imap_agent.login, "changed-elsewhere")
    failed = imap_agent.runtime.request(
        "POST", imap_agent.send_path, message, headers={"Idempotency-Key": "s-1"}
    )
    assert (failed.status, failed.error["code"]) == (409, "auth_failed")
    assert imap_agent.runtime.get(imap_agent.messages_path()).status == 200
    status = imap_agent.org.client.get(config_path).json()
    assert status["status"] == "error"
    assert (status["last_error"]["code"], status["last_error"]["during"]) == (
        "auth_failed",
        "sending",
    )
    smtp.set_password(imap_agent.login, imap_agent.password)
    imap_agent.send(message, key="s-2")
    status = imap_agent.org.client.get(config_path).json()
    assert (status["status"], status["last_error"]) == ("connected", None)


def test_a_busy_server_asks_to_retry_and_leaves_the_status_alone(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    smtp.refuse_next("MAIL", "451 4.7.1 Try again later")
    busy = imap_agent.runtime.request(
        "POST",
        imap_agent.send_path,
        {"to": ["a@example.org"], "subject": "x", "text": "x"},
        headers={"Idempotency-Key": "busy-1"},
    )
    assert (busy.status, busy.error["code"]) == (429, "server_busy")
    assert int(busy.headers["Retry-After"]) > 0
    assert imap_agent.org.client.get(imap_agent.org.config_path).json()["status"] != "error"
    # Nothing left: the same key sends now.
    assert imap_agent.send({"to": ["a@example.org"], "subject": "x", "text": "x"}, key="busy-1")
