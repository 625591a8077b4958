"""A shared app's client secret: its recorded expiry date warns the app and every agent using
it; a secret Microsoft or Google refuses marks the app, and every agent using it shows the
fix (rotate the secret in the shared app) at read, with nothing written to the agents."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from mailbridge_tools.sandbox import FakeMicrosoft
from support import (
    CALLBACK,
    ApiClient,
    MailAgent,
    Mailbox,
    OAuthAgent,
    Org,
    age_tokens,
    posted,
    register_agent,
    saved_entry,
)

SECRET = "shared-secret-c4n4ry-3e9f"
ROTATED = "rotated-secret-c4n4ry-8a1d"


def app_path(org: Org) -> str:
    return f"/bridge/orgs/{org.org_id}/email-oauth-apps/microsoft"


def config_path(agent_id: str) -> str:
    return f"/bridge/agents/{agent_id}/email-config"


def save_app(org: Org, client_id: str, **fields: Any) -> dict[str, Any]:
    body = {"client_id": client_id, "tenant": "contoso.example", **fields}
    response = org.client.put(app_path(org), body)
    assert response.status == 200, response.text
    saved: dict[str, Any] = response.json()
    return saved


@pytest.fixture
def shared_app(org: Org, local_api: Any, microsoft: FakeMicrosoft) -> str:
    client_id = str(uuid.uuid4())
    microsoft.register_app(client_id, SECRET, [local_api.url + CALLBACK])
    save_app(org, client_id, client_secret=SECRET)
    return client_id


def sign_in(org: Org, local_api: Any, agent_id: str) -> dict[str, Any]:
    started = org.client.post(config_path(agent_id) + "/authorize", {"origin": local_api.url})
    assert started.status == 200, started.text
    answer = requests.get(started.json()["authorization_url"], allow_redirects=False, timeout=10)
    page = ApiClient(local_api.url, None).get(
        answer.headers["Location"].removeprefix(local_api.url)
    )
    return posted(page)[0]


def agent_version(agent_id: str) -> int:
    from mailbridge.storage.agents import DynamoAgentStore

    _, config = DynamoAgentStore().load(agent_id)
    assert config is not None
    return config.version


# ---- the recorded expiry date ------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "code"),
    [
        (29, "app_secret_expiring"),
        (30, "app_secret_expiring"),
        (31, None),
        (-1, "app_secret_expired"),
    ],
)
def test_the_expiry_date_warns_the_app_and_its_agents(
    org: Org, shared_app: str, days: int, code: str | None
) -> None:
    expires = (datetime.now(UTC) + timedelta(days=days)).date().isoformat()
    saved = save_app(org, shared_app, secret_expires_at=expires)
    assert saved["secret_expires_at"] == expires
    assert org.client.put(org.config_path, {"provider": "microsoft"}).status == 200

    app_warnings = org.client.get(app_path(org)).json()["warnings"]
    agent_warnings = org.client.get(org.config_path).json()["warnings"]
    if code is None:
        assert app_warnings == agent_warnings == []
        return
    assert [w["code"] for w in app_warnings] == [w["code"] for w in agent_warnings] == [code]
    warning = agent_warnings[0]
    assert expires in warning["message"]
    assert ("expired on" if days < 0 else "expires on") in warning["message"]
    assert "Rotate the client secret in Azure" in warning["hint"]
    assert "save the new one" in warning["hint"] and "shared app" in warning["hint"]
    assert "Re-authorize" not in warning["hint"]


def test_the_expiry_date_is_kept_when_left_out_and_cleared_by_null(
    org: Org, shared_app: str
) -> None:
    saved = save_app(org, shared_app, secret_expires_at="2027-03-31")
    assert save_app(org, shared_app)["secret_expires_at"] == "2027-03-31"
    assert save_app(org, shared_app, secret_expires_at=None)["secret_expires_at"] is None
    assert saved["secret_expired_at"] is None
    bad = org.client.put(
        app_path(org), {"client_id": shared_app, "secret_expires_at": "2027-02-30"}
    )
    assert (bad.status, bad.error["code"], bad.error["field"]) == (
        422,
        "invalid_field",
        "secret_expires_at",
    )


# ---- a refused secret --------------------------------------------------------------------


def test_an_expired_secret_marks_the_shared_app_for_every_agent(
    org: Org, local_api: Any, microsoft: FakeMicrosoft, shared_app: str
) -> None:
    first, second = org.agent_id, register_agent(org.org_id)
    for agent_id in (first, second):
        microsoft.add_account(f"{agent_id}@contoso.example", inbox_total=3, inbox_unread=1)
        assert org.client.put(config_path(agent_id), {"provider": "microsoft"}).status == 200
        assert sign_in(org, local_api, agent_id)["status"] == "connected"
    second_version = agent_version(second)

    # The secret expires in Azure: the first agent's next refresh is refused.
    age_tokens(first)
    microsoft.refuse_next_token(7000222)
    tested = org.client.post(config_path(first) + "/test").json()
    assert tested["error"]["code"] == "oauth_client_invalid"
    assert "shared app" in tested["error"]["hint"]

    app = org.client.get(app_path(org)).json()
    assert app["secret_expired_at"] is not None
    assert [w["code"] for w in app["warnings"]] == ["oauth_client_invalid"]
    # The service marked it, and says so in the organization's audit trail.
    [marked] = [
        entry
        for entry in org.client.get(f"/bridge/orgs/{org.org_id}/email-history").json()["entries"]
        if entry["action"] == "shared_app_secret_refused"
    ]
    assert marked["actor"] == {"kind": "system", "subject": "mailbridge"}
    assert (marked["outcome"], marked["code"], marked["provider"]) == (
        "failed",
        "oauth_client_invalid",
        "microsoft",
    )
    assert [change["field"] for change in marked["changes"]] == ["secret_expired_at"]
    for agent_id in (first, second):
        view = org.client.get(config_path(agent_id)).json()
        assert view["status"] == "error"
        error = view["last_error"]
        assert error["code"] == "oauth_client_invalid"
        assert "rotates the client secret" in error["hint"] and "shared app" in error["hint"]
        assert "Re-authorize" not in error["hint"]
    # Worked out at read: nothing was written to the second agent.
    assert agent_version(second) == second_version
    # ...whose refresh is not even tried with the refused secret.
    age_tokens(second)
    asked = len(microsoft.token_requests)
    refused = org.client.post(config_path(second) + "/test").json()
    assert refused["error"]["code"] == "oauth_client_invalid"
    assert len(microsoft.token_requests) == asked
    # Nor is a sign-in started, whose code the provider would refuse at its end.
    started = org.client.post(config_path(second) + "/reauthorize", {"origin": local_api.url})
    assert (started.status, started.error["code"]) == (409, "oauth_client_invalid")
    assert "shared app" in started.error["hint"]

    # The admin rotates the secret: the mark is gone, and both agents refresh with it.
    microsoft.register_app(shared_app, ROTATED, [local_api.url + CALLBACK])
    rotated = save_app(org, shared_app, client_secret=ROTATED)
    assert rotated["secret_expired_at"] is None and rotated["warnings"] == []
    for agent_id in (first, second):
        before = microsoft.refresh_count
        assert org.client.post(config_path(agent_id) + "/test").json()["ok"] is True
        assert microsoft.refresh_count == before + 1
        assert org.client.get(config_path(agent_id)).json()["status"] == "connected"
    assert ROTATED not in org.client.get(app_path(org)).text


def test_uses_while_the_app_is_marked_write_nothing_and_work_again_after_the_rotation(
    org: Org, local_api: Any, microsoft: FakeMicrosoft, shared_app: str
) -> None:
    """The agent's own reads (and new mail's looks, which read the same way) meet the
    marked app: refused, and nothing recorded on the agent, so it works again as soon as
    the secret is rotated, without anyone clicking Test."""
    from mailbridge.storage.agents import DynamoAgentStore

    agent_id = org.agent_id
    address = f"{agent_id}@contoso.example"
    microsoft.add_account(address, inbox_total=3, inbox_unread=1)
    assert org.client.put(config_path(agent_id), {"provider": "microsoft"}).status == 200
    assert sign_in(org, local_api, agent_id)["status"] == "connected"
    runtime = MailAgent(
        local_api, org, Mailbox(address, ""), deliver=lambda *_, **__: None, agent_id=agent_id
    ).runtime
    age_tokens(agent_id)
    microsoft.refuse_next_token(7000222)  # the secret expired in Azure
    inbox = f"/bridge/agents/{agent_id}/mail/messages"
    refused = runtime.get(inbox)
    assert (refused.status, refused.error["code"]) == (409, "oauth_client_invalid")
    assert runtime.get(inbox).status == 409  # the mark: not even tried again
    _, stored = DynamoAgentStore().load(agent_id)
    assert stored is not None and stored.status == "connected" and stored.last_error is None
    assert org.client.get(config_path(agent_id)).json()["status"] == "error"  # at read

    microsoft.register_app(shared_app, ROTATED, [local_api.url + CALLBACK])
    save_app(org, shared_app, client_secret=ROTATED)
    assert org.client.get(config_path(agent_id)).json()["status"] == "connected"
    assert runtime.get(inbox).status == 200


def test_a_secret_refused_at_the_sign_in_marks_the_shared_app(
    org: Org, local_api: Any, microsoft: FakeMicrosoft, shared_app: str
) -> None:
    microsoft.add_account("signing-in@contoso.example", inbox_total=1, inbox_unread=0)
    assert org.client.put(org.config_path, {"provider": "microsoft"}).status == 200
    microsoft.refuse_next_token(7000222)  # the code's exchange
    result = sign_in(org, local_api, org.agent_id)
    assert result["status"] == "error"
    assert result["error"]["code"] == "oauth_client_invalid"
    assert "shared app" in result["error"]["message"]
    assert "shared app" in org.client.get(org.config_path).json()["last_error"]["hint"]
    assert org.client.get(app_path(org)).json()["secret_expired_at"] is not None


def test_a_save_meanwhile_wins_over_the_mark(org: Org, shared_app: str) -> None:
    from mailbridge.core.errors import StaleWrite
    from mailbridge.storage.orgs import DynamoOrgStore

    orgs = DynamoOrgStore()
    read = orgs.get_app(org.org_id, None, "microsoft")
    assert read is not None
    save_app(org, shared_app, client_secret=ROTATED)  # a new secret, after the refresh read
    with pytest.raises(StaleWrite):
        orgs.mark_app_secret_expired(read, datetime.now(UTC), saved_entry(org.org_id))
    saved = orgs.get_app(org.org_id, None, "microsoft")
    assert saved is not None and saved.secret_expired_at is None


def test_an_agents_own_expired_secret_is_fixed_in_its_own_app(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft
) -> None:
    microsoft_agent.connect()
    age_tokens(microsoft_agent.org.agent_id)
    microsoft.refuse_next_token(7000222)
    result = microsoft_agent.test()
    assert result["error"]["code"] == "oauth_client_invalid"
    assert "expired (AADSTS7000222)" in result["error"]["message"]
    assert "Certificates & secrets" in result["error"]["hint"]
    assert "Email tab" in result["error"]["hint"] and "shared app" not in result["error"]["hint"]
    assert "Trace ID" not in str(result)
