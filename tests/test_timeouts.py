"""Timeouts on every provider path. A server that accepts and never answers, and one that
answers one byte a second (each read succeeds, so only a deadline on the whole exchange
ends it), end in the `timeout` code within the configured limit, through the HTTP API; an
IMAP server that drips once SMTP has sent holds the send no longer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from mailbridge_tools.sandbox import (
    BlackholeServer,
    DovecotServer,
    ScriptedImapServer,
    SlowDripServer,
    SmtpServer,
)
from mailbridge_tools.sandbox.tls import server_context
from support import (
    MAIL_TIMEOUT_SECONDS,
    MailAgent,
    Mailbox,
    OAuthAgent,
    Org,
    age_tokens,
    posted,
)

LIMIT = MAIL_TIMEOUT_SECONDS  # the tests' mail and provider timeouts
SLACK = 1.5  # seconds for everything around the stalled exchange
GREETINGS = {"imap": b"* OK IMAP4rev1 a very slow greeting\r\n", "smtp": b"220 a slow ESMTP\r\n"}
Body = Callable[..., dict[str, Any]]


def misbehaving_server(
    behaviour: str, protocol: str, security: str, cert: tuple[Path, Path]
) -> AbstractContextManager[BlackholeServer | SlowDripServer]:
    if behaviour == "silent":
        return BlackholeServer()
    tls = server_context(*cert) if security == "tls" else None
    return SlowDripServer(GREETINGS[protocol], tls=tls)


@pytest.mark.parametrize("behaviour", ["silent", "drip"])
@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_mail_servers_that_stall_end_in_timeout(
    org: Org, imap_body: Body, server_cert: tuple[Path, Path], behaviour: str, security: str
) -> None:
    """Silent: the TLS handshake (implicit TLS) or the greeting (STARTTLS) never comes.
    Drip: the greeting comes one byte at a time, after a TLS handshake with implicit TLS."""
    with (
        misbehaving_server(behaviour, "imap", security, server_cert) as imap,
        misbehaving_server(behaviour, "smtp", security, server_cert) as smtp,
    ):
        body = imap_body(imap_security=security, smtp_security=security)
        body["imap"]["port"], body["smtp"]["port"] = imap.port, smtp.port
        assert org.client.put(org.config_path, body).status == 200
        started = time.monotonic()
        response = org.client.post(org.config_path + "/test")
        elapsed = time.monotonic() - started
    result = response.json()
    assert [check["error"]["code"] for check in result["checks"]] == ["timeout", "timeout"]
    # Both checks run at once, each bounded by the limit: not twice the limit.
    assert elapsed < LIMIT + SLACK, elapsed
    assert org.client.get(org.config_path).json()["last_error"]["code"] == "timeout"


def test_an_imap_server_that_drips_the_sent_copy_holds_the_send_no_longer(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    imap_body: Body,
    server_cert: tuple[Path, Path],
    smtp: SmtpServer,
    dovecot: DovecotServer,
) -> None:
    """The session that found the Sent folder (on a thread, while SMTP sent) is reused for
    the APPEND, which the server answers a byte at a time for longer than the limit: the
    deadline of the copy's exchange must watch a socket an earlier exchange opened."""
    mailbox = mailbox_factory()
    folders = {b"LIST": [rb'* LIST (\Sent) "/" Sent']}
    slow = b"+ " + b"." * 40 + b"\r\n"  # 10 s at 0.25 s a byte
    with ScriptedImapServer(
        server_context(*server_cert), folders, drip=b"APPEND", dripped=slow, interval=0.25
    ) as imap:
        body = imap_body(email=mailbox.login, password=mailbox.password)
        body["imap"]["port"] = imap.port
        assert org.client.put(org.config_path, body).status == 200
        agent = MailAgent(local_api, org, mailbox, deliver=dovecot.deliver)
        before = len(smtp.messages)
        started = time.monotonic()
        sent = agent.send({"to": ["a@example.org"], "subject": "x", "text": "x"}, key="drip")
        elapsed = time.monotonic() - started
    assert elapsed < LIMIT + SLACK, elapsed
    # It left, so it is reported sent; the copy is best effort, and none was kept.
    assert len(smtp.messages) == before + 1 and sent["id"] is None


# (provider, step, the endpoint that stalls): every call the service makes to a provider.
PROVIDER_PATHS = [
    ("microsoft", "authorize", "/v2.0/.well-known/openid-configuration"),
    ("microsoft", "sign-in", "/oauth2/v2.0/token"),
    ("microsoft", "sign-in", "/v1.0/me"),
    ("microsoft", "test", "/v1.0/me/mailFolders/inbox"),
    ("microsoft", "refresh", "/oauth2/v2.0/token"),
    ("google", "sign-in", "/token"),
    ("google", "sign-in", "/gmail/v1/users/me/profile"),
    ("google", "test", "/gmail/v1/users/me/labels/INBOX"),
    ("google", "refresh", "/token"),
    ("google", "disconnect", "/revoke"),
]


@pytest.fixture
def timed() -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Runs a call and checks it ended within the limit."""

    def run(call: Callable[[], Any]) -> Any:
        started = time.monotonic()
        outcome = call()
        elapsed = time.monotonic() - started
        assert elapsed < LIMIT + SLACK, elapsed
        return outcome

    yield run


@pytest.mark.parametrize("behaviour", ["silent", "drip"])
@pytest.mark.parametrize(("provider", "step", "endpoint"), PROVIDER_PATHS)
def test_providers_that_stall_end_in_timeout(
    request: pytest.FixtureRequest,
    timed: Callable[[Callable[[], Any]], Any],
    provider: str,
    step: str,
    endpoint: str,
    behaviour: str,
) -> None:
    agent: OAuthAgent = request.getfixturevalue(f"{provider}_agent")
    client, path = agent.org.client, agent.path
    if step == "authorize":
        # MSAL keeps an authority's metadata once fetched: a tenant it has never seen.
        tenant = f"t{uuid.uuid4().hex[:8]}.example"
        agent.fake.tenants.add(tenant)
        agent.save(tenant=tenant)
        agent.fake.stall_next(endpoint, behaviour)
        response = timed(lambda: client.post(path + "/authorize", {"origin": agent.api.url}))
        assert (response.status, response.error["code"]) == (502, "timeout"), response.text
        return
    if step == "sign-in":
        agent.save()
        location = agent.sign_in(agent.authorization_url())
        agent.fake.stall_next(endpoint, behaviour)
        result, _ = posted(timed(lambda: agent.callback(location)))
        assert result["error"]["code"] == "timeout"
        assert agent.get()["last_error"]["code"] == "timeout"
        return
    agent.connect()
    if step == "disconnect":
        agent.fake.stall_next(endpoint, behaviour)
        response = timed(lambda: client.delete(path))
        assert response.status == 200  # revocation is best effort; the tokens are gone
        assert agent.get()["status"] == "not_connected"
        return
    if step == "refresh":
        age_tokens(agent.org.agent_id)
    agent.fake.stall_next(endpoint, behaviour)
    result = timed(agent.test)
    failed = [check for check in result["checks"] if not check["ok"]]
    assert [check["error"]["code"] for check in failed] == ["timeout"], result
    assert failed[0]["name"] == ("authorization" if step == "refresh" else "mailbox")
    # Nothing was lost: once the provider answers again, the connection works.
    assert agent.test()["ok"] is True
