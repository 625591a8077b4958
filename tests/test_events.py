"""The sample events in events/ (for `sam local invoke`) are real: one per route, and each
runs through its function with the answer its file name promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mailbridge.storage.newmail import DynamoFeedStore
from support import register_agent

EVENTS = Path(__file__).parent.parent / "events"
# Events of other sources than the HTTP API, and the function each is for.
OTHER_EVENTS = {
    "new_mail_round": "NewMailDispatchFunction",
    "new_mail_look": "NewMailWorkerFunction",
}


def load(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text())
    return event


def test_every_route_has_a_sample_event(local_api: Any) -> None:
    sampled = {
        load(path.stem)["routeKey"]
        for path in EVENTS.glob("*.json")
        if path.stem not in OTHER_EVENTS
    }
    assert sampled == {route.route_key for route in local_api.routes}


def test_the_new_mail_events_run(local_api: Any) -> None:
    """Each finds its function (`make invoke` names none): the scheduler's round queues every
    connected IMAP agent; a look at an agent with no connection has nothing to do, and
    succeeds."""
    for name, function in OTHER_EVENTS.items():
        assert local_api.function_of(load(name)) == function
    connected = sum(len(page) for page in DynamoFeedStore().connected_agents("imap"))
    assert local_api.invoke(load("new_mail_round")) == {"queued": connected}
    assert local_api.invoke(load("new_mail_look")) == {"batchItemFailures": []}
    local_api.process_queue()  # what the round queued


def test_the_push_events_run(local_api: Any) -> None:
    """Graph's validation request is answered with its token; a Gmail push whose token
    Google did not sign is refused before anything else."""
    validation = local_api.invoke(load("graph_notification"))
    token = load("graph_notification")["queryStringParameters"]["validationToken"]
    assert (validation["statusCode"], validation["body"]) == (200, token)
    assert validation["headers"]["Content-Type"].startswith("text/plain")
    push = local_api.invoke(load("gmail_push"))
    assert (push["statusCode"], json.loads(push["body"])["error"]["code"]) == (
        401,
        "push_unauthorized",
    )


def test_the_events_run_in_order(local_api: Any) -> None:
    claims = load("get_email_config")["requestContext"]["authorizer"]["jwt"]["claims"]
    agent_id = load("get_email_config")["pathParameters"]["agentId"]
    register_agent(claims["org_id"], agent_id=agent_id, name="Sample events agent")

    def run(name: str) -> tuple[int, dict[str, Any]]:
        response = local_api.invoke(load(name))
        return response["statusCode"], json.loads(response["body"])

    status, body = run("list_presets")
    assert status == 200
    assert "gmail" in {preset["id"] for preset in body["presets"]}

    # A provider's own domain: its preset, found without asking the network.
    status, body = run("discover_email_settings")
    assert (status, body["provider"]["id"], body["recommended"]["method"]) == (
        200,
        "google",
        "google",
    )

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
    # The admin's history: newest first, the save and the disconnect.
    status, body = run("get_agent_history")
    assert status == 200
    assert [entry["action"] for entry in body["entries"][:2]] == [
        "disconnected",
        "connection_saved",
    ]
    status, body = run("get_org_history")
    assert (status, body["entries"][0]["action"]) == (200, "disconnected")
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


def test_every_function_has_the_sample_its_first_request_benchmark_sends(local_api: Any) -> None:
    from mailbridge_bench.imports import handler_targets
    from mailbridge_tools.template import function_ids, load_template

    template = load_template()
    sources = {
        target.handler.function: target.event_source
        for target in handler_targets(template, None, local_api.function_of)
        if target.handler and target.event is not None
    }
    assert set(sources) == set(function_ids(template))
    assert sources["NewMailWorkerFunction"] == "events/new_mail_look.json"
