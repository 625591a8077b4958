"""The API's contract: openapi.json is generated from the code and kept current, and the local
run serves it; request bodies that are not JSON and undeclared methods are refused."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest
import requests
from mailbridge_tools.openapi import (
    OPENAPI_PATH,
    REGENERATE,
    ContractError,
    build_document,
    render,
)
from support import ApiClient, Org

# ---- the document ------------------------------------------------------------------------


def test_the_checked_in_document_is_current(local_api: Any) -> None:
    if OPENAPI_PATH.read_text(encoding="utf-8") != render(build_document(local_api.routes)):
        pytest.fail(f"{OPENAPI_PATH.name} is stale: run `{REGENERATE}` and commit it.")


def test_the_document_covers_exactly_the_templates_routes(local_api: Any) -> None:
    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    declared = {
        (method.upper(), path, "security" in operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    }
    assert declared == {(route.method, route.path, route.authorized) for route in local_api.routes}


def test_the_local_run_serves_it_without_a_token(local_api: Any) -> None:
    response = ApiClient(local_api.url, None).get("/openapi.json")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.text == render(build_document(local_api.routes))


def test_a_route_the_template_does_not_route_is_refused(local_api: Any) -> None:
    unrouted = "DELETE /bridge/agents/{agentId}/email-config"
    routes = [route for route in local_api.routes if route.route_key != unrouted]
    with pytest.raises(ContractError, match=re.escape(f"no template event: {unrouted} ")):
        build_document(routes)


def test_a_route_no_function_declares_is_refused(local_api: Any) -> None:
    route = dataclasses.replace(local_api.routes[0], path="/bridge/nowhere")
    with pytest.raises(ContractError, match=re.escape(f"{route.route_key}: ")):
        build_document([*local_api.routes, route])


def test_security_must_match_the_templates_authorizer(local_api: Any) -> None:
    routes = [
        dataclasses.replace(route, authorized=not route.authorized)
        if route.path == "/api/engine/oauth/callback"
        else route
        for route in local_api.routes
    ]
    with pytest.raises(ContractError, match="callback: the template's authorizer"):
        build_document(routes)


# ---- what contract fuzzing found -----------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        # Powertools read these as forms, and failed with a 500 without a boundary.
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
def test_a_body_that_is_not_json_is_refused(org: Org, content_type: str) -> None:
    response = requests.put(
        org.client.base_url + org.config_path,
        data=b'{"provider": "google"}',
        headers={"Authorization": f"Bearer {org.client.token}", "Content-Type": content_type},
        timeout=10,
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_a_body_that_is_not_utf8_is_refused(org: Org) -> None:
    # API Gateway hands such a body over in base64, which Powertools failed to decode (500).
    response = requests.put(
        org.client.base_url + org.config_path,
        data=b'{"provider": "\xe3"}',
        headers={"Authorization": f"Bearer {org.client.token}"},
        timeout=10,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("method", ["TRACE", "QUERY"])
def test_the_local_gateway_answers_any_undeclared_method_with_405(
    local_api: Any, method: str
) -> None:
    # http.server answered 501 for methods it has no handler for.
    response = requests.request(method, f"{local_api.url}/bridge/email-presets", timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"
