"""Shared OAuth apps and client organizations as stored: what every function that resolves
an agent's app or applies its client organization's policy reads."""

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field

from ..core.fields import WholeNumber
from ..core.types import Model, OAuthProvider, SecretRef, StrictModel

AppOwner = Literal["org", "client_org"]
AppSource = Literal["own", "client_org", "org"]


class SharedApp(Model):
    """An OAuth app registered once for every agent of an org or client organization."""

    owner: AppOwner
    owner_id: str
    org_id: str  # the organization: the owner itself, or the client organization's
    provider: OAuthProvider
    client_id: str
    tenant: str | None = None  # absent attributes are None
    secret: SecretRef
    secret_updated_at: datetime
    secret_expires_at: date | None = None
    # When the provider refused the secret (invalid_client) at a refresh or a sign-in;
    # saving a new secret clears it.
    secret_expired_at: datetime | None = None
    version: int
    updated_at: datetime

    @property
    def client_org_id(self) -> str | None:
        return self.owner_id if self.owner == "client_org" else None


class SendingLimits(StrictModel):
    per_hour: Annotated[int, Field(ge=1, le=1_000_000), WholeNumber] | None = None
    per_day: Annotated[int, Field(ge=1, le=10_000_000), WholeNumber] | None = None


class ClientOrg(Model):
    """A client organization of an org, with the email policy its agents follow."""

    client_org_id: str
    org_id: str
    name: str
    email_domain: str | None = None  # absent attributes are None
    allowed_recipients: list[str]
    limits: SendingLimits
    version: int
    updated_at: datetime
