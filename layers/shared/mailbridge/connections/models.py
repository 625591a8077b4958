"""An agent's connection: requests, the stored record (no secret in it), test results and
views."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field

from ..core.errors import MailbridgeError
from ..core.fields import (
    ClientId,
    ClientSecret,
    EmailAddress,
    Hostname,
    Password,
    Port,
    Tenant,
    Username,
)
from ..core.types import Model, OAuthProvider, SecretRef, SecretState, StrictModel, example
from ..orgs.models import AppReference, ClientOrgBanner


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


class Preset(Model):
    id: PresetId
    label: str
    imap: ServerSettings | None  # None for `custom`: the user enters everything
    smtp: ServerSettings | None
    note: str | None = Field(
        default=None,
        description="What to know before choosing it, shown under the picker: for "
        "`microsoft365`, that Exchange Online takes no password for IMAP and turns SMTP AUTH "
        "with passwords off by default at the end of December 2026, so Microsoft OAuth is "
        "the way to connect.",
    )


class PresetList(Model):
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
    # Constructed, not validated: a default validated here would build the model's schema at
    # import, on every cold start (core.types.Model).
    imap: ServerOverride = ServerOverride.model_construct()
    smtp: ServerOverride = ServerOverride.model_construct()


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


# ---- what is stored ---------------------------------------------------------------------


class ImapConnection(Model):
    """The resolved, complete IMAP/SMTP settings of an agent (no secret in it)."""

    provider: Literal["imap"] = "imap"
    preset: PresetId
    email: str
    username: str
    imap: ServerSettings
    smtp: ServerSettings


class OAuthAuthorization(Model):
    """What the provider confirmed when the account was authorized."""

    email: str
    granted_scopes: list[str]
    authorized_at: datetime
    client_id: str  # the app the grant belongs to: its tokens work with no other
    tenant_id: str | None = None  # Microsoft: the directory the account signed in to
    account_id: str | None = Field(
        default=None,
        description="The account signed in (Microsoft: `<tenant id>/<object id>`, Google: "
        "the subject): a re-authorization must sign in the same one. None for an "
        "authorization made before accounts were recorded: its next sign-in records it.",
    )


class OAuthConnection(Model):
    """An agent's OAuth app and, once authorized, its account (no secret in it)."""

    provider: OAuthProvider
    client_id: str | None = Field(description="None: the app is inherited (see `app`).")
    tenant: str | None = None  # Microsoft only
    scopes: list[str] = Field(description="What authorization asks (or asked) for.")
    authorization: OAuthAuthorization | None = None


Connection = Annotated[ImapConnection | OAuthConnection, Field(discriminator="provider")]


class Problem(Model):
    """A classified failure: stable code, a sentence for the user, and how to fix it."""

    code: str
    message: str
    hint: str | None = None

    @classmethod
    def of(cls, error: MailbridgeError) -> Problem:
        return cls(code=error.code, message=error.message, hint=error.hint)


# What the agent's runtime was doing with its mail when the connection failed.
MailUse = Literal["reading", "sending"]


class LastError(Problem):
    at: datetime
    during: MailUse | None = Field(
        default=None,
        description="`reading` or `sending` when the agent's own use of its mail failed (a "
        "success of the same use, a passing test or a save of new servers or credentials "
        "clears it); none for a test or a sign-in.",
    )


class Degraded(Model):
    """New mail is not reaching the agent as it should, since `since`, and why (the
    connection itself may still work: a poll timed out, a push subscription failed to renew)."""

    problem: Problem
    of: Literal["look", "push"] = Field(
        description="What fails: looking at the inbox, or the provider's push (a watch or "
        "subscription that cannot be made or renewed: new mail then waits for the rounds)."
    )
    since: datetime
    failures: int = Field(ge=1, description="Failed attempts in a row.")


class DeliveryView(Model):
    """How new mail reaches the agent, as the Email tab shows it."""

    state: Literal["active", "degraded", "inactive"] = Field(
        description="`degraded`: new mail is not reaching the agent as it should (see "
        "`problem`; the connection itself may still work); `inactive`: connected before "
        "this service announced new mail, until a passing test starts it."
    )
    of: Literal["look", "push"] | None = Field(
        default=None,
        description="What is degraded: looking at the inbox, or the provider's push (new "
        "mail then waits for the rounds).",
    )
    problem: Problem | None = None
    since: datetime | None = Field(default=None, description="When it became degraded.")
    failures: int = Field(default=0, description="Failed attempts in a row.")


class InboxCounts(Model):
    # Bounded: a server's numbers are input too (and DynamoDB stores 38 digits at most).
    total: int = Field(ge=0, le=10**15)
    unread: int = Field(ge=0, le=10**15)


CheckName = Literal["imap", "smtp", "authorization", "mailbox", "permissions", "policy"]


class CheckResult(Model):
    name: CheckName
    ok: bool
    latency_ms: int
    error: Problem | None = None


class ConnectionTestResult(Model):
    ok: bool
    email: str | None = Field(
        description="The address the provider confirmed: the account's (OAuth), or the login "
        "the IMAP server accepted when it is an address."
    )
    login: str | None = Field(default=None, description="IMAP: the login name the server accepted.")
    inbox: InboxCounts | None
    checks: list[CheckResult]
    error: Problem | None = Field(description="The first failing check's problem, if any.")
    tested_at: datetime


class TokenRef(SecretRef):
    """An agent's OAuth tokens, and when their access token expires (not a secret): whether
    a refresh is due is known before anything is read."""

    expires_at: int  # epoch seconds


class StoredConfig(Model):
    """The email-config record of one agent, as kept in DynamoDB."""

    agent_id: str
    connection: Connection
    secret: SecretRef | None = None  # password or client secret; None: an inherited app
    secret_updated_at: datetime
    tokens: TokenRef | None = None  # once authorized
    status: Status
    last_error: LastError | None = None
    last_test: ConnectionTestResult | None = None
    # Since when this connection (these servers and login, this account) has been Connected:
    # new mail is what arrives after it. None until it first connects; a save of other
    # servers, login or account starts it again.
    connected_at: datetime | None = None
    degraded: Degraded | None = None  # new mail's delivery, while it fails
    version: int
    updated_at: datetime

    @property
    def addresses(self) -> list[str]:
        """The addresses the agent sends as: the connection's own, and an IMAP login that is
        an address (the server sends as it); none for an OAuth connection not yet signed in."""
        connection = self.connection
        if isinstance(connection, ImapConnection):
            login = [connection.username] if "@" in connection.username else []
            return list(dict.fromkeys([connection.email, *login]))
        return [connection.authorization.email] if connection.authorization else []

    def with_status(
        self, status: Status, last_error: LastError | None, **changes: object
    ) -> StoredConfig:
        """The record with this status recorded (and `changes`)."""
        update: dict[str, object] = {"status": status, "last_error": last_error, **changes}
        if status is Status.CONNECTED and update.get("connected_at", self.connected_at) is None:
            update["connected_at"] = datetime.now(UTC)
        return self.model_copy(update=update)


# ---- responses --------------------------------------------------------------------------


class ImapConnectionView(ImapConnection):
    password: SecretState


class OAuthConnectionView(OAuthConnection):
    client_secret: SecretState | None = Field(description="None when the app is inherited.")
    redirect_uri: str = Field(description="Register exactly this URI with the provider.")
    app: AppReference | None = Field(
        description="The app in use and where it comes from; None if none is available."
    )


class OAuthSetup(Model):
    """What to register in the provider's console for an app of one's own."""

    redirect_uri: str = Field(description="Register exactly this URI with the provider.")
    scopes: list[str] = Field(description="The permissions sign-in asks for: grant them.")


class EmailConfigView(Model):
    """GET/PUT response: the agent's connection without any secret."""

    agent_id: str
    status: Status
    reason: str = Field(
        description="Why the status is what it is, a stable code: `not_configured`, "
        "`untested` (configured), `authorization_required` (awaiting authorization), "
        "`verified` (connected), or the last error's code."
    )
    checked_at: datetime | None = Field(
        description="When the status was last established: a test, a sign-in, a failed use "
        "of the connection, or this read (a policy or requirement that changed since)."
    )
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
    delivery: DeliveryView | None = Field(
        default=None, description="How new mail reaches the agent; shown while Connected."
    )
    warnings: list[Problem] = Field(
        default_factory=list,
        description="What works but not fully, each with its stable code and how to fix it "
        "(`send_permission_missing`: the agent can receive but not send).",
    )
    oauth_setup: dict[OAuthProvider, OAuthSetup] = Field(
        default_factory=dict,
        description="Per OAuth provider, what its app needs, before anything is saved; empty "
        "when OAuth is not set up on this deployment.",
    )


class ConnectionTestResponse(ConnectionTestResult):
    status: Status = Field(description="The agent's status after this test was recorded.")
