"""Deployment settings, read once per Lambda instance from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Settings:
    table_name: str
    secret_name_prefix: str
    org_claim: str
    # The claim carrying the caller's role, and the value that makes an org admin.
    role_claim: str
    admin_role: str
    # Per network operation (connect, each read); well under the functions' 29 s timeout so
    # a dead server becomes a `timeout` result, never a Lambda timeout.
    mail_timeout_seconds: float
    # An extra CA bundle that mail servers' certificates may chain to (self-hosted servers,
    # the local sandbox). It adds trust; verification itself is never turned off.
    mail_extra_ca_file: str | None
    # Self-hosted mail servers on private networks (and the sandbox on loopback); off by
    # default, so that a user cannot make the service probe the network it runs in.
    mail_allow_private_networks: bool
    mail_allowed_ports: frozenset[int]
    max_body_bytes: int
    # Connection tests per minute, per agent and per organization: enough for a person,
    # too few to use the service as a password oracle or a port scanner.
    tests_per_agent_per_minute: int
    tests_per_org_per_minute: int
    # Where the OAuth providers send the browser back: the deployment's public URL, never
    # taken from a request. Empty when OAuth is not set up.
    public_base_url: str
    # UI origins that may receive an OAuth result by postMessage.
    allowed_ui_origins: frozenset[str]
    # Per provider HTTP call (connect, then read).
    provider_timeout_seconds: float
    # The providers' endpoints: the real services by default, loopback fakes in tests.
    microsoft_authority_host: str
    graph_base_url: str
    google_auth_url: str
    google_token_url: str
    google_revoke_url: str
    gmail_base_url: str

    @property
    def oauth_redirect_uri(self) -> str:
        return f"{self.public_base_url}/api/engine/oauth/callback"


# Submission, IMAP and their TLS variants; SMTP relay (25) and the common alternative 2525.
MAIL_PORTS = frozenset({25, 143, 465, 587, 993, 2525})


def _ports(text: str) -> frozenset[int]:
    """ "1025, 8143" or ranges like "1024-65535"."""
    ports: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        low, _, high = part.partition("-")
        ports.update(range(int(low), int(high or low) + 1))
    return frozenset(ports)


@cache
def settings() -> Settings:
    env = os.environ
    return Settings(
        table_name=env["TABLE_NAME"],
        secret_name_prefix=env.get("SECRET_NAME_PREFIX", "mailbridge").rstrip("/"),
        org_claim=env.get("ORG_CLAIM", "org_id"),
        role_claim=env.get("ROLE_CLAIM", "role"),
        admin_role=env.get("ADMIN_ROLE", "admin"),
        mail_timeout_seconds=float(env.get("MAIL_TIMEOUT_SECONDS", "10")),
        mail_extra_ca_file=env.get("MAIL_EXTRA_CA_FILE") or None,
        mail_allow_private_networks=env.get("MAIL_ALLOW_PRIVATE_NETWORKS", "false") == "true",
        mail_allowed_ports=MAIL_PORTS | _ports(env.get("MAIL_EXTRA_PORTS", "")),
        max_body_bytes=int(env.get("MAX_BODY_BYTES", str(64 * 1024))),
        tests_per_agent_per_minute=int(env.get("TESTS_PER_AGENT_PER_MINUTE", "10")),
        tests_per_org_per_minute=int(env.get("TESTS_PER_ORG_PER_MINUTE", "100")),
        public_base_url=env.get("PUBLIC_BASE_URL", "").rstrip("/"),
        allowed_ui_origins=frozenset(
            origin.strip().rstrip("/")
            for origin in env.get("ALLOWED_UI_ORIGINS", "").split(",")
            if origin.strip()
        ),
        provider_timeout_seconds=float(env.get("PROVIDER_TIMEOUT_SECONDS", "10")),
        microsoft_authority_host=env.get(
            "MICROSOFT_AUTHORITY_HOST", "https://login.microsoftonline.com"
        ).rstrip("/"),
        graph_base_url=env.get("GRAPH_BASE_URL", "https://graph.microsoft.com/v1.0").rstrip("/"),
        google_auth_url=env.get("GOOGLE_AUTH_URL", "https://accounts.google.com/o/oauth2/v2/auth"),
        google_token_url=env.get("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token"),
        google_revoke_url=env.get("GOOGLE_REVOKE_URL", "https://oauth2.googleapis.com/revoke"),
        gmail_base_url=env.get("GMAIL_BASE_URL", "https://gmail.googleapis.com/gmail/v1").rstrip(
            "/"
        ),
    )
