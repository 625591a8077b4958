"""The agent's mailbox over IMAP and SMTP, where servers differ: an SMTP server that asks to
try again later at any step, and the IMAP commands a page of unread messages and the Sent
folder's lookup cost, read from what Dovecot recorded, with every extension they use and
without them; forged UIDs in ids and cursors, which no command carries."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from mailbridge_tools.sandbox import DovecotServer, SmtpServer, dovecot_binary
from mailbridge_tools.sandbox.smtp import Command
from support import SENT_FOLDER, MailAgent, Mailbox, Org, alice_says, require_component

SEND = {"to": ["customer@example.org"], "subject": "Hello", "text": "Hello."}
# What a server without ESEARCH, CONTEXT=SEARCH or SPECIAL-USE advertises (as Outlook.com's).
BASIC_CAPABILITIES = "IMAP4rev1 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+"


def _status(agent: MailAgent) -> dict[str, Any]:
    config: dict[str, Any] = agent.org.client.get(agent.org.config_path).json()
    return config


# ---- an SMTP server that asks to try again later ------------------------------------------


@pytest.mark.parametrize(
    ("step", "reply"),
    [
        ("GREETING", "421 4.3.2 Too busy, try again later"),
        ("EHLO", "421 4.3.2 Too busy, try again later"),
        ("STARTTLS", "454 4.7.0 TLS not available right now"),
        ("AUTH", "454 4.7.0 Temporary authentication failure"),
    ],
)
def test_a_busy_smtp_server_at_any_step_asks_to_retry_and_leaves_the_status_alone(
    imap_agent: MailAgent, smtp: SmtpServer, step: Command, reply: str
) -> None:
    assert imap_agent.runtime.get(imap_agent.messages_path()).status == 200
    before, status = len(smtp.messages), _status(imap_agent)
    assert status["status"] == "connected"
    smtp.refuse_next(step, reply)
    busy = imap_agent.runtime.request(
        "POST", imap_agent.send_path, SEND, headers={"Idempotency-Key": f"busy-{step}"}
    )
    assert (busy.status, busy.error["code"]) == (429, "server_busy"), busy.text
    assert int(busy.headers["Retry-After"]) > 0
    assert _status(imap_agent) == status
    assert len(smtp.messages) == before
    # A temporary refusal leaves nothing behind: the same key sends now.
    imap_agent.send(SEND, key=f"busy-{step}")
    assert len(smtp.messages) == before + 1


def test_a_connection_test_refused_for_now_is_not_a_wrong_password(
    org: Org, imap_body: Callable[..., dict[str, Any]], smtp: SmtpServer
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    smtp.refuse_next("AUTH", "454 4.7.0 Temporary authentication failure")
    result = org.client.post(org.config_path + "/test").json()
    (smtp_check,) = [check for check in result["checks"] if check["name"] == "smtp"]
    assert smtp_check["error"]["code"] == "server_busy", result
    assert "later" in smtp_check["error"]["message"]
    assert org.client.post(org.config_path + "/test").json()["ok"] is True


# ---- what the IMAP server is asked --------------------------------------------------------


class Recording(NamedTuple):
    dovecot: DovecotServer
    extended: bool  # advertises ESEARCH, CONTEXT=SEARCH and SPECIAL-USE, as Dovecot does


@pytest.fixture(scope="module", params=["extended", "basic"])
def recording(
    request: pytest.FixtureRequest, server_cert: tuple[Path, Path]
) -> Iterator[Recording]:
    """A Dovecot of its own that records every session, advertising its extensions or not."""
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    extended = request.param == "extended"
    capabilities = None if extended else BASIC_CAPABILITIES
    with DovecotServer(
        *server_cert, {}, sent_folder=SENT_FOLDER, capabilities=capabilities, record=True
    ) as dovecot:
        yield Recording(dovecot, extended)


@pytest.fixture
def recorded_agent(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    imap_body: Callable[..., dict[str, Any]],
    recording: Recording,
) -> MailAgent:
    """The org's agent, its mailbox on the recording Dovecot (and the tests' SMTP server)."""
    mailbox = mailbox_factory()
    recording.dovecot.set_password(mailbox.login, mailbox.password)
    body = imap_body(email=mailbox.login, password=mailbox.password)
    body["imap"]["port"] = recording.dovecot.imaps_port
    assert org.client.put(org.config_path, body).status == 200
    return MailAgent(local_api, org, mailbox, deliver=recording.dovecot.deliver)


def test_unread_pages_come_from_searches_that_answer_a_page(
    recorded_agent: MailAgent, recording: Recording
) -> None:
    for number in range(5):
        recorded_agent.deliver(alice_says(f"Read {number}"), unseen=False)
        recorded_agent.deliver(alice_says(f"New {number}"))
    listed, pages, cursor = [], 0, None
    while True:
        response = recorded_agent.runtime.get(
            recorded_agent.messages_path(unread="true", limit=2, cursor=cursor)
        )
        assert response.status == 200, response.text
        page = response.json()
        listed += [message["subject"] for message in page["messages"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert (listed, pages) == ([f"New {number}" for number in reversed(range(5))], 3)
    searches = [
        command
        for command in recording.dovecot.commands(recorded_agent.login)
        if command.upper().startswith("UID SEARCH")
    ]
    if recording.extended:
        # Per page, their count and then the page's UIDs: never every unread UID.
        assert [search.split()[3].strip("()") for search in searches] == ["COUNT", "PARTIAL"] * 3
        assert searches[:2] == [
            "UID SEARCH RETURN (COUNT) UNSEEN",
            "UID SEARCH RETURN (PARTIAL 4:5) UNSEEN",
        ]
    else:
        assert len(searches) == 3 and all(" RETURN " not in search for search in searches)


def test_a_look_for_new_mail_asks_status_and_fetches_only_the_new_uids(
    local_api: Any, recorded_agent: MailAgent, recording: Recording
) -> None:
    from mailbridge.newmail.models import SyncReason, SyncRequest
    from mailbridge.storage.newmail import SqsSyncQueue

    recorded_agent.deliver(alice_says("Old"))
    tested = recorded_agent.org.client.post(recorded_agent.org.config_path + "/test")
    assert tested.json()["status"] == "connected", tested.text

    def look() -> list[str]:
        before = len(recording.dovecot.commands(recorded_agent.login))
        request = SyncRequest(agent_id=recorded_agent.agent_id, reason=SyncReason.POLL)
        SqsSyncQueue().send([request])
        local_api.process_queue()
        return recording.dovecot.commands(recorded_agent.login)[before:]

    look()  # the first: where the inbox is
    # Unchanged: one STATUS after the login, nothing selected, nothing fetched.
    assert [command.split()[0].upper() for command in look()] == ["STATUS", "LOGOUT"]
    recorded_agent.deliver(alice_says("New"))
    commands = look()
    status, select, search, fetch = commands[:4]
    assert status.upper() == 'STATUS "INBOX" (UIDVALIDITY UIDNEXT)'
    assert select.upper().startswith("EXAMINE")  # read-only: a look marks nothing read
    assert search.upper().startswith("UID SEARCH UID ") and search.endswith(":*")
    new_uid = search.split()[-1].removesuffix(":*")
    assert fetch.upper().startswith(f"UID FETCH {new_uid} ")  # its headers, the new UID's only


def test_the_sent_folder_is_found_among_the_special_use_folders_only(
    recorded_agent: MailAgent, recording: Recording, smtp: SmtpServer
) -> None:
    sent = recorded_agent.send(SEND, key="special-use")
    assert sent["id"] is not None
    copies = recording.dovecot.folder_messages(recorded_agent.login, SENT_FOLDER)
    assert [sent["message_id"].encode() in copy.raw for copy in copies] == [True]
    lists = [
        command
        for command in recording.dovecot.commands(recorded_agent.login)
        if command.upper().startswith("LIST")
    ]
    # RFC 6154's selection option where it is advertised; else every folder, flagged.
    assert lists == ['LIST (SPECIAL-USE) "" "*"' if recording.extended else 'LIST "" "*"']


def _forged(*parts: str) -> str:
    """An opaque id or cursor as a caller can make one: the parts, packed as mail.ids does."""
    return base64.urlsafe_b64encode("\x1f".join(parts).encode()).decode().rstrip("=")


def _newest_id_parts(agent: MailAgent) -> list[str]:
    """What the newest message's id holds: its kind, folder, UIDVALIDITY and UID."""
    listed = agent.runtime.get(agent.messages_path(limit=1)).json()["messages"][0]["id"]
    return base64.urlsafe_b64decode(listed + "=" * (-len(listed) % 4)).decode().split("\x1f")


# What RFC 3501's nz-number is not: a digit that is not ASCII, zero, past 32 bits.
_NOT_NZ_NUMBERS = ["²", "0", "4294967296"]


def test_forged_uids_and_uidvalidities_find_nothing_and_reach_no_server(
    recorded_agent: MailAgent, recording: Recording
) -> None:
    recorded_agent.deliver(alice_says("Keep me"))
    kind, folder, validity, uid = _newest_id_parts(recorded_agent)
    before = len(recording.dovecot.commands(recorded_agent.login))
    for number in _NOT_NZ_NUMBERS:
        for forged in (_forged(kind, folder, validity, number), _forged(kind, folder, number, uid)):
            path = recorded_agent.message_path(forged)
            for response in (
                recorded_agent.runtime.get(path),
                recorded_agent.runtime.request("PATCH", path, {"read": True}),
            ):
                assert (response.status, response.error["code"]) == (404, "message_not_found")
    assert len(recording.dovecot.commands(recorded_agent.login)) == before


def test_forged_cursor_positions_are_invalid_cursors_and_never_sent(
    recorded_agent: MailAgent, recording: Recording
) -> None:
    recorded_agent.deliver(alice_says("Page me"))
    _, folder, validity, _ = _newest_id_parts(recorded_agent)
    before = len(recording.dovecot.commands(recorded_agent.login))
    for number in _NOT_NZ_NUMBERS:
        for unread in ("false", "true"):
            listing = "unread" if unread == "true" else "all"
            cursor = _forged("imap-page", folder, listing, validity, number)
            response = recorded_agent.runtime.get(
                recorded_agent.messages_path(unread=unread, cursor=cursor)
            )
            assert (response.status, response.error["field"]) == (422, "cursor"), response.text
    # The folder is selected (a cursor is bound to its UIDVALIDITY); no UID is asked for.
    sent = recording.dovecot.commands(recorded_agent.login)[before:]
    assert sent and not [c for c in sent if "FETCH" in c.upper() or "SEARCH" in c.upper()]
