"""A sign-in: what starting one takes and gives, what is stored until the callback, and what
the callback page posts to the Email tab."""

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ..audit.models import Actor
from ..core.types import Model, OAuthProvider, StrictModel


class AuthorizeRequest(StrictModel):
    origin: str | None = Field(
        default=None,
        description="The UI origin that receives the result by postMessage; defaults to the "
        "request's Origin header. Must be one of the deployment's allowed origins.",
    )
    switch_account: bool = Field(
        default=False,
        description="Sign in another account than the one connected and replace it (the old "
        "mailbox is disconnected). Without it, another account is refused "
        "(`account_mismatch`) and the connection stays as it is.",
    )


class AuthorizeResponse(Model):
    authorization_url: str = Field(description="Open it in the popup.")
    expires_at: datetime = Field(description="The authorization must finish before this.")


class PendingAuthorization(Model):
    """A started authorization, stored under the hash of its `state` until the callback."""

    agent_id: str
    org_id: str
    provider: OAuthProvider
    config_version: int  # the callback is refused if the settings changed meanwhile
    # The app the code is issued to, which no other may redeem: its credentials go to no
    # other provider or app. None: started before it was kept.
    client_id: str | None = None
    ui_origin: str
    scopes: list[str]
    consent: bool
    switch_account: bool = False  # another account than the connected one may replace it
    # Who started it, the audit's actor (the callback has no token). None: started before
    # the audit trail was, by someone whom the trail calls unknown.
    started_by: Actor | None = None
    # The provider's half of the flow, PKCE verifier included (MSAL's flow, Google's verifier).
    flow: dict[str, Any]
    expires_at: int  # epoch seconds: checked explicitly and used as the item's TTL


class OAuthResultError(Model):
    code: str
    message: str


class OAuthResultMessage(Model):
    """What the callback page posts to the Email tab (and shows when it has no opener)."""

    type: Literal["mailbridge:oauth-result"] = "mailbridge:oauth-result"
    agentId: str | None  # camelCase: the UI's message format
    provider: OAuthProvider | None
    status: Literal["connected", "error"]
    # The account's address: connected, or the other account an `account_mismatch` signed in.
    email: str | None = None
    error: OAuthResultError | None = None
