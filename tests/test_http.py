"""The handlers' shared entry point, on a route of the test's own: what an unexpected error
leaves in the logs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from mailbridge_tools.localapi import LambdaContext

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
