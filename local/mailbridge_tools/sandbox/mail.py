"""Everything the local run needs to connect an agent offline, on loopback: a demo mailbox
(Dovecot and aiosmtpd) and fake Microsoft and Google identity providers with a demo app
and account each, every mailbox with mail to read, all behind one throwaway CA."""

from __future__ import annotations

import datetime
import json
import secrets
import shlex
import shutil
import ssl
import sys
import tempfile
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from types import TracebackType
from typing import Any

from .domains import DnsServer
from .dovecot import DovecotServer
from .identity import FakeGoogle, FakeMicrosoft
from .identity.base import FakeProvider
from .smtp import SmtpServer
from .tls import CertificateAuthority

DEMO_MAILBOX = "demo@example.com"
DEMO_MICROSOFT_ACCOUNT = "demo@contoso.example"
DEMO_GOOGLE_ACCOUNT = "demo@workspace.example"
DEMO_MICROSOFT_APP = "6f1d8b1e-5c1a-4d3e-9a52-3f0b8c6f9d21"
DEMO_GOOGLE_APP = "1234-sandbox.apps.googleusercontent.com"
_CALLBACK = "/api/engine/oauth/callback"
_ACME_POLICY = "/bridge/client-orgs/acme/email-policy"
ACME_POLICY = {
    "name": "Acme Corp",
    "email_domain": "workspace.example",
    "allowed_recipients": ["workspace.example", "orders@supplier.example"],
    "limits": {"per_hour": 50, "per_day": 400},
}
# A small PDF for the demo invoice: enough for a reader to show it as one.
_INVOICE_PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


@dataclass(frozen=True)
class _DemoMessage:
    raw: bytes
    unread: bool
    received_at: datetime.datetime


def _demo_message(
    address: str,
    when: datetime.datetime,
    unread: bool,
    sender: str,
    subject: str,
    text: str,
    *,
    message_id: str | None = None,
    answering: str | None = None,
    attachment: tuple[str, bytes] | None = None,
) -> _DemoMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = sender
    message["To"] = address
    message["Subject"] = subject
    message["Date"] = format_datetime(when)
    message["Message-ID"] = message_id or make_msgid(domain=parseaddr(sender)[1].split("@")[1])
    if answering:
        message["In-Reply-To"] = answering
        message["References"] = answering
    message.set_content(text)
    if attachment:
        name, data = attachment
        message.add_attachment(data, maintype="application", subtype="pdf", filename=name)
    return _DemoMessage(message.as_bytes(), unread, when)


def _demo_mail(address: str) -> list[_DemoMessage]:
    """What a demo account holds, oldest first: a welcome, an order and its follow-up in one
    thread, an invoice with a PDF attached, and a question."""
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    order = make_msgid(domain="supplier.example")
    supplier = "Orders <orders@supplier.example>"

    def ago(hours: int) -> datetime.datetime:
        return now - datetime.timedelta(hours=hours)

    return [
        _demo_message(
            address,
            ago(72),
            False,
            "Mailbridge <welcome@mailbridge.example>",
            "Welcome to the sandbox",
            "This mailbox lives on your machine: read, mark, reply and send as you like.",
        ),
        _demo_message(
            address,
            ago(30),
            False,
            supplier,
            "Order 1042 confirmed",
            "Your order 1042 (12 boxes of paper) is confirmed.\nDelivery: Thursday.",
            message_id=order,
        ),
        _demo_message(
            address,
            ago(6),
            True,
            supplier,
            "Re: Order 1042 confirmed",
            "Small change: delivery moves to Friday morning. Does that still work?",
            answering=order,
        ),
        _demo_message(
            address,
            ago(4),
            True,
            "Billing <billing@supplier.example>",
            "Invoice 2024-117",
            "Please find invoice 2024-117 attached, due in 30 days.",
            attachment=("invoice-2024-117.pdf", _INVOICE_PDF),
        ),
        _demo_message(
            address,
            ago(1),
            True,
            "Dana Reyes <dana@workspace.example>",
            "Lunch on Friday?",
            "Are you free for lunch on Friday at noon?",
        ),
    ]


def _seed(fake: FakeProvider, address: str) -> None:
    """The demo account, its folder counts true to the mail it holds."""
    mail = _demo_mail(address)
    fake.add_account(
        address, inbox_total=len(mail), inbox_unread=sum(message.unread for message in mail)
    )
    for message in mail:
        fake.deliver(address, message.raw, unread=message.unread, received_at=message.received_at)


class Sandbox:
    """Started as a context manager; `environment()` points the API at it, and
    `register_apps(api_url)` registers the demo OAuth apps once the API's URL is known."""

    microsoft: FakeMicrosoft
    google: FakeGoogle

    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(12)
        self.client_secret = secrets.token_urlsafe(18)
        self._stack = ExitStack()
        self._directory = Path(tempfile.mkdtemp(prefix="mailbridge-sandbox-"))
        self.ca = CertificateAuthority.create(self._directory)

    def __enter__(self) -> Sandbox:
        with ExitStack() as stack:
            stack.callback(shutil.rmtree, self._directory, ignore_errors=True)
            cert, key = self.ca.issue(["localhost", "127.0.0.1"])
            users = {DEMO_MAILBOX: self.password}
            self.dovecot = stack.enter_context(DovecotServer(cert, key, users))
            self.dovecot.add_messages(DEMO_MAILBOX, 12, unseen=5)
            self.smtp = stack.enter_context(SmtpServer(cert, key, users))
            self.microsoft = stack.enter_context(FakeMicrosoft(cert, key))
            _seed(self.microsoft, DEMO_MICROSOFT_ACCOUNT)
            self.google = stack.enter_context(FakeGoogle(cert, key))
            _seed(self.google, DEMO_GOOGLE_ACCOUNT)
            self.dns = stack.enter_context(DnsServer())
            self.dns.add(*self.demo_zone())
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def demo_zone(self) -> list[str]:
        """The demo domains as email discovery finds them: the demo mailbox's servers by
        their SRV records, and the fake providers' accounts' domains by their MX records
        (contoso.example is also the fake Microsoft's tenant's)."""
        domain = DEMO_MAILBOX.partition("@")[2]
        return [
            f"_imaps._tcp.{domain}. 300 IN SRV 0 1 {self.dovecot.imaps_port} localhost.",
            f"_submission._tcp.{domain}. 300 IN SRV 0 1 {self.smtp.starttls_port} localhost.",
            "contoso.example. 300 IN MX 0 contoso-example.mail.protection.outlook.com.",
            "workspace.example. 300 IN MX 1 aspmx.l.google.com.",
        ]

    def environment(self) -> dict[str, str]:
        """The API's settings that make it use (and trust) the sandbox's servers."""
        microsoft, google = self.microsoft.base_url, self.google.base_url
        return {
            "MAIL_EXTRA_CA_FILE": str(self.ca.ca_path),
            # requests (MSAL, google-auth) trusts only the sandbox CA: nothing goes out.
            "REQUESTS_CA_BUNDLE": str(self.ca.ca_path),
            "MICROSOFT_AUTHORITY_HOST": microsoft,
            "GRAPH_BASE_URL": f"{microsoft}/v1.0",
            "GOOGLE_AUTH_URL": f"{google}/o/oauth2/v2/auth",
            "GOOGLE_TOKEN_URL": f"{google}/token",
            "GOOGLE_REVOKE_URL": f"{google}/revoke",
            "GMAIL_BASE_URL": f"{google}/gmail/v1",
            # Email discovery resolves through the sandbox's DNS server: the demo domains
            # are found, any other name is not, and nothing goes out.
            "DISCOVERY_DNS_SERVER": self.dns.address,
        }

    @staticmethod
    def parameters() -> dict[str, str]:
        """Template parameters: the sandbox's servers are on loopback, on high ports."""
        return {"AllowPrivateMailServers": "true", "ExtraMailPorts": "1024-65535"}

    def register_apps(self, api_url: str) -> None:
        for fake, client_id in (
            (self.microsoft, DEMO_MICROSOFT_APP),
            (self.google, DEMO_GOOGLE_APP),
        ):
            fake.register_app(client_id, self.client_secret, [api_url + _CALLBACK])

    def seed(self, api_url: str, admin_token: str) -> None:
        """Through the API, as an org admin would: the org's shared Google app (the green
        banner; its secret expires in 20 days, so every agent using it is warned) and client
        organization `acme` with a policy (the info banner)."""
        expires = datetime.date.today() + datetime.timedelta(days=20)
        app = {
            "client_id": DEMO_GOOGLE_APP,
            "client_secret": self.client_secret,
            "secret_expires_at": expires.isoformat(),
        }
        _call(api_url, admin_token, "PUT", "/bridge/orgs/demo-org/email-oauth-apps/google", app)
        _call(api_url, admin_token, "PUT", _ACME_POLICY, ACME_POLICY)

    def seed_states(self, api_url: str, admin_token: str, platform_token: str) -> dict[str, str]:
        """An agent in each state a connection can be in besides the demo agent's blank
        one, brought there through the API as people would: their ids and what each shows.
        Two more client organizations serve them: globex, whose shared Microsoft app's
        secret Entra refuses, and initech, deleted after its agent connected."""
        states = {
            "state-configured": ("Configured: saved, not tested yet", None),
            "state-awaiting-authorization": ("Awaiting Authorization: saved, no sign-in", None),
            "state-connected": ("Connected by IMAP and tested", None),
            "state-send-missing": (
                "Connected by Microsoft without the permission to send: warned, with Re-authorize",
                None,
            ),
            "state-app-expiring": (
                "Connected by Google through the shared app, whose secret expires soon: warned",
                None,
            ),
            "state-wrong-password": ("Error auth_failed: saved with a wrong password", None),
            "state-outside-policy": (
                "Error email_domain_not_allowed: acme's domain changed after it connected",
                "acme",
            ),
            "state-app-secret-refused": (
                "Error oauth_client_invalid: Entra refused globex's shared app secret "
                "(AADSTS7000222); the fix is in the shared app",
                "globex",
            ),
            "state-client-org-missing": (
                "Error client_org_missing: its client organization initech was deleted",
                "initech",
            ),
        }
        for name in ("globex", "initech"):
            policy = {"name": name.capitalize()}
            _call(api_url, admin_token, "PUT", f"/bridge/client-orgs/{name}/email-policy", policy)
        globex_app = {
            "client_id": DEMO_MICROSOFT_APP,
            "client_secret": self.client_secret,
            "tenant": "organizations",
        }
        _call(
            api_url,
            admin_token,
            "PUT",
            "/bridge/client-orgs/globex/email-oauth-apps/microsoft",
            globex_app,
        )
        for agent_id, (_, client_org) in states.items():
            body = {"name": agent_id.removeprefix("state-").replace("-", " ").capitalize()}
            if client_org:
                body["client_org_id"] = client_org
            _call(api_url, platform_token, "PUT", f"/bridge/agents/{agent_id}", body)

        bodies = self.connection_bodies()

        def config(agent_id: str, body: dict[str, Any]) -> str:
            path = f"/bridge/agents/{agent_id}/email-config"
            _call(api_url, admin_token, "PUT", path, body)
            return path

        def test(agent_id: str, body: dict[str, Any]) -> None:
            _call(api_url, admin_token, "POST", config(agent_id, body) + "/test")

        def sign_in(agent_id: str, body: dict[str, Any]) -> None:
            path = config(agent_id, body) + "/authorize"
            url = _call(api_url, admin_token, "POST", path, {"origin": api_url})
            # The browser at the fake provider, which signs in at once and redirects to the
            # callback page, which this follows.
            context = ssl.create_default_context(cafile=str(self.ca.ca_path))
            with urllib.request.urlopen(url["authorization_url"], timeout=10, context=context):
                pass

        config("state-configured", bodies["imap"])
        config("state-awaiting-authorization", bodies["google"])
        test("state-connected", bodies["imap"])
        # The user unticks sending at consent.
        self.microsoft.grant_scopes_next(
            ["Mail.ReadWrite", "User.Read", "openid", "profile", "offline_access"]
        )
        sign_in("state-send-missing", bodies["microsoft"])
        sign_in("state-app-expiring", bodies["google"])
        test("state-wrong-password", bodies["imap"] | {"password": "not-the-password"})
        # Connected while acme had no domain; the domain then set leaves it outside.
        _call(api_url, admin_token, "PUT", _ACME_POLICY, ACME_POLICY | {"email_domain": None})
        test("state-outside-policy", bodies["imap"])
        _call(api_url, admin_token, "PUT", _ACME_POLICY, ACME_POLICY)
        # The secret expired in Azure: the sign-in's code exchange is refused.
        self.microsoft.refuse_next_token(7000222)
        sign_in("state-app-secret-refused", {"provider": "microsoft"})
        test("state-client-org-missing", bodies["imap"])
        _call(api_url, admin_token, "DELETE", "/bridge/client-orgs/initech/email-policy")
        return {agent_id: shown for agent_id, (shown, _) in states.items()}

    def connection_bodies(self) -> dict[str, dict[str, Any]]:
        """PUT bodies for .../email-config that connect to the sandbox, by method."""
        return {
            "imap": {
                "provider": "imap",
                "preset": "custom",
                "email": DEMO_MAILBOX,
                "password": self.password,
                "imap": {"host": "localhost", "port": self.dovecot.imaps_port, "security": "tls"},
                "smtp": {
                    "host": "localhost",
                    "port": self.smtp.starttls_port,
                    "security": "starttls",
                },
            },
            "microsoft": {
                "provider": "microsoft",
                "client_id": DEMO_MICROSOFT_APP,
                "client_secret": self.client_secret,
                "tenant": "organizations",
            },
            # The organization's shared app (see seed): no credentials of its own.
            "google": {"provider": "google"},
        }

    def describe(self, api_url: str, agent_id: str) -> str:
        path = f"{api_url}/bridge/agents/{agent_id}/email-config"
        auth = '-H "Authorization: Bearer $MAILBRIDGE_TOKEN"'
        bodies = self.connection_bodies()
        mail = f"{api_url}/bridge/agents/{agent_id}/mail"
        agent_auth = '-H "Authorization: Bearer $MAILBRIDGE_AGENT_TOKEN"'
        newest = f'"{mail}/messages?unread=true&limit=1"'
        # The shell keeps what a later line needs from an answer: python3 reads it from JSON.
        sign_in_url = _json_field("authorization_url")
        message_id = _json_field("messages", 0, "id")
        reply = '{"reply_to_message_id": "\'"$MESSAGE_ID"\'", "text": "Thank you, I am on it."}'
        return "\n".join(
            [
                "Sandbox: a mailbox, and fake Microsoft and Google sign-in, on loopback.",
                f"  Its CA certificate (for curl --cacert): {self.ca.ca_path}",
                f"  Settings from the address: its DNS server ({self.dns.address}) has the demo"
                " domains' SRV and MX records (the Email tab fills them in as you type):",
                *(
                    f'    curl -s {auth} "{api_url}/bridge/email-discovery?email={address}"'
                    for address in (DEMO_MAILBOX, DEMO_MICROSOFT_ACCOUNT, DEMO_GOOGLE_ACCOUNT)
                ),
                f"  IMAP/SMTP: {DEMO_MAILBOX}, 12 messages, 5 unread:",
                f"    curl -s -X PUT {auth} {path} --json '{json.dumps(bodies['imap'])}'",
                f"    curl -s -X POST {auth} {path}/test",
                f"  Microsoft OAuth ({DEMO_MICROSOFT_ACCOUNT}) or Google OAuth"
                f" ({DEMO_GOOGLE_ACCOUNT}), 5 messages each (a thread, an attachment): save one of",
                f"    curl -s -X PUT {auth} {path} --json '{json.dumps(bodies['microsoft'])}'",
                f"    curl -s -X PUT {auth} {path} --json '{json.dumps(bodies['google'])}'",
                "  then sign in: get the sign-in URL and follow it (the fake provider signs in"
                " at once and redirects to the callback page; a browser must trust the CA"
                " first), and test:",
                f"    SIGN_IN=$(curl -s -X POST {auth} {path}/authorize"
                f' --json \'{{"origin": "{api_url}"}}\' | {sign_in_url})',
                f'    curl -s -L --cacert {shlex.quote(str(self.ca.ca_path))} "$SIGN_IN"'
                ' -o /dev/null -w "%{http_code}\\n"',
                f"    curl -s -X POST {auth} {path}/test",
                "  Then read and reply as the agent's runtime: its newest unread message, the"
                " whole of it, a reply in its thread:",
                f"    curl -s {agent_auth} {newest}",
                f"    MESSAGE_ID=$(curl -s {agent_auth} {newest} | {message_id})",
                f'    curl -s {agent_auth} "{mail}/messages/$MESSAGE_ID"',
                f'    curl -s -X POST {agent_auth} -H "Idempotency-Key: reply-1" {mail}/send'
                f" --json '{reply}'",
                "  New mail: with the agent connected by IMAP, drop a message in its mailbox;"
                " within seconds it is an event on the bus, logged here and on the events page:",
                f'    {self.drop_command()} "Hello from the sandbox"',
            ]
        )

    def drop_command(self) -> str:
        """The command that drops a new message in the demo mailbox (drop), but its subject."""
        return (
            f"{shlex.quote(sys.executable)} -m mailbridge_tools.sandbox.drop"
            # "=": a password may start with "-" (token_urlsafe), which argparse would
            # take for an option.
            f" --port {self.dovecot.imap_port} --password={shlex.quote(self.password)}"
        )


def _json_field(*keys: str | int) -> str:
    """A shell command printing one field of the JSON on its stdin."""
    path = "".join(f"[{json.dumps(key)}]" for key in keys)
    return f"python3 -c 'import json, sys; print(json.load(sys.stdin){path})'"


def _call(api_url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """An API call as the Email tab or the platform makes it; its JSON answer."""
    request = urllib.request.Request(
        api_url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = response.read()
    return json.loads(answer) if answer else None
