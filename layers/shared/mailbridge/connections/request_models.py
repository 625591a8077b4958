"""What saving an agent's connection starts from and takes: the provider presets, and the PUT
bodies, one per connection method, whose servers override a preset's. The connection's view
is in `.models`, what is stored in `.records`."""

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
from ..core.types import Model, StrictModel, example
from .records import PresetId, Security, ServerSettings


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


class ServerOverride(StrictModel):
    """Any subset of a server's settings; what is left out comes from the preset."""

    host: Hostname | None = None
    port: Port | None = None
    security: Security | None = None


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
