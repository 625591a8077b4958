"""Run by test_cold_start.py in a fresh interpreter, with a function's Lambda environment:
loads the function's handler as Lambda does, then, given a provider, does what the
connection test (`check`) or the mail routes (`mail`) do for a connection of that provider
(or, given `discovery`, loads what email discovery's first lookup loads).
Prints, as JSON, the modules loaded after each step, the checks the IMAP step ran, and how
many objects the import left frozen (`core.lifecycle.freeze_long_lived`).

    python tests/handler_imports.py FUNCTION CODE_URI HANDLER [PROVIDER [check|mail]]
"""

from __future__ import annotations

import gc
import json
import socket
import sys
from contextlib import suppress
from pathlib import Path

from mailbridge_tools.functions import load_function_module


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def open_mailbox(provider: str) -> list[str]:
    """What a mail route does: the provider's token path (OAuth), then the mailbox, opened and
    listed (IMAP: at a closed port, which fails at once after loading what it needs)."""
    from mailbridge.connections.records import (
        ImapConnection,
        OAuthConnection,
        Security,
        ServerSettings,
    )
    from mailbridge.core.errors import MailServerError
    from mailbridge.mail.mailboxes import open_mailbox
    from mailbridge.oauth.providers import provider_client

    connection: ImapConnection | OAuthConnection
    if provider == "imap":
        port = _closed_port()
        connection = ImapConnection(
            preset="custom",
            email="agent@example.com",
            username="agent@example.com",
            imap=ServerSettings(host="127.0.0.1", port=port, security=Security.TLS),
            smtp=ServerSettings(host="127.0.0.1", port=port, security=Security.STARTTLS),
        )
    else:
        provider_client(provider)
        connection = OAuthConnection(provider=provider, client_id="app", scopes=[])
    with open_mailbox(connection, "credential") as mailbox, suppress(MailServerError):
        if provider == "imap":  # nothing listens there: it fails, having loaded what it needs
            mailbox.list_messages("inbox", unread_only=False, cursor=None, limit=1)
    return []


def use_provider(provider: str, step: str = "check") -> list[str]:
    if provider == "discovery":  # what a lookup loads (asking nothing: no DNS here)
        from mailbridge.discovery.lookups import domain_lookups

        domain_lookups()
        return []
    if step == "mail":
        return open_mailbox(provider)
    if provider == "imap":
        from mailbridge.connections.checks import check_mail_servers
        from mailbridge.connections.records import ImapConnection, Security, ServerSettings

        # Nothing listens there: the checks fail at once, after loading what they need.
        port = _closed_port()
        connection = ImapConnection(
            preset="custom",
            email="agent@example.com",
            username="agent@example.com",
            imap=ServerSettings(host="127.0.0.1", port=port, security=Security.TLS),
            smtp=ServerSettings(host="127.0.0.1", port=port, security=Security.STARTTLS),
        )
        return [check.name for check in check_mail_servers(connection, "password", 2.0).checks]
    from mailbridge.oauth.providers import provider_client

    provider_client(provider)
    return []


def main(
    function: str, code_uri: str, handler: str, provider: str | None = None, step: str = "check"
) -> None:
    load_function_module(function, Path(code_uri), handler)
    steps: dict[str, object] = {"at_import": sorted(sys.modules), "frozen": gc.get_freeze_count()}
    if provider:
        checks = use_provider(provider, step)
        steps |= {"after_provider": sorted(sys.modules), "checks": checks}
    print(json.dumps(steps))


if __name__ == "__main__":
    main(*sys.argv[1:])
