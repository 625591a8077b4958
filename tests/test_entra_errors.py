"""Entra ID failing rather than refusing: its token endpoint or its OpenID discovery answering
5xx, as in an outage, or 429, as when it throttles. Whatever asked (a use of the mail, a
connection test, the sign-in's callback or its start), each is an error the service already
knows: 502 provider_error, or 429 provider_throttled with Entra's Retry-After, as Graph's
throttling is. And none is replayed: once Entra answers again, the next request asks it, where
MSAL's http cache would answer a 5xx again for 5 seconds and a 429 for its Retry-After."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mailbridge_tools.sandbox import FakeMicrosoft
from support import MS_ACCOUNT, ApiResponse, MailAgent, Mailbox, OAuthAgent, age_tokens, posted

TOKEN = "/oauth2/v2.0/token"
DISCOVERY = "/v2.0/.well-known/openid-configuration"
# Entra's answer in an outage is not its JSON error (MSAL never reads it).
OUTAGE_PAGE = "<html><body>Service Unavailable</body></html>"


def _mail(agent: OAuthAgent, local_api: Any) -> MailAgent:
    """The connected agent's runtime, its access token due for a refresh."""
    assert agent.connect().status == 200
    age_tokens(agent.org.agent_id)
    return MailAgent(local_api, agent.org, Mailbox(MS_ACCOUNT, ""), deliver=lambda *_, **__: 0)


def _authorize(agent: OAuthAgent) -> ApiResponse:
    return agent.org.client.post(agent.path + "/authorize", {"origin": agent.api.url})


def _new_tenant(agent: OAuthAgent, microsoft: FakeMicrosoft) -> None:
    """Saves the agent with a tenant whose metadata MSAL has not cached: it is fetched."""
    tenant = f"t{uuid.uuid4().hex[:8]}.example"
    microsoft.tenants.add(tenant)
    agent.save(tenant=tenant)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_an_entra_outage_at_a_refresh_is_a_provider_error(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, local_api: Any, status: int
) -> None:
    mail = _mail(microsoft_agent, local_api)
    microsoft.answer_next(TOKEN, status, OUTAGE_PAGE)
    failed = mail.runtime.get(mail.messages_path())
    assert (failed.status, failed.error["code"]) == (502, "provider_error"), failed.text
    assert OUTAGE_PAGE not in failed.text
    # Entra answers again, and is asked.
    assert mail.runtime.get(mail.messages_path()).status == 200


def test_an_entra_outage_at_a_connection_test_is_its_failed_check(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft
) -> None:
    microsoft_agent.connect()
    age_tokens(microsoft_agent.org.agent_id)
    microsoft.answer_next(TOKEN, 503, OUTAGE_PAGE)
    result = microsoft_agent.test()
    failed = [(check["name"], check["error"]["code"]) for check in result["checks"]]
    assert (result["ok"], failed) == (False, [("authorization", "provider_error")]), result
    assert microsoft_agent.get()["last_error"]["code"] == "provider_error"
    # Entra answers again, and is asked: a grant revoked meanwhile reads as revoked, not as
    # the outage.
    microsoft.revoke_all_grants()
    assert microsoft_agent.test()["error"]["code"] == "reauthorization_required"


def test_an_entra_outage_at_the_callback_is_the_popups_page(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft
) -> None:
    microsoft_agent.save()
    location = microsoft_agent.sign_in(microsoft_agent.authorization_url())
    microsoft.answer_next(TOKEN, 502, OUTAGE_PAGE)
    page = microsoft_agent.callback(location)
    content_type = {name.lower(): value for name, value in page.headers.items()}["content-type"]
    assert (page.status, content_type.split(";")[0]) == (200, "text/html"), page.text
    result, _ = posted(page)
    assert (result["status"], result["error"]["code"]) == ("error", "provider_error")
    assert microsoft_agent.get()["last_error"]["code"] == "provider_error"
    # A sign-in started again connects.
    assert posted(microsoft_agent.connect())[0]["status"] == "connected"


@pytest.mark.parametrize("status", [500, 503])
def test_an_entra_outage_at_discovery_is_a_provider_error(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, status: int
) -> None:
    _new_tenant(microsoft_agent, microsoft)
    microsoft.answer_next(DISCOVERY, status, OUTAGE_PAGE)
    failed = _authorize(microsoft_agent)
    assert (failed.status, failed.error["code"]) == (502, "provider_error"), failed.text
    assert _authorize(microsoft_agent).status == 200


# Entra throttles with 429, and may say when to come back with a 503 as Graph does.
@pytest.mark.parametrize("status", [429, 503])
def test_entra_throttling_a_refresh_asks_to_retry_after_its_seconds(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, local_api: Any, status: int
) -> None:
    mail = _mail(microsoft_agent, local_api)
    microsoft.throttle_next(TOKEN, retry_after=7, status=status)
    throttled = mail.runtime.get(mail.messages_path())
    assert (throttled.status, throttled.error["code"]) == (429, "provider_throttled")
    assert throttled.headers["Retry-After"] == "7"
    # Not replayed for those seconds: the next request asks Entra, which answers.
    assert mail.runtime.get(mail.messages_path()).status == 200


def test_entra_throttling_its_discovery_is_not_an_unknown_tenant(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft
) -> None:
    _new_tenant(microsoft_agent, microsoft)
    microsoft.throttle_next(DISCOVERY, retry_after=3)
    throttled = _authorize(microsoft_agent)
    assert (throttled.status, throttled.error["code"]) == (429, "provider_throttled")
    assert throttled.headers["Retry-After"] == "3"
    assert _authorize(microsoft_agent).status == 200


def test_entra_throttling_the_callback_is_the_popups_page(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft
) -> None:
    microsoft_agent.save()
    location = microsoft_agent.sign_in(microsoft_agent.authorization_url())
    microsoft.throttle_next(TOKEN, retry_after=5)
    result, _ = posted(microsoft_agent.callback(location))
    assert (result["status"], result["error"]["code"]) == ("error", "provider_throttled")
    assert posted(microsoft_agent.connect())[0]["status"] == "connected"
