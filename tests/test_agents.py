"""The platform registers its agents and removes them through the API (scope
`agents.manage`): the organization comes from its token, another organization's agent is not
found, and removing one leaves nothing of it behind."""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from aws_calls import AwsCalls
from mailbridge.storage.newmail import DynamoFeedStore
from mailbridge.storage.secrets import SecretsManagerStore
from support import ApiClient, OAuthAgent, Org, make_org, saved_entry


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
    # A client organization that does not exist (a typo) would put the agent under no
    # policy: refused; once its policy is saved, it exists.
    unknown = platform.put(path, {"name": "Sales agent", "client_org_id": "acme"})
    assert (unknown.status, unknown.error["field"]) == (422, "client_org_id")
    # Its name is the From of its sends: plain text, which no encoded word can turn into a
    # header (mail.compose).
    encoded = platform.put(path, {"name": "=?utf-8?q?a=0D=0ABcc:_x@evil.example?="})
    assert (encoded.status, encoded.error["field"]) == (422, "name"), encoded.text
    assert org.client.put("/bridge/client-orgs/acme/email-policy", {"name": "Acme"}).status == 200
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


def test_a_save_racing_the_removal_never_outlives_the_agent(org: Org, imap_body: Any) -> None:
    """Saves keep coming while the platform removes the agent (separate Lambda instances in
    production; threads here, on the save and removal paths). Whatever the interleaving,
    nothing of the agent is left once it is gone: the same id registered again, even by
    another organization, starts from nothing."""
    from mailbridge.agents.models import Caller
    from mailbridge.agents.registry import AgentRequest, delete_agent, register_agent
    from mailbridge.connections.request_models import ImapConfigRequest
    from mailbridge.connections.saving import save_email_config
    from mailbridge.core.errors import MailbridgeError
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.audit import DynamoAuditLog
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    agents, secrets, orgs = DynamoAgentStore(), SecretsManagerStore(), DynamoOrgStore()
    log = DynamoAuditLog()
    caller = Caller(subject="user", org_id=org.org_id)
    platform = Caller(subject="platform", org_id=org.org_id)
    request = ImapConfigRequest.model_validate(imap_body())
    for round_ in range(8):
        agent_id = f"racing-{round_}-{uuid.uuid4().hex[:6]}"
        register_agent(agents, orgs, platform, agent_id, AgentRequest(name="Racing"))
        saving = threading.Event()
        saving.set()

        def keep_saving(agent_id: str, saving: threading.Event) -> None:
            while saving.is_set():
                try:
                    save_email_config(agents, secrets, orgs, log, caller, agent_id, request)
                except MailbridgeError as error:
                    # The agent is gone, or going; or its secret kept being created and
                    # deleted under this save (a retryable 503).
                    assert error.code in (
                        "agent_not_found",
                        "concurrent_update",
                        "storage_unavailable",
                    ), error.code

        with ThreadPoolExecutor(max_workers=4) as pool:
            savers = [pool.submit(keep_saving, agent_id, saving) for _ in range(4)]
            time.sleep(0.02 * round_)  # the removal lands at a different point each round
            delete_agent(agents, secrets, orgs, DynamoFeedStore(), platform, agent_id)
            saving.clear()
            for saver in savers:
                saver.result()  # re-raises what a saver met that it should not have
        assert _items(f"AGENT#{agent_id}") == [], f"round {round_}: something outlived the agent"
        names = [secrets.name_for(agent_id), secrets.token_name_for(agent_id)]
        left = [name for name in names if _secret_exists(name)]
        assert left == [], f"round {round_}: secrets outlived the agent"


def _secret_exists(name: str) -> bool:
    try:
        boto3.client("secretsmanager").describe_secret(SecretId=name)
    except boto3.client("secretsmanager").exceptions.ResourceNotFoundException:
        return False
    return True


def test_no_connection_is_written_for_an_agent_removed_or_being_removed(
    local_api: Any, org: Org, imap_body: Any
) -> None:
    """The condition a save's write carries, step by step: the interleavings the race above
    reaches only sometimes."""
    from mailbridge.core.errors import StaleWrite
    from mailbridge.storage.agents import DynamoAgentStore

    agents = DynamoAgentStore()
    assert org.client.put(org.config_path, imap_body()).status == 200
    _, loaded = agents.load(org.agent_id)
    assert loaded is not None
    # What a save that read the record before the removal started would write.
    record = loaded.model_copy(update={"version": loaded.version + 1})
    entry = saved_entry(org.org_id, org.agent_id)

    with pytest.raises(StaleWrite):  # the agent is another organization's
        agents.put_config(
            record, replaces_version=loaded.version, org_id="someone-else", entry=entry
        )
    assert agents.mark_deleting(org.agent_id, org.org_id)
    with pytest.raises(StaleWrite):  # being removed
        agents.put_config(record, replaces_version=loaded.version, org_id=org.org_id, entry=entry)
    assert org.client.get(org.config_path).error["code"] == "agent_not_found"
    # Registering it again meanwhile would be undone by the removal under way: refused.
    again = _platform(local_api, org).put(f"/bridge/agents/{org.agent_id}", {"name": "Again"})
    assert (again.status, again.error["code"]) == (404, "agent_not_found")
    agents.delete_agent(org.agent_id)
    with pytest.raises(StaleWrite):  # removed
        agents.put_config(record, replaces_version=None, org_id=org.org_id, entry=entry)
    assert _items(f"AGENT#{org.agent_id}") == []
    assert not agents.mark_deleting(org.agent_id, org.org_id)


@pytest.fixture(scope="module")
def aws_calls(local_api: Any) -> AwsCalls:
    from mailbridge.storage.aws import dynamodb, secretsmanager

    return AwsCalls([dynamodb(), secretsmanager()])


def test_a_sign_in_finishing_after_the_removal_leaves_no_tokens(
    google_agent: OAuthAgent, local_api: Any, org: Org, aws_calls: AwsCalls
) -> None:
    """The removal lands after the callback found the agent, just before it stores the
    tokens: the grant's refresh token must not outlive the agent."""
    agent = google_agent
    agent.save()
    location = agent.sign_in(agent.authorization_url())

    def removal() -> None:
        assert _platform(local_api, org).delete(f"/bridge/agents/{org.agent_id}").status == 204

    with aws_calls.before("CreateSecret", removal):
        page = agent.callback(location)
    assert '"status": "connected"' not in page.text
    assert not _secret_exists(SecretsManagerStore().token_name_for(org.agent_id))
    assert _items(f"AGENT#{org.agent_id}") == []


def test_a_save_finishing_after_the_removal_leaves_nothing(
    local_api: Any, org: Org, imap_body: Any, aws_calls: AwsCalls
) -> None:
    """The removal lands after the save found the agent and wrote the password, just before
    it writes the record: neither may outlive the agent."""

    def removal() -> None:
        assert _platform(local_api, org).delete(f"/bridge/agents/{org.agent_id}").status == 204

    with aws_calls.before("TransactWriteItems", removal):
        saved = org.client.put(org.config_path, imap_body())
    assert (saved.status, saved.error["code"]) == (404, "agent_not_found")
    assert _items(f"AGENT#{org.agent_id}") == []
    assert not _secret_exists(SecretsManagerStore().name_for(org.agent_id))
