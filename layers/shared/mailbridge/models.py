"""Request, response and stored models (pydantic v2).

Requests reject unknown fields so that a typo is a 422 naming the field rather than a
setting silently ignored.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr
from pydantic.json_schema import SkipJsonSchema


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def example(value: dict[str, Any]) -> ConfigDict:
    """A request model's example, for the API's contract: documentation, and a valid start
    for contract fuzzing."""
    return ConfigDict(json_schema_extra={"examples": [value]})


class Status(StrEnum):
    NOT_CONNECTED = "not_connected"
    CONFIGURED = "configured"
    AWAITING_AUTHORIZATION = "awaiting_authorization"
    CONNECTED = "connected"
    ERROR = "error"


class Security(StrEnum):
    TLS = "tls"  # implicit TLS from the first byte (IMAP 993, SMTP 465)
    STARTTLS = "starttls"  # plain connection upgraded before login (IMAP 143, SMTP 587)


PresetId = Literal["microsoft365", "gmail", "yahoo", "zoho", "fastmail", "custom"]
OAuthProvider = Literal["microsoft", "google"]
PROVIDERS = frozenset({"imap", *get_args(OAuthProvider)})

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?:{_LABEL}\.)*{_LABEL}\.?$")


def _hostname(value: str) -> str:
    value = value.lower()
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise ValueError("must be a host name (letters, digits, hyphens and dots) or an IP")
    return value.rstrip(".")


def _printable(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


# What may stand before the @ (RFC 5322's dot-atom: quoted local parts are not worth their
# trouble for a mailbox login). Our own check rather than email-validator: it costs each cold
# start 15 ms and the layer 2 MB (dnspython), and the mail server confirms the address anyway.
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


def _email_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    domain = domain.lower().rstrip(".")
    # A host name with a top-level domain (never all digits, unlike an IP address's last part).
    named = len(domain) <= 253 and bool(_HOSTNAME.fullmatch(domain))
    has_tld = "." in domain and not domain.rpartition(".")[2].isdigit()
    if not (at and len(local) <= 64 and _LOCAL_PART.fullmatch(local) and named and has_tld):
        raise ValueError("must be an email address like name@example.com")
    return f"{local}@{domain}"


Hostname = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(_hostname)]
EmailAddress = Annotated[
    str,
    Field(max_length=320, json_schema_extra={"format": "email"}),
    AfterValidator(_email_address),
]
Port = Annotated[int, Field(ge=1, le=65535)]


def _ascii(value: str) -> str:
    """What IMAP's LOGIN and SMTP's AUTH can carry (both send ASCII): printable ASCII."""
    if not all(" " <= ch <= "~" for ch in value):
        raise ValueError("must be printable ASCII: letters, digits, punctuation and spaces")
    return value


Username = Annotated[str, Field(min_length=1, max_length=320), AfterValidator(_ascii)]


def _secret_text(value: SecretStr) -> SecretStr:
    # App passwords and client secrets are ASCII; anything else could not be sent anyway.
    _ascii(value.get_secret_value())
    return value


Password = Annotated[SecretStr, Field(max_length=1024), AfterValidator(_secret_text)]
ClientSecret = Password
# Microsoft application ids are GUIDs; Google's look like 1234-abc.apps.googleusercontent.com.
ClientId = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9._-]+$")]
# A directory (tenant) GUID, one of its verified domains, or a multi-tenant audience.
TENANT_PATTERN = (
    r"^(?:[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
    r"|organizations|common|consumers"
    r"|(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63})$"
)
Tenant = Annotated[str, Field(max_length=253, pattern=TENANT_PATTERN)]


class ServerSettings(StrictModel):
    host: Hostname
    port: Port
    security: Security


class ServerOverride(StrictModel):
    """Any subset of a server's settings; what is left out comes from the preset."""

    host: Hostname | None = None
    port: Port | None = None
    security: Security | None = None


# ---- presets ----------------------------------------------------------------------------


class Preset(BaseModel):
    id: PresetId
    label: str
    imap: ServerSettings | None  # None for `custom`: the user enters everything
    smtp: ServerSettings | None
    note: str | None = None


class PresetList(BaseModel):
    presets: list[Preset]


# ---- saving a configuration -------------------------------------------------------------


class ImapConfigRequest(StrictModel):
    """PUT body for an IMAP/SMTP connection with an app password."""

    model_config = example(
        {
            "provider": "imap",
            "preset": "yahoo",
            "email": "support-agent@yahoo.com",
            "password": "app password",
            "smtp": {"port": 587, "security": "starttls"},
        }
    )

    provider: Literal["imap"]
    preset: PresetId = "custom"
    email: EmailAddress
    username: Username | None = Field(
        default=None, description="Login name; defaults to the email address."
    )
    password: Password | None = Field(
        default=None,
        description="App password. Leave out or send an empty string to keep the stored one.",
    )
    imap: ServerOverride = ServerOverride()
    smtp: ServerOverride = ServerOverride()


class MicrosoftConfigRequest(StrictModel):
    """PUT body for Microsoft OAuth (an Azure AD / Entra ID app registration)."""

    model_config = example(
        {
            "provider": "microsoft",
            "client_id": "6f1d8b1e-5c1a-4d3e-9a52-3f0b8c6f9d21",
            "client_secret": "client secret",
            "tenant": "contoso.onmicrosoft.com",
        }
    )

    provider: Literal["microsoft"]
    client_id: ClientId | None = Field(
        default=None,
        description="Application (client) ID. Leave out to use the organization's shared app.",
    )
    client_secret: ClientSecret | None = Field(
        default=None, description="Leave out or send an empty string to keep the stored one."
    )
    tenant: Tenant | None = Field(
        default=None,
        description="Directory (tenant) ID, a verified domain, `organizations` or `common`. "
        "Required the first time; left out later, the stored tenant is kept.",
    )


class GoogleConfigRequest(StrictModel):
    """PUT body for Google OAuth (a Google Cloud OAuth client, Gmail API)."""

    model_config = example(
        {
            "provider": "google",
            "client_id": "1234-abc.apps.googleusercontent.com",
            "client_secret": "client secret",
        }
    )

    provider: Literal["google"]
    client_id: ClientId | None = Field(
        default=None, description="Leave out to use the organization's shared app."
    )
    client_secret: ClientSecret | None = Field(
        default=None, description="Leave out or send an empty string to keep the stored one."
    )


EmailConfigRequest = Annotated[
    ImapConfigRequest | MicrosoftConfigRequest | GoogleConfigRequest,
    Field(discriminator="provider"),
]


class AuthorizeRequest(StrictModel):
    origin: str | None = Field(
        default=None,
        description="The UI origin that receives the result by postMessage; defaults to the "
        "request's Origin header. Must be one of the deployment's allowed origins.",
    )


class AuthorizeResponse(BaseModel):
    authorization_url: str = Field(description="Open it in the popup.")
    expires_at: datetime = Field(description="The authorization must finish before this.")


# ---- what is stored ---------------------------------------------------------------------


# Agent, organization and client-organization ids are the platform's; this is what we
# accept in a path, a token or a registration, and store. Every character is allowed in a
# Secrets Manager name, and none is the '#' our table keys use as a separator.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
PlatformId = Annotated[str, Field(pattern=ID_PATTERN)]


class Agent(BaseModel):
    agent_id: PlatformId
    org_id: PlatformId
    name: str
    client_org_id: PlatformId | None = None


class ImapConnection(BaseModel):
    """The resolved, complete IMAP/SMTP settings of an agent (no secret in it)."""

    provider: Literal["imap"] = "imap"
    preset: PresetId
    email: str
    username: str
    imap: ServerSettings
    smtp: ServerSettings


class OAuthAuthorization(BaseModel):
    """What the provider confirmed when the account was authorized."""

    email: str
    granted_scopes: list[str]
    authorized_at: datetime
    client_id: str  # the app the grant belongs to: its tokens work with no other
    tenant_id: str | None = None  # Microsoft: the directory the account signed in to


class OAuthConnection(BaseModel):
    """An agent's OAuth app and, once authorized, its account (no secret in it)."""

    provider: OAuthProvider
    client_id: str | None = Field(description="None: the app is inherited (see `app`).")
    tenant: str | None = None  # Microsoft only
    scopes: list[str] = Field(description="What authorization asks (or asked) for.")
    authorization: OAuthAuthorization | None = None


Connection = Annotated[ImapConnection | OAuthConnection, Field(discriminator="provider")]


class PendingAuthorization(BaseModel):
    """A started authorization, stored under the hash of its `state` until the callback."""

    agent_id: str
    org_id: str
    provider: OAuthProvider
    config_version: int  # the callback is refused if the settings changed meanwhile
    ui_origin: str
    scopes: list[str]
    consent: bool
    # The provider's half of the flow, PKCE verifier included (MSAL's flow, Google's verifier).
    flow: dict[str, Any]
    expires_at: int  # epoch seconds: checked explicitly and used as the item's TTL


class Problem(BaseModel):
    """A classified failure: stable code, a sentence for the user, and how to fix it."""

    code: str
    message: str
    hint: str | None = None


class LastError(Problem):
    at: datetime


class InboxCounts(BaseModel):
    # Bounded: a server's numbers are input too (and DynamoDB stores 38 digits at most).
    total: int = Field(ge=0, le=10**15)
    unread: int = Field(ge=0, le=10**15)


CheckName = Literal["imap", "smtp", "authorization", "mailbox", "permissions"]


class CheckResult(BaseModel):
    name: CheckName
    ok: bool
    latency_ms: int
    error: Problem | None = None


class ConnectionTestResult(BaseModel):
    ok: bool
    email: str | None = Field(description="The address the provider confirmed.")
    inbox: InboxCounts | None
    checks: list[CheckResult]
    error: Problem | None = Field(description="The first failing check's problem, if any.")
    tested_at: datetime


class SecretRef(BaseModel):
    """A secret in Secrets Manager, pinned to the version its record was written with: a
    write that fails half-way leaves the record on the version it had, never on a value
    that belongs to settings it does not hold."""

    name: str
    version: str


class TokenRef(SecretRef):
    """An agent's OAuth tokens, and when their access token expires (not a secret): whether
    a refresh is due is known before anything is read."""

    expires_at: int  # epoch seconds


class StoredConfig(BaseModel):
    """The email-config record of one agent, as kept in DynamoDB."""

    agent_id: str
    connection: Connection
    secret: SecretRef | None = None  # password or client secret; None: an inherited app
    secret_updated_at: datetime
    tokens: TokenRef | None = None  # once authorized
    status: Status
    last_error: LastError | None = None
    last_test: ConnectionTestResult | None = None
    version: int
    updated_at: datetime


class SecretState(BaseModel):
    set: bool
    updated_at: datetime | None


# ---- shared OAuth apps -----------------------------------------------------------------

AppOwner = Literal["org", "client_org"]
AppSource = Literal["own", "client_org", "org"]


class SharedAppRequest(StrictModel):
    """PUT body of an organization's (or client organization's) shared OAuth app."""

    model_config = example(
        {"client_id": "1234-abc.apps.googleusercontent.com", "client_secret": "client secret"}
    )

    client_id: ClientId
    client_secret: ClientSecret | None = Field(
        default=None, description="Leave out or send an empty string to keep the stored one."
    )
    tenant: Tenant | None = Field(default=None, description="Microsoft only; kept when left out.")


class SharedApp(BaseModel):
    """An OAuth app registered once for every agent of an org or client organization."""

    owner: AppOwner
    owner_id: str
    org_id: str  # the organization: the owner itself, or the client organization's
    provider: OAuthProvider
    client_id: str
    tenant: str | None = None  # absent attributes are None
    secret: SecretRef
    secret_updated_at: datetime
    version: int
    updated_at: datetime

    @property
    def client_org_id(self) -> str | None:
        return self.owner_id if self.owner == "client_org" else None


class SharedAppView(BaseModel):
    owner: AppOwner
    owner_id: str
    provider: OAuthProvider
    client_id: str
    tenant: str | None
    client_secret: SecretState
    redirect_uri: str
    version: int
    updated_at: datetime


class AppReference(BaseModel):
    """Where an agent's OAuth app comes from (the Email tab's green banner), never its
    secret."""

    provider: OAuthProvider
    source: AppSource
    client_id: str
    tenant: str | None


# ---- client organizations and their email policy ---------------------------------------


def _recipient_rule(value: str) -> str:
    """An address (alice@example.com) or a whole domain (example.com or @example.com)."""
    value = value.strip().lower()
    local, at, domain = value.rpartition("@")
    if at and not local:  # "@example.com"
        value = domain
    elif at and (not local or any(ch.isspace() or ord(ch) < 32 for ch in local)):
        raise ValueError("must be an email address or a domain")
    _hostname(domain if at else value)
    return value


RecipientRule = Annotated[str, Field(max_length=320), AfterValidator(_recipient_rule)]
EmailDomain = Annotated[str, Field(max_length=253), AfterValidator(_hostname)]


class SendingLimits(StrictModel):
    per_hour: int | None = Field(default=None, ge=1, le=1_000_000)
    per_day: int | None = Field(default=None, ge=1, le=10_000_000)


class EmailPolicyRequest(StrictModel):
    """PUT body of a client organization's email policy."""

    model_config = example(
        {
            "name": "Acme Corp",
            "email_domain": "acme.example",
            "allowed_recipients": ["acme.example", "partner@supplier.example"],
            "limits": {"per_hour": 50, "per_day": 500},
        }
    )

    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
    email_domain: EmailDomain | None = Field(
        default=None, description="Agents of this client organization send from this domain."
    )
    allowed_recipients: list[RecipientRule] = Field(
        default_factory=list,
        max_length=1000,
        description="Addresses and domains agents may write to; empty means anyone.",
    )
    limits: SendingLimits = SendingLimits()


class ClientOrg(BaseModel):
    """A client organization of an org, with the email policy its agents follow."""

    client_org_id: str
    org_id: str
    name: str
    email_domain: str | None = None  # absent attributes are None
    allowed_recipients: list[str]
    limits: SendingLimits
    version: int
    updated_at: datetime


class ClientOrgBanner(BaseModel):
    """What the Email tab's info banner shows for an agent of a client organization."""

    id: str
    name: str
    email_domain: str | None
    allowed_recipients: list[str]
    limits: SendingLimits
    warnings: list[str] = Field(description="The restrictions, phrased for display.")


# ---- responses --------------------------------------------------------------------------


class ImapConnectionView(ImapConnection):
    password: SecretState


class OAuthConnectionView(OAuthConnection):
    client_secret: SecretState | None = Field(description="None when the app is inherited.")
    redirect_uri: str = Field(description="Register exactly this URI with the provider.")
    app: AppReference | None = Field(
        description="The app in use and where it comes from; None if none is available."
    )


class OAuthResultError(BaseModel):
    code: str
    message: str


class OAuthResultMessage(BaseModel):
    """What the callback page posts to the Email tab (and shows when it has no opener)."""

    type: Literal["mailbridge:oauth-result"] = "mailbridge:oauth-result"
    agentId: str | None  # camelCase: the UI's message format
    provider: OAuthProvider | None
    status: Literal["connected", "error"]
    email: str | None = None
    error: OAuthResultError | None = None


class EmailConfigView(BaseModel):
    """GET/PUT response: the agent's connection without any secret."""

    agent_id: str
    status: Status
    config: ImapConnectionView | OAuthConnectionView | None
    last_error: LastError | None
    last_test: ConnectionTestResult | None
    version: int | None
    updated_at: datetime | None
    shared_apps: list[AppReference] = Field(
        description="OAuth apps this agent inherits if it gives no client ID of its own."
    )
    client_org: ClientOrgBanner | None = Field(
        description="The client organization the agent belongs to, and its policy."
    )


class ConnectionTestResponse(ConnectionTestResult):
    status: Status = Field(description="The agent's status after this test was recorded.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable and machine-readable: see the README's Errors table.")
    message: str = Field(description="A sentence for the person in the Email tab.")
    # Left out of the body when there is none, so the contract never offers null.
    field: str | SkipJsonSchema[None] = Field(
        default=None, description="The request field at fault, dotted (`imap.port`)."
    )
    hint: str | SkipJsonSchema[None] = Field(default=None, description="How to fix it.")


class ErrorResponse(BaseModel):
    """Every error the functions answer."""

    error: ErrorDetail


class GatewayError(BaseModel):
    """What API Gateway answers by itself, before any function runs (a missing or invalid
    token, a body over its 10 MB limit)."""

    message: str


class Caller(BaseModel):
    """Who is calling, from the JWT the API Gateway authorizer already verified."""

    subject: str
    org_id: str
    is_admin: bool = False
