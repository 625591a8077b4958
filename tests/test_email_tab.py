"""The Email tab (web/) in a real Chromium against the local run and the sandbox servers:
IMAP, the Microsoft and Google popups and their postMessage, the banners, errors at their
fields, the guidance, a phone's width. axe-core checks every state visited for accessibility;
screenshots of the README's states go to artifacts/screenshots/."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mailbridge_tools.sandbox import DovecotServer, FakeGoogle, FakeMicrosoft, SmtpServer
from support import (
    CALLBACK,
    MAILBOX,
    MAILBOX_PASSWORD,
    REPORTS,
    MailDomains,
    Org,
    age_tokens,
    register_agent,
    require_component,
)

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).parent.parent / "artifacts" / "screenshots"
SECRET = "tab-client-secret-c4n4ry"
DESKTOP: ViewportSize = {"width": 1100, "height": 1000}
TOKEN_PROBLEM = (
    "This link's sign-in token is missing, invalid or expired. "
    "Open the Email tab again from the agent's page."
)

if os.access(CHROMIUM, os.X_OK):
    from playwright.sync_api import Browser, Locator, Page, ViewportSize, expect

# axe-core, bundled by the package: what it found over the run, printed at the end.
AXE = Axe()
BLOCKING_IMPACTS = {"serious", "critical"}
AXE_STATES: list[str] = []
AXE_BLOCKING: list[str] = []  # the states with a serious or critical violation
AXE_FINDINGS: Counter[str] = Counter()  # "rule (impact)" of the violations below serious
AXE_REPORT: list[str] = []
REPORTS["Accessibility of the Email tab (axe-core)"] = AXE_REPORT


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
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    failures = request.session.testsfailed
    try:
        yield page
        # The state the test ends in, too; not after a failure, which its own report explains.
        if request.session.testsfailed == failures:
            check_accessibility(page, f"the end of {request.node.name}")
    finally:
        context.close()


def open_tab(
    page: Page,
    local_api: Any,
    org: Org,
    agent_id: str | None = None,
    *,
    token: str | None = None,
    back: str | None = None,
) -> None:
    fragment = f"token={token or org.client.token}&agent={agent_id or org.agent_id}"
    # Another fragment alone is no new document (the tab then reloads itself): from a blank
    # page, what follows can only see the new one.
    page.goto("about:blank")
    page.goto(f"{local_api.url}/#{fragment}" + (f"&back={back}" if back else ""))
    expect(page.locator("#agent-id")).to_have_text(agent_id or org.agent_id)
    if token is None:
        expect(page.locator("body")).to_have_attribute("data-ready", "true")


def choose(page: Page, method: str) -> None:
    page.locator("label.method", has_text=method).click()
    expect(page.locator("#form-title")).to_have_text(method)
    check_accessibility(page, f"{method} chosen")


def save(page: Page) -> None:
    page.click("#save")


def badge(page: Page) -> Locator:
    return page.locator("#status-badge")


def message(page: Page) -> Locator:
    return page.locator("#message")


def said(page: Page, text: str, kind: str, where: str = "#message") -> None:
    """`text` said under `where`'s buttons, as `kind` (error, success, info), in the live
    region for it; the page as it now is checked for accessibility."""
    region = page.locator(f"{where} [role={'alert' if kind == 'error' else 'status'}]")
    expect(region).to_have_text(text)
    expect(region).to_have_class(f"message {kind}")
    check_accessibility(page, f"{where} saying {text!r}")


def card_state(page: Page, method: str) -> Locator:
    return page.locator(f".method-state[data-method={method}]")


def field_error(page: Page, input_id: str) -> Locator:
    return page.locator(f"#{input_id}-error")


def check_accessibility(page: Page, state: str) -> None:
    """axe-core's rules on the page as it is: no serious or critical violation."""
    results = AXE.run(page)
    violations = results.response["violations"]
    blocking = [v for v in violations if v["impact"] in BLOCKING_IMPACTS]
    AXE_STATES.append(state)
    if blocking:
        AXE_BLOCKING.append(state)
    AXE_FINDINGS.update(
        f"{v['id']} ({v['impact']})" for v in violations if v["impact"] not in BLOCKING_IMPACTS
    )
    below = ", ".join(f"{finding} in {n}" for finding, n in sorted(AXE_FINDINGS.items()))
    AXE_REPORT[:] = [
        f"axe-core {results.response['testEngine']['version']}, {len(AXE_STATES)} states "
        f"checked: {len(AXE_BLOCKING)} with serious or critical violations",
        f"below serious (rule, impact, states): {below or 'none'}",
    ]
    assert not blocking, f"{state}: {results.generate_report()}"


def shoot(page: Page, name: str) -> None:
    """The README's picture of a state, which is checked for accessibility too."""
    check_accessibility(page, name)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


# What runs past the page's width or is cut off inside its box: a read-only input's value
# included (one that is typed in scrolls, as inputs do).
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  const found = [];
  for (const element of document.querySelectorAll("body *")) {
    if (element.getClientRects().length === 0) continue;
    const box = element.getBoundingClientRect();
    const clips = element.tagName === "INPUT"
      ? element.readOnly
      : getComputedStyle(element).overflowX !== "visible";
    const cut = clips && element.scrollWidth > element.clientWidth + 1;
    if (box.left < -0.5 || box.right > width + 0.5 || cut) {
      found.push(`${element.tagName.toLowerCase()}#${element.id}.${element.className}: ` +
        `${Math.round(box.left)}..${Math.round(box.right)} of ${width}, ` +
        `content ${element.scrollWidth} in ${element.clientWidth}`);
    }
  }
  return found;
}"""


def assert_fits(page: Page) -> None:
    assert page.evaluate(OVERFLOWING) == []


def authorize_in_popup(page: Page, account: str, button: str = "#authorize") -> None:
    with page.expect_popup() as popup_info:
        page.click(button)
    popup = popup_info.value
    # The popup signs in, posts its result and closes itself, possibly before we look.
    said(page, f"Connected as {account}.", "success")
    expect(badge(page)).to_have_text("Connected")
    if not popup.is_closed():
        popup.wait_for_event("close")


def fill_custom_imap(page: Page, dovecot: DovecotServer, smtp: SmtpServer) -> None:
    page.select_option("#preset", "custom")
    page.fill("#email", MAILBOX)
    page.fill("#password", MAILBOX_PASSWORD)
    page.fill("#imap-host", "localhost")
    page.fill("#imap-port", str(dovecot.imaps_port))
    page.select_option("#imap-security", "tls")
    page.fill("#smtp-host", "localhost")
    page.fill("#smtp-port", str(smtp.starttls_port))
    page.select_option("#smtp-security", "starttls")


def oauth_setup(org: Org, provider: str) -> dict[str, Any]:
    """What the API says to register and grant for an app of one's own."""
    setup: dict[str, Any] = org.client.get(org.config_path).json()["oauth_setup"][provider]
    return setup


def expect_setup_steps(page: Page, org: Org, provider: str) -> None:
    """The open setup steps show the API's redirect URI and scopes."""
    setup = oauth_setup(org, provider)
    expect(page.locator("#setup")).to_have_attribute("open", "")
    expect(page.locator("#redirect-uri")).to_have_text(setup["redirect_uri"])
    expect(page.locator("#scopes li")).to_have_text(setup["scopes"])


def test_the_page_says_what_it_is_and_leads_back(page: Page, local_api: Any, org: Org) -> None:
    open_tab(page, local_api, org, back="/agents/support")
    expect(page.locator("h1")).to_have_text("Email Configuration")
    expect(page.locator("#back-link")).to_have_text("← Back to Agent")
    expect(page.locator("#back-link")).to_have_attribute("href", f"{local_api.url}/agents/support")
    # A new connection starts on a provider that takes an app password, its servers shown.
    expect(page.locator("#preset")).to_have_value("gmail")
    expect(page.locator("#imap-host")).to_have_value("imap.gmail.com")
    expect(page.locator("#preset-note")).to_contain_text("app password")
    expect(page.locator("#status-detail")).to_have_text("")
    troubleshooting = page.locator("table.troubleshooting tbody tr")
    expect(troubleshooting).to_have_count(6)
    expect(troubleshooting.first).to_contain_text("rejected the username or password")
    check_accessibility(page, "a new connection")

    # Only this origin's pages: the fragment cannot make the link lead elsewhere, and a link
    # that is no URL at all leaves the tab working (open_tab waits for it to be ready).
    for elsewhere in (
        "https://elsewhere.example/agents/support",
        "//evil.example",
        "javascript:alert(1)",
        "http://[",
    ):
        open_tab(page, local_api, org, back=elsewhere)
        expect(page.locator("#back-link")).to_be_hidden()


def test_a_bad_token_is_said_plainly(page: Page, local_api: Any, org: Org) -> None:
    open_tab(page, local_api, org, token="not-a-token")
    said(page, TOKEN_PROBLEM, "error", where="#page-message")
    # Not "Not Connected": with no answer, the status is not known.
    expect(page.locator("#status")).to_be_hidden()
    expect(page.locator("#workspace")).to_be_hidden()


def test_imap_with_presets(
    page: Page, local_api: Any, org: Org, dovecot: DovecotServer, smtp: SmtpServer
) -> None:
    open_tab(page, local_api, org)
    expect(badge(page)).to_have_text("Not Connected")
    choose(page, "Email + Password")
    page.select_option("#preset", "yahoo")
    expect(page.locator("#imap-host")).to_have_value("imap.mail.yahoo.com")
    expect(page.locator("#smtp-port")).to_have_value("465")
    expect(page.locator("#imap-host")).not_to_be_editable()
    expect(page.locator("#preset-note")).to_contain_text(
        "app password under Yahoo Account Security"
    )
    page.select_option("#preset", "microsoft365")
    expect(page.locator("#preset-note")).to_contain_text("Use the Microsoft OAuth")
    expect(page.locator("#preset-note")).to_contain_text("at the end of December 2026")
    shoot(page, "imap-preset")

    fill_custom_imap(page, dovecot, smtp)
    # From the keyboard: the focus stays on Save while it runs, and after.
    page.focus("#save")
    page.keyboard.press("Enter")
    said(page, "Configuration saved. Click Test Connection to check it.", "success")
    expect(page.locator("#save")).to_be_focused()
    expect(badge(page)).to_have_text("Configured")
    expect(page.locator("#status-detail")).to_have_text("Email + Password · saved, not tested yet")
    expect(card_state(page, "imap")).to_have_text("Saved · Configured")

    page.click("#test")
    # The save's message is replaced by the test's, not left beside it.
    said(page, "Connection works.", "success")
    expect(page.locator("#test")).to_be_focused()
    expect(badge(page)).to_have_text("Connected")
    # Why, and since when: the test's time.
    expect(page.locator("#status-detail")).to_contain_text("Email + Password · verified · checked ")
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
    save(page)
    expect(badge(page)).to_have_text("Configured")
    page.click("#test")
    said(page, "The test failed.", "error")
    expect(badge(page)).to_have_text("Error")
    last_error = page.locator("#last-error")
    expect(last_error).to_be_visible()
    recorded = org.client.get(org.config_path).json()["last_error"]
    expect(page.locator("#last-error-time")).to_have_attribute("datetime", recorded["at"])
    expect(page.locator("#last-error-time")).not_to_be_empty()
    expect(page.locator("#last-error-message")).to_have_text(recorded["message"])
    expect(page.locator("#last-error-hint")).to_contain_text("app password")
    # Said once, in the Last Error: the test's result lists the checks without repeating it.
    expect(page.get_by_text(recorded["message"])).to_have_count(1)
    expect(page.locator("#checks li")).to_have_count(2)
    expect(last_error).to_be_in_viewport()
    shoot(page, "imap-error")

    # Disconnect goes with what it removed: the focus goes to Save, not to the page's top.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#disconnect")
    said(page, "Disconnected.", "success")
    expect(badge(page)).to_have_text("Not Connected")
    expect(page.locator("#disconnect")).to_be_hidden()
    expect(page.locator("#save")).to_be_focused()


def test_the_address_suggests_the_method_and_fills_the_servers(
    page: Page, local_api: Any, org: Org, mail_domains: MailDomains, microsoft: FakeMicrosoft
) -> None:
    """As the address is typed: one lookup once it stops changing; the servers its domain's
    SRV records name are filled in and said where they came from; the person's own preset
    and servers are then offered a suggestion, never overwritten; a Microsoft 365 domain
    recommends Microsoft OAuth with its tenant."""
    mail_domains.dns.add(
        "_imaps._tcp.tab-srv.test. 300 IN SRV 0 1 993 mail.tab-srv.test.",
        "_submission._tcp.tab-srv.test. 300 IN SRV 0 1 587 mail.tab-srv.test.",
        "contoso.example. 300 IN MX 0 contoso-example.mail.protection.outlook.com.",
    )
    lookups: list[str] = []
    page.on(
        "request",
        lambda request: (
            lookups.append(request.url.partition("?email=")[2])
            if "/bridge/email-discovery" in request.url
            else None
        ),
    )
    open_tab(page, local_api, org)
    page.locator("#email").press_sequentially("jane@tab-srv.test")
    discovery = page.locator("#discovery")
    expect(discovery).to_contain_text("from the domain's SRV records")
    expect(page.locator("#preset")).to_have_value("custom")
    expect(page.locator("#imap-host")).to_have_value("mail.tab-srv.test")
    expect(page.locator("#imap-port")).to_have_value("993")
    expect(page.locator("#smtp-port")).to_have_value("587")
    expect(page.locator("#smtp-security")).to_have_value("starttls")
    shoot(page, "imap-discovered")
    # Typed without a pause: one lookup, of the whole address.
    assert lookups == ["jane%40tab-srv.test"]

    # The person's own preset stays: the settings found are offered instead.
    page.select_option("#preset", "fastmail")
    page.fill("#email", "")
    page.locator("#email").press_sequentially("jane@tab-srv.tes")
    page.wait_for_timeout(700)  # a pause longer than the debounce: a lookup
    page.locator("#email").press_sequentially("t")
    expect(discovery).to_contain_text("Settings found in the domain's SRV records.")
    assert lookups == ["jane%40tab-srv.test", "jane%40tab-srv.tes", "jane%40tab-srv.test"]
    expect(page.locator("#preset")).to_have_value("fastmail")
    expect(page.locator("#imap-host")).to_have_value("imap.fastmail.com")
    use = page.locator("#discovery-use")
    expect(use).to_have_text("Use these settings")
    use.click()
    expect(page.locator("#preset")).to_have_value("custom")
    expect(page.locator("#imap-host")).to_have_value("mail.tab-srv.test")
    expect(page.locator("#smtp-security")).to_have_value("starttls")
    expect(use).to_be_hidden()

    # The person's own server stays: another address's settings are offered instead.
    page.fill("#imap-host", "imap.mine.test")
    page.fill("#email", "")
    page.locator("#email").press_sequentially("jane@contoso.example")
    expect(discovery).to_contain_text("Microsoft 365, by the domain's MX records.")
    expect(discovery).to_contain_text("Microsoft OAuth is recommended")
    expect(discovery).to_contain_text(
        f"Its tenant ID is {microsoft.tenant_id}, from the domain's Microsoft tenant."
    )
    expect(page.locator("#imap-host")).to_have_value("imap.mine.test")
    expect(page.locator("#preset")).to_have_value("custom")
    expect(use).to_have_text("Use Microsoft OAuth")
    shoot(page, "method-recommended")
    use.click()
    expect(page.locator("#form-title")).to_have_text("Microsoft OAuth")
    expect(page.locator("#tenant")).to_have_value(microsoft.tenant_id)


def test_errors_show_at_their_fields(
    page: Page, local_api: Any, org: Org, dovecot: DovecotServer, smtp: SmtpServer
) -> None:
    open_tab(page, local_api, org)
    page.select_option("#preset", "custom")
    page.fill("#email", MAILBOX)
    for input_id in ("imap-host", "imap-port", "smtp-host", "smtp-port"):
        page.fill(f"#{input_id}", "")
    save(page)
    # Every missing field at once, as the API lists them, each marked and said in its words
    # with the form's name for the field, the first one focused.
    missing = {
        "password": "The app password is required for a new connection",
        "imap-host": "The IMAP host is required with the custom preset.",
        "imap-port": "The IMAP port is required with the custom preset.",
        "smtp-host": "The SMTP host is required with the custom preset.",
        "smtp-port": "The SMTP port is required with the custom preset.",
    }
    for input_id, words in missing.items():
        expect(page.locator(f"#{input_id}")).to_have_attribute("aria-invalid", "true")
        expect(field_error(page, input_id)).to_contain_text(words)
    expect(page.locator("[aria-invalid=true]")).to_have_count(5)
    # The hint the servers' four share, once, in the summary.
    said(
        page,
        "Not saved. 5 fields need attention. "
        "Pick a provider preset, or enter the server's host, port and security.",
        "error",
    )
    expect(page.locator("#password")).to_be_focused()
    expect(page.locator("#imap-host")).to_have_accessible_description(missing["imap-host"])
    expect(badge(page)).to_have_text("Not Connected")
    shoot(page, "field-errors")

    # Typing in a field takes its error away; the others stay.
    page.fill("#password", MAILBOX_PASSWORD)
    expect(page.locator("#password")).not_to_have_attribute("aria-invalid", "true")
    expect(field_error(page, "password")).to_be_hidden()
    expect(page.locator("[aria-invalid=true]")).to_have_count(4)
    fill_custom_imap(page, dovecot, smtp)
    expect(page.locator("[aria-invalid=true]")).to_have_count(0)

    # A field left empty that the request itself needs.
    page.fill("#email", "")
    save(page)
    said(page, "Not saved. A field needs attention.", "error")
    expect(field_error(page, "email")).to_have_text("The email address is required.")
    expect(page.locator("#email")).to_be_focused()

    # What the API refuses, every field of it at once, in its words with the form's names.
    page.fill("#email", "not-an-address")
    page.fill("#imap-host", "mail .example.com")
    save(page)
    said(page, "Not saved. 2 fields need attention.", "error")
    expect(page.locator("#email")).to_have_attribute("aria-invalid", "true")
    expect(field_error(page, "email")).to_have_text(
        "The email address must be an email address like name@example.com."
    )
    expect(page.locator("#imap-host")).to_have_attribute("aria-invalid", "true")
    expect(field_error(page, "imap-host")).to_contain_text("The IMAP host ")
    expect(page.locator("#email")).to_be_focused()
    expect(page.locator("[aria-invalid=true]")).to_have_count(2)

    page.fill("#email", MAILBOX)
    page.fill("#imap-host", "localhost")
    page.fill("#imap-port", "80")
    save(page)
    said(page, "Not saved. A field needs attention.", "error")
    expect(page.locator("#email")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#imap-port")).to_have_attribute("aria-invalid", "true")
    expect(field_error(page, "imap-port")).to_contain_text(
        "Port 80 is not a mail port this service connects to."
    )
    expect(field_error(page, "imap-port")).to_contain_text("IMAP uses 993 (TLS)")
    expect(page.locator("#imap-port")).to_be_focused()

    page.fill("#imap-port", str(dovecot.imaps_port))
    save(page)
    said(page, "Configuration saved. Click Test Connection to check it.", "success")
    expect(badge(page)).to_have_text("Configured")
    expect(page.locator("[aria-invalid=true]")).to_have_count(0)


def test_method_cards_show_the_saved_method_and_replacing_it_asks(
    page: Page, local_api: Any, org: Org, imap_body: Any, microsoft: FakeMicrosoft
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    open_tab(page, local_api, org)
    page.click("#test")
    said(page, "Connection works.", "success")
    expect(card_state(page, "imap")).to_have_text("Saved · Connected")

    choose(page, "Microsoft OAuth")
    # The IMAP connection's status stays on its own card, not over Microsoft's empty form.
    expect(card_state(page, "imap")).to_have_text("Saved · Connected")
    expect(card_state(page, "microsoft")).to_be_hidden()
    expect(page.locator("#method-note")).to_have_text(
        "This method is not saved. The agent uses its Email + Password connection "
        "(Connected); saving Microsoft OAuth replaces it."
    )
    expect(page.locator("#test-result")).to_be_hidden()
    expect(page.locator("#disconnect")).to_be_hidden()
    expect(page.locator("#test")).to_be_disabled()
    expect(page.locator("#test")).to_have_accessible_description(
        "Test Connection checks the saved Email + Password connection. "
        "Save this method first, then Authorize."
    )

    client_id = str(uuid.uuid4())
    microsoft.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    page.fill("#tenant", "organizations")
    questions: list[str] = []

    def answer(dialog: Any, accept: bool) -> None:
        questions.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", lambda dialog: answer(dialog, accept=False))
    save(page)
    said(page, "Nothing was saved: the Email + Password connection is kept.", "info")
    assert questions == [
        f"Replace the agent's Email + Password connection ({MAILBOX}) with Microsoft OAuth? "
        "The agent stops using that mailbox, and its stored credentials are deleted."
    ]
    assert org.client.get(org.config_path).json()["config"]["provider"] == "imap"

    page.once("dialog", lambda dialog: answer(dialog, accept=True))
    save(page)
    said(
        page,
        "Configuration saved. Click Authorize to sign in with the agent's Microsoft account.",
        "success",
    )
    expect(badge(page)).to_have_text("Awaiting Authorization")
    expect(card_state(page, "microsoft")).to_have_text("Saved · Awaiting Authorization")
    expect(card_state(page, "imap")).to_be_hidden()
    assert len(questions) == 2


def test_microsoft_authorizes_in_a_popup(
    page: Page, local_api: Any, org: Org, microsoft: FakeMicrosoft
) -> None:
    client_id = str(uuid.uuid4())
    microsoft.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    microsoft.add_account("tab@contoso.example", inbox_total=42, inbox_unread=7)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=local_api.url)
    open_tab(page, local_api, org)
    choose(page, "Microsoft OAuth")
    # The setup steps, with the exact redirect URI to register (the one the fake provider
    # holds) and a button to copy it, and the permissions: all as the API says.
    expect(page.locator("#setup-title")).to_have_text("Set up the app in Azure")
    expect_setup_steps(page, org, "microsoft")
    expect(page.locator("#redirect-uri")).to_have_text(local_api.url + CALLBACK)
    page.click("#copy-redirect-uri")
    expect(page.locator("#copy-status")).to_have_text("Copied.")
    assert page.evaluate("navigator.clipboard.readText()") == local_api.url + CALLBACK
    expect(page.locator("#authorize")).to_be_disabled()
    expect(page.locator("#test")).to_have_accessible_description(
        "Save the configuration first: Authorize and Test Connection use it."
    )

    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    page.fill("#tenant", "organizations")
    save(page)
    said(
        page,
        "Configuration saved. Click Authorize to sign in with the agent's Microsoft account.",
        "success",
    )
    expect(badge(page)).to_have_text("Awaiting Authorization")
    expect(page.locator("#scopes li")).to_have_text(oauth_setup(org, "microsoft")["scopes"])
    expect(page.locator("#test")).to_be_disabled()
    expect(page.locator("#test")).to_have_accessible_description(
        "Authorize first: Test Connection needs the account's sign-in."
    )
    shoot(page, "microsoft-awaiting")

    authorize_in_popup(page, "tab@contoso.example")
    # Authorize is gone with its purpose: the focus is on what replaced it.
    expect(page.locator("#authorize")).to_be_hidden()
    expect(page.locator("#reauthorize")).to_be_focused()
    page.click("#test")
    said(page, "Connection works.", "success")
    expect(page.locator("#inbox-total")).to_have_text("42")
    expect(page.locator("#confirmed-email")).to_have_text("tab@contoso.example")
    shoot(page, "microsoft-connected")


def test_a_failed_sign_in_is_said_where_authorize_was_clicked(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    # A laptop's window: not the whole tab in view at once.
    page.set_viewport_size({"width": 1100, "height": 700})
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    open_tab(page, local_api, org)
    choose(page, "Google OAuth")
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    save(page)
    expect(badge(page)).to_have_text("Awaiting Authorization")

    google.deny_next_authorization("access_denied", "The user declined.")
    with page.expect_popup() as popup_info:
        page.click("#authorize")
    # Beside the button, and said once: the Last Error just below has its words and time,
    # and the method's card above says the status.
    said(page, "The sign-in failed.", "error")
    popup = popup_info.value
    if not popup.is_closed():
        popup.wait_for_event("close")
    expect(badge(page)).to_have_text("Error")
    expect(message(page)).to_be_in_viewport()
    expect(page.locator("#last-error")).to_be_in_viewport()
    expect(card_state(page, "google")).to_have_text("Saved · Error")
    expect(card_state(page, "google")).to_be_in_viewport()
    expect(page.locator("#last-error-time")).not_to_be_empty()
    recorded = org.client.get(org.config_path).json()["last_error"]
    expect(page.get_by_text(recorded["message"])).to_have_count(1)


def test_google_authorizes_and_reauthorizes(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    google.add_account("tab@workspace.example", inbox_total=1200, inbox_unread=31)
    open_tab(page, local_api, org)
    choose(page, "Google OAuth")
    expect(page.locator("#tenant-field")).to_be_hidden()
    expect(page.locator("#setup-title")).to_have_text("Set up the app in Google Cloud")
    expect_setup_steps(page, org, "google")
    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    save(page)
    expect(badge(page)).to_have_text("Awaiting Authorization")
    authorize_in_popup(page, "tab@workspace.example")

    expect(page.locator("#reauthorize")).to_be_visible()
    authorize_in_popup(page, "tab@workspace.example", "#reauthorize")
    page.click("#test")
    said(page, "Connection works.", "success")
    expect(page.locator("#inbox-unread")).to_have_text("31")
    shoot(page, "google-connected")

    # The grant dies: the error's hint names Re-authorize, and the button is there.
    google.revoke_all_grants()
    age_tokens(org.agent_id)
    page.click("#test")
    said(page, "The test failed.", "error")
    expect(badge(page)).to_have_text("Error")
    expect(page.locator("#last-error-hint")).to_contain_text("Re-authorize")
    expect(page.locator("#reauthorize")).to_be_visible()
    authorize_in_popup(page, "tab@workspace.example", "#reauthorize")


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
    save(page)
    expect(badge(page)).to_have_text("Awaiting Authorization")
    # Each message heard makes the tab read the status again.
    reloads: list[str] = []

    def count_reload(request: Any) -> None:
        if request.method == "GET" and request.url.endswith(org.config_path):
            reloads.append(request.url)

    page.on("request", count_reload)

    forged = {
        "type": "mailbridge:oauth-result",
        "agentId": org.agent_id,
        "provider": "google",
        "status": "connected",
        "email": "attacker@evil.example",
    }
    # localhost and 127.0.0.1 are the same server but different origins; the API's origin
    # posts last, the control: heard, and answered by the server's state.
    for origin in (local_api.url.replace("127.0.0.1", "localhost"), local_api.url):
        with page.expect_popup() as popup_info:
            page.evaluate("url => { window.open(url); }", f"{origin}/style.css")
        popup = popup_info.value
        popup.wait_for_load_state()
        popup.evaluate("message => window.opener.postMessage(message, '*')", forged)
        popup.close()
    said(page, "The sign-in did not complete. Click Authorize to try again.", "error")
    # Messages arrive in order: the other origin's, first, was not even a cue to reload.
    assert reloads == [local_api.url + org.config_path]
    # The tab shows the server's state, which no message can change.
    expect(badge(page)).to_have_text("Awaiting Authorization")
    expect(page.get_by_text("attacker")).to_have_count(0)


def acme_agent(org: Org) -> str:
    """An agent of a client organization of `org` whose policy has each kind of rule."""
    client_org = f"client-{uuid.uuid4().hex[:6]}"
    policy = {
        "name": "Acme Corp",
        "email_domain": "acme.example",
        "allowed_recipients": ["acme.example", "partner@supplier.example"],
        "limits": {"per_hour": 20},
    }
    assert org.client.put(f"/bridge/client-orgs/{client_org}/email-policy", policy).status == 200
    agent: str = register_agent(org.org_id, client_org_id=client_org)
    return agent


def test_org_and_client_org_banners(
    page: Page, local_api: Any, org: Org, google: FakeGoogle
) -> None:
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    google.add_account("acme-agent@acme.example", inbox_total=5, inbox_unread=1)
    body = {"client_id": client_id, "client_secret": SECRET}
    assert org.client.put(f"/bridge/orgs/{org.org_id}/email-oauth-apps/google", body).status == 200
    agent = acme_agent(org)

    open_tab(page, local_api, org, agent)
    banner = page.locator("#client-org-banner")
    expect(banner).to_be_visible()
    expect(page.locator("#client-org-name")).to_have_text("Acme Corp")
    # The API's rules, as it words them: each once, a domain entry as a domain.
    rules = org.client.get(f"/bridge/agents/{agent}/email-config").json()["client_org"]["warnings"]
    assert "May only write to anyone at @acme.example, partner@supplier.example." in rules
    expect(page.locator("#client-org-rules li")).to_have_text(rules)
    choose(page, "Google OAuth")
    expect(page.locator("#org-banner")).to_be_visible()
    expect(page.locator("#org-banner")).to_contain_text("shared Google app")
    # With the shared app there is nothing to set up: the steps stay folded.
    expect(page.locator("#setup")).not_to_have_attribute("open", "")
    save(page)  # no credentials: the shared app
    expect(badge(page)).to_have_text("Awaiting Authorization")
    authorize_in_popup(page, "acme-agent@acme.example")
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
    said(page, "Connection works.", "success")
    expect(page.locator("#test-message-to")).to_have_value(MAILBOX)

    result = "#test-message-result"
    page.fill("#test-message-to", "")
    page.click("#send-test-message")
    said(page, "Not sent. A field needs attention.", "error", where=result)
    expect(page.locator("#test-message-to")).to_have_attribute("aria-invalid", "true")
    expect(field_error(page, "test-message-to")).to_have_text("Enter the recipient's address.")
    expect(page.locator("#test-message-to")).to_be_focused()
    # The API's refusal, at the field, with the form's name for it.
    page.fill("#test-message-to", "not-an-address")
    page.click("#send-test-message")
    expect(field_error(page, "test-message-to")).to_have_text(
        "The recipient must be an email address like name@example.com."
    )
    said(page, "Not sent. A field needs attention.", "error", where=result)

    before = len(smtp.messages)
    page.fill("#test-message-to", "someone@example.org")
    page.click("#send-test-message")
    said(page, "Sent to someone@example.org.", "success", where=result)
    expect(page.locator("#send-test-message")).to_be_focused()
    (received,) = smtp.messages[before:]
    assert received.recipients == ["someone@example.org"]
    assert b"Subject: Test message from your agent" in received.content
    shoot(page, "test-message")

    # The status cannot be read again after an action: the action's outcome still stands.
    page.route(
        f"**{org.config_path}",
        lambda route: route.abort() if route.request.method == "GET" else route.fallback(),
    )
    unread = "The page could not show the new status: The service could not be reached. "
    unread += "Check your connection, then try again."
    page.click("#test")
    said(page, f"Connection works. {unread}", "error")
    expect(page.locator("#inbox-total")).to_have_text("12")
    page.click("#send-test-message")
    said(page, f"Sent to someone@example.org. {unread}", "error", where=result)
    assert len(smtp.messages) == before + 2


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
    save(page)
    expect(page.locator("#warnings")).to_be_hidden()
    authorize_in_popup(page, "no-send@contoso.example")
    warning = page.locator("#warning-list li[data-code=send_permission_missing]")
    expect(warning).to_contain_text("can receive but not send")
    expect(warning).to_contain_text("Re-authorize")
    expect(page.locator("#reauthorize")).to_be_visible()
    shoot(page, "send-permission-missing")

    authorize_in_popup(page, "no-send@contoso.example", "#reauthorize")  # sending granted
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
    save(page)
    authorize_in_popup(page, "first@workspace.example")

    # Re-authorizing signs in another account: refused, and the tab asks, its focus on the
    # answer that changes nothing.
    google.add_account("second@workspace.example", inbox_total=9, inbox_unread=3)
    with page.expect_popup():
        page.click("#reauthorize")
    question = page.locator("#account-switch-question")
    expect(question).to_have_text(
        "Switch to second@workspace.example? The old mailbox will be disconnected."
    )
    expect(page.locator("#account-switch-reason")).to_contain_text("first@workspace.example")
    expect(page.locator("#keep-account")).to_be_focused()
    expect(badge(page)).to_have_text("Connected")
    shoot(page, "account-switch")

    page.keyboard.press("Enter")  # Keep: nothing changes
    said(page, "The connected mailbox was kept.", "info")
    expect(page.locator("#account-switch")).to_be_hidden()
    expect(page.locator("#reauthorize")).to_be_focused()
    with page.expect_popup():
        page.click("#reauthorize")
    expect(question).to_be_visible()
    with page.expect_popup():
        page.click("#switch-account")
    said(page, "Connected as second@workspace.example.", "success")
    expect(page.locator("#account-switch")).to_be_hidden()
    expect(page.locator("#reauthorize")).to_be_focused()
    page.click("#test")
    expect(page.locator("#confirmed-email")).to_have_text("second@workspace.example")


@pytest.mark.parametrize("width", [360, 390])
def test_the_tab_fits_a_phone(
    page: Page, local_api: Any, org: Org, google: FakeGoogle, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 800})
    client_id = f"{uuid.uuid4().hex[:10]}.apps.googleusercontent.com"
    google.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    account = f"phone-{width}@acme.example"
    google.add_account(account, inbox_total=1_234_567, inbox_unread=89_012)
    # An agent of a client organization: its banner takes room too.
    agent = acme_agent(org)
    open_tab(page, local_api, org, agent, back="/agents/support")
    expect(page.locator("#client-org-banner")).to_be_visible()
    # Errors take room too: a custom server's, with long hints.
    page.select_option("#preset", "custom")
    page.fill("#email", account)
    page.fill("#imap-host", "")
    save(page)
    said(page, "Not saved. 2 fields need attention.", "error")
    assert_fits(page)

    # The setup steps' scopes (Google's are full URLs) and redirect URI, as the API says.
    choose(page, "Microsoft OAuth")
    expect_setup_steps(page, org, "microsoft")
    assert_fits(page)
    choose(page, "Google OAuth")
    expect_setup_steps(page, org, "google")
    assert_fits(page)
    if width == 390:
        shoot(page, "mobile")

    page.fill("#client-id", client_id)
    page.fill("#client-secret", SECRET)
    save(page)
    authorize_in_popup(page, account)
    page.click("#test")
    said(page, "Connection works.", "success")
    expect(page.locator("#inbox-total")).to_have_text("1,234,567")
    assert_fits(page)

    google.revoke_all_grants()
    age_tokens(agent)
    page.click("#test")
    said(page, "The test failed.", "error")
    expect(page.locator("#last-error")).to_be_visible()
    assert_fits(page)
