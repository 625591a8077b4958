"""What the domain knows about OAuth providers, without their libraries.

The adapters (`adapters.microsoft`, `adapters.google`) implement `OAuthProviderClient`; they
are imported only when a connection uses them, so routes that never talk to a provider do
not pay for msal or google-auth.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, Field

from .models import InboxCounts, OAuthProvider, Problem
from .settings import settings

PROVIDER_NAMES: dict[str, str] = {"microsoft": "Microsoft", "google": "Google"}

# What email needs and nothing more (the original asked for calendar, drive, contacts...).
# MSAL adds offline_access, openid and profile itself and refuses them in its scope lists.
MICROSOFT_SCOPES = ["Mail.ReadWrite", "Mail.Send", "User.Read"]
_GMAIL = "https://www.googleapis.com/auth/gmail."
GOOGLE_SCOPES = ["openid", "email", _GMAIL + "readonly", _GMAIL + "compose", _GMAIL + "send"]


@dataclass(frozen=True)
class Permission:
    """A capability the agent needs and the scopes that grant it (any one suffices)."""

    label: str
    granted_by: frozenset[str]
    ask_for: str


# Granted scopes come back qualified from Microsoft (https://graph.microsoft.com/Mail.Send);
# they are compared by their last path segment.
REQUIRED_PERMISSIONS: dict[str, list[Permission]] = {
    "microsoft": [
        Permission("reading mail", frozenset({"Mail.ReadWrite", "Mail.Read"}), "Mail.ReadWrite"),
        Permission("sending mail", frozenset({"Mail.Send"}), "Mail.Send"),
    ],
    "google": [
        Permission(
            "reading mail",
            frozenset({"gmail.readonly", "gmail.modify", "mail.google.com"}),
            _GMAIL + "readonly",
        ),
        Permission(
            "sending mail",
            frozenset({"gmail.send", "gmail.compose", "gmail.modify", "mail.google.com"}),
            _GMAIL + "send",
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


_CATALOGUE: dict[str, tuple[str, str]] = {
    "reauthorization_required": (
        "{provider} no longer accepts this agent's authorization: it expired or was revoked.",
        "Click Re-authorize in the Email tab and sign in with the agent's account again.",
    ),
    "oauth_client_invalid": (
        "{provider} rejected the app's client ID or client secret.",
        "Copy the current client ID and secret from the app registration and save them "
        "(client secrets expire after the lifetime chosen when they were created).",
    ),
    "permission_missing": (
        "The authorization does not allow {detail}.",
        "Add the permission to the app ({scope}), then click Re-authorize and accept it.",
    ),
    "authorization_denied": (
        "The sign-in was cancelled or the requested permissions were refused.",
        "Click Authorize again and accept the permissions. In some organizations an "
        "administrator must grant consent first.",
    ),
    "authorization_failed": (
        "{provider} could not complete the sign-in{detail}.",
        "Check that the app's redirect URI is exactly {redirect_uri}, then Authorize again.",
    ),
    "tenant_unknown": (
        "{provider} does not know the directory (tenant) {detail}.",
        "Check the tenant: the directory (tenant) ID or a verified domain of the app's "
        "directory, or organizations or common for a multi-tenant app.",
    ),
    "oauth_app_missing": (
        "No {provider} OAuth app is available for this agent.",
        "Enter the app's client ID and secret, or ask an organization admin to register the "
        "organization's shared app.",
    ),
    "oauth_app_removed": (
        "The organization's shared {provider} OAuth app this agent used was removed.",
        "Ask an organization admin to register it again, or enter an app's client ID and "
        "secret; then click Authorize.",
    ),
    "email_domain_not_allowed": (
        "{detail}",
        "Sign in with the agent's own mailbox in the client organization's domain.",
    ),
    "provider_error": (
        "{provider} answered with an unexpected error.",
        "Try again in a few minutes; if it persists, check the provider's status page.",
    ),
    "timeout": (
        "{provider} did not answer within {timeout:g} seconds.",
        "Try again in a few minutes.",
    ),
    "connection_failed": (
        "Could not reach {provider}.",
        "Check the deployment's outbound network access, then try again.",
    ),
    "tls_certificate_invalid": (
        "The TLS certificate of {provider}'s endpoint could not be verified.",
        "Check the deployment's provider endpoint settings; certificates are always verified.",
    ),
}


class ProviderProblem(Exception):
    """A classified provider failure, with our own words (never the provider's raw text)."""

    def __init__(self, code: str, provider: str, *, detail: str = "", scope: str = "") -> None:
        message, hint = _CATALOGUE[code]
        values = {
            "provider": PROVIDER_NAMES[provider],
            "detail": detail,
            "scope": scope,
            "timeout": settings().provider_timeout_seconds,
            "redirect_uri": settings().oauth_redirect_uri,
        }
        self.code = code
        self.problem = Problem(
            code=code, message=message.format(**values), hint=hint.format(**values)
        )
        super().__init__(self.problem.message)


def permission_problem(provider: str, missing: list[Permission]) -> ProviderProblem:
    return ProviderProblem(
        "permission_missing",
        provider,
        detail=" or ".join(permission.label for permission in missing),
        scope=", ".join(permission.ask_for for permission in missing),
    )


@dataclass(frozen=True)
class OAuthApp:
    provider: OAuthProvider
    client_id: str
    client_secret: str
    tenant: str | None  # Microsoft only


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


class Mailbox(BaseModel):
    """What the provider's mail API says of the account (validated: it is input)."""

    email: str = Field(min_length=3, max_length=320, pattern=r"@")
    inbox: InboxCounts


class OAuthProviderClient(Protocol):
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
    module = importlib.import_module(f"mailbridge.adapters.{provider}")
    client: OAuthProviderClient = module.CLIENT
    return client
