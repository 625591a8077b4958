"""What an agent's Email tab shows of its organization's settings: the OAuth app it inherits,
an app's warnings, a client organization's banner. The organization's own routes take and
give theirs in `.admin_models`; what is stored is in `.records`."""

from pydantic import Field

from ..core.types import Model, OAuthProvider
from .records import AppSource, SendingLimits

# ---- shared OAuth apps -----------------------------------------------------------------


class AppWarning(Model):
    """A shared app's problem, shown on it and on the agents using it: a stable code, a
    sentence and how to fix it."""

    code: str
    message: str
    hint: str


class AppReference(Model):
    """Where an agent's OAuth app comes from (the Email tab's green banner), never its
    secret."""

    provider: OAuthProvider
    source: AppSource
    client_id: str
    tenant: str | None


# ---- client organizations -------------------------------------------------------------


class ClientOrgBanner(Model):
    """What the Email tab's info banner shows for an agent of a client organization."""

    id: str
    name: str
    email_domain: str | None
    allowed_recipients: list[str]
    limits: SendingLimits
    warnings: list[str] = Field(description="The restrictions, phrased for display.")
