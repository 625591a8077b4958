"""Microsoft: Entra ID sign-in with MSAL, Microsoft Graph for the mailbox.

The token cache MSAL keeps (account, access and refresh tokens) is the stored token
document, serialized; MSAL rotates the refresh token on every refresh and the new cache is
handed back to be stored, so a rotated refresh token is never lost.
"""

from __future__ import annotations

import re
import time
import warnings
from typing import Any

import msal
import requests

from ..connections.records import InboxCounts
from ..core.errors import Cause, ErrorCode, ProviderError
from ..core.fields import GUID_PATTERN
from ..core.settings import settings
from ..oauth.providers import (
    REFRESH_MARGIN_SECONDS,
    AuthorizedAccount,
    Mailbox,
    OAuthApp,
    TokenGrant,
)
from ..oauth.scopes import MICROSOFT_SCOPES, REQUIRED_PERMISSIONS
from .provider_http import (
    get_json,
    network_problem,
    reading_answer,
    session,
    timeout,
    unavailable,
)

_PROVIDER = "microsoft"
# What MSAL adds to every request itself, and refuses to be given.
_RESERVED_SCOPES = frozenset({"openid", "profile", "offline_access"})
# A directory named by its id (not "organizations", "common" or a domain).
_TENANT_ID = re.compile(GUID_PATTERN)
_READ, _ = REQUIRED_PERMISSIONS[_PROVIDER]
# MSAL keeps the authority's discovery document here, so warm invocations skip that call.
# It would keep a 429 or 5xx too, answering with it for up to an hour without asking Entra:
# `_Entra` raises those before MSAL sees them. (A 400 it keeps for a minute, for the very
# same request only: the same code or refresh token, refused again.)
_http_cache: dict[Any, Any] = {}


class _Entra:
    """MSAL's way to Entra: our session, with our timeout. A 429 or a 5xx is classified
    here, where its status and Retry-After are known, and raised as the mail APIs' are:
    MSAL would read a 429 as a refusal (at discovery, as an unknown tenant) and raise an
    error of its own for a 5xx."""

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> requests.Response:
        return self._send("POST", url, **kwargs)

    @staticmethod
    def _send(method: str, url: str, **kwargs: Any) -> requests.Response:
        try:
            response = session().request(method, url, **{**kwargs, "timeout": timeout()})
        except requests.RequestException as error:
            raise network_problem(error, _PROVIDER) from error
        failure = unavailable(response, _PROVIDER)
        if failure is not None:
            raise failure
        return response


def _client(app: OAuthApp, token_cache: msal.TokenCache | None = None) -> Any:
    try:
        return msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=app.client_secret,
            authority=f"{settings().microsoft_authority_host}/{app.tenant}",
            # Discovery against Microsoft's instance list is for arbitrary hosts; the
            # authority host is deployment configuration, so it is not needed.
            instance_discovery=False,
            token_cache=token_cache,
            http_cache=_http_cache,
            http_client=_Entra(),
        )
    except ValueError as error:  # MSAL's "Unable to get authority configuration"
        raise ProviderError(ErrorCode.TENANT_UNKNOWN, _PROVIDER, detail=str(app.tenant)) from error
    except (AttributeError, IndexError, KeyError, TypeError) as error:  # a garbled document
        raise ProviderError(ErrorCode.PROVIDER_ERROR, _PROVIDER) from error


def _cache(tokens: dict[str, Any]) -> msal.SerializableTokenCache:
    token_cache = msal.SerializableTokenCache()
    token_cache.deserialize(tokens["token_cache"])
    return token_cache


def _grant(result: dict[str, Any], token_cache: msal.SerializableTokenCache) -> TokenGrant:
    return TokenGrant(
        access_token=result["access_token"],
        granted_scopes=str(result.get("scope", "")).split(),
        expires_at=int(time.time() + int(result["expires_in"])),
        tokens={"token_cache": token_cache.serialize()},
    )


def _granted(token_cache: msal.SerializableTokenCache) -> list[str]:
    """The scopes the grant holds, as its latest access token names them. A refresh asks
    for these, not for all the app wants: Entra refuses a refresh asking for a scope that
    was never consented to (AADSTS65001), so a grant without Mail.Send keeps reading, and
    one whose consent an admin withdrew is refused as Entra refuses it."""
    entries = token_cache.search(msal.TokenCache.CredentialType.ACCESS_TOKEN)
    latest = max(entries, key=lambda entry: int(entry.get("cached_at", 0)), default=None)
    scopes = str(latest.get("target", "")).split() if latest else []
    return [scope for scope in scopes if scope.lower() not in _RESERVED_SCOPES]


# Entra's error codes (AADSTS<n>, in the answer's `error_codes`) that say what to do.
_CAUSES = {
    50076: Cause.MFA_REQUIRED,
    50079: Cause.MFA_ENROLMENT_REQUIRED,
    65001: Cause.CONSENT_MISSING,
    7000215: Cause.CLIENT_SECRET_REFUSED,  # an invalid client secret was provided
    7000222: Cause.CLIENT_SECRET_EXPIRED,
}
# What says the app's secret itself is wrong; any other invalid_client (a public client,
# a certificate expected...) is the app's registration, which a new secret would not fix.
_SECRET_CAUSES = frozenset({Cause.CLIENT_SECRET_REFUSED, Cause.CLIENT_SECRET_EXPIRED})


def _cause(result: dict[str, Any]) -> Cause | None:
    codes = result.get("error_codes")
    for code in codes if isinstance(codes, list) else []:
        if isinstance(code, int) and code in _CAUSES:
            return _CAUSES[code]
    return None


def _failure(result: dict[str, Any], *, during_sign_in: bool) -> ProviderError:
    error = result.get("error")
    cause = _cause(result)
    if error == "invalid_client":  # the app's credentials: AADSTS7000222, 7000215...
        cause = cause if cause in _SECRET_CAUSES else None
        return ProviderError(ErrorCode.OAUTH_CLIENT_INVALID, _PROVIDER, cause=cause)
    if error == "unauthorized_client":
        return ProviderError(ErrorCode.OAUTH_CLIENT_INVALID, _PROVIDER)
    if during_sign_in:
        denied = cause is Cause.CONSENT_MISSING
        code = ErrorCode.AUTHORIZATION_DENIED if denied else ErrorCode.AUTHORIZATION_FAILED
        return ProviderError(code, _PROVIDER, cause=cause)
    if cause or error in {"invalid_grant", "interaction_required", "consent_required"}:
        return ProviderError(ErrorCode.REAUTHORIZATION_REQUIRED, _PROVIDER, cause=cause)
    return ProviderError(ErrorCode.PROVIDER_ERROR, _PROVIDER)


class MicrosoftClient:
    def start(self, app: OAuthApp, state: str, *, consent: bool) -> tuple[str, dict[str, Any]]:
        client = _client(app)
        with warnings.catch_warnings():
            # MSAL recommends response_mode=form_post. One GET callback serves both providers
            # (Google has no form_post), and its page is no-store and no-referrer, which is
            # what form_post protects: the code in history and Referer headers.
            warnings.filterwarnings("ignore", "response_mode='form_post' is recommended")
            flow: dict[str, Any] = client.initiate_auth_code_flow(
                MICROSOFT_SCOPES,
                redirect_uri=settings().oauth_redirect_uri,
                state=state,
                prompt="consent" if consent else "select_account",
            )
        # What is stored must not let a table reader finish the flow: not the state (kept
        # only as a hash) nor the URL that carries it.
        url = flow.pop("auth_uri")
        del flow["state"]
        return url, flow

    def finish(
        self, app: OAuthApp, flow: dict[str, Any], response: dict[str, str]
    ) -> AuthorizedAccount:
        token_cache = msal.SerializableTokenCache()
        # The state was checked (against its stored hash) before this flow was found.
        flow = {**flow, "state": response.get("state")}
        # MSAL reads the token endpoint's answer as it comes: anything it chokes on is the
        # provider's error.
        with reading_answer(_PROVIDER):
            try:
                result = _client(app, token_cache).acquire_token_by_auth_code_flow(flow, response)
            except ValueError as error:  # the redirect carries neither a code nor an error
                raise ProviderError(ErrorCode.AUTHORIZATION_FAILED, _PROVIDER) from error
            if "access_token" not in result:
                raise _failure(result, during_sign_in=True)
            # MSAL checks only the id token's nonce (a mismatch is the ValueError above).
            # Received from Entra over verified TLS for our own request, it needs no
            # signature (OpenID Connect Core 3.1.3.7), but it must be for this app, and from
            # the app's directory when the app names one; its directory and object ids are
            # the account, whatever its address becomes.
            claims = result.get("id_token_claims") or {}
            tenant_id, object_id = claims.get("tid"), claims.get("oid")
            if not (isinstance(tenant_id, str) and isinstance(object_id, str)) or not (
                tenant_id and object_id
            ):
                raise ProviderError(
                    ErrorCode.AUTHORIZATION_FAILED, _PROVIDER, detail=": no account was named"
                )
            directory = app.tenant or ""
            if claims.get("aud") != app.client_id or (
                _TENANT_ID.fullmatch(directory) and tenant_id.lower() != directory.lower()
            ):
                raise ProviderError(
                    ErrorCode.AUTHORIZATION_FAILED,
                    _PROVIDER,
                    detail=": the id token is not this app's",
                )
            return AuthorizedAccount(
                grant=_grant(result, token_cache),
                tenant_id=tenant_id,
                account_id=f"{tenant_id}/{object_id}",
                username=str(claims.get("preferred_username", "")),
            )

    def cached_token(self, tokens: dict[str, Any]) -> TokenGrant | None:
        entries = _cache(tokens).search(msal.TokenCache.CredentialType.ACCESS_TOKEN)
        fresh = [e for e in entries if int(e["expires_on"]) - time.time() > REFRESH_MARGIN_SECONDS]
        if not fresh:
            return None
        entry = max(fresh, key=lambda e: int(e["expires_on"]))
        scopes = str(entry.get("target", "")).split()
        return TokenGrant(entry["secret"], scopes, int(entry["expires_on"]), None)

    def refresh(self, app: OAuthApp, tokens: dict[str, Any]) -> TokenGrant:
        token_cache = _cache(tokens)
        client = _client(app, token_cache)
        accounts = client.get_accounts()
        if not accounts:
            raise ProviderError(ErrorCode.REAUTHORIZATION_REQUIRED, _PROVIDER)
        with reading_answer(_PROVIDER):
            result = client.acquire_token_silent_with_error(
                _granted(token_cache) or MICROSOFT_SCOPES, accounts[0], force_refresh=True
            )
            if not result or "access_token" not in result:
                raise _failure(result or {}, during_sign_in=False)
            return _grant(result, token_cache)

    def mailbox(self, access_token: str) -> Mailbox:
        graph = settings().graph_base_url
        me = get_json(
            _PROVIDER, f"{graph}/me?$select=mail,userPrincipalName", access_token, needs=_READ
        )
        inbox = get_json(
            _PROVIDER,
            f"{graph}/me/mailFolders/inbox?$select=totalItemCount,unreadItemCount",
            access_token,
            needs=_READ,
        )
        with reading_answer(_PROVIDER):
            return Mailbox(
                email=me.get("mail") or me["userPrincipalName"],
                inbox=InboxCounts(total=inbox["totalItemCount"], unread=inbox["unreadItemCount"]),
            )

    def revoke(self, tokens: dict[str, Any]) -> None:
        """Microsoft offers no revocation of one app's refresh token (revokeSignInSessions
        would sign the user out everywhere); deleting the tokens is what disconnect can do."""


ADAPTER = MicrosoftClient()
