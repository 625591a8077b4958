"""The platform registers its agents and removes them through the API (scope
`agents.manage`): the organization comes from its token, another organization's agent is not
found, and removing one leaves nothing of it behind."""

from __future__ import annotations

import os
from typing import Any

import boto3
from support import ApiClient, Org, make_org


def _platform(local_api: Any, org: Org) -> ApiClient:
    token = local_api.issuer.mint(sub="platform", org_id=org.org_id, scopes=("agents.manage",))
    return ApiClient(local_api.url, token)


def _items(prefix: str) -> list[dict[str, Any]]:
    table = boto3.client("dynamodb")
    pages = table.get_paginator("scan").paginate(TableName=os.environ["TABLE_NAME"])
    return [item for page in pages for item in page["Items"] if item["pk"]["S"].startswith(prefix)]


def test_the_platform_registers_and_updates_agents_in_its_organization(
    local_api: Any, org: Org
) -> None:
    platform = _platform(local_api, org)
    path = "/bridge/agents/new-agent-" + org.org_id
    created = platform.put(path, {"name": "Sales agent"})
    assert created.status == 200, created.text
    assert created.json() == {
        "agent_id": "new-agent-" + org.org_id,
        "org_id": org.org_id,
        "name": "Sales agent",
        "client_org_id": None,
    }
    updated = platform.put(path, {"name": "Sales agent", "client_org_id": "acme"})
    assert updated.json()["client_org_id"] == "acme"
    # The Email tab of the organization sees it at once.
    assert org.client.get(f"{path}/email-config").status == 200


def test_another_organizations_agent_is_not_found(local_api: Any, org: Org) -> None:
    intruder = _platform(local_api, make_org(local_api))
    path = f"/bridge/agents/{org.agent_id}"
    taken = intruder.put(path, {"name": "Mine now"})
    assert (taken.status, taken.error["code"]) == (404, "agent_not_found")
    assert intruder.delete(path).status == 204  # says nothing, and removes nothing
    assert org.client.get(f"{path}/email-config").status == 200


def test_only_the_platform_scope_manages_agents(local_api: Any, org: Org) -> None:
    # The organization's admin (mail scopes, no agents.manage): API Gateway's 403.
    assert org.client.put(f"/bridge/agents/{org.agent_id}", {"name": "x"}).status == 403
    agent_token = local_api.issuer.mint(
        sub="runtime", org_id=org.org_id, agent_id=org.agent_id, scopes=("agents.manage",)
    )
    refused = ApiClient(local_api.url, agent_token).delete(f"/bridge/agents/{org.agent_id}")
    assert (refused.status, refused.error["code"]) == (403, "agent_token_not_allowed")


def test_removing_an_agent_leaves_nothing_behind(local_api: Any, org: Org, imap_body: Any) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    assert org.client.post(org.config_path + "/test").json()["ok"] is True  # a test counted
    message = {"to": ["someone@example.org"], "subject": "Hello", "text": "Hello."}
    sent = org.client.request(
        "POST",
        f"/bridge/agents/{org.agent_id}/mail/send",
        message,
        headers={"Idempotency-Key": "k"},
    )
    assert sent.status == 200, sent.text  # an idempotency record
    kept = [f"AGENT#{org.agent_id}", f"RATE#AGENT#{org.agent_id}", f"IDEMPOTENCY#{org.agent_id}"]
    assert all(_items(prefix) for prefix in kept)
    secret_prefix = [{"Key": "name", "Values": [f"mailbridge/agents/{org.agent_id}/"]}]
    assert boto3.client("secretsmanager").list_secrets(Filters=secret_prefix)["SecretList"]

    platform = _platform(local_api, org)
    path = f"/bridge/agents/{org.agent_id}"
    assert platform.delete(path).status == 204
    assert [prefix for prefix in kept if _items(prefix)] == []
    assert boto3.client("secretsmanager").list_secrets(Filters=secret_prefix)["SecretList"] == []
    assert org.client.get(org.config_path).error["code"] == "agent_not_found"
    assert platform.delete(path).status == 204  # again: nothing left to do
