"""HTTPS to the OAuth providers and their mail APIs: one pooled session, timeouts on every
call, certificate verification always on, failures classified into `ProviderProblem`."""

from __future__ import annotations

from functools import cache
from typing import Any

import requests

from ..oauth_providers import Permission, ProviderProblem, permission_problem
from ..settings import settings


@cache
def session() -> requests.Session:
    """Reused by warm invocations, so keep-alive connections to the provider survive."""
    return requests.Session()


def timeout() -> tuple[float, float]:
    seconds = settings().provider_timeout_seconds
    return seconds, seconds


def network_problem(error: requests.RequestException, provider: str) -> ProviderProblem:
    if isinstance(error, requests.Timeout):
        return ProviderProblem("timeout", provider)
    if isinstance(error, requests.exceptions.SSLError):
        return ProviderProblem("tls_certificate_invalid", provider)
    if isinstance(error, requests.ConnectionError):
        return ProviderProblem("connection_failed", provider)
    return ProviderProblem("provider_error", provider)


def get_json(provider: str, url: str, access_token: str, *, needs: Permission) -> dict[str, Any]:
    """GET a mail API resource; a 403 means the grant lacks `needs`."""
    try:
        response = session().get(
            url, headers={"Authorization": f"Bearer {access_token}"}, timeout=timeout()
        )
    except requests.RequestException as error:
        raise network_problem(error, provider) from error
    if response.status_code == 401:
        raise ProviderProblem("reauthorization_required", provider)
    if response.status_code == 403:
        raise permission_problem(provider, [needs])
    if not response.ok:
        raise ProviderProblem("provider_error", provider)
    try:
        body: dict[str, Any] = response.json()
    except ValueError as error:
        raise ProviderProblem("provider_error", provider) from error
    return body
