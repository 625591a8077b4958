"""Microsoft and Google OAuth through the HTTP API, against the fake identity providers:
authorize, the provider's redirect, the public callback page, tests through Graph and Gmail,
refresh, re-authorize and disconnect."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from mailbridge.connections.records import OAuthConnection, StoredConfig
from mailbridge.oauth.scopes import REQUIRED_PERMISSIONS, Permission
from mailbridge.storage.agents import DynamoAgentStore
from support import (
    CALLBACK,
    CLIENT_SECRET,
    GOOGLE_ACCOUNT,
    MS_ACCOUNT,
    TENANT_ID,
    ApiClient,
    OAuthAgent,
    Org,
    age_tokens,
    posted,
    register_agent,
    saved_entry,
)

# ---- the happy paths ------------------------------------------------------------------


def test_microsoft_end_to_end(microsoft_agent: OAuthAgent) -> None:
    saved = microsoft_agent.save()
    assert saved["status"] == "awaiting_authorization"
    config = saved["config"]
    assert config["tenant"] == TENANT_ID
    assert config["scopes"] == ["Mail.ReadWrite", "Mail.Send", "User.Read", "offline_access"]
    assert config["redirect_uri"] == microsoft_agent.api.url + CALLBACK
    assert config["client_secret"]["set"] is True
    assert CLIENT_SECRET not in json.dumps(saved)

    url = microsoft_agent.authorization_url()
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{microsoft_agent.fake.base_url}/{TENANT_ID}/oauth2/v2.0/authorize")
    assert query["code_challenge_method"] == ["S256"]
    assert query["redirect_uri"] == [microsoft_agent.api.url + CALLBACK]
    assert len(query["state"][0]) >= 43  # 256 random bits

    page = microsoft_agent.callback(microsoft_agent.sign_in(url))
    assert page.status == 200
    result, origin = posted(page)
    assert origin == microsoft_agent.api.url
    assert result == {
        "type": "mailbridge:oauth-result",
        "agentId": microsoft_agent.org.agent_id,
        "provider": "microsoft",
        "status": "connected",
        "email": MS_ACCOUNT,
        "error": None,
    }
    nonce = re.search(r"'nonce-([^']+)'", page.headers["Content-Security-Policy"])
    assert nonce and f'<script nonce="{nonce[1]}">' in page.text
    assert "'*'" not in page.text and '"*"' not in page.text

    current = microsoft_agent.get()
    assert current["status"] == "connected"
    assert current["config"]["authorization"]["email"] == MS_ACCOUNT
    assert current["config"]["authorization"]["tenant_id"] == TENANT_ID

    tested = microsoft_agent.test()
    assert tested["ok"] is True, tested
    assert tested["email"] == MS_ACCOUNT
    assert tested["inbox"] == {"total": 42, "unread": 7}
    assert [check["name"] for check in tested["checks"]] == [
        "authorization",
        "mailbox",
        "permissions",
    ]


def test_google_end_to_end_and_reauthorize(google_agent: OAuthAgent) -> None:
    # What email needs and nothing more (the original asked for calendar, drive, contacts).
    # gmail.modify: reading, sending, and marking read; never deleting for good.
    assert google_agent.save()["config"]["scopes"] == [
        "openid",
        "email",
        "https://www.googleapis.com/auth/gmail.modify",
    ]
    page = google_agent.connect()
    assert posted(page)[0]["status"] == "connected"
    tested = google_agent.test()
    assert tested["ok"] is True, tested
    assert (tested["email"], tested["inbox"]) == (GOOGLE_ACCOUNT, {"total": 1200, "unread": 31})
    granted = google_agent.get()["config"]["authorization"]["granted_scopes"]
    assert "https://www.googleapis.com/auth/gmail.modify" in granted

    url = google_agent.authorization_url("reauthorize")
    query = parse_qs(urlsplit(url).query)
    assert query["prompt"] == ["consent"]
    assert query["include_granted_scopes"] == ["true"]
    assert query["access_type"] == ["offline"]
    assert posted(google_agent.callback(google_agent.sign_in(url)))[0]["status"] == "connected"
    assert google_agent.test()["ok"] is True


def test_microsoft_reauthorize_asks_for_consent(microsoft_agent: OAuthAgent) -> None:
    microsoft_agent.connect()
    url = microsoft_agent.authorization_url("reauthorize")
    assert parse_qs(urlsplit(url).query)["prompt"] == ["consent"]
    assert posted(microsoft_agent.callback(microsoft_agent.sign_in(url)))[0]["status"] == (
        "connected"
    )


# ---- the state ------------------------------------------------------------------------


def test_a_state_works_once(agent: OAuthAgent) -> None:
    agent.save()
    location = agent.sign_in(agent.authorization_url())
    assert posted(agent.callback(location))[0]["status"] == "connected"
    replay = agent.callback(location)
    assert replay.status == 400
    result, origin = posted(replay)
    assert result["error"]["code"] == "state_invalid"
    assert origin is None  # not ours: posted nowhere
    assert agent.get()["status"] == "connected"


def test_an_expired_state_is_refused(agent: OAuthAgent) -> None:
    agent.save()
    location = agent.sign_in(agent.authorization_url())
    state = parse_qs(urlsplit(location).query)["state"][0]
    key = {
        "pk": {"S": f"OAUTH_STATE#{hashlib.sha256(state.encode()).hexdigest()}"},
        "sk": {"S": "OAUTH_STATE"},
    }
    boto3.client("dynamodb").update_item(
        TableName=agent.api.table_name,
        Key=key,
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    page = agent.callback(location)
    assert page.status == 400
    assert posted(page)[0]["error"]["code"] == "state_expired"
    assert agent.get()["status"] == "awaiting_authorization"


def test_a_sign_in_begun_before_a_disconnect_is_refused_after_it(agent: OAuthAgent) -> None:
    # The version goes on from the removed connection's: the new one is not the one the
    # sign-in was begun for, although both would be version 1.
    agent.save()
    location = agent.sign_in(agent.authorization_url())
    assert agent.org.client.request("DELETE", agent.path).status == 200
    assert agent.save()["version"] == 2
    result, _ = posted(agent.callback(location))
    assert result["error"]["code"] == "authorization_outdated"
    assert agent.get()["status"] == "awaiting_authorization"


def test_a_forged_or_unknown_state_changes_nothing(agent: OAuthAgent) -> None:
    agent.save()
    for query in ("", "?code=abc", "?state=short&code=abc", f"?state={'A' * 43}&code=abc"):
        page = agent.callback(agent.api.url + CALLBACK + query)
        assert page.status == 400
        assert posted(page) == (posted(page)[0], None)
        assert posted(page)[0]["error"]["code"] == "state_invalid"
    assert agent.get()["status"] == "awaiting_authorization"


def test_a_code_cannot_be_bound_to_another_agents_state(
    agent: OAuthAgent, local_api: Any, org: Org, other_org: Org
) -> None:
    """The original's state was the agent id: anyone could bind their mailbox to a victim's
    agent. Here the state is bound to its own flow (PKCE verifier included)."""
    victim = OAuthAgent(other_org, local_api, agent.fake)
    victim.save()
    victim_location = victim.sign_in(victim.authorization_url())
    agent.save()
    attacker_location = agent.sign_in(agent.authorization_url())
    attacker_code = parse_qs(urlsplit(attacker_location).query)["code"][0]
    victim_state = parse_qs(urlsplit(victim_location).query)["state"][0]

    forged = victim.callback(f"{local_api.url}{CALLBACK}?state={victim_state}&code={attacker_code}")
    result, _ = posted(forged)
    assert result["status"] == "error"
    assert result["error"]["code"] == "authorization_failed"
    assert victim.get()["config"]["authorization"] is None


# ---- what the provider sends back ------------------------------------------------------


def test_access_denied_is_recorded(agent: OAuthAgent) -> None:
    agent.save()
    agent.fake.deny_next_authorization("access_denied", "The user declined.")
    page = agent.callback(agent.sign_in(agent.authorization_url()))
    result, origin = posted(page)
    assert origin == agent.api.url
    assert result["status"] == "error"
    assert result["error"]["code"] == "authorization_denied"
    current = agent.get()
    assert current["status"] == "error"
    assert current["last_error"]["code"] == "authorization_denied"


def test_a_cancelled_reauthorization_leaves_the_connection_working(agent: OAuthAgent) -> None:
    assert agent.connect().status == 200
    agent.fake.deny_next_authorization("access_denied", "The user declined.")
    result, _ = posted(agent.callback(agent.sign_in(agent.authorization_url())))
    assert (result["status"], result["error"]["code"]) == ("error", "authorization_denied")
    current = agent.get()
    assert (current["status"], current["last_error"]) == ("connected", None)
    assert agent.test()["status"] == "connected"


@pytest.mark.parametrize(("status", "code"), [(503, "provider_error"), (429, "provider_throttled")])
def test_google_failing_at_the_callback_is_not_a_refused_sign_in(
    google_agent: OAuthAgent, status: int, code: str
) -> None:
    # It was authorization_failed, whose hint sends the user to the redirect URI.
    google_agent.save()
    location = google_agent.sign_in(google_agent.authorization_url())
    google_agent.fake.answer_next("/token", status, '{"error": "internal_failure"}')
    result, _ = posted(google_agent.callback(location))
    assert result["error"]["code"] == code


def test_a_script_in_the_error_description_is_harmless(agent: OAuthAgent) -> None:
    attack = "</script><script>alert(document.domain)</script><img src=x onerror=alert(1)>"
    agent.save()
    agent.fake.deny_next_authorization("server_error", attack)
    page = agent.callback(agent.sign_in(agent.authorization_url()))
    assert "<script>alert" not in page.text
    assert "<img" not in page.text
    # Two places, each escaped its own way: HTML text, and JSON inside a data block.
    assert "&lt;/script&gt;&lt;script&gt;alert" in page.text
    assert "\\u003c/script\\u003e\\u003cscript\\u003ealert" in page.text
    result, _ = posted(page)
    assert result["error"]["code"] == "authorization_failed"
    assert attack in result["error"]["message"]  # intact once parsed, as text
    assert agent.get()["last_error"]["code"] == "authorization_failed"


_GMAIL = "https://www.googleapis.com/auth/gmail."


def _scopes(agent: OAuthAgent, *, read: bool, send: bool) -> list[str]:
    """What a user who unticked some permissions at consent grants (the sign-in's own
    scopes always come with it)."""
    if agent.provider == "microsoft":
        granted = ["User.Read", "openid", "profile", "offline_access"]
        return granted + ["Mail.ReadWrite"] * read + ["Mail.Send"] * send
    return ["openid", "email"] + [_GMAIL + "readonly"] * read + [_GMAIL + "send"] * send


def _account(agent: OAuthAgent) -> str:
    return MS_ACCOUNT if agent.provider == "microsoft" else GOOGLE_ACCOUNT


def _stored(agent: OAuthAgent) -> StoredConfig:
    _, config = DynamoAgentStore().load(agent.org.agent_id)
    assert config is not None
    return config


def test_send_unticked_connects_with_a_warning(agent: OAuthAgent) -> None:
    agent.fake.grant_scopes_next(_scopes(agent, read=True, send=False))
    result, _ = posted(agent.connect())
    assert result["status"] == "connected"
    current = agent.get()
    assert current["status"] == "connected"
    (warning,) = current["warnings"]
    assert warning["code"] == "send_permission_missing"
    assert "can receive but not send" in warning["message"]
    assert "Re-authorize" in warning["hint"]
    assert ("Mail.Send" if agent.provider == "microsoft" else "gmail.modify") in warning["hint"]
    tested = agent.test()  # reading works: the connection is sound
    assert (tested["ok"], tested["status"]) == (True, "connected")

    # Granting it at a re-authorization ends the warning.
    assert posted(agent.callback(agent.sign_in(agent.authorization_url("reauthorize"))))[0][
        "status"
    ] == ("connected")
    assert agent.get()["warnings"] == []


def test_read_unticked_is_an_error(agent: OAuthAgent) -> None:
    agent.fake.grant_scopes_next(_scopes(agent, read=False, send=True))
    result, _ = posted(agent.connect())
    assert result["error"]["code"] == "permission_missing"
    assert "reading mail" in result["error"]["message"]
    current = agent.get()
    assert current["status"] == "error"
    assert current["last_error"]["code"] == "permission_missing"
    assert "Re-authorize" in current["last_error"]["hint"]
    assert current["warnings"] == []


def test_scopes_withdrawn_at_a_refresh_are_recorded(google_agent: OAuthAgent) -> None:
    """Google answers a refresh with the scopes the grant holds now."""
    agent = google_agent
    agent.fake.grant_scopes_next(_scopes(agent, read=True, send=True))
    agent.connect()
    read_scope, send_scope = _scopes(agent, read=True, send=True)[-2:]
    agent.fake.withdraw_scopes(_account(agent), [send_scope])
    age_tokens(agent.org.agent_id)
    assert agent.test()["ok"] is True  # refreshed: what it grants now is recorded
    current = agent.get()
    assert send_scope not in current["config"]["authorization"]["granted_scopes"]
    assert [warning["code"] for warning in current["warnings"]] == ["send_permission_missing"]
    assert current["status"] == "connected"

    agent.fake.withdraw_scopes(_account(agent), [read_scope])
    age_tokens(agent.org.agent_id)
    tested = agent.test()
    assert (tested["status"], tested["error"]["code"]) == ("error", "permission_missing")
    granted = agent.get()["config"]["authorization"]["granted_scopes"]
    assert read_scope not in granted


def test_a_microsoft_grant_refreshes_what_it_holds_and_a_withdrawn_consent_is_refused(
    microsoft_agent: OAuthAgent,
) -> None:
    """Entra refuses a refresh asking for a scope the grant does not hold (AADSTS65001): a
    refresh asks for what the grant holds, so one consented without Mail.Send keeps
    reading; consent an admin withdrew afterwards is refused, with the fix."""
    agent = microsoft_agent
    agent.fake.grant_scopes_next(_scopes(agent, read=True, send=False))
    agent.connect()
    age_tokens(agent.org.agent_id)
    assert agent.test()["ok"] is True  # refreshed without asking for Mail.Send
    current = agent.get()
    assert current["status"] == "connected"
    assert [warning["code"] for warning in current["warnings"]] == ["send_permission_missing"]

    read_scope = _scopes(agent, read=True, send=False)[-1]
    agent.fake.withdraw_scopes(_account(agent), [read_scope])
    age_tokens(agent.org.agent_id)
    tested = agent.test()
    assert (tested["status"], tested["error"]["code"]) == ("error", "reauthorization_required")
    assert "AADSTS65001" in tested["error"]["message"]
    assert "consent" in tested["error"]["hint"].lower()


def test_required_permissions_that_grow_show_at_read(
    microsoft_agent: OAuthAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployment that requires more than it did: every agent granted less shows it at
    once, worked out at read, with nothing written."""
    microsoft_agent.connect()
    before = _stored(microsoft_agent)
    required = REQUIRED_PERMISSIONS["microsoft"]
    settings_scope = Permission(
        "reading mailbox settings", frozenset({"MailboxSettings.Read"}), "MailboxSettings.Read"
    )
    monkeypatch.setitem(REQUIRED_PERMISSIONS, "microsoft", [*required, settings_scope])
    current = microsoft_agent.get()
    assert current["status"] == "error"
    assert current["last_error"]["code"] == "permission_missing"
    assert "mailbox settings" in current["last_error"]["message"]
    assert "MailboxSettings.Read" in current["last_error"]["hint"]
    assert "Re-authorize" in current["last_error"]["hint"]

    # Only sending grown: the agent still receives, and is warned.
    shared = Permission(
        "sending as a shared mailbox", frozenset({"Mail.Send.Shared"}), "Mail.Send.Shared", True
    )
    monkeypatch.setitem(REQUIRED_PERMISSIONS, "microsoft", [*required, shared])
    current = microsoft_agent.get()
    assert current["status"] == "connected"
    assert [warning["code"] for warning in current["warnings"]] == ["send_permission_missing"]
    assert _stored(microsoft_agent) == before


# ---- mailbox pinning --------------------------------------------------------------------


def test_reauthorizing_another_account_is_refused_until_asked_to_switch(
    agent: OAuthAgent,
) -> None:
    agent.connect()
    subject = agent.fake.account(_account(agent)).subject
    before = _stored(agent)
    assert before.connection.authorization is not None  # type: ignore[union-attr]
    pinned = before.connection.authorization.account_id  # type: ignore[union-attr]
    assert pinned == (f"{TENANT_ID}/{subject}" if agent.provider == "microsoft" else subject)
    assert before.tokens is not None
    tokens = boto3.client("secretsmanager").get_secret_value(SecretId=before.tokens.name)

    other = "other-" + _account(agent)
    agent.fake.add_account(other, inbox_total=3, inbox_unread=1)
    page = agent.callback(agent.sign_in(agent.authorization_url("reauthorize")))
    assert page.status == 409
    result, origin = posted(page)
    assert origin == agent.api.url
    assert (result["error"]["code"], result["email"]) == ("account_mismatch", other)
    assert other in result["error"]["message"] and _account(agent) in result["error"]["message"]
    # The connection is as it was: record, status and tokens.
    assert _stored(agent) == before
    again = boto3.client("secretsmanager").get_secret_value(SecretId=before.tokens.name)
    assert again["VersionId"] == tokens["VersionId"]
    assert agent.test()["email"] == _account(agent)

    response = agent.org.client.post(
        f"{agent.path}/reauthorize", {"origin": agent.api.url, "switch_account": True}
    )
    assert response.status == 200, response.text
    switched, _ = posted(agent.callback(agent.sign_in(response.json()["authorization_url"])))
    assert (switched["status"], switched["email"]) == ("connected", other)
    after = _stored(agent)
    assert after.connection.authorization.account_id != pinned  # type: ignore[union-attr]
    # Another mailbox: its new mail starts now, not where the old one's left off.
    assert after.connected_at is not None and before.connected_at is not None
    assert after.connected_at > before.connected_at
    assert agent.test()["inbox"] == {"total": 3, "unread": 1}


def test_another_account_with_the_same_address_is_another_account(agent: OAuthAgent) -> None:
    """A mailbox deleted and made anew under the same address is not the one connected."""
    agent.connect()
    agent.fake.add_account(_account(agent), inbox_total=0, inbox_unread=0)
    page = agent.callback(agent.sign_in(agent.authorization_url("reauthorize")))
    result, _ = posted(page)
    assert (page.status, result["error"]["code"]) == (409, "account_mismatch")
    assert "another account named" in result["error"]["message"]


def _made_legacy(agent: OAuthAgent) -> StoredConfig:
    """The agent's authorization as recorded before accounts were: no account id."""
    stored = _stored(agent)
    connection = stored.connection
    assert isinstance(connection, OAuthConnection) and connection.authorization is not None
    authorization = connection.authorization.model_copy(update={"account_id": None})
    legacy = stored.model_copy(
        update={
            "connection": connection.model_copy(update={"authorization": authorization}),
            "version": stored.version + 1,
        }
    )
    entry = saved_entry(agent.org.org_id, agent.org.agent_id)
    DynamoAgentStore().put_config(
        legacy, replaces_version=stored.version, org_id=agent.org.org_id, entry=entry
    )
    return legacy


def test_an_authorization_from_before_accounts_adopts_its_account(agent: OAuthAgent) -> None:
    agent.connect()
    stored = _stored(agent)
    _made_legacy(agent)
    assert posted(agent.callback(agent.sign_in(agent.authorization_url("reauthorize"))))[0][
        "status"
    ] == ("connected")
    adopted = _stored(agent)
    assert adopted.connection.authorization.account_id == (  # type: ignore[union-attr]
        stored.connection.authorization.account_id  # type: ignore[union-attr]
    )
    assert adopted.connected_at == stored.connected_at  # the same mailbox carries on
    agent.fake.add_account("other-" + _account(agent), inbox_total=0, inbox_unread=0)
    page = agent.callback(agent.sign_in(agent.authorization_url("reauthorize")))
    assert (page.status, posted(page)[0]["error"]["code"]) == (409, "account_mismatch")


def test_an_authorization_from_before_accounts_refuses_another_mailbox(agent: OAuthAgent) -> None:
    """Pinning matters most for the connections made before it: judged by their address."""
    agent.connect()
    legacy = _made_legacy(agent)
    agent.fake.add_account("other-" + _account(agent), inbox_total=0, inbox_unread=0)
    page = agent.callback(agent.sign_in(agent.authorization_url("reauthorize")))
    assert (page.status, posted(page)[0]["error"]["code"]) == (409, "account_mismatch")
    assert _stored(agent) == legacy  # nothing recorded: not its account, not a status


# ---- tokens over time ------------------------------------------------------------------


def test_an_expiring_token_is_refreshed_and_kept(agent: OAuthAgent) -> None:
    agent.connect()
    before = agent.fake.refresh_count
    age_tokens(agent.org.agent_id)
    assert agent.test()["ok"] is True
    assert agent.fake.refresh_count == before + 1
    # The refreshed token was stored: the next test needs no refresh.
    assert agent.test()["ok"] is True
    assert agent.fake.refresh_count == before + 1


def test_microsoft_refreshes_again_and_again_at_its_tenant(microsoft_agent: OAuthAgent) -> None:
    """Each refresh stores the refresh token it received and uses the app's own tenant
    (the original refreshed at `common` and dropped rotated tokens)."""
    microsoft_agent.connect()
    before = microsoft_agent.fake.refresh_count
    for _ in range(3):
        age_tokens(microsoft_agent.org.agent_id)
        assert microsoft_agent.test()["ok"] is True
    assert microsoft_agent.fake.refresh_count == before + 3
    requests_made = microsoft_agent.fake.token_requests
    refreshes = [r for r in requests_made if r["grant_type"] == "refresh_token"]
    assert [r["tenant"] for r in refreshes[-3:]] == [TENANT_ID] * 3
    assert len({r["refresh_token"] for r in refreshes[-3:]}) == 3  # each time the newest


def test_concurrent_refreshes_spend_the_refresh_token_once(microsoft_agent: OAuthAgent) -> None:
    """Twenty invocations find the access token expiring at once. Lambda runs them in
    separate instances; threads calling the one refresh path stand in for them. One of them
    refreshes; the others wait for it and use what it stored, so no refresh token is ever
    redeemed twice (a provider with reuse detection would revoke the whole grant)."""
    from mailbridge.oauth.tokens import fresh_access_token
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    microsoft_agent.connect()
    age_tokens(microsoft_agent.org.agent_id)
    before = microsoft_agent.fake.refresh_count
    uses_before = Counter(microsoft_agent.fake.refresh_uses)
    agents = DynamoAgentStore()
    agent, config = agents.load(microsoft_agent.org.agent_id)
    assert agent is not None and config is not None

    def refresh(_: int) -> str:
        grant = fresh_access_token(agents, SecretsManagerStore(), DynamoOrgStore(), agent, config)
        return grant.access_token

    with ThreadPoolExecutor(max_workers=20) as pool:
        tokens = set(pool.map(refresh, range(20)))
    assert len(tokens) == 1
    assert microsoft_agent.fake.refresh_count == before + 1
    assert max((microsoft_agent.fake.refresh_uses - uses_before).values()) == 1
    assert microsoft_agent.test()["ok"] is True


def test_a_refresh_held_elsewhere_ends_in_retry_later_within_the_invocations_time(
    microsoft_agent: OAuthAgent,
) -> None:
    """Another invocation holds the refresh lock (and, say, died holding it): a waiter backs
    off, gives up when its invocation's time does (never sleeping past it), asks to retry,
    and spends no refresh token."""
    from mailbridge.core.deadline import Deadline
    from mailbridge.core.errors import ErrorCode, Unavailable
    from mailbridge.oauth import tokens
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    microsoft_agent.connect()
    age_tokens(microsoft_agent.org.agent_id)
    agents = DynamoAgentStore()
    agent, config = agents.load(microsoft_agent.org.agent_id)
    assert agent is not None and config is not None
    before = microsoft_agent.fake.refresh_count
    assert agents.try_lock(config.agent_id, "another-invocation", 60)
    waits: list[float] = []
    sleep, waiter = time.sleep, threading.current_thread()

    def noted(seconds: float) -> None:
        if threading.current_thread() is waiter:
            waits.append(seconds)
        sleep(seconds)

    with pytest.MonkeyPatch.context() as patch:
        # The longest waits the jitter allows, each one noted (this thread's only).
        patch.setattr(tokens.random, "uniform", lambda low, high: high)
        patch.setattr(tokens.time, "sleep", noted)
        with pytest.raises(Unavailable) as busy, Deadline(1.5):
            tokens.fresh_access_token(
                agents, SecretsManagerStore(), DynamoOrgStore(), agent, config
            )
    assert busy.value.code is ErrorCode.TOKEN_REFRESH_BUSY
    assert busy.value.retry_after == 2
    # Backing off, not hammering the lock; and never sleeping past the invocation's time.
    assert waits[:2] == [0.2, 0.4] and all(0 < wait <= 0.8 for wait in waits)
    assert 1.0 < sum(waits) <= 1.5
    assert microsoft_agent.fake.refresh_count == before
    # The waiter left the other holder's lock alone.
    assert not agents.try_lock(config.agent_id, "a-third-invocation", 60)
    agents.unlock(config.agent_id, "another-invocation")
    assert microsoft_agent.test()["ok"] is True


def test_a_dead_refresh_token_asks_for_reauthorization(
    agent: OAuthAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailbridge.core.observability import metrics

    agent.connect()
    agent.fake.revoke_all_grants()
    age_tokens(agent.org.agent_id)
    counted: list[str] = []
    add_metric = metrics.add_metric

    def counting(name: str, **rest: Any) -> None:
        counted.append(name)
        add_metric(name=name, **rest)

    monkeypatch.setattr(metrics, "add_metric", counting)
    tested = agent.test()
    # What the TokenRefreshFailures and ConnectionTestFailures alarms watch.
    assert counted == ["TokenRefreshFailed", "ConnectionTestFailed"]
    assert tested["ok"] is False
    assert tested["status"] == "error"
    assert tested["error"]["code"] == "reauthorization_required"
    assert "Re-authorize" in tested["error"]["hint"]
    assert agent.get()["last_error"]["code"] == "reauthorization_required"

    # Re-authorizing brings it back.
    url = agent.authorization_url("reauthorize")
    assert posted(agent.callback(agent.sign_in(url)))[0]["status"] == "connected"
    assert agent.test()["ok"] is True


# ---- saving and disconnecting ------------------------------------------------------------


def test_resaving_keeps_the_connection_and_the_tenant(microsoft_agent: OAuthAgent) -> None:
    microsoft_agent.connect()
    body = microsoft_agent.body()
    del body["client_secret"], body["tenant"]
    resaved = microsoft_agent.org.client.put(microsoft_agent.path, body).json()
    assert resaved["status"] == "connected"
    assert resaved["config"]["tenant"] == TENANT_ID
    assert microsoft_agent.test()["ok"] is True

    moved = microsoft_agent.save(tenant="organizations")
    assert moved["status"] == "awaiting_authorization"
    assert moved["config"]["authorization"] is None


def test_a_new_connection_needs_tenant_and_secret(microsoft_agent: OAuthAgent) -> None:
    body = microsoft_agent.body()
    del body["tenant"]
    response = microsoft_agent.org.client.put(microsoft_agent.path, body)
    assert (response.status, response.error["field"]) == (422, "tenant")
    body = microsoft_agent.body(client_secret="")
    response = microsoft_agent.org.client.put(microsoft_agent.path, body)
    assert (response.status, response.error["field"]) == (422, "client_secret")
    for tenant in ("not a tenant", "../common", "common?x=1"):
        response = microsoft_agent.org.client.put(microsoft_agent.path, body | {"tenant": tenant})
        assert (response.status, response.error["field"]) == (422, "tenant")


def test_disconnect_revokes_and_removes_the_tokens(google_agent: OAuthAgent) -> None:
    google_agent.connect()
    deleted = google_agent.org.client.delete(google_agent.path)
    assert deleted.status == 200
    assert len(google_agent.fake.revoked_tokens) >= 1
    names = {
        secret["Name"] for secret in boto3.client("secretsmanager").list_secrets()["SecretList"]
    }
    assert not {name for name in names if f"/agents/{google_agent.org.agent_id}/" in name}


def test_a_sign_in_finished_after_a_disconnect_leaves_no_grant_behind(
    google_agent: OAuthAgent,
) -> None:
    google_agent.save()
    location = google_agent.sign_in(google_agent.authorization_url())
    # The disconnect lands while the callback, its tokens in hand, asks for the address.
    disconnect = partial(google_agent.org.client.delete, google_agent.path)
    google_agent.fake.meanwhile_next("/users/me/profile", disconnect)
    revoked = len(google_agent.fake.revoked_tokens)
    result, _ = posted(google_agent.callback(location))
    assert result["error"]["code"] == "authorization_outdated"
    assert len(google_agent.fake.revoked_tokens) == revoked + 1
    names = {
        secret["Name"] for secret in boto3.client("secretsmanager").list_secrets()["SecretList"]
    }
    assert not {name for name in names if f"/agents/{google_agent.org.agent_id}/" in name}


def test_a_save_during_a_reauthorization_keeps_the_grant_it_holds(
    google_agent: OAuthAgent,
) -> None:
    assert google_agent.connect().status == 200
    location = google_agent.sign_in(google_agent.authorization_url("reauthorize"))
    # The same settings saved while the callback asks for the address: the record keeps
    # the grant, with its tokens, which the callback's new tokens are of.
    google_agent.fake.meanwhile_next("/users/me/profile", google_agent.save)
    revoked = len(google_agent.fake.revoked_tokens)
    result, _ = posted(google_agent.callback(location))
    assert result["error"]["code"] == "authorization_outdated"
    assert len(google_agent.fake.revoked_tokens) == revoked
    age_tokens(google_agent.org.agent_id)  # the next test refreshes them
    assert google_agent.test()["status"] == "connected"


def _remove_agent(agent: OAuthAgent) -> None:
    """The platform removes the agent (its DELETE)."""
    platform = agent.api.issuer.mint(
        sub="platform", org_id=agent.org.org_id, scopes=("agents.manage",)
    )
    path = f"/bridge/agents/{agent.org.agent_id}"
    assert ApiClient(agent.api.url, platform).request("DELETE", path).status == 204


@pytest.mark.parametrize("denied", [False, True], ids=["signed in", "denied"])
def test_a_sign_in_for_a_removed_agent_is_refused_once_it_is_back(
    google_agent: OAuthAgent, local_api: Any, denied: bool
) -> None:
    # Removed and registered again, the agent's versions start again: only the app the code
    # was issued to tells its sign-in from the new one's, before any secret is sent, and
    # before a denial is taken for the new connection's.
    google_agent.save()
    if denied:
        google_agent.fake.deny_next_authorization("access_denied", "No.")
    location = google_agent.sign_in(google_agent.authorization_url())
    _remove_agent(google_agent)
    register_agent(google_agent.org.org_id, agent_id=google_agent.org.agent_id)
    another_app = OAuthAgent(google_agent.org, local_api, google_agent.fake)
    assert another_app.save()["version"] == 1
    asked = len(google_agent.fake.token_requests)
    result, _ = posted(google_agent.callback(location))
    assert result["error"]["code"] == "authorization_outdated"
    assert len(google_agent.fake.token_requests) == asked
    assert (another_app.get()["status"], another_app.get()["last_error"]) == (
        "awaiting_authorization",
        None,
    )


def test_a_removal_during_a_reauthorization_leaves_no_grant(google_agent: OAuthAgent) -> None:
    assert google_agent.connect().status == 200
    location = google_agent.sign_in(google_agent.authorization_url("reauthorize"))
    org, store = google_agent.org, DynamoAgentStore()
    # The removal begins while the callback asks for the address, and ends after it.
    google_agent.fake.meanwhile_next(
        "/users/me/profile", partial(store.mark_deleting, org.agent_id, org.org_id)
    )
    result, _ = posted(google_agent.callback(location))
    assert result["error"]["code"] == "authorization_outdated"
    _remove_agent(google_agent)
    live = [
        grant
        for grant in google_agent.fake.refresh_tokens.values()
        if grant.client_id == google_agent.client_id
    ]
    assert live == []


# ---- who may start what ----------------------------------------------------------------


def test_authorize_refuses_unknown_origins_and_password_connections(
    microsoft_agent: OAuthAgent, imap_body: Callable[..., dict[str, Any]]
) -> None:
    client, path = microsoft_agent.org.client, microsoft_agent.path
    microsoft_agent.save()
    for origin in ("https://evil.example", "null", ""):
        response = client.post(path + "/authorize", {"origin": origin})
        assert (response.status, response.error["field"]) == (422, "origin"), response.text
    response = client.post(path + "/reauthorize", {"origin": microsoft_agent.api.url})
    assert (response.status, response.error["code"]) == (409, "not_authorized")
    client.put(path, imap_body())
    response = client.post(path + "/authorize", {"origin": microsoft_agent.api.url})
    assert (response.status, response.error["code"]) == (409, "not_oauth")


def test_the_redirect_uri_never_comes_from_the_request(microsoft_agent: OAuthAgent) -> None:
    """The original built it from the request: a forged Host sent the code elsewhere."""
    microsoft_agent.save()
    response = microsoft_agent.org.client.request(
        "POST",
        microsoft_agent.path + "/authorize",
        {"origin": microsoft_agent.api.url},
        headers={"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"},
    )
    query = parse_qs(urlsplit(response.json()["authorization_url"]).query)
    assert query["redirect_uri"] == [microsoft_agent.api.url + CALLBACK]


def test_other_orgs_cannot_start_an_authorization(
    microsoft_agent: OAuthAgent, other_org: Org
) -> None:
    microsoft_agent.save()
    intruder = other_org.client
    for route in ("authorize", "reauthorize"):
        response = intruder.post(
            f"{microsoft_agent.path}/{route}", {"origin": microsoft_agent.api.url}
        )
        assert (response.status, response.error["code"]) == (404, "agent_not_found")


def test_the_client_secret_never_leaves(
    agent: OAuthAgent, logs: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    responses = [agent.connect(), agent.org.client.get(agent.path)]
    responses.append(agent.org.client.post(agent.path + "/test"))
    responses.append(agent.org.client.delete(agent.path))
    captured = capfd.readouterr()
    assert len(logs) >= 4
    for text in [*(r.text for r in responses), captured.out, captured.err, *logs]:
        assert CLIENT_SECRET not in text


# ---- what the providers check (the fakes refuse what the real ones refuse) ---------------


def test_a_wrong_client_secret_is_named(agent: OAuthAgent) -> None:
    agent.save(client_secret="not-the-secret")
    result, _ = posted(agent.callback(agent.sign_in(agent.authorization_url())))
    assert result["error"]["code"] == "oauth_client_invalid"
    assert agent.get()["last_error"]["code"] == "oauth_client_invalid"


def test_an_unregistered_redirect_uri_stops_at_the_provider(agent: OAuthAgent) -> None:
    agent.fake.register_app(agent.client_id, CLIENT_SECRET, ["https://elsewhere.example/cb"])
    agent.save()
    answer = requests.get(agent.authorization_url(), allow_redirects=False, timeout=10)
    assert answer.status_code == 400
    assert "Location" not in answer.headers
