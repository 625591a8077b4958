"""POST .../email-config/test against real servers: Dovecot and aiosmtpd over real TLS."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mailbridge_tools.sandbox import (
    CertificateAuthority,
    DovecotServer,
    SlowDripServer,
    SmtpServer,
    free_port,
)
from support import BULK_MAILBOX, MAILBOX, MAILBOX_PASSWORD, Org

Body = Callable[..., dict[str, Any]]


def run_test(org: Org, body: dict[str, Any]) -> dict[str, Any]:
    saved = org.client.put(org.config_path, body)
    assert saved.status == 200, saved.text
    response = org.client.post(org.config_path + "/test")
    assert response.status == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def check(result: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in result["checks"] if c["name"] == name)
    return found


@pytest.mark.parametrize(
    ("imap_security", "smtp_security"), [("tls", "starttls"), ("starttls", "tls")]
)
def test_both_tls_modes_connect(
    org: Org, imap_body: Body, imap_security: str, smtp_security: str
) -> None:
    result = run_test(org, imap_body(imap_security=imap_security, smtp_security=smtp_security))
    assert result["ok"] is True, result
    assert result["status"] == "connected"
    assert result["email"] == MAILBOX
    assert result["inbox"] == {"total": 12, "unread": 5}
    assert [c["name"] for c in result["checks"]] == ["imap", "smtp"]
    assert all(c["ok"] and c["error"] is None for c in result["checks"])
    assert result["error"] is None


def test_no_mail_is_sent_by_a_test(org: Org, imap_body: Body, smtp: SmtpServer) -> None:
    before = len(smtp.messages)
    assert run_test(org, imap_body())["ok"] is True
    assert len(smtp.messages) == before


def test_wrong_password_is_auth_failed_with_a_hint(org: Org, imap_body: Body) -> None:
    result = run_test(org, imap_body(password="not-the-password"))
    assert result["ok"] is False
    assert result["status"] == "error"
    assert result["email"] is None
    assert result["inbox"] is None
    for name in ("imap", "smtp"):
        error = check(result, name)["error"]
        assert error["code"] == "auth_failed"
        assert "app password" in error["hint"]
    assert result["error"] == check(result, "imap")["error"]
    last_error = org.client.get(org.config_path).json()["last_error"]
    assert last_error["code"] == "auth_failed"


def test_a_large_mailbox_is_counted_exactly(org: Org, imap_body: Body) -> None:
    result = run_test(org, imap_body(email=BULK_MAILBOX))
    assert result["inbox"] == {"total": 5000, "unread": 1234}, result


def test_refused_port(org: Org, imap_body: Body) -> None:
    closed = free_port()
    body = imap_body()
    body["imap"]["port"] = body["smtp"]["port"] = closed
    result = run_test(org, body)
    assert check(result, "imap")["error"]["code"] == "connection_refused"
    assert check(result, "smtp")["error"]["code"] == "connection_refused"


def test_unknown_host_is_a_dns_failure(org: Org, imap_body: Body) -> None:
    body = imap_body()
    body["imap"]["host"] = body["smtp"]["host"] = "mail.does-not-exist.invalid"
    result = run_test(org, body)
    assert check(result, "imap")["error"]["code"] == "dns_failure"
    assert check(result, "smtp")["error"]["code"] == "dns_failure"


@pytest.fixture(scope="module")
def untrusted_servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[DovecotServer, SmtpServer]]:
    """Servers whose certificate chains to a CA the API does not trust."""
    rogue = CertificateAuthority.create(tmp_path_factory.mktemp("rogue-ca"), name="rogue CA")
    cert, key = rogue.issue(["localhost", "127.0.0.1"])
    users = {MAILBOX: MAILBOX_PASSWORD}
    with (
        DovecotServer(cert, key, users) as dovecot,
        SmtpServer(cert, key, users) as smtp,
    ):
        yield dovecot, smtp


def test_untrusted_certificate_is_refused(
    org: Org, imap_body: Body, untrusted_servers: tuple[DovecotServer, SmtpServer]
) -> None:
    dovecot, smtp = untrusted_servers
    body = imap_body(smtp_security="tls")
    body["imap"]["port"], body["smtp"]["port"] = dovecot.imaps_port, smtp.tls_port
    result = run_test(org, body)
    for name in ("imap", "smtp"):
        assert check(result, name)["error"]["code"] == "tls_certificate_invalid"


def test_certificate_must_match_the_host_name(org: Org, imap_body: Body) -> None:
    # The servers' certificate names localhost only; 127.0.0.1 reaches the same servers.
    body = imap_body()
    body["imap"]["host"] = body["smtp"]["host"] = "127.0.0.1"
    result = run_test(org, body)
    for name in ("imap", "smtp"):
        assert check(result, name)["error"]["code"] == "tls_certificate_invalid"


def test_tls_against_a_starttls_port_is_a_handshake_failure(org: Org, imap_body: Body) -> None:
    body = imap_body(imap_security="starttls", smtp_security="starttls")
    body["imap"]["security"] = body["smtp"]["security"] = "tls"
    result = run_test(org, body)
    for name in ("imap", "smtp"):
        error = check(result, name)["error"]
        assert error["code"] in {"tls_handshake_failed", "timeout"}, error
        assert "STARTTLS" in error["hint"] or "firewall" in error["hint"]


@pytest.fixture(scope="module")
def plain_servers(server_cert: tuple[Path, Path]) -> Iterator[tuple[DovecotServer, SmtpServer]]:
    """Servers that do not offer STARTTLS."""
    cert, key = server_cert
    users = {MAILBOX: MAILBOX_PASSWORD}
    with (
        DovecotServer(cert, key, users, offer_starttls=False) as dovecot,
        SmtpServer(cert, key, users, offer_starttls=False) as smtp,
    ):
        yield dovecot, smtp


def test_no_starttls_means_no_password_is_sent(
    org: Org, imap_body: Body, plain_servers: tuple[DovecotServer, SmtpServer]
) -> None:
    dovecot, smtp = plain_servers
    body = imap_body(imap_security="starttls", smtp_security="starttls")
    body["imap"]["port"], body["smtp"]["port"] = dovecot.imap_port, smtp.starttls_port
    result = run_test(org, body)
    for name in ("imap", "smtp"):
        error = check(result, name)["error"]
        assert error["code"] == "starttls_unavailable"
        assert "TLS" in error["hint"]
    assert smtp.auth_attempts == 0


def test_a_servers_own_words_never_reach_the_user(org: Org, imap_body: Body) -> None:
    """The original returned the server's raw text, which made the test an oracle for
    whatever a server (or a port that is not a mail server) says. Ours are our words."""
    words = "raw-server-words-5e1c"
    with (
        SlowDripServer(f"* BYE {words}\r\n".encode(), interval=0) as imap,
        SlowDripServer(f"554 {words}\r\n".encode(), interval=0) as smtp,
    ):
        body = imap_body(imap_security="starttls", smtp_security="starttls")
        body["imap"]["port"], body["smtp"]["port"] = imap.port, smtp.port
        result = run_test(org, body)
    for name in ("imap", "smtp"):
        assert check(result, name)["error"]["code"] == "server_error"
    assert words not in json.dumps(result)
    assert words not in org.client.get(org.config_path).text
