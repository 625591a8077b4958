"""Shared OAuth apps and client organizations' email policies as the organization's routes
take and give them (`functions/org_settings`). What an agent's Email tab shows of them is in
`.models`, what is stored in `.records`."""

from datetime import date, datetime
from typing import Annotated

from pydantic import AfterValidator, Field

from ..core.fields import ClientId, ClientSecret, Tenant, hostname, printable
from ..core.types import Model, OAuthProvider, SecretState, StrictModel, example
from .models import AppWarning
from .records import AppOwner, SendingLimits

# ---- shared OAuth apps -----------------------------------------------------------------


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
    secret_expires_at: date | None = Field(
        default=None,
        description="The client secret's expiry date, as Azure shows it (YYYY-MM-DD): the "
        "app's and its agents' views warn from 30 days before. Kept when left out; null "
        "clears it.",
    )


class SharedAppView(Model):
    owner: AppOwner
    owner_id: str
    provider: OAuthProvider
    client_id: str
    tenant: str | None
    client_secret: SecretState
    secret_expires_at: date | None = Field(description="The secret's expiry date, if recorded.")
    secret_expired_at: datetime | None = Field(
        description="When Microsoft or Google refused the secret (expired or deleted) for an "
        "agent; every agent using the app is in error until a new secret is saved."
    )
    redirect_uri: str
    version: int
    updated_at: datetime
    warnings: list[AppWarning] = Field(
        description="`oauth_client_invalid` (the secret was refused), `app_secret_expiring` "
        "or `app_secret_expired` (the recorded date is near or past), each with the fix."
    )


# ---- client organizations' email policy ------------------------------------------------


def _recipient_rule(value: str) -> str:
    """An address (alice@example.com) or a whole domain (example.com or @example.com)."""
    local, _, domain = value.strip().lower().rpartition("@")
    if local and any(ch.isspace() or ord(ch) < 32 for ch in local):
        raise ValueError("must be an email address or a domain")
    # As recipients are compared: the domain without its final dot ("example.com.").
    domain = hostname(domain)
    return f"{local}@{domain}" if local else domain  # "@example.com" is the domain


RecipientRule = Annotated[str, Field(max_length=320), AfterValidator(_recipient_rule)]
EmailDomain = Annotated[str, Field(max_length=253), AfterValidator(hostname)]


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

    name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(printable)]
    email_domain: EmailDomain | None = Field(
        default=None, description="Agents of this client organization send from this domain."
    )
    allowed_recipients: list[RecipientRule] = Field(
        default_factory=list,
        max_length=1000,
        description="Addresses and domains agents may write to; empty means anyone.",
    )
    # Constructed, not validated: validating a default would build its schema at import.
    limits: SendingLimits = SendingLimits.model_construct()
