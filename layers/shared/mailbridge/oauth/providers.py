"""The port to the OAuth providers: what the domain knows about them without their libraries
(scopes, permissions, the data an exchange gives), and the protocol the adapters implement.

The adapters (`adapters.microsoft`, `adapters.google`) are loaded by `provider_client` when a
connection first uses them, so routes that never talk to a provider do not pay for msal or
google-auth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field

from ..connections.records import InboxCounts
from ..core.adapters import load_adapter
from ..core.errors import ErrorCode, ProviderError
from ..core.types import Model, OAuthProvider

if TYPE_CHECKING:
    from ..orgs.shared_apps import ResolvedApp

# What email needs and nothing more (the original asked for calendar, drive, contacts...).
# MSAL adds offline_access, openid and profile itself and refuses them in its scope lists.
MICROSOFT_SCOPES = ["Mail.ReadWrite", "Mail.Send", "User.Read"]
_GMAIL = "https://www.googleapis.com/auth/gmail."
# gmail.modify: read, send, and mark read or unread; nothing can be deleted for good.
GOOGLE_SCOPES = ["openid", "email", _GMAIL + "modify"]


@dataclass(frozen=True)
class Permission:
    """A capability the agent needs and the scopes that grant it (any one suffices).
    `sends`: without it the agent still receives, so its absence is a warning, not an
    error."""

    label: str
    granted_by: frozenset[str]
    ask_for: str
    sends: bool = False


# Granted scopes come back qualified from Microsoft (https://graph.microsoft.com/Mail.Send);
# they are compared by their last path segment.
REQUIRED_PERMISSIONS: dict[str, list[Permission]] = {
    "microsoft": [
        Permission("reading mail", frozenset({"Mail.ReadWrite", "Mail.Read"}), "Mail.ReadWrite"),
        Permission("sending mail", frozenset({"Mail.Send"}), "Mail.Send", sends=True),
    ],
    "google": [
        Permission(
            "reading mail",
            frozenset({"gmail.readonly", "gmail.modify", "mail.google.com"}),
            _GMAIL + "modify",
        ),
        Permission(
            "sending mail",
            frozenset({"gmail.send", "gmail.compose", "gmail.modify", "mail.google.com"}),
            _GMAIL + "modify",
            sends=True,
        ),
    ],
}


def requested_scopes(provider: str) -> list[str]:
    """The scopes shown to the user: what authorization asks for, MSAL's additions included."""
    if provider == "microsoft":
        return [*MICROSOFT_SCOPES, "offline_access"]
    return list(GOOGLE_SCOPES)


def _scope_name(scope: str) -> str:
    return scope.rstrip("/").rsplit("/", 1)[-1].lower()


def missing_permissions(provider: str, granted_scopes: list[str]) -> list[Permission]:
    granted = {_scope_name(scope) for scope in granted_scopes}
    return [
        permission
        for permission in REQUIRED_PERMISSIONS[provider]
        if not granted & {name.lower() for name in permission.granted_by}
    ]


def permission_problem(provider: str, missing: list[Permission]) -> ProviderError:
    return ProviderError(
        ErrorCode.PERMISSION_MISSING,
        provider,
        detail=" or ".join(permission.label for permission in missing),
        scope=", ".join(permission.ask_for for permission in missing),
    )


def grant_problems(
    provider: str, granted_scopes: list[str]
) -> tuple[ProviderError | None, ProviderError | None]:
    """What a grant lacks of what is required now: an error when the agent cannot use its
    mailbox (it cannot read it), else a warning when it can receive but not send. Computed
    at each use from the required set, so requirements that grow reach every grant."""
    missing = missing_permissions(provider, granted_scopes)
    if not missing:
        return None, None
    if all(permission.sends for permission in missing):
        scope = ", ".join(permission.ask_for for permission in missing)
        return None, ProviderError(ErrorCode.SEND_PERMISSION_MISSING, provider, scope=scope)
    return permission_problem(provider, missing), None


@dataclass(frozen=True)
class OAuthApp:
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


@dataclass(frozen=True)
class TokenGrant:
    """A usable access token, and the token document to store when it changed."""

    access_token: str
    granted_scopes: list[str]
    expires_at: int  # the access token's, epoch seconds
    tokens: dict[str, Any] | None  # None: the stored document is still current


@dataclass(frozen=True)
class AuthorizedAccount:
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

    def revoke(self, app: OAuthApp, tokens: dict[str, Any]) -> None:
        """Revoke the grant at the provider, where it offers a way to."""
        ...


def provider_client(provider: str) -> OAuthProviderClient:
    """The provider's adapter (`mailbridge.adapters.<provider>`), loaded at first use."""
    client: OAuthProviderClient = load_adapter(provider)
    return client
