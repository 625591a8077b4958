"""Everything the local run needs to connect an agent offline, on loopback: a demo mailbox
(Dovecot and aiosmtpd) and fake Microsoft and Google identity providers with a demo app
and account each, all behind one throwaway CA."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from .dovecot import DovecotServer
from .identity import FakeGoogle, FakeMicrosoft
from .smtp import SmtpServer
from .tls import CertificateAuthority

DEMO_MAILBOX = "demo@example.com"
DEMO_MICROSOFT_ACCOUNT = "demo@contoso.example"
DEMO_GOOGLE_ACCOUNT = "demo@workspace.example"
DEMO_MICROSOFT_APP = "6f1d8b1e-5c1a-4d3e-9a52-3f0b8c6f9d21"
DEMO_GOOGLE_APP = "1234-sandbox.apps.googleusercontent.com"
_CALLBACK = "/api/engine/oauth/callback"


class Sandbox:
    """Started as a context manager; `environment()` points the API at it, and
    `register_apps(api_url)` registers the demo OAuth apps once the API's URL is known."""

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
            self.microsoft.add_account(DEMO_MICROSOFT_ACCOUNT, inbox_total=42, inbox_unread=7)
            self.google = stack.enter_context(FakeGoogle(cert, key))
            self.google.add_account(DEMO_GOOGLE_ACCOUNT, inbox_total=1200, inbox_unread=31)
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

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
        banner) and client organization `acme` with a policy (the info banner)."""
        requests_to_send = [
            (
                "/bridge/orgs/demo-org/email-oauth-apps/google",
                {"client_id": DEMO_GOOGLE_APP, "client_secret": self.client_secret},
            ),
            (
                "/bridge/client-orgs/acme/email-policy",
                {
                    "name": "Acme Corp",
                    "email_domain": "workspace.example",
                    "allowed_recipients": ["workspace.example", "orders@supplier.example"],
                    "limits": {"per_hour": 50, "per_day": 400},
                },
            ),
        ]
        for path, body in requests_to_send:
            request = urllib.request.Request(
                api_url + path,
                data=json.dumps(body).encode(),
                method="PUT",
                headers={
                    "Authorization": f"Bearer {admin_token}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=10):
                pass

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
        return "\n".join(
            [
                "Sandbox: a mailbox, and fake Microsoft and Google sign-in, on loopback.",
                f"  Its CA certificate (for curl --cacert): {self.ca.ca_path}",
                f"  IMAP/SMTP: {DEMO_MAILBOX}, 12 messages, 5 unread:",
                f"    curl -s -X PUT {auth} {path} --json '{json.dumps(bodies['imap'])}'",
                f"    curl -s -X POST {auth} {path}/test",
                f"  Microsoft OAuth ({DEMO_MICROSOFT_ACCOUNT}) or Google OAuth"
                f" ({DEMO_GOOGLE_ACCOUNT}): save one of",
                f"    curl -s -X PUT {auth} {path} --json '{json.dumps(bodies['microsoft'])}'",
                f"    curl -s -X PUT {auth} {path} --json '{json.dumps(bodies['google'])}'",
                "  then get the sign-in URL, open it (the fake provider signs in at once and"
                " redirects to the callback page), and test:",
                f'    curl -s -X POST {auth} {path}/authorize --json \'{{"origin": "{api_url}"}}\'',
                f"    curl -s -X POST {auth} {path}/test",
            ]
        )
