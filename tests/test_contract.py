"""The API's contract: openapi.json is generated from the code and kept current, the local run
serves it, and the API keeps it under contract fuzzing (schemathesis)."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from mailbridge_tools.openapi import (
    OPENAPI_PATH,
    REGENERATE,
    ContractError,
    build_document,
    render,
)
from mailbridge_tools.sandbox import DovecotServer, FakeGoogle, SmtpServer
from support import (
    CALLBACK,
    MAILBOX,
    MAILBOX_PASSWORD,
    REPORTS,
    ApiClient,
    FuzzFigures,
    Org,
    register_agent,
)

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


@pytest.mark.parametrize(
    "content_type", ["text/plain", "multipart/form-data", "application/x-www-form-urlencoded"]
)
def test_an_empty_body_is_missing_whatever_its_content_type(org: Org, content_type: str) -> None:
    # Powertools read it by its type: a 500 for text/plain, and for multipart/form-data
    # without a boundary.
    def put(headers: dict[str, str]) -> requests.Response:
        return requests.put(
            org.client.base_url + org.config_path,
            headers={"Authorization": f"Bearer {org.client.token}"} | headers,
            timeout=10,
        )

    answer, without_type = put({"Content-Type": content_type}), put({})
    assert without_type.json()["error"] == {
        "code": "missing_field",
        "message": "body is required.",
        "field": "body",
    }
    assert (answer.status_code, answer.json()) == (422, without_type.json())


@pytest.mark.parametrize("content_type", ["APPLICATION/JSON", "Application/Json; charset=utf-8"])
def test_a_json_media_type_is_json_in_any_case(org: Org, content_type: str) -> None:
    # Powertools reads JSON only from "application/json" as written: a 500 otherwise.
    def put(content_type: str) -> requests.Response:
        return requests.put(
            org.client.base_url + org.config_path,
            data=b'{"provider": "imap", "preset": "custom"}',
            headers={"Authorization": f"Bearer {org.client.token}", "Content-Type": content_type},
            timeout=10,
        )

    answer, as_expected = put(content_type), put("application/json")
    assert as_expected.status_code == 422, as_expected.text  # the servers are missing
    assert (answer.status_code, answer.json()) == (422, as_expected.json())


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("/bridge/orgs/{org}/email-history?since=yesterday", "since"),
        ("/api/engine/oauth/callback?state=a&state=b&code=c", "state"),
    ],
)
def test_a_parameters_error_names_the_parameter_alone(org: Org, query: str, field: str) -> None:
    # pydantic adds the member of the parameter's union that failed: "since.function-after[...]".
    response = org.client.get(query.format(org=org.org_id))
    assert (response.status, response.error.get("field")) == (422, field), response.text


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


# ---- contract fuzzing --------------------------------------------------------------------
# schemathesis generates requests from the checked-in document, sends them to the local run
# and checks each response against the document. Every phase but the stateful one: the
# document's examples, coverage (boundary values, undeclared methods), then fuzzing.

# At least this many generated requests per operation (fewer where the inputs run out first).
EXAMPLES = 200
# Derandomized as well: the same requests on every run, in CI as on a laptop.
SEED = 20261125
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
)
# Real ids that path parameters are steered to, so that requests reach past 404; all in the
# fuzzing organization, registered and set up by `fuzz_session`.
ORG, CLIENT_ORG = "fuzz-org", "fuzz-client-org"
AGENTS = ["fuzz-agent", "fuzz-client-agent"]  # any fuzzed request may change these
# Connected by `fuzz_session` and never changed by a fuzzed request (only reads, tests and
# authorizations reach them): tests connect to the loopback servers and nothing else.
TESTED_AGENT, OAUTH_AGENT = "fuzz-imap-agent", "fuzz-google-agent"
GOOGLE_APP = "fuzz.apps.googleusercontent.com"

# The checked-in document: the contract as its consumers read it.
contract = schemathesis.openapi.from_path(
    OPENAPI_PATH,
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": True,
                "database": "none",
                # Requests carry the fuzzing session's token, not a generated one (but see
                # `operations`).
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {"enabled": False, **{check: {"enabled": True} for check in CHECKS}},
            "operations": [
                # Its only input is the token: fuzzing it there reaches EXAMPLES requests,
                # and API Gateway's own 401s are checked against the document.
                {
                    "include-path": "/bridge/email-presets",
                    "generation": {"with-security-parameters": True},
                }
            ],
        }
    ),
)


def known_ids(operation: schemathesis.APIOperation) -> dict[str, list[str]]:
    """Real ids for the operation's path parameters."""
    connected = [TESTED_AGENT, OAUTH_AGENT]
    if operation.path.endswith("/email-config/test"):
        agents = connected
    elif operation.method.upper() == "GET" or operation.path.endswith("authorize"):
        agents = [*AGENTS, *connected]
    else:
        agents = AGENTS
    return {"agentId": agents, "orgId": [ORG], "clientOrgId": [CLIENT_ORG]}


@contract.hook("flatmap_path_parameters")
def steer(context: schemathesis.HookContext, path_parameters: dict[str, Any]) -> Any:
    """Fuzzing: each path parameter is a real id or the generated value."""
    assert context.operation is not None
    known = known_ids(context.operation)
    return st.fixed_dictionaries(
        {
            name: st.sampled_from([value, *known.get(name, [])])
            for name, value in (path_parameters or {}).items()
        }
    )


@contract.hook("before_add_examples")
def steer_examples(context: schemathesis.HookContext, examples: list[schemathesis.Case]) -> None:
    """The examples phase, which `steer` does not reach: each example also with real ids."""
    assert context.operation is not None
    known = known_ids(context.operation)
    for example in list(examples):
        for index in range(max(len(ids) for ids in known.values())):
            steered = example.derive()
            for name in steered.path_parameters.keys() & known.keys():
                steered.path_parameters[name] = known[name][index % len(known[name])]
            if steered.path_parameters != example.path_parameters:
                examples.append(steered)


@dataclasses.dataclass
class FuzzSession:
    url: str
    headers: dict[str, str]
    figures: FuzzFigures


def _register(agent_id: str, client_org_id: str | None = None) -> None:
    register_agent(ORG, client_org_id=client_org_id, agent_id=agent_id, name="Fuzzed")


def _connect_google(client: ApiClient, url: str, google: FakeGoogle) -> None:
    """The OAuth agent, signed in at the fake Google as the callback would have it."""
    google.register_app(GOOGLE_APP, "fuzz-secret", [url + CALLBACK])
    google.add_account("fuzz@workspace.example", inbox_total=3, inbox_unread=1)
    path = f"/bridge/agents/{OAUTH_AGENT}/email-config"
    saved = client.put(
        path, {"provider": "google", "client_id": GOOGLE_APP, "client_secret": "fuzz-secret"}
    )
    assert saved.status == 200, saved.text
    started = client.post(f"{path}/authorize", {"origin": url})
    assert started.status == 200, started.text
    signed_in = requests.get(started.json()["authorization_url"], allow_redirects=False, timeout=10)
    page = ApiClient(url, None).get(signed_in.headers["Location"].removeprefix(url))
    assert '"status": "connected"' in page.text, page.text


@pytest.fixture(scope="module")
def fuzz_session(
    request: pytest.FixtureRequest,
    local_api: Any,
    dovecot: DovecotServer,
    smtp: SmtpServer,
    google: FakeGoogle,
) -> Iterator[FuzzSession]:
    """The known ids registered and connected, an admin's token of their organization, and
    the figures."""
    # An admin whose token also carries the agent runtime's and the platform's scopes, so
    # that fuzzed requests get past API Gateway to every function.
    token = local_api.issuer.mint(
        sub="fuzzer", org_id=ORG, scopes=("mail.read", "mail.send", "agents.manage")
    )
    client = ApiClient(local_api.url, token)
    shared_app = {"client_id": GOOGLE_APP, "client_secret": "fuzz-secret"}
    for path, body in [
        (f"/bridge/client-orgs/{CLIENT_ORG}/email-policy", {"name": "Acme"}),
        (f"/bridge/orgs/{ORG}/email-oauth-apps/google", shared_app),
        (f"/bridge/client-orgs/{CLIENT_ORG}/email-oauth-apps/google", shared_app),
    ]:
        saved = client.put(path, body)
        assert saved.status == 200, saved.text
    _register(AGENTS[0])
    _register(AGENTS[1], client_org_id=CLIENT_ORG)
    _register(TESTED_AGENT)
    _register(OAUTH_AGENT)
    saved = client.put(
        f"/bridge/agents/{TESTED_AGENT}/email-config",
        {
            "provider": "imap",
            "email": MAILBOX,
            "password": MAILBOX_PASSWORD,
            "imap": {"host": "localhost", "port": dovecot.imaps_port, "security": "tls"},
            "smtp": {"host": "localhost", "port": smtp.starttls_port, "security": "starttls"},
        },
    )
    assert saved.status == 200, saved.text
    _connect_google(client, local_api.url, google)
    figures = FuzzFigures()
    started = time.monotonic()
    # The Email tab's requests come from its origin, which may receive OAuth results.
    headers = {"Authorization": f"Bearer {token}", "Origin": local_api.url}
    yield FuzzSession(local_api.url, headers, figures)
    figures.seconds = time.monotonic() - started
    REPORTS["Contract fuzzing (schemathesis)"] = figures.summary()


@contract.parametrize()
def test_the_api_keeps_its_contract(case: schemathesis.Case, fuzz_session: FuzzSession) -> None:
    operation, figures = case.operation.label, fuzz_session.figures
    response = case.call(base_url=fuzz_session.url, headers=fuzz_session.headers)
    figures.answered(operation, response.status_code)
    try:
        case.validate_response(response, headers=fuzz_session.headers)
    except (AssertionError, BaseExceptionGroup):  # a check failed
        figures.failures[operation] += 1
        raise
