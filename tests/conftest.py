"""Shared fixtures: real servers (Dovecot, aiosmtpd, moto) and the API served by the local
adapter, so every test drives the same handlers, template routes and storage as production.
"""

from __future__ import annotations

import logging
import os
import secrets
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mailbridge_tools.sandbox import (
    CertificateAuthority,
    DnsServer,
    DomainWebServer,
    DovecotServer,
    FakeGoogle,
    FakeMicrosoft,
    Sandbox,
    SmtpServer,
    address_records,
    dovecot_binary,
)
from mailbridge_tools.template import load_template
from secret_hygiene import KeptLogLines, SecretHygiene
from support import (
    BULK_MAILBOX,
    DISCOVERY_DOMAINS,
    GOOGLE_ACCOUNT,
    ISPDB_HOST,
    MAIL_TIMEOUT_SECONDS,
    MAILBOX,
    MAILBOX_PASSWORD,
    MS_ACCOUNT,
    REPORTS,
    SENT_FOLDER,
    MailAgent,
    Mailbox,
    MailDomains,
    OAuthAgent,
    Org,
    empty_table,
    make_org,
    require_component,
)

# What the service lets out, over the whole run (secret_hygiene.py).
HYGIENE = SecretHygiene()
# The passwords of the mailboxes tests make, searched for like the others.
MAILBOX_PASSWORDS: set[str] = set()
# Gmail push: the deployment's Pub/Sub topic and its push subscription's token, at the fake.
GMAIL_PUSH_PARAMETERS = {
    "GmailPushTopic": "projects/mailbridge-test/topics/gmail",
    "GmailPushAudience": "https://mailbridge.test/api/engine/push/google",
    "GmailPushServiceAccount": "gmail-push@mailbridge-test.iam.gserviceaccount.com",
}

# The local API once started (by the first test that needs it), for the table's clean-up.
RUNNING_API: list[Any] = []

# Lambda sets a function's environment before its code loads, and Powertools reads its own
# variables once, when the layer's logger and metrics are made: test modules that import the
# layer as they are collected must find them set too.
for name, value in load_template()["Globals"]["Function"]["Environment"]["Variables"].items():
    if name.startswith("POWERTOOLS_") and isinstance(value, str):
        os.environ.setdefault(name, value)


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
    # An unusual name: a client must find it by its \Sent flag.
    with DovecotServer(cert, key, users, sent_folder=SENT_FOLDER) as server:
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
def mail_domains(ca: CertificateAuthority) -> Iterator[MailDomains]:
    """The test domains of email discovery: their DNS, and one https server for their
    autoconfig hosts and the ISPDB, all on loopback."""
    hosts = [ISPDB_HOST, *(f"{p}{d}" for d in DISCOVERY_DOMAINS for p in ("", "autoconfig."))]
    with DnsServer() as dns, DomainWebServer(*ca.issue(hosts)) as web:
        dns.add(*address_records(hosts))
        yield MailDomains(dns, web)


@pytest.fixture(scope="session")
def local_api(
    ca: CertificateAuthority,
    microsoft: FakeMicrosoft,
    google: FakeGoogle,
    mail_domains: MailDomains,
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
    # Gmail push: Google's signing keys are the fake's.
    os.environ["GOOGLE_PUSH_CERTS_URL"] = f"{google.base_url}/oauth2/v1/certs"
    # Email discovery asks the test domains' DNS server, and their https server on its port.
    os.environ["DISCOVERY_DNS_SERVER"] = mail_domains.dns.address
    os.environ["DISCOVERY_HTTPS_PORT"] = str(mail_domains.web.port)
    os.environ["DISCOVERY_ISPDB_URL"] = f"https://{ISPDB_HOST}/v1.1"
    from mailbridge_tools.localapi import LocalApi

    # The test servers listen on loopback, on high ports: allowed explicitly, as a
    # deployment with self-hosted servers would. Gmail push on, through the fake's Pub/Sub.
    parameters = Sandbox.parameters() | GMAIL_PUSH_PARAMETERS
    with LocalApi(parameters=parameters) as api, secrets_kept_from(api):
        # Gmail push: the topic's push subscription delivers to the local run's route.
        google.configure_push(
            topic=GMAIL_PUSH_PARAMETERS["GmailPushTopic"],
            endpoint=f"{api.url}/api/engine/push/google",
            audience=GMAIL_PUSH_PARAMETERS["GmailPushAudience"],
            service_account=GMAIL_PUSH_PARAMETERS["GmailPushServiceAccount"],
        )
        RUNNING_API.append(api)
        try:
            yield api
        finally:
            RUNNING_API.clear()
    # The whole suite has run through this API: did any secret ever leave?
    canaries = {MAILBOX_PASSWORD} | MAILBOX_PASSWORDS | microsoft.secrets | google.secrets
    leaks = HYGIENE.leaks(canaries)
    kept = ", ".join(f"{count} {kind}s" for kind, count in sorted(HYGIENE.kept.items()))
    report = [
        f"{len(canaries)} canaries (mailbox passwords; client secrets, authorization codes, "
        f"access and refresh tokens and PKCE verifiers of the fake providers)",
        f"searched in {kept}: {len(leaks)} found",
    ]
    for canary, where in leaks.items():
        report.append(f"LEAKED: a {len(canary)}-character canary, in a {where}")
    REPORTS["Secret hygiene"] = report
    assert not leaks, "secrets left the service; see the Secret hygiene report"


@contextmanager
def secrets_kept_from(api: Any) -> Iterator[None]:
    """Keep every response of `api` and every log line, for the search at the end."""
    from mailbridge.core.observability import logger

    def response(answer: Any) -> None:
        headers = "\n".join(f"{name}: {value}" for name, value in answer.headers)
        HYGIENE.keep("response", f"{headers}\n{answer.body.decode(errors='replace')}")

    api.response_observers.append(response)
    handlers = [
        (logging.getLogger(logger.name), KeptLogLines(HYGIENE, logger.registered_formatter)),
        (logging.getLogger(), KeptLogLines(HYGIENE, logging.Formatter())),
    ]
    for target, handler in handlers:
        target.addHandler(handler)
    try:
        yield
    finally:
        for target, handler in handlers:
            target.removeHandler(handler)


@pytest.fixture(scope="module", autouse=True)
def table_emptied_after_each_module() -> Iterator[None]:
    """Modules share no records, so each leaves the table empty: see `empty_table`."""
    yield
    for api in RUNNING_API:
        empty_table(api.table_name)


@pytest.fixture(autouse=True)
def test_name_for_the_hygiene_report(request: pytest.FixtureRequest) -> None:
    HYGIENE.test = request.node.nodeid


@pytest.fixture
def logs(local_api: Any) -> Iterator[list[str]]:
    """The JSON lines the functions log during the test, as CloudWatch would receive them.
    (A handler of our own: the functions' stdout handler keeps whatever stream it was
    given when it was created, which pytest's capture fixtures do not see.)"""
    from mailbridge.core.observability import logger

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


@pytest.fixture
def mailbox_factory(dovecot: DovecotServer, smtp: SmtpServer) -> Callable[[], Mailbox]:
    """Makes a new, empty mailbox on the test servers, IMAP and SMTP alike."""

    def make() -> Mailbox:
        mailbox = Mailbox(f"box-{uuid.uuid4().hex[:10]}@example.com", secrets.token_urlsafe(12))
        MAILBOX_PASSWORDS.add(mailbox.password)  # canaries too
        for server in (dovecot, smtp):
            server.set_password(mailbox.login, mailbox.password)
        return mailbox

    return make


@pytest.fixture
def imap_agent(
    local_api: Any,
    org: Org,
    mailbox_factory: Callable[[], Mailbox],
    dovecot: DovecotServer,
    imap_body: Callable[..., dict[str, Any]],
) -> MailAgent:
    """The org's agent, connected by IMAP/SMTP to a mailbox of its own, with its runtime's
    token."""
    mailbox = mailbox_factory()
    body = imap_body(email=mailbox.login, password=mailbox.password)
    assert org.client.put(org.config_path, body).status == 200
    return MailAgent(local_api, org, mailbox, deliver=dovecot.deliver)


@pytest.fixture
def microsoft_agent(org: Org, local_api: Any, microsoft: FakeMicrosoft) -> OAuthAgent:
    microsoft.add_account(MS_ACCOUNT, inbox_total=42, inbox_unread=7)
    return OAuthAgent(org, local_api, microsoft)


@pytest.fixture
def google_agent(org: Org, local_api: Any, google: FakeGoogle) -> OAuthAgent:
    google.add_account(GOOGLE_ACCOUNT, inbox_total=1200, inbox_unread=31)
    return OAuthAgent(org, local_api, google)


@pytest.fixture(params=["microsoft", "google"])
def agent(request: pytest.FixtureRequest) -> OAuthAgent:
    oauth_agent: OAuthAgent = request.getfixturevalue(f"{request.param}_agent")
    return oauth_agent


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The figures tests measured, where CI output shows them."""
    for title, lines in REPORTS.items():
        terminalreporter.section(title)
        for line in lines:
            terminalreporter.write_line(line)
