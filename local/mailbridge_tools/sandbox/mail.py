"""A demo mailbox on loopback for the local run: Dovecot and aiosmtpd behind one CA."""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

from .dovecot import DovecotServer
from .smtp import SmtpServer
from .tls import CertificateAuthority

DEMO_MAILBOX = "demo@example.com"


class MailSandbox:
    """One mailbox (`DEMO_MAILBOX`, a fresh password per run) with 12 messages, 5 unread,
    served over IMAPS and SMTP STARTTLS with a certificate from a CA of its own."""

    def __init__(self) -> None:
        self.password = secrets.token_urlsafe(12)
        self._stack = ExitStack()
        self.ca: CertificateAuthority | None = None
        self.dovecot: DovecotServer | None = None
        self.smtp: SmtpServer | None = None

    def __enter__(self) -> MailSandbox:
        with ExitStack() as stack:
            directory = Path(tempfile.mkdtemp(prefix="mailbridge-sandbox-"))
            stack.callback(shutil.rmtree, directory, ignore_errors=True)
            self.ca = CertificateAuthority.create(directory)
            cert, key = self.ca.issue(["localhost"])
            users = {DEMO_MAILBOX: self.password}
            self.dovecot = stack.enter_context(DovecotServer(cert, key, users))
            self.dovecot.add_messages(DEMO_MAILBOX, 12, unseen=5)
            self.smtp = stack.enter_context(SmtpServer(cert, key, users))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def connection_body(self) -> dict[str, Any]:
        """A PUT body for .../email-config that connects to this sandbox."""
        assert self.dovecot is not None and self.smtp is not None, "not started"
        return {
            "provider": "imap",
            "preset": "custom",
            "email": DEMO_MAILBOX,
            "password": self.password,
            "imap": {"host": "localhost", "port": self.dovecot.imaps_port, "security": "tls"},
            "smtp": {"host": "localhost", "port": self.smtp.starttls_port, "security": "starttls"},
        }

    def describe(self, api_url: str, agent_id: str) -> str:
        body = json.dumps(self.connection_body())
        path = f"{api_url}/bridge/agents/{agent_id}/email-config"
        auth = '-H "Authorization: Bearer $MAILBRIDGE_TOKEN"'
        return "\n".join(
            [
                f"Sandbox mailbox: {DEMO_MAILBOX} (password {self.password}), 12 messages,"
                " 5 unread.",
                f"  curl -s -X PUT {auth} {path} -d '{body}'",
                f"  curl -s -X POST {auth} {path}/test",
            ]
        )
