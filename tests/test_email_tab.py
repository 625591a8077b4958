"""The Email tab (web/) in a real Chromium against the local run and the sandbox servers:
IMAP, the Microsoft and Google popups and their postMessage, the banners. Screenshots of
each state go to artifacts/screenshots/."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mailbridge_tools.sandbox import DovecotServer, FakeGoogle, FakeMicrosoft, SmtpServer
from support import (
    CALLBACK,
    MAILBOX,
    MAILBOX_PASSWORD,
    Org,
    age_tokens,
    register_agent,
    require_component,
)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent.parent / "artifacts" / "screenshots"
SECRET = "tab-client-secret-c4n4ry"

if os.access(CHROMIUM, os.X_OK):
    from playwright.sync_api import Browser, Page, expect


def _spki_pin(cert_path: Path) -> str:
    """Chromium's pin for one key: it then trusts the fake providers' certificate, and
    still verifies every other one."""
    certificate = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
    der = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture(scope="session")
def browser(identity_cert: tuple[Path, Path]) -> Iterator[Browser]:
    require_component(os.access(CHROMIUM, os.X_OK), "Chromium (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-quic",
                f"--ignore-certificate-errors-spki-list={_spki_pin(identity_cert[0])}",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 1000})
    yield context.new_page()
    context.close()


def open_tab(page: Page, local_api: Any, org: Org, agent_id: str | None = None) -> None:
    page.goto(f"{local_api.url}/#token={org.client.token}&agent={agent_id or org.agent_id}")
    expect(page.locator("#agent-id")).to_have_text(agent_id or org.agent_id)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


def choose(page: Page, method: str) -> None:
    page.locator("label.method", has_text=method).click()


def badge(page: Page) -> Any:
    return page.locator("#status-badge")


def shoot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def authorize_in_popup(page: Page, button: str = "#authorize") -> None:
    with page.expect_popup() as popup_info:
        page.click(button)
    popup = popup_info.value
    # The popup signs in, posts its result and closes itself, possibly before we look.
    expect(badge(page)).to_have_text("Connected")
    if not popup.is_closed():
        popup.wait_for_event("close")


def test_imap_with_presets(
    page: Page, local_api: Any, org: Org, dovecot: DovecotServer, smtp: SmtpServer
) -> None:
    open_tab(page, local_api, org)
    expect(badge(page)).to_have_text("Not Connected")
    choose(page, "Email + Password")
    page.select_option("#preset", "gmail")
    expect(page.locator("#imap-host")).to_have_value("imap.gmail.com")
    expect(page.locator("#smtp-port")).to_have_value("587")
    expect(page.locator("#imap-host")).not_to_be_editable()
    page.select_option("#preset", "microsoft365")
    expect(page.locator("#preset-note")).to_contain_text("Use the Microsoft OAuth")
    expect(page.locator("#preset-note")).to_contain_text("at the end of December 2026")
    shoot(page, "imap-preset")

    page.select_option("#preset", "custom")
    page.fill("#email", MAILBOX)
    page.fill("#password", MAILBOX_PASSWORD)
    page.fill("#imap-host", "localhost")
    page.fill("#imap-port", str(dovecot.imaps_port))
    page.select_option("#imap-security", "tls")
    page.fill("#smtp-host", "localhost")
    page.fill("#smtp-port", str(smtp.starttls_port))
    page.select_option("#smtp-security", "starttls")
    page.click("#imap-form button[type=submit]")
    expect(badge(page)).to_have_text("Configured")
    expect(page.locator("#status-detail")).to_have_text("untested")

    page.click("#test")
    expect(badge(page)).to_have_text("Connected")
    # Why, and since when: the test's time.
    expect(page.locator("#status-detail")).to_contain_text("verified · checked ")
    expect(page.locator("#inbox-total")).to_have_text("12")
    expect(page.locator("#inbox-unread")).to_have_text("5")
    expect(page.locator("#confirmed-email")).to_have_text(MAILBOX)
    shoot(page, "imap-connected")

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(badge(page)).to_have_text("Connected")
    expect(page.locator("#password")).to_have_value("")
    expect(page.locator("#password")).to_have_attribute(
        "placeholder", "Leave blank to keep the current one"
    )
    expect(page.locator("#email")).to_have_value(MAILBOX)

    page.fill("#password", "not-the-password")
    page.click("#imap-form button[type=submit]")
    expect(badge(page)).to_have_text("Configured")
    page.click("#test")
    expect(badge(page)).to_have_text("Error")
    expect(page.locator("#last-error")).to_be_visible()
    expect(page.locator("#last-error-message")).to_contain_text("rejected")
    expect(page.locator("#last-error-hint")).to_contain_text("app password")
    shoot(page, "imap-error")


def test_microsoft_authorizes_in_a_popup(
    page: Page, local_api: Any, org: Org, microsoft: FakeMicrosoft
) -> None:
    client_id = str(uuid.uuid4())
    microsoft.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    microsoft.add_account("tab@contoso.example", inbox_total=42, inbox_unread=7)
    open_tab(page, local_api, org)
    choose(page, "Microsoft OAuth")
    expect(page.locator("#redirect-uri")).to_have_value(local_api.url + CALLBACK)
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    page.fill("#tenant", "organizations")
    page.click("#oauth-form button[type=submit]")
    expect(badge(page)).to_have_text("Awaiting Authorization")
    shoot(page, "microsoft-awaiting")

    authorize_in_popup(page)
    expect(page.locator("#notice")).to_have_text("Connected as tab@contoso.example.")
    page.click("#test")
    expect(page.locator("#inbox-total")).to_have_text("42")
    expect(page.locator("#confirmed-email")).to_have_text("tab@contoso.example")
    shoot(page, "microsoft-connected")


def test_google_authorizes_and_reauthorizes(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    google.add_account("tab@workspace.example", inbox_total=1200, inbox_unread=31)
    open_tab(page, local_api, org)
    choose(page, "Google OAuth")
    expect(page.locator("#tenant-field")).to_be_hidden()
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    page.click("#oauth-form button[type=submit]")
    expect(badge(page)).to_have_text("Awaiting Authorization")
    authorize_in_popup(page)

    expect(page.locator("#reauthorize")).to_be_visible()
    authorize_in_popup(page, "#reauthorize")
    page.click("#test")
    expect(page.locator("#inbox-unread")).to_have_text("31")
    shoot(page, "google-connected")

    # The grant dies: the error's hint names Re-authorize, and the button is there.
    google.revoke_all_grants()
    age_tokens(org.agent_id)
    page.click("#test")
    expect(badge(page)).to_have_text("Error")
    expect(page.locator("#reauthorize")).to_be_visible()
    authorize_in_popup(page, "#reauthorize")
    expect(badge(page)).to_have_text("Connected")


def test_a_result_from_another_origin_is_ignored(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    google.register_app(
        "tab-foreign.apps.googleusercontent.com", SECRET, [local_api.url + CALLBACK]
    )
    open_tab(page, local_api, org)
    choose(page, "Google OAuth")
    page.fill("#client-id", "tab-foreign.apps.googleusercontent.com")
    page.fill("#client-secret", SECRET)
    page.click("#oauth-form button[type=submit]")
    expect(badge(page)).to_have_text("Awaiting Authorization")

    forged = {
        "type": "mailbridge:oauth-result",
        "agentId": org.agent_id,
        "provider": "google",
        "status": "connected",
        "email": "attacker@evil.example",
    }
    # localhost and 127.0.0.1 are the same server but different origins.
    for origin, accepted in (
        (local_api.url.replace("127.0.0.1", "localhost"), False),
        (local_api.url, True),
    ):
        with page.expect_popup() as popup_info:
            page.evaluate("url => { window.open(url); }", f"{origin}/style.css")
        popup = popup_info.value
        popup.wait_for_load_state()
        popup.evaluate("message => window.opener.postMessage(message, '*')", forged)
        popup.close()
        if accepted:  # the control: the same message from the API's origin is heard
            expect(page.locator("#notice")).to_have_text("Connected as attacker@evil.example.")
        else:
            page.wait_for_timeout(300)
            expect(page.locator("#notice")).not_to_contain_text("attacker")
    # Heard or not, the tab shows the server's state, which no message can change.
    expect(badge(page)).to_have_text("Awaiting Authorization")


def test_org_and_client_org_banners(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    google.add_account("acme-agent@acme.example", inbox_total=5, inbox_unread=1)
    body = {"client_id": client_id, "client_secret": SECRET}
    assert org.client.put(f"/bridge/orgs/{org.org_id}/email-oauth-apps/google", body).status == 200
    client_org = f"client-{uuid.uuid4().hex[:6]}"
    policy = {
        "name": "Acme Corp",
        "email_domain": "acme.example",
        "allowed_recipients": ["acme.example"],
        "limits": {"per_hour": 20},
    }
    assert org.client.put(f"/bridge/client-orgs/{client_org}/email-policy", policy).status == 200
    acme_agent = register_agent(org.org_id, client_org_id=client_org)

    open_tab(page, local_api, org, acme_agent)
    banner = page.locator("#client-org-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Acme Corp")
    expect(banner).to_contain_text("@acme.example")
    expect(page.locator("#client-org-warnings li")).to_have_count(3)
    choose(page, "Google OAuth")
    expect(page.locator("#org-banner")).to_be_visible()
    expect(page.locator("#org-banner")).to_contain_text("shared Google app")
    page.click("#oauth-form button[type=submit]")  # no credentials: the shared app
    expect(badge(page)).to_have_text("Awaiting Authorization")
    authorize_in_popup(page)
    shoot(page, "banners")

    # An agent of the org without a client organization: the green banner only.
    open_tab(page, local_api, org)
    expect(page.locator("#client-org-banner")).to_be_hidden()
    choose(page, "Google OAuth")
    expect(page.locator("#org-banner")).to_be_visible()
    choose(page, "Email + Password")
    expect(page.locator("#org-banner")).to_be_hidden()


def test_a_shared_apps_expiring_secret_is_warned(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    expires = (datetime.now(UTC) + timedelta(days=10)).date().isoformat()
    body = {"client_id": client_id, "client_secret": SECRET, "secret_expires_at": expires}
    assert org.client.put(f"/bridge/orgs/{org.org_id}/email-oauth-apps/google", body).status == 200
    assert org.client.put(org.config_path, {"provider": "google"}).status == 200

    open_tab(page, local_api, org)
    warning = page.locator("#warning-list li[data-code=app_secret_expiring]")
    expect(warning).to_contain_text(f"expires on {expires}")
    expect(warning).to_contain_text("Rotate the client secret in the Google Cloud console")


def test_a_connected_agent_sends_a_test_message(
    page: Page, local_api: Any, org: Org, imap_body: Any, smtp: SmtpServer
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    open_tab(page, local_api, org)
    expect(page.locator("#test-message")).to_be_hidden()  # not connected yet
    page.click("#test")
    expect(badge(page)).to_have_text("Connected")
    expect(page.locator("#test-message-to")).to_have_value(MAILBOX)
    before = len(smtp.messages)
    page.fill("#test-message-to", "someone@example.org")
    page.click("#send-test-message")
    expect(page.locator("#test-message-result")).to_have_text("Sent to someone@example.org.")
    (received,) = smtp.messages[before:]
    assert received.recipients == ["someone@example.org"]
    assert b"Subject: Test message from your agent" in received.content
    shoot(page, "test-message")


def test_a_grant_without_sending_is_warned_of(
    page: Page, local_api: Any, org: Org, microsoft: FakeMicrosoft
) -> None:
    client_id = str(uuid.uuid4())
    microsoft.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    microsoft.add_account("no-send@contoso.example", inbox_total=4, inbox_unread=1)
    # The user unticks sending at consent.
    microsoft.grant_scopes_next(
        ["Mail.ReadWrite", "User.Read", "openid", "profile", "offline_access"]
    )
    open_tab(page, local_api, org)
    choose(page, "Microsoft OAuth")
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    page.fill("#tenant", "organizations")
    page.click("#oauth-form button[type=submit]")
    expect(page.locator("#warnings")).to_be_hidden()
    authorize_in_popup(page)
    warning = page.locator("#warning-list li[data-code=send_permission_missing]")
    expect(warning).to_contain_text("can receive but not send")
    expect(warning).to_contain_text("Re-authorize")
    expect(page.locator("#reauthorize")).to_be_visible()
    shoot(page, "send-permission-missing")

    authorize_in_popup(page, "#reauthorize")  # sending granted this time
    expect(page.locator("#warnings")).to_be_hidden()


def test_switching_accounts_asks_first(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    google.add_account("first@workspace.example", inbox_total=2, inbox_unread=0)
    open_tab(page, local_api, org)
    choose(page, "Google OAuth")
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    page.click("#oauth-form button[type=submit]")
    authorize_in_popup(page)

    # Re-authorizing signs in another account: refused, and the tab asks.
    google.add_account("second@workspace.example", inbox_total=9, inbox_unread=3)
    with page.expect_popup():
        page.click("#reauthorize")
    question = page.locator("#account-switch-question")
    expect(question).to_have_text(
        "Switch to second@workspace.example? The old mailbox will be disconnected."
    )
    expect(page.locator("#account-switch-reason")).to_contain_text("first@workspace.example")
    expect(badge(page)).to_have_text("Connected")
    shoot(page, "account-switch")

    page.click("#keep-account")  # nothing changes
    expect(page.locator("#account-switch")).to_be_hidden()
    with page.expect_popup():
        page.click("#reauthorize")
    expect(question).to_be_visible()
    with page.expect_popup():
        page.click("#switch-account")
    expect(page.locator("#notice")).to_have_text("Connected as second@workspace.example.")
    expect(page.locator("#account-switch")).to_be_hidden()
    page.click("#test")
    expect(page.locator("#confirmed-email")).to_have_text("second@workspace.example")
