"""The handlers' shared entry point: what an unexpected error leaves in the logs (on a route
of the test's own), and the caller's token checked before anything else."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mailbridge_tools.localapi import LambdaContext
from mailbridge_tools.localapi.gateway import PATH_PARAMETER
from support import ApiClient

EVENT = Path(__file__).parent.parent / "events" / "list_presets.json"


def test_an_unexpected_error_logs_where_it_happened_not_what_it_said(
    local_api: Any, logs: list[str]
) -> None:
    """An exception's text can quote anything, a secret included."""
    from mailbridge.http.app import create_app, lambda_handler

    app = create_app()

    @app.get("/bridge/email-presets")
    def failing() -> None:
        raise RuntimeError("LOGIN refused for password app-pass-canary-5f1e")

    event = json.loads(EVENT.read_text())
    context = LambdaContext("Test", 128, "arn:aws:lambda:::function:Test", "request-1", 0.0)
    context.deadline = time.monotonic() + 10
    answer = lambda_handler(app)(event, context)

    assert answer["statusCode"] == 500
    assert json.loads(answer["body"])["error"]["code"] == "internal_error"
    logged = "\n".join(logs)
    assert "RuntimeError" in logged and "test_http.py" in logged  # what and where
    assert "app-pass-canary-5f1e" not in logged


def test_answers_are_utf8_and_survive_a_lone_surrogate(local_api: Any) -> None:
    """Text in UTF-8 (a character costs its bytes, not a 6-byte escape, within Lambda's
    6 MB); a lone surrogate, which no UTF-8 can carry, becomes "?" instead of an answer
    that cannot be sent."""
    from mailbridge.http.app import create_app, lambda_handler

    app = create_app()

    @app.get("/bridge/email-presets")
    def text() -> dict[str, str]:
        return {"subject": "Grüße \ud800 日本"}

    event = json.loads(EVENT.read_text())
    context = LambdaContext("Test", 128, "arn:aws:lambda:::function:Test", "request-1", 0.0)
    context.deadline = time.monotonic() + 10
    answer = lambda_handler(app)(event, context)

    assert answer["statusCode"] == 200
    assert answer["body"] == '{"subject":"Grüße ? 日本"}'


def test_error_bodies_have_the_contracts_shape() -> None:
    """`error_body` writes by hand the shape `http.models.ErrorResponse` gives the OpenAPI
    document: the unset optional fields left out, several problems at once under `errors`
    (the first is the error itself)."""
    from mailbridge.core.errors import ErrorCode, InvalidField, InvalidFields, MailbridgeError
    from mailbridge.http.errors import error_body
    from mailbridge.http.models import ErrorResponse

    hinted = MailbridgeError(ErrorCode.NOT_CONFIGURED, "No connection.", hint="Connect one.")
    several = InvalidFields(
        [InvalidField("imap.port", "imap.port is too large."), InvalidField("email", "Nope.")]
    )
    for error in (hinted, several):
        body = error_body(error)
        assert json.loads(body) == ErrorResponse.model_validate_json(body).model_dump(
            exclude_none=True
        )
    assert json.loads(error_body(hinted)) == {
        "error": {"code": "not_configured", "message": "No connection.", "hint": "Connect one."}
    }
    detail = json.loads(error_body(several))["error"]
    assert (detail["field"], [each["field"] for each in detail["errors"]]) == (
        "imap.port",
        ["imap.port", "email"],
    )
    # A lone surrogate, which no UTF-8 can carry, becomes "?" rather than an error in the
    # error handler.
    assert json.loads(error_body(InvalidField("\ud800", "Bad.")))["error"]["field"] == "?"


def test_a_token_naming_no_organization_is_refused_on_every_route_before_its_body(
    local_api: Any,
) -> None:
    """Signed, unexpired, with every scope, but without the organization claim: 401 on
    every route behind the authorizer, whatever the body (one that is not even JSON here,
    which a token naming its organization gets 400 for on the routes that save)."""
    scopes = ("mail.read", "mail.send", "agents.manage")
    without = local_api.issuer.mint(sub="someone", org_id="x", org_claim="tenant", scopes=scopes)
    with_org = local_api.issuer.mint(sub="someone", org_id="org-http", scopes=scopes)
    statuses: dict[str, tuple[int, str]] = {}
    read: dict[str, int] = {}  # with the organization's token, by route
    for route in local_api.routes:
        if not route.authorized:
            continue
        path = PATH_PARAMETER.sub(
            lambda name: "google" if name[1] == "provider" else "x", route.path
        )
        raw = b"{not json" if route.method in ("PUT", "POST", "PATCH") else None
        answer = ApiClient(local_api.url, without).request(route.method, path, raw=raw)
        statuses[route.route_key] = (answer.status, answer.error["code"])
        if raw is not None:
            answer = ApiClient(local_api.url, with_org).request(route.method, path, raw=raw)
            read[route.route_key] = answer.status
    assert set(statuses.values()) == {(401, "unauthorized")}, statuses
    assert len(statuses) == sum(route.authorized for route in local_api.routes) > 20
    # Each route that saves something reads its body, and said so with a token naming its
    # organization.
    assert {read[key] for key in read if key.startswith("PUT ")} == {400}, read


def test_no_answer_of_any_route_may_be_stored(local_api: Any) -> None:
    """Every route of the template, with a token of every scope: whatever it answers (a
    view, a refusal, an error page, the public routes' own), a browser or a proxy must not
    keep it. A new route cannot forget it: the handler adds it to every answer."""
    scopes = ("mail.read", "mail.send", "agents.manage")
    token = local_api.issuer.mint(sub="someone", org_id="org-cache", scopes=scopes)
    client = ApiClient(local_api.url, token)
    answers: dict[str, tuple[int, str | None]] = {}
    for route in local_api.routes:
        path = PATH_PARAMETER.sub(
            lambda name: "google" if name[1] == "provider" else "x", route.path
        )
        body = {} if route.method in ("PUT", "POST", "PATCH") else None
        answer = client.request(route.method, path, body)
        answers[route.route_key] = (answer.status, answer.headers.get("Cache-Control"))
    assert {header for _, header in answers.values()} == {"no-store"}, answers
    assert len(answers) == len(local_api.routes) > 20
    # A success too.
    presets = client.get("/bridge/email-presets")
    assert (presets.status, presets.headers["Cache-Control"]) == (200, "no-store")
