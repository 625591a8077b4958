"""Organizations: shared OAuth apps inherited by reference, client organizations' email
policies shown in the agent's config and enforced at save, at authorization and at send."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from mailbridge_tools.sandbox import FakeGoogle, FakeMicrosoft
from support import CALLBACK, ApiClient, Org, age_tokens, posted, register_agent

GOOGLE_APP = "/bridge/orgs/{org}/email-oauth-apps/google"
POLICY = "/bridge/client-orgs/{client_org}/email-policy"
SHARED_SECRET = "shared-secret-c4n4ry-77ab"


def member(local_api: Any, org: Org) -> ApiClient:
    token = local_api.issuer.mint(sub=f"member-{org.org_id}", org_id=org.org_id, role="member")
    return ApiClient(local_api.url, token)


def google_app_id() -> str:
    return f"{uuid.uuid4().hex[:12]}.apps.googleusercontent.com"


def register_google_app(
    org: Org, local_api: Any, google: FakeGoogle, secret: str = SHARED_SECRET
) -> str:
    client_id = google_app_id()
    google.register_app(client_id, secret, [local_api.url + CALLBACK])
    body = {"client_id": client_id, "client_secret": secret}
    response = org.client.put(GOOGLE_APP.format(org=org.org_id), body)
    assert response.status == 200, response.text
    return client_id


def sign_in(client: ApiClient, local_api: Any, agent_id: str) -> dict[str, Any]:
    path = f"/bridge/agents/{agent_id}/email-config"
    started = client.post(path + "/authorize", {"origin": local_api.url})
    assert started.status == 200, started.text
    answer = requests.get(started.json()["authorization_url"], allow_redirects=False, timeout=10)
    page = ApiClient(local_api.url, None).get(
        answer.headers["Location"].removeprefix(local_api.url)
    )
    return posted(page)[0]


@pytest.fixture
def google_account(google: FakeGoogle) -> str:
    address = f"agent-{uuid.uuid4().hex[:6]}@acme.example"
    google.add_account(address, inbox_total=10, inbox_unread=2)
    return address


# ---- shared OAuth apps ------------------------------------------------------------------


def test_an_agent_connects_with_the_org_app_by_authorizing_only(
    org: Org, local_api: Any, google: FakeGoogle, google_account: str
) -> None:
    client_id = register_google_app(org, local_api, google)
    member_client = member(local_api, org)

    # The member's Email tab: the green banner's data, then Save with no credentials.
    before = member_client.get(org.config_path).json()
    assert before["shared_apps"] == [
        {"provider": "google", "source": "org", "client_id": client_id, "tenant": None}
    ]
    saved = member_client.put(org.config_path, {"provider": "google"})
    assert saved.status == 200, saved.text
    config = saved.json()["config"]
    assert config["client_id"] is None
    assert config["client_secret"] is None  # not the agent's to show
    assert config["app"] == {
        "provider": "google",
        "source": "org",
        "client_id": client_id,
        "tenant": None,
    }

    assert sign_in(member_client, local_api, org.agent_id)["status"] == "connected"
    tested = member_client.post(org.config_path + "/test").json()
    assert tested["ok"] is True, tested
    assert tested["email"] == google_account

    # The admin rotates the shared secret; the agent's next refresh uses the new one.
    rotated = "rotated-secret-5d1c"
    google.register_app(client_id, rotated, [local_api.url + CALLBACK])
    body = {"client_id": client_id, "client_secret": rotated}
    assert org.client.put(GOOGLE_APP.format(org=org.org_id), body).status == 200
    age_tokens(org.agent_id)
    before_refreshes = google.refresh_count
    tested = member_client.post(org.config_path + "/test").json()
    assert tested["ok"] is True, tested
    assert google.refresh_count == before_refreshes + 1


def test_a_grant_two_agents_hold_is_revoked_with_the_last(
    org: Org, local_api: Any, google: FakeGoogle, google_account: str
) -> None:
    # Both on one account through the org's app: one grant at Google, which revoking either
    # agent's tokens would end for both.
    register_google_app(org, local_api, google)
    paths = [org.config_path, f"/bridge/agents/{register_agent(org.org_id)}/email-config"]
    for path in paths:
        assert org.client.put(path, {"provider": "google"}).status == 200
        assert sign_in(org.client, local_api, path.split("/")[3])["status"] == "connected"
    revoked = len(google.revoked_tokens)
    assert org.client.delete(paths[0]).status == 200
    assert len(google.revoked_tokens) == revoked
    assert org.client.post(paths[1] + "/test").json()["ok"] is True
    assert org.client.delete(paths[1]).status == 200
    assert len(google.revoked_tokens) == revoked + 1


def test_deleting_the_shared_app_marks_its_agents_at_once(
    org: Org, local_api: Any, google: FakeGoogle, google_account: str
) -> None:
    register_google_app(org, local_api, google)
    org.client.put(org.config_path, {"provider": "google"})
    assert sign_in(org.client, local_api, org.agent_id)["status"] == "connected"

    deleted = org.client.delete(GOOGLE_APP.format(org=org.org_id))
    assert deleted.status == 204
    current = org.client.get(org.config_path).json()
    assert current["status"] == "error"
    assert current["last_error"]["code"] == "oauth_app_removed"
    assert current["config"]["app"] is None
    assert current["shared_apps"] == []


def test_resolution_prefers_own_then_client_org_then_org(
    org: Org, local_api: Any, google: FakeGoogle
) -> None:
    org_app = register_google_app(org, local_api, google)
    client_org = f"client-{uuid.uuid4().hex[:8]}"
    assert org.client.put(POLICY.format(client_org=client_org), {"name": "Acme"}).status == 200
    client_app = google_app_id()
    path = f"/bridge/client-orgs/{client_org}/email-oauth-apps/google"
    assert org.client.put(path, {"client_id": client_app, "client_secret": "s"}).status == 200
    agent = register_agent(org.org_id, client_org_id=client_org)
    agent_path = f"/bridge/agents/{agent}/email-config"

    shared = org.client.get(agent_path).json()["shared_apps"]
    assert [(a["source"], a["client_id"]) for a in shared] == [("client_org", client_app)]
    inherited = org.client.put(agent_path, {"provider": "google"}).json()
    assert inherited["config"]["app"]["source"] == "client_org"
    own = org.client.put(
        agent_path,
        {"provider": "google", "client_id": "own.apps.googleusercontent.com", "client_secret": "x"},
    ).json()
    assert own["config"]["app"]["source"] == "own"
    # An agent outside the client organization gets the org's app.
    assert org.client.get(org.config_path).json()["shared_apps"][0]["client_id"] == org_app


def test_without_a_shared_app_a_client_id_is_required(org: Org) -> None:
    response = org.client.put(org.config_path, {"provider": "microsoft"})
    assert (response.status, response.error["field"]) == (422, "client_id")
    response = org.client.put(org.config_path, {"provider": "google", "client_secret": "x"})
    assert (response.status, response.error["field"]) == (422, "client_id")


@pytest.mark.parametrize("owner", ["org", "client_org"])
def test_roles_and_tenancy_for_shared_apps(
    org: Org, other_org: Org, local_api: Any, google: FakeGoogle, owner: str
) -> None:
    if owner == "org":
        path = GOOGLE_APP.format(org=org.org_id)
    else:
        client_org = client_org_with_policy(org)
        path = f"/bridge/client-orgs/{client_org}/email-oauth-apps/google"
    body = {"client_id": google_app_id(), "client_secret": SHARED_SECRET}
    member_client = member(local_api, org)
    for response in (member_client.put(path, body), member_client.delete(path)):
        assert (response.status, response.error["code"]) == (403, "admin_required")
    assert org.client.put(path, body).status == 200

    read = member_client.get(path)
    assert read.status == 200
    assert read.json()["client_secret"] == {"set": True, "updated_at": read.json()["updated_at"]}
    assert SHARED_SECRET not in read.text

    for response in (
        other_org.client.get(path),
        other_org.client.put(path, body),
        other_org.client.delete(path),
    ):
        assert (response.status, response.error["code"]) == (404, "not_found")
    assert org.client.get(path).json()["client_id"] == body["client_id"]


def test_a_microsoft_app_needs_a_tenant_and_bad_providers_are_refused(org: Org) -> None:
    path = f"/bridge/orgs/{org.org_id}/email-oauth-apps/microsoft"
    body = {"client_id": str(uuid.uuid4()), "client_secret": "s"}
    response = org.client.put(path, body)
    assert (response.status, response.error["field"]) == (422, "tenant")
    assert org.client.put(path, body | {"tenant": "organizations"}).status == 200
    response = org.client.get(f"/bridge/orgs/{org.org_id}/email-oauth-apps/yahoo")
    assert (response.status, response.error["field"]) == (422, "provider")


# ---- client organizations -------------------------------------------------------------


def client_org_with_policy(org: Org, **policy: Any) -> str:
    client_org = f"client-{uuid.uuid4().hex[:8]}"
    body = {"name": "Acme Corp"} | policy
    response = org.client.put(POLICY.format(client_org=client_org), body)
    assert response.status == 200, response.text
    return client_org


def test_the_banner_and_the_domain_at_save(org: Org, local_api: Any) -> None:
    client_org = client_org_with_policy(
        org,
        email_domain="acme.example.",
        # As typed: any case, "@" before a domain, a fully qualified name's final dot.
        allowed_recipients=["Partner@Supplier.example.", "@acme.example."],
        limits={"per_hour": 50, "per_day": 500},
    )
    agent = register_agent(org.org_id, client_org_id=client_org)
    path = f"/bridge/agents/{agent}/email-config"
    banner = member(local_api, org).get(path).json()["client_org"]
    assert banner["name"] == "Acme Corp"
    assert banner["email_domain"] == "acme.example"
    assert banner["allowed_recipients"] == ["acme.example", "partner@supplier.example"]
    assert banner["limits"] == {"per_hour": 50, "per_day": 500}
    assert banner["warnings"] == [
        "Sends only from @acme.example addresses.",
        "May only write to anyone at @acme.example, partner@supplier.example.",
        "At most 50 messages per hour for the organization.",
        "At most 500 messages per day for the organization.",
    ]

    body = {
        "provider": "imap",
        "preset": "fastmail",
        "email": "agent@fastmail.com",
        "password": "app-password",
    }
    response = org.client.put(path, body)
    assert (response.status, response.error["field"]) == (422, "email")
    assert "acme.example" in response.error["message"]
    response = org.client.put(path, body | {"email": "agent@acme.example"})
    assert response.status == 200, response.text


def test_the_callback_refuses_an_account_outside_the_domain(
    org: Org, local_api: Any, google: FakeGoogle
) -> None:
    register_google_app(org, local_api, google)
    client_org = client_org_with_policy(org, email_domain="acme.example")
    agent = register_agent(org.org_id, client_org_id=client_org)
    google.add_account("someone@gmail.example", inbox_total=1, inbox_unread=0)
    saved = org.client.put(f"/bridge/agents/{agent}/email-config", {"provider": "google"})
    assert saved.status == 200, saved.text
    result = sign_in(org.client, local_api, agent)
    assert result["status"] == "error"
    assert result["error"]["code"] == "email_domain_not_allowed"
    current = org.client.get(f"/bridge/agents/{agent}/email-config").json()
    assert current["status"] == "error"
    assert current["last_error"]["code"] == "email_domain_not_allowed"
    assert current["config"]["authorization"] is None


def test_roles_and_tenancy_for_policies(org: Org, other_org: Org, local_api: Any) -> None:
    client_org = client_org_with_policy(org, email_domain="acme.example")
    path = POLICY.format(client_org=client_org)
    response = member(local_api, org).put(path, {"name": "Renamed"})
    assert (response.status, response.error["code"]) == (403, "admin_required")
    assert member(local_api, org).get(path).json()["name"] == "Acme Corp"
    response = other_org.client.get(path)
    assert (response.status, response.error["code"]) == (404, "client_org_not_found")
    # Client organizations live within their organization: another one's "acme" is its own.
    assert other_org.client.delete(path).status == 204  # nothing of ours to delete
    assert org.client.get(path).json()["name"] == "Acme Corp"
    assert other_org.client.put(path, {"name": "Another Acme"}).status == 200
    assert org.client.get(path).json()["name"] == "Acme Corp"
    assert org.client.delete(path).status == 204
    assert org.client.get(path).status == 404
    assert other_org.client.get(path).json()["name"] == "Another Acme"


def test_another_orgs_client_org_of_the_same_id_reaches_nobody_here(
    org: Org, other_org: Org, local_api: Any, google: FakeGoogle
) -> None:
    """The original kept client organizations in one namespace: any admin could claim an id
    and push a banner, a domain rule and an OAuth app onto another organization's agents."""
    client_org = client_org_with_policy(org, email_domain="acme.example")
    agent = register_agent(org.org_id, client_org_id=client_org)
    agent_path = f"/bridge/agents/{agent}/email-config"
    path = POLICY.format(client_org=client_org)
    evil = {"name": "Evil", "email_domain": "evil.example"}
    assert other_org.client.put(path, evil).status == 200
    app_path = f"/bridge/client-orgs/{client_org}/email-oauth-apps/google"
    app = {"client_id": google_app_id(), "client_secret": "evil-secret"}
    assert other_org.client.put(app_path, app).status == 200
    assert org.client.get(app_path).status == 404

    seen = org.client.get(agent_path).json()
    assert seen["client_org"]["name"] == "Acme Corp"
    assert seen["shared_apps"] == []
    inside = {"provider": "imap", "preset": "gmail", "email": "agent@acme.example", "password": "p"}
    assert org.client.put(agent_path, inside).status == 200

    # Deleting the policy removes the client organization's apps with it.
    assert other_org.client.delete(path).status == 204
    assert other_org.client.put(path, evil).status == 200
    gone = other_org.client.get(app_path)
    assert (gone.status, gone.error["code"]) == (404, "oauth_app_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "A", "email_domain": "not a domain"}, "email_domain"),
        ({"name": "A", "allowed_recipients": ["a b@c.example"]}, "allowed_recipients.0"),
        ({"name": "A", "limits": {"per_hour": 0}}, "limits.per_hour"),
        ({"name": "A", "limits": {"per_minute": 5}}, "limits.per_minute"),
    ],
)
def test_bad_policies_are_refused(org: Org, body: dict[str, Any], field: str) -> None:
    response = org.client.put(POLICY.format(client_org="client-bad"), body)
    assert (response.status, response.error["field"]) == (422, field), response.text


# ---- enforced at send -----------------------------------------------------------------


def test_sending_policy_refuses_recipients_and_counts_under_concurrency(org: Org) -> None:
    """The policy the send route applies, under twelve concurrent senders (Lambda runs them
    in separate instances; threads stand in for them)."""
    from mailbridge.core.errors import MailbridgeError
    from mailbridge.http.errors import STATUS
    from mailbridge.orgs.sending_policy import authorize_message
    from mailbridge.storage.counters import DynamoCounterStore
    from mailbridge.storage.orgs import DynamoOrgStore

    client_org_id = client_org_with_policy(
        org,
        allowed_recipients=["acme.example", "partner@supplier.example"],
        limits={"per_hour": 5, "per_day": 7},
    )
    client_org = DynamoOrgStore().get(org.org_id, client_org_id)
    counters = DynamoCounterStore()

    with pytest.raises(MailbridgeError) as refused:
        authorize_message(
            counters, client_org, ["bob@acme.example", "eve@evil.example", "x@supplier.example"]
        )
    assert refused.value.code == "recipients_not_allowed"
    assert "eve@evil.example, x@supplier.example" in refused.value.message
    assert "bob@acme.example" not in refused.value.message

    def send(_: int) -> str:
        try:
            authorize_message(counters, client_org, ["partner@supplier.example"])
            return "sent"
        except MailbridgeError as error:
            return error.code

    with ThreadPoolExecutor(max_workers=12) as pool:
        outcomes = list(pool.map(send, range(12)))
    assert outcomes.count("sent") == 5
    assert outcomes.count("sending_limit_reached") == 7

    # The next hour: the hourly window is fresh, the daily one has 2 of 7 left.
    next_hour = datetime.now(UTC).replace(minute=0, second=0) + timedelta(hours=1)
    results = []
    for _ in range(3):
        try:
            authorize_message(counters, client_org, ["a@acme.example"], now=next_hour)
            results.append("sent")
        except MailbridgeError as error:
            results.append(error.code)
            assert STATUS[error.code] == 429
            assert "day" in error.message
    assert results == ["sent", "sent", "sending_limit_reached"]


def test_microsoft_shared_app_carries_its_tenant(
    org: Org, local_api: Any, microsoft: FakeMicrosoft
) -> None:
    client_id = str(uuid.uuid4())
    microsoft.register_app(client_id, SHARED_SECRET, [local_api.url + CALLBACK])
    microsoft.add_account("agent@contoso.example", inbox_total=3, inbox_unread=1)
    path = f"/bridge/orgs/{org.org_id}/email-oauth-apps/microsoft"
    body = {"client_id": client_id, "client_secret": SHARED_SECRET, "tenant": "contoso.example"}
    assert org.client.put(path, body).status == 200
    saved = org.client.put(org.config_path, {"provider": "microsoft"}).json()
    assert saved["config"]["app"]["tenant"] == "contoso.example"
    assert sign_in(org.client, local_api, org.agent_id)["status"] == "connected"
    assert org.client.post(org.config_path + "/test").json()["ok"] is True
