"""An agent's connection as the Email tab's routes take and give it: presets, requests and
views. What is stored is in `.records`."""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

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
from ..core.types import Model, OAuthProvider, SecretState, StrictModel, example
from ..orgs.models import AppReference, ClientOrgBanner
from .records import (
    ConnectionTestResult,
    ImapConnection,
    LastError,
    OAuthConnection,
    PresetId,
    Problem,
    Security,
    ServerSettings,
    Status,
)


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


# ---- responses --------------------------------------------------------------------------


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
