"""The audit trail: an entry for every change of a connection, shared app or client-org
policy (and every refusal by policy), written with the change; the histories' routes, their
pages and time filter, and who may read them. (That a change and its entry are written
together, whatever fails, is test_faults.py's.)"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
from support import (
    CLIENT_SECRET,
    MAIL_SCOPES,
    MAILBOX_PASSWORD,
    ApiClient,
    OAuthAgent,
    Org,
    posted,
    register_agent,
)

Body = Callable[..., dict[str, Any]]


def agent_history(org: Org, agent_id: str | None = None, query: str = "") -> list[dict[str, Any]]:
    response = org.client.get(f"/bridge/agents/{agent_id or org.agent_id}/email-history{query}")
    assert response.status == 200, response.text
    entries: list[dict[str, Any]] = response.json()["entries"]
    return entries


def org_history(org: Org, query: str = "") -> dict[str, Any]:
    response = org.client.get(f"/bridge/orgs/{org.org_id}/email-history{query}")
    assert response.status == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def changes(entry: dict[str, Any]) -> dict[str, Any]:
    """field -> (before, after), or "secret" for a secret."""
    return {
        change["field"]: "secret" if change["secret"] else (change["before"], change["after"])
        for change in entry["changes"]
    }


def test_an_imap_connections_life_is_in_its_history(org: Org, imap_body: Body) -> None:
    saved_body = imap_body()
    assert org.client.put(org.config_path, saved_body).status == 200
    assert org.client.post(org.config_path + "/test").json()["ok"] is True
    rotated_body = imap_body(password="wrong-password", imap_security="starttls")
    assert org.client.put(org.config_path, rotated_body).status == 200
    assert org.client.post(org.config_path + "/test").json()["ok"] is False
    assert org.client.delete(org.config_path).status == 200

    entries = agent_history(org)
    assert [(e["action"], e["outcome"], e["status"]) for e in entries] == [
        ("disconnected", "succeeded", "not_connected"),
        ("tested", "failed", "error"),
        ("connection_saved", "succeeded", "configured"),
        ("tested", "succeeded", "connected"),
        ("connection_saved", "succeeded", "configured"),
        ("agent_registered", "succeeded", None),  # by the platform, as the fixture does
    ]
    entries = entries[:-1]
    assert {json.dumps(e["actor"]) for e in entries} == {
        json.dumps({"kind": "person", "subject": f"user-{org.org_id}"})
    }
    assert all(e["agent_id"] == org.agent_id and e["target"] == "connection" for e in entries)
    times = [e["at"] for e in entries]
    assert times == sorted(times, reverse=True)
    disconnected, failed, rotated, tested, saved = entries
    first = changes(saved)
    assert first["email"] == (None, "agent@example.com")
    assert first["imap.host"] == (None, "localhost")
    assert first["status"] == (None, "configured")
    assert first["password"] == "secret"
    assert changes(tested) == {"status": ("configured", "connected")}
    # A new password: the status it had is no longer proven, and the value is never shown.
    assert changes(rotated) == {
        "status": ("connected", "configured"),
        "imap.port": (saved_body["imap"]["port"], rotated_body["imap"]["port"]),
        "imap.security": ("tls", "starttls"),
        "password": "secret",
    }
    assert all(isinstance(port, int) for port in changes(rotated)["imap.port"])
    assert (failed["code"], changes(failed)) == ("auth_failed", {"status": ("configured", "error")})
    assert changes(disconnected)["password"] == "secret"
    assert changes(disconnected)["imap.host"] == ("localhost", None)
    text = json.dumps(entries)
    assert MAILBOX_PASSWORD not in text and "wrong-password" not in text


def test_sign_ins_are_recorded_for_who_started_them(agent: OAuthAgent) -> None:
    assert posted(agent.connect())[0]["status"] == "connected"
    again = agent.callback(agent.sign_in(agent.authorization_url("reauthorize")))
    assert posted(again)[0]["status"] == "connected"
    other = f"other-{agent.org.agent_id}@{agent.provider}.example"
    agent.fake.add_account(other, inbox_total=1, inbox_unread=0)
    refused = agent.callback(agent.sign_in(agent.authorization_url("reauthorize")))
    assert posted(refused)[0]["error"]["code"] == "account_mismatch"

    entries = agent_history(agent.org)
    assert [(e["action"], e["outcome"], e["code"]) for e in entries] == [
        ("reauthorized", "refused", "account_mismatch"),
        ("reauthorized", "succeeded", None),
        ("authorized", "succeeded", None),
        ("connection_saved", "succeeded", None),
        ("agent_registered", "succeeded", None),
    ]
    mismatch, reauthorized, authorized, saved, _ = entries
    entries = entries[:-1]
    # The callback has no token: the person is the one who clicked Authorize.
    assert {e["actor"]["subject"] for e in entries} == {f"user-{agent.org.org_id}"}
    assert other in mismatch["message"] and mismatch["changes"] == []
    signed_in = changes(authorized)
    assert signed_in["status"] == ("awaiting_authorization", "connected")
    assert signed_in["authorization.email"][1].endswith(".example")
    assert signed_in["tokens"] == "secret"
    assert changes(saved)["client_secret"] == "secret"
    assert changes(reauthorized)["tokens"] == "secret"
    assert "status" not in changes(reauthorized)  # connected, and connected again
    assert CLIENT_SECRET not in json.dumps(entries)


def test_shared_apps_and_policies_and_what_they_refuse(
    org: Org, local_api: Any, imap_body: Body
) -> None:
    app_path = f"/bridge/orgs/{org.org_id}/email-oauth-apps/google"
    app = {"client_id": "shared.apps.googleusercontent.com", "client_secret": "first-s3cret"}
    assert org.client.put(app_path, app).status == 200
    rotated = app | {"client_secret": "second-s3cret", "secret_expires_at": "2027-06-30"}
    assert org.client.put(app_path, rotated).status == 200
    policy_path = "/bridge/client-orgs/acme/email-policy"
    policy = {"name": "Acme", "allowed_recipients": ["example.org"]}
    assert org.client.put(policy_path, policy).status == 200
    narrowed = policy | {"email_domain": "acme.example"}
    assert org.client.put(policy_path, narrowed).status == 200
    member = register_agent(org.org_id, client_org_id="acme")
    outside = org.client.put(f"/bridge/agents/{member}/email-config", imap_body())
    assert outside.status == 422
    assert org.client.put(policy_path, policy).status == 200  # the domain lifted again
    assert org.client.put(f"/bridge/agents/{member}/email-config", imap_body()).status == 200
    send = org.client.request(
        "POST",
        f"/bridge/agents/{member}/mail/send",
        {"to": ["someone@elsewhere.example"], "subject": "Hi", "text": "x"},
        headers={"Idempotency-Key": "audit-1"},
    )
    assert send.error["code"] == "recipients_not_allowed"
    assert org.client.delete(app_path).status == 204
    assert org.client.delete(policy_path).status == 204

    entries = org_history(org)["entries"]
    assert [(e["action"], e["outcome"], e["code"]) for e in entries] == [
        ("policy_removed", "succeeded", None),
        ("shared_app_removed", "succeeded", None),
        ("send_refused", "refused", "recipients_not_allowed"),
        ("connection_saved", "succeeded", None),
        ("policy_saved", "succeeded", None),
        ("connection_saved", "refused", "email_domain_not_allowed"),
        ("agent_registered", "succeeded", None),
        ("policy_saved", "succeeded", None),
        ("policy_saved", "succeeded", None),
        ("shared_app_saved", "succeeded", None),
        ("shared_app_saved", "succeeded", None),
        ("agent_registered", "succeeded", None),  # the fixture's agent
    ]
    removed, app_removed, refused_send, _, lifted, refused_save, registered = entries[:7]
    narrowing, created = entries[7:9]
    assert (registered["agent_id"], changes(registered)) == (
        member,
        {"name": (None, "Support agent"), "client_org_id": (None, "acme")},
    )
    assert changes(created) == {
        "name": (None, "Acme"),
        "allowed_recipients": (None, ["example.org"]),
    }
    assert changes(narrowing) == {"email_domain": (None, "acme.example")}
    assert changes(lifted) == {"email_domain": ("acme.example", None)}
    assert (refused_save["agent_id"], refused_save["changes"]) == (member, [])
    assert "acme.example" in refused_save["message"]
    assert "someone@elsewhere.example" in refused_send["message"]
    assert refused_send["agent_id"] == member
    assert changes(removed)["name"] == ("Acme", None)
    assert (removed["client_org_id"], removed["target"]) == ("acme", "client_org_policy")
    assert (app_removed["provider"], app_removed["target"]) == ("google", "shared_app")
    first_app, second_app = entries[-2], entries[-3]
    assert changes(first_app)["client_secret"] == "secret"
    assert changes(second_app) == {
        "client_secret": "secret",
        "secret_expires_at": (None, "2027-06-30"),
    }
    text = json.dumps(entries)
    assert "first-s3cret" not in text and "second-s3cret" not in text
    # The agent's own history holds its share of the organization's.
    assert [e["action"] for e in agent_history(org, member)] == [
        "send_refused",
        "connection_saved",
        "connection_saved",
        "agent_registered",
    ]


def test_a_use_that_changes_the_status_is_the_services(
    org: Org, local_api: Any, imap_body: Body
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    listed = org.client.get(f"/bridge/agents/{org.agent_id}/mail/messages")
    assert listed.status == 200, listed.text
    used = agent_history(org)[0]
    assert used["actor"] == {"kind": "system", "subject": "mailbridge"}
    assert (used["action"], used["status"]) == ("status_changed", "connected")
    assert changes(used) == {"status": ("configured", "connected")}


def test_a_broken_mailbox_used_again_and_again_is_recorded_once(org: Org, imap_body: Body) -> None:
    assert org.client.put(org.config_path, imap_body(password="not-the-password")).status == 200
    inbox = f"/bridge/agents/{org.agent_id}/mail/messages"
    for _ in range(3):
        assert org.client.get(inbox).error["code"] == "auth_failed"
    broken, saved, _ = agent_history(org)
    assert (broken["action"], broken["outcome"], broken["code"]) == (
        "status_changed",
        "failed",
        "auth_failed",
    )
    assert changes(broken) == {"status": ("configured", "error")}
    assert saved["action"] == "connection_saved"


def test_who_may_read_the_histories(
    org: Org, other_org: Org, local_api: Any, imap_body: Body
) -> None:
    def client(role: str = "admin", **claims: Any) -> ApiClient:
        token = local_api.issuer.mint(sub="someone", org_id=org.org_id, role=role, **claims)
        return ApiClient(local_api.url, token)

    # The other organization's agent has a history of its own.
    assert other_org.client.put(other_org.config_path, imap_body()).status == 200
    assert [e["action"] for e in agent_history(other_org)] == [
        "connection_saved",
        "agent_registered",
    ]
    agent_path = f"/bridge/agents/{org.agent_id}/email-history"
    org_path = f"/bridge/orgs/{org.org_id}/email-history"
    for path in (agent_path, org_path):
        member = client(role="member").get(path)
        assert (member.status, member.error["code"]) == (403, "admin_required"), path
        runtime = client(agent_id=org.agent_id, scopes=MAIL_SCOPES).get(path)
        assert (runtime.status, runtime.error["code"]) == (403, "agent_token_not_allowed"), path
    # Another organization's agent and organization are not found, as unknown ones are.
    for path in (
        f"/bridge/agents/{other_org.agent_id}/email-history",
        "/bridge/agents/never-registered/email-history",
        f"/bridge/orgs/{other_org.org_id}/email-history",
    ):
        assert org.client.get(path).status == 404, path
    # ...and nothing of theirs is in this organization's history.
    [registered] = org_history(org)["entries"]
    assert (registered["action"], registered["agent_id"]) == ("agent_registered", org.agent_id)
    assert agent_history(org) == [registered]


def test_an_agent_id_used_again_shows_only_its_organizations_entries(
    org: Org, other_org: Org, local_api: Any, imap_body: Body
) -> None:
    """An agent removed by one organization, and its id registered by another: each sees
    its own part of that id's history, never the other's."""
    assert org.client.put(org.config_path, imap_body()).status == 200

    def platform(of: Org) -> ApiClient:
        token = local_api.issuer.mint(sub="platform", org_id=of.org_id, scopes=("agents.manage",))
        return ApiClient(local_api.url, token)

    path = f"/bridge/agents/{org.agent_id}"
    assert platform(org).delete(path).status == 204
    assert platform(other_org).put(path, {"name": "Reused"}).status == 200
    assert other_org.client.put(path + "/email-config", imap_body()).status == 200

    mine = [e["action"] for e in agent_history(org)]
    theirs = [e["action"] for e in agent_history(other_org, org.agent_id)]
    assert mine == ["agent_removed", "connection_saved", "agent_registered"]
    assert theirs == ["connection_saved", "agent_registered"]
    registered = agent_history(other_org, org.agent_id)[-1]
    assert (registered["target"], changes(registered)) == ("agent", {"name": (None, "Reused")})


def test_a_removed_agents_history_stays(org: Org, local_api: Any, imap_body: Body) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    platform = ApiClient(
        local_api.url,
        local_api.issuer.mint(sub="platform", org_id=org.org_id, scopes=("agents.manage",)),
    )
    assert platform.delete(f"/bridge/agents/{org.agent_id}").status == 204
    assert org.client.get(org.config_path).status == 404
    removed, saved, registered = agent_history(org)
    assert (removed["action"], removed["actor"]["subject"]) == ("agent_removed", "platform")
    assert saved["action"] == "connection_saved"
    # Page by page too: a page with entries is the organization's own, agent or no agent.
    first = org.client.get(f"/bridge/agents/{org.agent_id}/email-history?limit=2").json()
    rest = agent_history(org, query=f"?limit=2&cursor={first['next_cursor']}")
    assert [e["entry_id"] for e in first["entries"] + rest] == [
        e["entry_id"] for e in (removed, saved, registered)
    ]


def test_a_cursor_does_not_skip_the_agents_check(org: Org, other_org: Org, imap_body: Body) -> None:
    """Another organization's agent, or one never registered, is 404 whatever the query:
    with a cursor too, which is not signed and so may be made by hand for any agent."""
    assert other_org.client.put(other_org.config_path, imap_body()).status == 200
    path = f"/bridge/agents/{other_org.agent_id}/email-history"
    theirs = other_org.client.get(f"{path}?limit=1").json()["next_cursor"]
    position = (
        base64.urlsafe_b64decode(theirs + "=" * (-len(theirs) % 4)).decode().split("\x1f")[-1]
    )
    made_up = "\x1f".join(["history", "never-registered", "*", "*", position]).encode()
    made_up_cursor = base64.urlsafe_b64encode(made_up).rstrip(b"=").decode()
    for agent_id, cursor in ((other_org.agent_id, theirs), ("never-registered", made_up_cursor)):
        response = org.client.get(f"/bridge/agents/{agent_id}/email-history?cursor={cursor}")
        assert response.status == 404, (agent_id, response.text)
        assert response.error["code"] == "agent_not_found"
    # The cursor is still theirs to use.
    assert other_org.client.get(f"{path}?limit=1&cursor={theirs}").status == 200


def test_pages_and_time_range(org: Org) -> None:
    path = "/bridge/client-orgs/paged/email-policy"
    for number in range(5):
        assert org.client.put(path, {"name": f"Paged {number}"}).status == 200
        time.sleep(0.002)  # distinct times, as real saves have
    every = org_history(org)["entries"]  # and the fixture's agent's registration, first
    names = [f"Paged {n}" for n in range(4, -1, -1)] + ["Support agent"]
    assert [changes(e)["name"][1] for e in every] == names

    pages, cursor = [], ""
    while True:
        page = org_history(org, f"?limit=2{cursor}")
        pages.append([e["entry_id"] for e in page["entries"]])
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert [len(page) for page in pages] == [2, 2, 2]
    assert [entry for page in pages for entry in page] == [e["entry_id"] for e in every]

    def at(entry: dict[str, Any]) -> str:
        return entry["at"].replace("+", "%2B")

    since = org_history(org, f"?since={at(every[2])}")["entries"]
    assert [e["entry_id"] for e in since] == [e["entry_id"] for e in every[:3]]
    until = org_history(org, f"?until={at(every[3])}")["entries"]
    assert [e["entry_id"] for e in until] == [e["entry_id"] for e in every[3:]]
    both = org_history(org, f"?since={at(every[3])}&until={at(every[1])}")["entries"]
    assert [e["entry_id"] for e in both] == [e["entry_id"] for e in every[1:4]]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+", "%2B")
    assert org_history(org, f"?since={later}")["entries"] == []

    first = org_history(org, "?limit=2")["next_cursor"]
    refused = {
        "?cursor=bm90LWEtY3Vyc29y": "cursor",  # "not-a-cursor"
        f"?cursor={first}&since={later}": "cursor",  # from another range
        f"?since={later}&until={at(every[0])}": "since",
        "?since=2026-01-01T00:00:00": "since",  # no offset: which day is it?
        "?since=0001-01-01T00:00:00%2B05:00": "since",  # before year 1 in UTC
        "?until=9999-12-31T23:00:00-05:00": "until",  # after year 9999 in UTC
        "?limit=0": "limit",
        "?limit=101": "limit",
    }
    for query, field in refused.items():
        response = org.client.get(f"/bridge/orgs/{org.org_id}/email-history{query}")
        assert response.status == 422, query
        assert field in (response.error.get("field") or response.error["message"]), query


def test_entries_are_kept_for_the_retention(org: Org, local_api: Any) -> None:
    assert org.client.put("/bridge/client-orgs/kept/email-policy", {"name": "Kept"}).status == 200
    [item] = boto3.client("dynamodb").query(
        TableName=local_api.table_name,
        KeyConditionExpression="pk = :pk",
        FilterExpression="#action = :saved",
        ExpressionAttributeNames={"#action": "action"},
        ExpressionAttributeValues={
            ":pk": {"S": f"AUDIT#{org.org_id}"},
            ":saved": {"S": "policy_saved"},
        },
    )["Items"]
    at = datetime.fromisoformat(item["at"]["S"])
    # The template's default retention, which the local run passes to its functions.
    assert int(item["expires_at"]["N"]) == int(at.timestamp()) + 400 * 86400
    table = boto3.client("dynamodb").describe_time_to_live(TableName=local_api.table_name)
    assert table["TimeToLiveDescription"]["AttributeName"] == "expires_at"
