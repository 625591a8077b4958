"""Shared fixtures: real servers (Dovecot, aiosmtpd, moto) and the API served by the local
adapter, so every test drives the same handlers, template routes and storage as production.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mailbridge_tools.sandbox import (
    CertificateAuthority,
    DovecotServer,
    FakeGoogle,
    FakeMicrosoft,
    Sandbox,
    SmtpServer,
    dovecot_binary,
)
from support import (
    BULK_MAILBOX,
    FUZZ_FIGURES,
    MAIL_TIMEOUT_SECONDS,
    MAILBOX,
    MAILBOX_PASSWORD,
    Org,
    make_org,
    require_component,
)


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="session")
def server_cert(ca: CertificateAuthority) -> tuple[Path, Path]:
    # Named for localhost only, so connecting to 127.0.0.1 shows a host-name mismatch.
    return ca.issue(["localhost"])


@pytest.fixture(scope="session")
def dovecot(server_cert: tuple[Path, Path]) -> Iterator[DovecotServer]:
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    cert, key = server_cert
    users = {MAILBOX: MAILBOX_PASSWORD, BULK_MAILBOX: MAILBOX_PASSWORD}
    with DovecotServer(cert, key, users) as server:
        server.add_messages(MAILBOX, 12, unseen=5)
        server.add_messages(BULK_MAILBOX, 5000, unseen=1234)
        yield server


@pytest.fixture(scope="session")
def smtp(server_cert: tuple[Path, Path]) -> Iterator[SmtpServer]:
    cert, key = server_cert
    users = {MAILBOX: MAILBOX_PASSWORD, BULK_MAILBOX: MAILBOX_PASSWORD}
    with SmtpServer(cert, key, users) as server:
        yield server


@pytest.fixture(scope="session")
def identity_cert(ca: CertificateAuthority) -> tuple[Path, Path]:
    return ca.issue(["localhost", "127.0.0.1"])


@pytest.fixture(scope="session")
def microsoft(identity_cert: tuple[Path, Path]) -> Iterator[FakeMicrosoft]:
    with FakeMicrosoft(*identity_cert) as fake:
        yield fake


@pytest.fixture(scope="session")
def google(identity_cert: tuple[Path, Path]) -> Iterator[FakeGoogle]:
    with FakeGoogle(*identity_cert) as fake:
        yield fake


@pytest.fixture(scope="session")
def local_api(
    ca: CertificateAuthority, microsoft: FakeMicrosoft, google: FakeGoogle
) -> Iterator[Any]:
    # Settings are read once per process, as on Lambda: set them before any handler loads.
    os.environ["MAIL_EXTRA_CA_FILE"] = str(ca.ca_path)
    os.environ["MAIL_TIMEOUT_SECONDS"] = str(MAIL_TIMEOUT_SECONDS)
    # The providers' endpoints point at the fakes, whose CA requests (MSAL, google-auth)
    # trusts through REQUESTS_CA_BUNDLE; nothing here reaches the internet.
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca.ca_path)
    os.environ["PROVIDER_TIMEOUT_SECONDS"] = str(MAIL_TIMEOUT_SECONDS)
    os.environ["MICROSOFT_AUTHORITY_HOST"] = microsoft.base_url
    os.environ["GRAPH_BASE_URL"] = f"{microsoft.base_url}/v1.0"
    os.environ["GOOGLE_AUTH_URL"] = f"{google.base_url}/o/oauth2/v2/auth"
    os.environ["GOOGLE_TOKEN_URL"] = f"{google.base_url}/token"
    os.environ["GOOGLE_REVOKE_URL"] = f"{google.base_url}/revoke"
    os.environ["GMAIL_BASE_URL"] = f"{google.base_url}/gmail/v1"
    from mailbridge_tools.localapi import LocalApi

    # The test servers listen on loopback, on high ports: allowed explicitly, as a
    # deployment with self-hosted servers would.
    with LocalApi(parameters=Sandbox.parameters()) as api:
        yield api


@pytest.fixture
def logs(local_api: Any) -> Iterator[list[str]]:
    """The JSON lines the functions log during the test, as CloudWatch would receive them.
    (A handler of our own: the functions' stdout handler keeps whatever stream it was
    given when it was created, which pytest's capture fixtures do not see.)"""
    from mailbridge.observability import logger

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    keep = Keep()
    keep.setFormatter(logger.registered_formatter)
    logger.addHandler(keep)
    yield lines
    logger.removeHandler(keep)


@pytest.fixture
def org(local_api: Any) -> Org:
    return make_org(local_api)


@pytest.fixture
def other_org(local_api: Any) -> Org:
    return make_org(local_api)


@pytest.fixture
def imap_body(dovecot: DovecotServer, smtp: SmtpServer) -> Callable[..., dict[str, Any]]:
    """Builds a PUT body pointing at the test servers (custom preset)."""

    def build(
        *,
        imap_security: str = "tls",
        smtp_security: str = "starttls",
        password: str | None = MAILBOX_PASSWORD,
        **overrides: Any,
    ) -> dict[str, Any]:
        imap_port = dovecot.imaps_port if imap_security == "tls" else dovecot.imap_port
        smtp_port = smtp.tls_port if smtp_security == "tls" else smtp.starttls_port
        body: dict[str, Any] = {
            "provider": "imap",
            "preset": "custom",
            "email": MAILBOX,
            "imap": {"host": "localhost", "port": imap_port, "security": imap_security},
            "smtp": {"host": "localhost", "port": smtp_port, "security": smtp_security},
        }
        if password is not None:
            body["password"] = password
        body.update(overrides)
        return body

    return build


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The contract fuzzing's figures, at the end of the run where CI logs show them."""
    figures = config.stash.get(FUZZ_FIGURES, None)
    if figures is None:
        return
    terminalreporter.section("contract fuzzing (schemathesis)")
    for line in figures.summary():
        terminalreporter.write_line(line)
