"""The port to the OAuth providers: the data an exchange gives, and the protocol the adapters
implement (what sign-in asks for and what a grant must hold is in `.scopes`).

The adapters (`adapters.microsoft`, `adapters.google`) are loaded by `provider_client` when a
connection first uses them, so routes that never talk to a provider do not pay for msal or
google-auth.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from pydantic import Field

from ..connections.records import InboxCounts
from ..core.adapters import load_adapter
from ..core.types import Model, OAuthProvider

if TYPE_CHECKING:
    from ..orgs.inherited_apps import ResolvedApp


class OAuthApp(NamedTuple):
    """An app as an adapter uses it; `client_secret` is empty for what needs none."""

    provider: OAuthProvider
    client_id: str
    client_secret: str
    tenant: str | None  # Microsoft only

    @classmethod
    def of(cls, app: ResolvedApp, secret: dict[str, Any] | None = None) -> OAuthApp:
        """`app` with the value of its secret, when the exchange needs it."""
        client_secret = secret["client_secret"] if secret else ""
        return cls(app.provider, app.client_id, client_secret, app.tenant)


# An access token this close to expiry is refreshed before use (MSAL applies the same).
REFRESH_MARGIN_SECONDS = 300


class TokenGrant(NamedTuple):
    """A usable access token, and the token document to store when it changed."""

    access_token: str
    granted_scopes: list[str]
    expires_at: int  # the access token's, epoch seconds
    tokens: dict[str, Any] | None  # None: the stored document is still current


class AuthorizedAccount(NamedTuple):
    grant: TokenGrant
    tenant_id: str | None
    # Who signed in, as the provider's id token says: Microsoft `<tid>/<oid>` (the directory
    # and the user's object in it), Google `sub`. Stable for the account, whatever its address.
    account_id: str
    username: str  # the sign-in name the id token gives, to name the account


class Mailbox(Model):
    """What the provider's mail API says of the account (validated: it is input)."""

    email: str = Field(min_length=3, max_length=320, pattern=r"@")
    inbox: InboxCounts


class OAuthProviderClient(Protocol):
    """What an OAuth adapter does; failures are `ProviderError`s."""

    def start(self, app: OAuthApp, state: str, *, consent: bool) -> tuple[str, dict[str, Any]]:
        """The authorization URL for the provider's scope set, and the flow data the
        callback needs (PKCE verifier included). Needs no client secret."""
        ...

    def finish(
        self, app: OAuthApp, flow: dict[str, Any], response: dict[str, str]
    ) -> AuthorizedAccount:
        """Exchange the callback's code for tokens."""
        ...

    def cached_token(self, tokens: dict[str, Any]) -> TokenGrant | None:
        """The stored access token if it is valid for more than REFRESH_MARGIN_SECONDS."""
        ...

    def refresh(self, app: OAuthApp, tokens: dict[str, Any]) -> TokenGrant:
        """A new access token from the refresh token (which the provider may rotate)."""
        ...

    def mailbox(self, access_token: str) -> Mailbox:
        """The account's address and inbox counts, each in one request."""
        ...

    def revoke(self, tokens: dict[str, Any]) -> None:
        """Revoke the grant at the provider, where it offers a way to (with the token alone,
        as Google's RFC 7009 endpoint takes it: an app whose secret is gone still can)."""
        ...


def provider_client(provider: str) -> OAuthProviderClient:
    """The provider's adapter (`mailbridge.adapters.<provider>`), loaded at first use."""
    client: OAuthProviderClient = load_adapter(provider)
    return client
