"""The provider presets of the Email tab, and how a saved request is resolved against them."""

from __future__ import annotations

from ..core.addresses import host_refused
from ..core.errors import ErrorCode, InvalidField, MailbridgeError, MailServerError, refuse_all
from ..core.settings import settings
from .records import PresetId, Security, ServerSettings
from .request_models import Preset, ServerOverride

_TLS, _STARTTLS = Security.TLS, Security.STARTTLS


def _preset(
    preset_id: PresetId, label: str, note: str, servers: tuple[str, str, int] | None
) -> Preset:
    """Constructed, not validated: our own constants, whose validation would build the
    models' schemas at every cold start (core.types.Model); tests/test_email_config.py
    validates them. `servers`: the IMAP host (TLS on 993), the SMTP host and port (TLS on
    465, STARTTLS otherwise)."""
    imap = smtp = None
    if servers:
        imap_host, smtp_host, smtp_port = servers
        imap = ServerSettings.model_construct(host=imap_host, port=993, security=_TLS)
        smtp_security = _TLS if smtp_port == 465 else _STARTTLS
        smtp = ServerSettings.model_construct(
            host=smtp_host, port=smtp_port, security=smtp_security
        )
    return Preset.model_construct(id=preset_id, label=label, imap=imap, smtp=smtp, note=note)


PRESETS: dict[str, Preset] = {
    preset.id: preset
    for preset in [
        _preset(
            "microsoft365",
            "Microsoft 365 / Outlook",
            "Use the Microsoft OAuth connection method instead. Exchange Online no longer "
            "accepts passwords for IMAP (basic authentication has been off since "
            "2022-2023), and turns password (basic) authentication for SMTP AUTH off by "
            "default at the end of December 2026.",
            ("outlook.office365.com", "smtp.office365.com", 587),
        ),
        _preset(
            "gmail",
            "Google Workspace / Gmail",
            "Needs 2-Step Verification on the account and an app password "
            "(Google Account > Security > App passwords).",
            ("imap.gmail.com", "smtp.gmail.com", 587),
        ),
        _preset(
            "yahoo",
            "Yahoo Mail",
            "Generate an app password under Yahoo Account Security. SMTP uses TLS on 465.",
            ("imap.mail.yahoo.com", "smtp.mail.yahoo.com", 465),
        ),
        _preset(
            "zoho",
            "Zoho Mail",
            "With two-factor authentication on, use an application-specific password.",
            ("imap.zoho.com", "smtp.zoho.com", 587),
        ),
        _preset(
            "fastmail",
            "Fastmail",
            "Create an app password under Settings > Privacy & Security.",
            ("imap.fastmail.com", "smtp.fastmail.com", 587),
        ),
        _preset(
            "custom",
            "Custom IMAP/SMTP server",
            "Enter your server's hosts and ports. TLS on 993/465, STARTTLS on 143/587.",
            None,
        ),
    ]
}

# The providers' own domains, whose preset is certain from the address alone (email
# discovery asks nothing of the network for them).
PRESET_DOMAINS: dict[str, PresetId] = {
    **dict.fromkeys(("outlook.com", "hotmail.com", "live.com", "msn.com"), "microsoft365"),
    **dict.fromkeys(("gmail.com", "googlemail.com"), "gmail"),
    **dict.fromkeys(("yahoo.com", "ymail.com", "rocketmail.com"), "yahoo"),
    **dict.fromkeys(("zoho.com", "zohomail.com"), "zoho"),
    **dict.fromkeys(("fastmail.com", "fastmail.fm"), "fastmail"),
}


def resolve_server(preset_id: PresetId, protocol: str, override: ServerOverride) -> ServerSettings:
    """The preset's settings for `protocol`, with every field the request gave taking priority."""
    base = getattr(PRESETS[preset_id], protocol)
    merged = base.model_dump() if base else {}
    merged.update(override.model_dump(exclude_none=True))
    refuse_all(
        [
            InvalidField(
                f"{protocol}.{name}",
                f"{protocol}.{name} is required with the custom preset.",
                hint="Pick a provider preset, or enter the server's host, port and security.",
            )
            for name in ("host", "port", "security")
            if name not in merged
        ]
    )
    problems: list[MailbridgeError] = []
    if merged["port"] not in settings().mail_allowed_ports:
        # The service connects to mail ports only: it must not become a port scanner.
        problems.append(
            InvalidField(
                f"{protocol}.port",
                f"Port {merged['port']} is not a mail port this service connects to.",
                hint="IMAP uses 993 (TLS) or 143 (STARTTLS); SMTP 465 (TLS) or 587 (STARTTLS).",
            )
        )
    allow_private = settings().mail_allow_private_networks
    if host_refused(merged["host"], allow_private=allow_private):
        # What the connection test would refuse, said with its code and words at the save.
        problems.append(
            MailServerError(
                ErrorCode.ADDRESS_NOT_ALLOWED,
                protocol.upper(),
                merged["host"],
                merged["port"],
                field=f"{protocol}.host",
            )
        )
    refuse_all(problems)
    return ServerSettings.model_validate(merged)
