"""Deployment settings: the functions' environment, validated once per Lambda instance.

Every handler validates them as it loads (`mailbridge.http.app.create_app`), so a bad value
stops the instance at start with a message naming the variable, rather than failing the
first request that happens to read it.
"""

import ipaddress
import os
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError

from .types import Model

# Submission, IMAP and their TLS variants; SMTP relay (25) and the common alternative 2525.
MAIL_PORTS = frozenset({25, 143, 465, 587, 993, 2525})


class SettingsError(ValueError):
    """The environment is wrong: the deployment's mistake, raised while the instance starts,
    never in answer to a request."""


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _port_ranges(value: Any) -> Any:
    """ "1025, 8143" or ranges like "1024-65535"."""
    if not isinstance(value, str):
        return value
    ports: set[int] = set()
    for part in _comma_separated(value):
        low, _, high = (bound.strip() for bound in part.partition("-"))
        if not (low.isdigit() and (high or low).isdigit()):
            raise ValueError("must be ports or ranges, like 1143,1587 or 1024-65535")
        ports.update(range(int(low), int(high or low) + 1))
    return ports


def _true_or_false(value: Any) -> Any:
    """Exactly "true" or "false", as the template allows: a switch that loosens a security
    rule is not turned on by a typo."""
    if isinstance(value, str) and value not in ("true", "false"):
        raise ValueError('must be "true" or "false"')
    return value


def _without_trailing_slash(value: Any) -> Any:
    return value.rstrip("/") if isinstance(value, str) else value


def _dns_server(value: str) -> tuple[str, int]:
    """ "10.0.0.2", "127.0.0.1:5353" or "[::1]:5353": an address and a port (53 unless given)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = value.partition(":")
    ipaddress.ip_address(host)  # ValueError unless an address
    number = int(port or "53")
    if not 1 <= number <= 65535:
        raise ValueError("the port must be 1-65535")
    return host, number


def _valid_dns_server(value: str | None) -> str | None:
    if value is not None:
        try:
            _dns_server(value)
        except ValueError:
            raise ValueError(
                'must be an IP address and maybe a port: "10.0.0.2", "127.0.0.1:5353", "[::1]:5353"'
            ) from None
    return value


Url = Annotated[str, BeforeValidator(_without_trailing_slash)]
Seconds = Annotated[float, Field(gt=0, le=900)]
PerMinute = Annotated[int, Field(ge=1)]


class Settings(Model):
    """Each field is read from the environment variable its alias names."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    table_name: str = Field(alias="TABLE_NAME", min_length=1)
    secret_name_prefix: Url = Field(alias="SECRET_NAME_PREFIX", default="mailbridge")
    org_claim: str = Field(alias="ORG_CLAIM", default="org_id", min_length=1)
    # The claim carrying the caller's role, and the value that makes an org admin.
    role_claim: str = Field(alias="ROLE_CLAIM", default="role", min_length=1)
    admin_role: str = Field(alias="ADMIN_ROLE", default="admin", min_length=1)
    # The claim of an agent runtime's token naming the one agent it may act for.
    agent_claim: str = Field(alias="AGENT_CLAIM", default="agent_id", min_length=1)
    # The largest accepted body of a message to send (attachments in base64 within JSON);
    # other routes keep MAX_BODY_BYTES.
    max_send_bytes: int = Field(alias="MAX_SEND_BYTES", default=5 * 1024 * 1024, ge=1)
    # For each whole mail check (connect, TLS, login, each read); well under the functions'
    # 29 s timeout, so a dead server becomes a `timeout` result, never a Lambda timeout.
    mail_timeout_seconds: Seconds = Field(alias="MAIL_TIMEOUT_SECONDS", default=10)
    # An extra CA bundle that mail servers' certificates may chain to (self-hosted servers,
    # the local sandbox). It adds trust; verification itself is never turned off.
    mail_extra_ca_file: str | None = Field(alias="MAIL_EXTRA_CA_FILE", default=None)
    # Self-hosted mail servers on private networks (and the sandbox on loopback); off by
    # default, so that a user cannot make the service probe the network it runs in.
    mail_allow_private_networks: Annotated[bool, BeforeValidator(_true_or_false)] = Field(
        alias="MAIL_ALLOW_PRIVATE_NETWORKS", default=False
    )
    mail_extra_ports: Annotated[
        frozenset[Annotated[int, Field(ge=1, le=65535)]], BeforeValidator(_port_ranges)
    ] = Field(alias="MAIL_EXTRA_PORTS", default=frozenset())
    max_body_bytes: int = Field(alias="MAX_BODY_BYTES", default=64 * 1024, ge=1)
    # Connection tests per minute, per agent and per organization: enough for a person,
    # too few to use the service as a password oracle or a port scanner.
    tests_per_agent_per_minute: PerMinute = Field(alias="TESTS_PER_AGENT_PER_MINUTE", default=10)
    tests_per_org_per_minute: PerMinute = Field(alias="TESTS_PER_ORG_PER_MINUTE", default=100)
    # Where the OAuth providers send the browser back: the deployment's public URL, never
    # taken from a request. Empty when OAuth is not set up.
    public_base_url: Url = Field(alias="PUBLIC_BASE_URL", default="")
    # UI origins that may receive an OAuth result by postMessage.
    allowed_ui_origins: Annotated[frozenset[Url], BeforeValidator(_comma_separated)] = Field(
        alias="ALLOWED_UI_ORIGINS", default=frozenset()
    )
    # For each whole HTTP request to a provider.
    provider_timeout_seconds: Seconds = Field(alias="PROVIDER_TIMEOUT_SECONDS", default=10)
    # The providers' endpoints: the real services by default, loopback fakes in tests.
    microsoft_authority_host: Url = Field(
        alias="MICROSOFT_AUTHORITY_HOST", default="https://login.microsoftonline.com"
    )
    graph_base_url: Url = Field(alias="GRAPH_BASE_URL", default="https://graph.microsoft.com/v1.0")
    google_auth_url: str = Field(
        alias="GOOGLE_AUTH_URL", default="https://accounts.google.com/o/oauth2/v2/auth"
    )
    google_token_url: str = Field(
        alias="GOOGLE_TOKEN_URL", default="https://oauth2.googleapis.com/token"
    )
    google_revoke_url: str = Field(
        alias="GOOGLE_REVOKE_URL", default="https://oauth2.googleapis.com/revoke"
    )
    gmail_base_url: Url = Field(
        alias="GMAIL_BASE_URL", default="https://gmail.googleapis.com/gmail/v1"
    )
    # Gmail push: the Pub/Sub topic `users.watch` publishes to (empty: push off,
    # Google mailboxes are looked at by the scheduler's rounds only).
    gmail_push_topic: str = Field(
        alias="GMAIL_PUSH_TOPIC", default="", pattern=r"^(projects/[^/\s]+/topics/[^/\s]+)?$"
    )
    # The audience the push subscription's OIDC token must carry (empty: every push refused).
    gmail_push_audience: str = Field(alias="GMAIL_PUSH_AUDIENCE", default="")
    # The service account the push subscription's token must be issued for (its `email`).
    gmail_push_service_account: str = Field(alias="GMAIL_PUSH_SERVICE_ACCOUNT", default="")
    # Google's keys that sign those tokens (PEM certificates by key id).
    google_push_certs_url: str = Field(
        alias="GOOGLE_PUSH_CERTS_URL", default="https://www.googleapis.com/oauth2/v1/certs"
    )
    # New mail: the bus its events go to and the queue of mailboxes to look at (set for the
    # functions that use them).
    event_bus_name: str = Field(alias="EVENT_BUS_NAME", default="")
    sync_queue_url: str = Field(alias="SYNC_QUEUE_URL", default="")
    # How long the audit trail keeps an entry (DynamoDB's TTL deletes it after).
    audit_retention_days: int = Field(alias="AUDIT_RETENTION_DAYS", default=400, ge=1, le=36500)
    # Email discovery: the DNS server it asks ("host" or "host:port", an IP address; empty:
    # the system's resolver), Thunderbird's ISPDB, and the port of the https servers it asks
    # for autoconfig (443; the sandbox's and the tests' servers listen on loopback ports).
    discovery_dns_server: Annotated[str | None, AfterValidator(_valid_dns_server)] = Field(
        alias="DISCOVERY_DNS_SERVER", default=None
    )
    discovery_ispdb_url: Url = Field(
        alias="DISCOVERY_ISPDB_URL", default="https://autoconfig.thunderbird.net/v1.1"
    )
    discovery_https_port: int = Field(alias="DISCOVERY_HTTPS_PORT", default=443, ge=1, le=65535)
    # Lookups that miss the cache, per organization and minute: a person typing addresses
    # needs a few; more would make the service a prober of other people's servers.
    discoveries_per_org_per_minute: PerMinute = Field(
        alias="DISCOVERIES_PER_ORG_PER_MINUTE", default=30
    )
    # The deployment's stack: a tag of each secret it creates, which finds them once the
    # stack is deleted (the secrets are not the stack's resources).
    stack_name: str = Field(alias="STACK_NAME", default="")
    # The customer-managed KMS key new secrets are encrypted with (empty: AWS-managed).
    secrets_kms_key_id: str = Field(alias="SECRETS_KMS_KEY_ID", default="")

    @property
    def mail_allowed_ports(self) -> frozenset[int]:
        return MAIL_PORTS | self.mail_extra_ports

    @property
    def discovery_dns_address(self) -> tuple[str, int] | None:
        """The discovery's DNS server as an address and a port, or None: the system's."""
        return None if self.discovery_dns_server is None else _dns_server(self.discovery_dns_server)

    @property
    def oauth_redirect_uri(self) -> str:
        return f"{self.public_base_url}/api/engine/oauth/callback"


def load_settings(environment: Mapping[str, str]) -> Settings:
    """The settings an environment gives, or a SettingsError naming each wrong variable."""
    # An empty variable is an unset one (a template parameter left blank, say).
    given = {name: value for name, value in environment.items() if value != ""}
    try:
        return Settings.model_validate(given)
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            variable = str(issue["loc"][0]) if issue["loc"] else "environment"
            value = f" (it is {given[variable]!r})" if variable in given else ""
            problems.append(f"{variable}: {issue['msg']}{value}")
        raise SettingsError("Invalid settings: " + "; ".join(problems)) from None


@cache
def settings() -> Settings:
    return load_settings(os.environ)
