"""The sample events in events/ (for `sam local invoke`) are real: one per route, and each
runs through its function with the answer its file name promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailbridge.agents.models import Agent
from mailbridge.storage.agents import DynamoAgentStore

EVENTS = Path(__file__).parent.parent / "events"


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def test_every_route_has_a_sample_event(local_api: Any) -> None:
    sampled = {load(path.stem)["routeKey"] for path in EVENTS.glob("*.json")}
    assert sampled == {route.route_key for route in local_api.routes}


def test_the_events_run_in_order(local_api: Any) -> None:
    claims = load("get_email_config")["requestContext"]["authorizer"]["jwt"]["claims"]
    agent_id = load("get_email_config")["pathParameters"]["agentId"]
    DynamoAgentStore(local_api.table_name).put_agent(
        Agent(agent_id=agent_id, org_id=claims["org_id"], name="Sample events agent")
    )

    def run(name: str) -> tuple[int, dict[str, Any]]:
        response = local_api.invoke(load(name))
        return response["statusCode"], json.loads(response["body"])

    status, body = run("list_presets")
    assert status == 200
    assert "gmail" in {preset["id"] for preset in body["presets"]}

    status, body = run("put_email_config")
    assert (status, body["status"]) == (200, "configured"), body
    assert run("get_email_config")[1] == body

    # A password connection has nothing to authorize.
    for name in ("authorize_email_oauth", "reauthorize_email_oauth"):
        status, body = run(name)
        assert (status, body["error"]["code"]) == (409, "not_oauth"), body
    callback = local_api.invoke(load("oauth_callback"))
    assert callback["statusCode"] == 400
    assert "state_invalid" in callback["body"]

    status, body = run("delete_email_config")
    assert (status, body["status"]) == (200, "not_connected")
    # Run last: with a configuration it would reach for the real Gmail servers.
    status, body = run("run_connection_test")
    assert (status, body["error"]["code"]) == (409, "not_configured")


def test_the_org_settings_events_run_in_order(local_api: Any) -> None:
    def run(name: str) -> tuple[int, Any]:
        response = local_api.invoke(load(name))
        return response["statusCode"], json.loads(response["body"] or "null")

    assert run("get_org_oauth_app")[0] == 404
    assert run("put_org_oauth_app")[0] == 200
    status, body = run("get_org_oauth_app")
    assert (status, body["owner"], body["client_secret"]["set"]) == (200, "org", True)
    assert run("delete_org_oauth_app")[0] == 204

    assert run("put_email_policy")[0] == 200
    status, body = run("get_email_policy")
    assert (status, body["email_domain"]) == (200, "acme.example")
    assert run("put_client_org_oauth_app")[0] == 200
    assert run("get_client_org_oauth_app")[0] == 200
    assert run("delete_client_org_oauth_app")[0] == 204
    assert run("delete_email_policy")[0] == 204
    assert run("get_email_policy")[0] == 404


def test_the_mail_and_agent_events_run_in_order(local_api: Any) -> None:
    """The platform registers the agent, its runtime finds no connection to use, the platform
    removes it (twice: removing is idempotent), and then it is not found."""

    def run(name: str) -> tuple[int, Any]:
        response = local_api.invoke(load(name))
        return response["statusCode"], json.loads(response["body"] or "null")

    status, body = run("put_agent")
    assert (status, body["org_id"], body["name"]) == (200, "demo-org", "Demo agent"), body
    for name in ("list_messages", "get_message", "mark_message", "get_attachment", "send_message"):
        status, body = run(name)
        assert (status, body["error"]["code"]) == (409, "not_configured"), (name, body)
    assert run("delete_agent")[0] == 204
    assert run("delete_agent")[0] == 204
    status, body = run("list_messages")
    assert (status, body["error"]["code"]) == (404, "agent_not_found")
