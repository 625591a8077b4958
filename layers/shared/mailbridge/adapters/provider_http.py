"""HTTPS to the OAuth providers and their mail APIs: one pooled session (MSAL and
google-auth use it too), a deadline on every whole request, certificate verification always
on, failures classified into `ProviderError`s."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from http.cookiejar import DefaultCookiePolicy
from typing import Any
from urllib.parse import quote

import requests
import urllib3

from ..core.deadline import Deadline, watch
from ..core.errors import ErrorCode, MailbridgeError, ProviderError
from ..core.settings import settings
from ..mail.ids import message_not_found
from ..oauth.scopes import Permission, permission_problem


class _WatchedConnection(urllib3.connection.HTTPSConnection):
    """Puts its socket under the current deadline: a new one as soon as it exists (so the
    TLS handshake is covered too), a kept-alive one at each request."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        try:
            watch(sock)
        except TimeoutError:
            sock.close()
            raise
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedConnection


class _WatchedAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"https": _WatchedPool}


class _DeadlineSession(requests.Session):
    """Each request, from connect to the last byte of the body, ends within the provider
    timeout: requests' own timeout bounds each read, which a dripping server defeats."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        with Deadline(settings().provider_timeout_seconds) as deadline:
            try:
                return super().send(request, **kwargs)
            except requests.RequestException as error:
                if deadline.expired:
                    raise requests.Timeout("no complete answer within the timeout") from error
                raise


# A provider that throttles without saying for how long.
_RETRY_AFTER_SECONDS = 60
# Google's reasons for a 403 that asks to slow down rather than says the grant is short...
_RATE_LIMITED = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
# ...and for one that says a quota is spent: the project's daily one (which Google resets at
# midnight Pacific time, and says may refuse requests for hours) or another. A minute's wait
# would have every retry refused again; an hour's is what a daily quota needs, where Google
# says no better.
_QUOTA_SPENT = frozenset({"dailyLimitExceeded", "quotaExceeded"})
_QUOTA_RETRY_AFTER_SECONDS = 3600
# Graph's code for a 400 about the id a request names, whatever else the request carries.
_MALFORMED_ID = frozenset({"ErrorInvalidIdMalformed"})
# Graph's codes for a 400 that says a delta's state token is no longer valid (it answers 410
# Gone, SyncStateNotFound, as often).
_SYNC_STATE_LOST = frozenset({"resyncRequired", "syncStateInvalid", "SyncStateInvalid"})


@cache
def session() -> requests.Session:
    """Reused by warm invocations, so keep-alive connections to the provider survive. It
    keeps no cookies: one instance serves every tenant, and a cookie set for one must never
    ride on another's request."""
    provider_session = _DeadlineSession()
    provider_session.mount("https://", _WatchedAdapter())
    provider_session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
    return provider_session


def timeout() -> tuple[float, float]:
    seconds = settings().provider_timeout_seconds
    return seconds, seconds


def network_problem(error: requests.RequestException, provider: str) -> ProviderError:
    if isinstance(error, requests.Timeout):
        code = ErrorCode.TIMEOUT
    elif isinstance(error, requests.exceptions.SSLError):
        code = ErrorCode.TLS_CERTIFICATE_INVALID
    elif isinstance(error, requests.ConnectionError):
        code = ErrorCode.CONNECTION_FAILED
    else:
        code = ErrorCode.PROVIDER_ERROR
    return ProviderError(code, provider)


@contextmanager
def reading_answer(provider: str) -> Iterator[None]:
    """An answer that lacks what we read (or is not JSON) is the provider's error, not a
    crash of ours."""
    try:
        yield
    except (AttributeError, IndexError, KeyError, OverflowError, TypeError, ValueError) as error:
        raise ProviderError(ErrorCode.PROVIDER_ERROR, provider) from error


def provider_id(value: str, pattern: re.Pattern[str]) -> str:
    """An id, if the whole of it looks like the provider's ids (`pattern`, which bounds its
    length too); else ValueError: within `reading_answer`, an answer that is not what it should
    be."""
    if pattern.fullmatch(value) is None:
        raise ValueError("not an id of this provider")
    return value


def path_segment(value: str, pattern: re.Pattern[str]) -> str:
    """An id as one segment of a URL's path, if it looks like the provider's ids; else
    ValueError. Ids are hostile input: a `..`, `/` or `?` would take the request, and the
    agent's token, elsewhere on the provider's host."""
    return quote(provider_id(value, pattern), safe="")


def message_segment(value: str, pattern: re.Pattern[str]) -> str:
    """A caller's message id as a path segment: one that cannot be the provider's finds
    nothing, as an unknown one does, and is never sent."""
    try:
        return path_segment(value, pattern)
    except ValueError:
        raise message_not_found() from None


def _reasons(response: requests.Response) -> set[str]:
    """What an error says it is: a Google API error's reasons (`error.errors[].reason`), a
    Graph error's code (`error.code`); none for another shape, or a body that is not JSON."""
    try:
        error = response.json()["error"]
        if isinstance(error.get("code"), str):
            return {error["code"]}
        return {str(detail["reason"]) for detail in error.get("errors", [])}
    except (AttributeError, KeyError, TypeError, ValueError):
        return set()


def _throttled(
    response: requests.Response, provider: str, unsaid: int = _RETRY_AFTER_SECONDS
) -> ProviderError:
    """Asked to slow down: for as long as the provider says, else `unsaid` seconds."""
    retry_after = response.headers.get("Retry-After", "")
    valid = retry_after.isascii() and retry_after.isdigit()  # "²" is a digit, not a number
    seconds = int(retry_after) if valid else unsaid
    return ProviderError(ErrorCode.PROVIDER_THROTTLED, provider, retry_after=max(1, seconds))


def unavailable(response: requests.Response, provider: str) -> ProviderError | None:
    """What a 429 or a 5xx says, whatever was asked: a 429, or a 503 that says when to come
    back, asks to slow down (Retry-After kept); another 5xx is the provider failing."""
    status = response.status_code
    if status == 429 or (status == 503 and "Retry-After" in response.headers):
        return _throttled(response, provider)
    if status >= 500:
        return ProviderError(ErrorCode.PROVIDER_ERROR, provider)
    return None


def call(
    provider: str,
    method: str,
    url: str,
    access_token: str,
    *,
    needs: Permission,
    unknown: Callable[[], MailbridgeError] | None = None,
    refused: ErrorCode | None = None,
    gone: Callable[[], MailbridgeError] | None = None,
    headers: dict[str, str] | None = None,
    **arguments: Any,
) -> requests.Response:
    """A mail API request with the agent's access token, answered or classified: 401 asks
    for re-authorization, 403 means the grant lacks `needs` (unless Google says it is a rate
    limit or a spent quota), a 429, or a 503 that says when to come back, asks to slow down
    (Retry-After kept). A request that names something of the caller's (a message, a page)
    has `unknown()` for when the provider does not know it (404) or finds it malformed (400).
    One that carries a message has `refused` for a 4xx about the message: a 400 is the
    message's then, unless the provider says it is the id's. One that follows a provider's
    state token (a delta link) has `gone()` for when the provider no longer has that state
    (410, or a 400 that says so). Another 4xx is a provider error."""
    try:
        response = session().request(
            method,
            url,
            headers={"Authorization": f"Bearer {access_token}", **(headers or {})},
            timeout=timeout(),
            **arguments,
        )
    except requests.RequestException as error:
        raise network_problem(error, provider) from error
    status = response.status_code
    if status == 401:
        raise ProviderError(ErrorCode.REAUTHORIZATION_REQUIRED, provider)
    reasons = _reasons(response) if status in (400, 403, 429) else set()
    if reasons & _QUOTA_SPENT and status in (403, 429):
        raise _throttled(response, provider, _QUOTA_RETRY_AFTER_SECONDS)
    failure = unavailable(response, provider)
    if failure is not None:
        raise failure
    if status == 403:
        if reasons & _RATE_LIMITED:
            raise _throttled(response, provider)
        raise permission_problem(provider, [needs])
    if gone is not None and (status == 410 or (status == 400 and reasons & _SYNC_STATE_LOST)):
        raise gone()
    if unknown is not None and (
        status == 404 or (status == 400 and (refused is None or reasons & _MALFORMED_ID))
    ):
        raise unknown()
    if 400 <= status < 500:
        raise ProviderError(refused or ErrorCode.PROVIDER_ERROR, provider)
    if not 200 <= status < 300:  # a redirect not followed, say: no answer of the API's
        raise ProviderError(ErrorCode.PROVIDER_ERROR, provider)
    return response


def get_json(provider: str, url: str, access_token: str, *, needs: Permission) -> dict[str, Any]:
    """GET a mail API resource, as JSON."""
    response = call(provider, "GET", url, access_token, needs=needs)
    with reading_answer(provider):
        body: dict[str, Any] = response.json()
    return body
