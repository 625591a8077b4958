"""Mail servers and providers that answer, but not what they should: a missing or garbled
STATUS or unread SEARCH, a number too large to store, JSON that is not the expected object,
or no JSON at all. Each is the server's error (`server_error`, `provider_error`), never a
500 of ours."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mailbridge_tools.sandbox import ScriptedImapServer
from mailbridge_tools.sandbox.tls import server_context
from support import OAuthAgent, Org, age_tokens, posted

Body = Callable[..., dict[str, Any]]


def imap_check(org: Org, imap_body: Body, port: int, **imap: Any) -> dict[str, Any]:
    """The connection test's IMAP check, saved and run against the server on `port` with
    the `imap` settings given."""
    body = imap_body()
    body["imap"].update(port=port, **imap)
    assert org.client.put(org.config_path, body).status == 200
    response = org.client.post(org.config_path + "/test")
    assert response.status == 200, response.text  # a check that fails is still answered
    checks: list[dict[str, Any]] = response.json()["checks"]
    return next(check for check in checks if check["name"] == "imap")


@pytest.mark.parametrize(
    "status_lines",
    [
        [b"* STATUS INBOX (UNSEEN 3)"],  # MESSAGES left out
        [],  # no STATUS at all
        [b"* STATUS INBOX (MESSAGES many UNSEEN 1)"],
        [b"* STATUS INBOX (MESSAGES 1" + b"0" * 40 + b" UNSEEN 1)"],  # past what is stored
        [b"* STATUS INBOX (MESSAGES -5 UNSEEN 1)"],
    ],
    ids=["missing", "absent", "not-a-number", "too-large", "negative"],
)
def test_an_imap_server_that_garbles_status(
    org: Org, imap_body: Body, server_cert: tuple[Path, Path], status_lines: list[bytes]
) -> None:
    with ScriptedImapServer(server_context(*server_cert), {b"STATUS": status_lines}) as imap:
        check = imap_check(org, imap_body, imap.port)
    assert check["error"]["code"] == "server_error"
    assert org.client.get(org.config_path).json()["last_error"]["code"] == "server_error"


def test_an_imap_server_whose_greeting_lists_no_capabilities_is_asked_for_them(
    org: Org, imap_body: Body, server_cert: tuple[Path, Path]
) -> None:
    """The capabilities come from the greeting when it has them (a round trip saved); a
    plain `* OK` greeting costs the CAPABILITY command, as imaplib always spent it."""
    with ScriptedImapServer(
        server_context(*server_cert),
        {b"STATUS": [b"* STATUS INBOX (MESSAGES 3 UNSEEN 1)"]},
        greeting=b"* OK scripted",
    ) as imap:
        check = imap_check(org, imap_body, imap.port)
    assert check["ok"] is True, check


def test_capabilities_said_before_starttls_are_asked_again_after_it(
    org: Org, imap_body: Body, server_cert: tuple[Path, Path]
) -> None:
    """What a plain connection said can be forged on the way (RFC 3501, 6.2.1): after
    STARTTLS the capabilities are asked again, the greeting's are not kept."""
    with ScriptedImapServer(
        server_context(*server_cert),
        {b"STATUS": [b"* STATUS INBOX (MESSAGES 3 UNSEEN 1)"]},
        greeting=b"* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN] scripted",
        starttls=True,
    ) as imap:
        check = imap_check(org, imap_body, imap.port, security="starttls")
    assert check["ok"] is True, check
    assert imap.commands[:3] == [b"STARTTLS", b"CAPABILITY", b"LOGIN"], imap.commands


def test_a_preauthenticated_starttls_connection_is_refused_before_any_password(
    org: Org, imap_body: Body, server_cert: tuple[Path, Path]
) -> None:
    """A PREAUTH greeting on a connection that must become TLS: STARTTLS is illegal once
    authenticated, so the connection would stay plain; the check fails without a login."""
    with ScriptedImapServer(
        server_context(*server_cert),
        {},
        greeting=b"* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS] scripted",
        starttls=True,
    ) as imap:
        check = imap_check(org, imap_body, imap.port, security="starttls")
    assert check["ok"] is False, check
    assert b"LOGIN" not in imap.commands and b"AUTHENTICATE" not in imap.commands


@pytest.mark.parametrize(
    "search_lines",
    [
        # Four billion UIDs for a page of 50: a set is never expanded past what was asked.
        [b'* ESEARCH (TAG "x") UID COUNT 3 PARTIAL (1:3 1:4294967295)'],
        [b'* ESEARCH (TAG "x") UID COUNT lots'],
        [b'* ESEARCH (TAG "x") UID COUNT 3 PARTIAL (1:3 2:x)'],
        [b'* ESEARCH (TAG "x") UID COUNT'],
        [],  # no ESEARCH at all
    ],
    ids=["too-many-uids", "not-a-count", "not-a-set", "no-value", "absent"],
)
def test_an_imap_server_that_garbles_an_unread_search(
    org: Org, imap_body: Body, server_cert: tuple[Path, Path], search_lines: list[bytes]
) -> None:
    answers = {
        b"CAPABILITY": [b"* CAPABILITY IMAP4rev1 AUTH=PLAIN ESEARCH CONTEXT=SEARCH"],
        b"EXAMINE": [b"* 3 EXISTS", b"* OK [UIDVALIDITY 7] UIDs valid"],
        b"UID": search_lines,  # UID SEARCH RETURN (...)
    }
    with ScriptedImapServer(server_context(*server_cert), answers) as imap:
        body = imap_body()
        body["imap"]["port"] = imap.port
        assert org.client.put(org.config_path, body).status == 200
        response = org.client.get(f"/bridge/agents/{org.agent_id}/mail/messages?unread=true")
    assert (response.status, response.error["code"]) == (502, "server_error"), response.text


# (provider, step, endpoint, answer): what the provider sends instead of the right answer.
GARBLED = [
    ("microsoft", "test", "/v1.0/me", "[]"),
    ("microsoft", "test", "/v1.0/me/mailFolders/inbox", '{"totalItemCount": "lots"}'),
    ("microsoft", "refresh", "/oauth2/v2.0/token", "not json"),
    ("microsoft", "authorize", "/v2.0/.well-known/openid-configuration", "{}"),
    ("microsoft", "sign-in", "/oauth2/v2.0/token", "[1, 2]"),
    ("google", "test", "/gmail/v1/users/me/labels/INBOX", "not json"),
    ("google", "refresh", "/token", "[]"),
    ("google", "sign-in", "/token", '{"access_token": 7}'),
    ("google", "sign-in", "/gmail/v1/users/me/profile", '{"emailAddress": null}'),
]


@pytest.mark.parametrize(("provider", "step", "endpoint", "answer"), GARBLED)
def test_a_provider_that_garbles_its_answer(
    request: pytest.FixtureRequest, provider: str, step: str, endpoint: str, answer: str
) -> None:
    agent: OAuthAgent = request.getfixturevalue(f"{provider}_agent")
    if step == "authorize":
        tenant = f"t{uuid.uuid4().hex[:8]}.example"  # MSAL has not cached its metadata
        agent.fake.tenants.add(tenant)
        agent.save(tenant=tenant)
        agent.fake.answer_next(endpoint, 200, answer)
        response = agent.org.client.post(agent.path + "/authorize", {"origin": agent.api.url})
        assert (response.status, response.error["code"]) == (502, "provider_error")
        return
    if step == "sign-in":
        agent.save()
        location = agent.sign_in(agent.authorization_url())
        agent.fake.answer_next(endpoint, 200, answer)
        page = agent.callback(location)
        assert page.status == 200, page.text
        assert posted(page)[0]["error"]["code"] in {"provider_error", "authorization_failed"}
        return
    agent.connect()
    if step == "refresh":
        age_tokens(agent.org.agent_id)
    agent.fake.answer_next(endpoint, 200, answer)
    result = agent.test()
    failed = [check for check in result["checks"] if not check["ok"]]
    assert [check["error"]["code"] for check in failed] == ["provider_error"], result
    assert agent.test()["ok"] is True  # the next, right answer works again
