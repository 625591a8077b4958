"""Saving, reading and removing an agent's IMAP/SMTP configuration through the HTTP API."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from support import MAILBOX, MAILBOX_PASSWORD, ApiClient, Org

Body = Callable[..., dict[str, Any]]


def _table_name() -> str:
    return os.environ["TABLE_NAME"]


def test_every_preset_is_a_valid_preset() -> None:
    """The presets are constructed without validation (their schemas would be built at every
    cold start): here they are validated, as a request's would be."""
    from mailbridge.connections.presets import PRESETS
    from mailbridge.connections.request_models import Preset

    for preset_id, preset in PRESETS.items():
        assert Preset.model_validate(preset.model_dump()) == preset, preset_id
        assert preset.id == preset_id


def test_presets_list_the_product_page_servers(org: Org) -> None:
    response = org.client.get("/bridge/email-presets")
    assert response.status == 200
    presets = {preset["id"]: preset for preset in response.json()["presets"]}
    assert list(presets) == ["microsoft365", "gmail", "yahoo", "zoho", "fastmail", "custom"]
    assert presets["gmail"]["imap"] == {"host": "imap.gmail.com", "port": 993, "security": "tls"}
    assert presets["gmail"]["smtp"] == {
        "host": "smtp.gmail.com",
        "port": 587,
        "security": "starttls",
    }
    assert presets["yahoo"]["smtp"] == {
        "host": "smtp.mail.yahoo.com",
        "port": 465,
        "security": "tls",
    }
    assert "Microsoft OAuth" in presets["microsoft365"]["note"]
    assert "app password" in presets["gmail"]["note"]
    assert presets["custom"]["imap"] is None


def test_every_bridge_route_needs_a_token(local_api: Any, org: Org) -> None:
    anonymous = ApiClient(local_api.url, token=None)
    forged = ApiClient(local_api.url, token=org.client.token + "x")  # type: ignore[operator]
    for client in (anonymous, forged):
        assert client.get("/bridge/email-presets").status == 401
        assert client.get(org.config_path).status == 401
        assert client.put(org.config_path, {}).status == 401
        assert client.delete(org.config_path).status == 401
        assert client.post(org.config_path + "/test").status == 401


def test_a_token_without_an_organization_is_refused(local_api: Any, org: Org) -> None:
    without = local_api.issuer.mint(sub="someone", org_id="", org_claim="tenant")
    # Organization ids go into table keys: one shaped like a key must not reach them.
    shaped_like_a_key = local_api.issuer.mint(sub="someone", org_id=f"{org.org_id}#CLIENT_ORG#x")
    for token in (without, shaped_like_a_key):
        response = ApiClient(local_api.url, token).get(org.config_path)
        assert response.status == 401
        assert response.error["code"] == "unauthorized"


def test_operators_register_agents_from_the_command_line(local_api: Any, org: Org) -> None:
    def register(agent_id: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "mailbridge_tools.register_agent"]
        command += ["--table", local_api.table_name, "--agent-id", agent_id]
        command += ["--org-id", org.org_id, "--name", "Registered agent"]
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    agent_id = f"registered-{uuid.uuid4().hex[:8]}"
    assert register(agent_id).returncode == 0
    response = org.client.get(f"/bridge/agents/{agent_id}/email-config")
    assert (response.status, response.json()["status"]) == (200, "not_connected")
    assert register("a:b").returncode != 0  # not allowed in a Secrets Manager name


def test_new_agent_is_not_connected(org: Org) -> None:
    response = org.client.get(org.config_path)
    assert response.status == 200
    view = response.json()
    assert set(view.pop("oauth_setup")) == {"microsoft", "google"}  # see below
    assert view == {
        "agent_id": org.agent_id,
        "status": "not_connected",
        "reason": "not_configured",
        "checked_at": None,
        "config": None,
        "last_error": None,
        "last_test": None,
        "version": None,
        "updated_at": None,
        "shared_apps": [],
        "client_org": None,
        "delivery": None,
        "warnings": [],
    }


def test_save_with_a_preset_fills_servers_and_explicit_fields_override(org: Org) -> None:
    response = org.client.put(
        org.config_path,
        {
            "provider": "imap",
            "preset": "yahoo",
            "email": "Agent@Example.com",
            "password": "secret-one",
            "smtp": {"port": 587, "security": "starttls"},
        },
    )
    assert response.status == 200, response.text
    saved = response.json()
    assert saved["status"] == "configured"
    config = saved["config"]
    assert config["preset"] == "yahoo"
    assert config["username"] == config["email"]
    assert config["imap"] == {"host": "imap.mail.yahoo.com", "port": 993, "security": "tls"}
    assert config["smtp"] == {"host": "smtp.mail.yahoo.com", "port": 587, "security": "starttls"}
    assert config["password"]["set"] is True
    assert "secret-one" not in response.text
    assert org.client.get(org.config_path).json() == saved


def test_the_password_lives_only_in_secrets_manager(org: Org, imap_body: Body) -> None:
    org.client.put(org.config_path, imap_body(password="only-in-secrets-manager"))
    table = boto3.client("dynamodb").scan(TableName=_table_name())
    assert "only-in-secrets-manager" not in str(table["Items"])
    secret = boto3.client("secretsmanager").get_secret_value(
        SecretId=f"mailbridge/agents/{org.agent_id}/email"
    )
    assert "only-in-secrets-manager" in secret["SecretString"]


def test_blank_password_keeps_the_stored_one(org: Org, imap_body: Body) -> None:
    first = org.client.put(org.config_path, imap_body()).json()
    assert org.client.post(org.config_path + "/test").json()["ok"] is True

    for blank in ({"password": ""}, {}):
        body = imap_body(password=None) | blank
        resaved = org.client.put(org.config_path, body).json()
        # Nothing changed: still connected, and the stored password still logs in.
        assert resaved["status"] == "connected"
        assert resaved["config"]["password"] == first["config"]["password"]
        assert org.client.post(org.config_path + "/test").json()["ok"] is True


def test_a_stored_password_goes_only_where_it_was_saved_for(org: Org, imap_body: Body) -> None:
    """Whoever may edit the settings must not be able to point them at a server of theirs,
    leave the password blank, click Test and collect it."""
    assert org.client.put(org.config_path, imap_body()).status == 200
    moved_imap, moved_smtp = imap_body(password=None), imap_body(password=None)
    moved_imap["imap"]["host"] = "collector.example"
    moved_smtp["smtp"]["host"] = "collector.example"
    renamed = imap_body(password=None, username="someone-else@example.com")
    for body in (moved_imap, moved_smtp, renamed):
        response = org.client.put(org.config_path, body)
        assert (response.status, response.error["field"]) == (422, "password"), response.text
    # Another port or TLS mode on the same servers keeps the password.
    same_servers = imap_body(password=None, imap_security="starttls", smtp_security="tls")
    resaved = org.client.put(org.config_path, same_servers).json()
    assert resaved["status"] == "configured"
    assert org.client.post(org.config_path + "/test").json()["ok"] is True


def test_a_new_connection_needs_a_password(org: Org, imap_body: Body) -> None:
    response = org.client.put(org.config_path, imap_body(password=""))
    assert response.status == 422
    assert response.error["field"] == "password"


def test_status_follows_saves_tests_and_disconnects(org: Org, imap_body: Body) -> None:
    path = org.config_path
    assert org.client.put(path, imap_body()).json()["status"] == "configured"

    tested = org.client.post(path + "/test").json()
    assert tested["status"] == "connected"
    assert org.client.get(path).json()["last_test"]["inbox"] == {"total": 12, "unread": 5}

    # Re-saving the same settings keeps `connected`; another server or password drops back.
    assert org.client.put(path, imap_body(password=None)).json()["status"] == "connected"
    other_port = org.client.put(path, imap_body(password=None, imap_security="starttls"))
    assert other_port.json()["status"] == "configured"
    assert org.client.post(path + "/test").json()["status"] == "connected"
    changed = org.client.put(path, imap_body(password="a-wrong-password")).json()
    assert changed["status"] == "configured"
    assert changed["last_test"] is None

    failed = org.client.post(path + "/test").json()
    assert failed["status"] == "error"
    current = org.client.get(path).json()
    assert current["status"] == "error"
    assert current["last_error"]["code"] == "auth_failed"
    assert current["last_error"]["hint"]
    assert current["last_error"]["at"]

    assert org.client.put(path, imap_body()).json()["status"] == "configured"
    assert org.client.post(path + "/test").json()["status"] == "connected"
    assert org.client.get(path).json()["last_error"] is None

    deleted = org.client.delete(path)
    assert deleted.status == 200
    assert deleted.json()["status"] == "not_connected"
    assert org.client.get(path).json()["config"] is None


def test_each_status_says_why_and_since_when(org: Org, imap_body: Body) -> None:
    path = org.config_path
    saved = org.client.put(path, imap_body()).json()
    assert (saved["status"], saved["reason"], saved["checked_at"]) == (
        "configured",
        "untested",
        None,
    )

    tested = org.client.post(path + "/test").json()
    shown = org.client.get(path).json()
    assert (shown["status"], shown["reason"]) == ("connected", "verified")
    assert shown["checked_at"] == tested["tested_at"]

    org.client.put(path, imap_body(password="a-wrong-password"))
    failed = org.client.post(path + "/test").json()
    shown = org.client.get(path).json()
    assert (shown["status"], shown["reason"]) == ("error", "auth_failed")
    assert shown["checked_at"] == failed["tested_at"] == shown["last_error"]["at"]


def test_disconnect_removes_the_secret(org: Org, imap_body: Body) -> None:
    org.client.put(org.config_path, imap_body())
    assert org.client.delete(org.config_path).status == 200
    secrets = boto3.client("secretsmanager")
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.get_secret_value(SecretId=f"mailbridge/agents/{org.agent_id}/email")
    # Reconnecting right away reuses the agent's secret name.
    assert org.client.put(org.config_path, imap_body()).status == 200
    assert org.client.post(org.config_path + "/test").json()["ok"] is True


def test_testing_without_a_config_is_a_conflict(org: Org) -> None:
    response = org.client.post(org.config_path + "/test")
    assert response.status == 409
    assert response.error["code"] == "not_configured"


def test_another_organization_sees_nothing_and_changes_nothing(
    org: Org, other_org: Org, imap_body: Body
) -> None:
    saved = org.client.put(org.config_path, imap_body()).json()
    intruder, path = other_org.client, org.config_path

    for response in (
        intruder.get(path),
        intruder.put(path, imap_body(password="hijack")),
        intruder.post(path + "/test"),
        intruder.delete(path),
    ):
        assert response.status == 404
        assert response.error["code"] == "agent_not_found"
        assert MAILBOX not in response.text

    assert org.client.get(path).json() == saved


def test_unknown_agent_is_not_found(org: Org) -> None:
    response = org.client.get("/bridge/agents/no-such-agent/email-config")
    assert response.status == 404
    assert response.error["code"] == "agent_not_found"


@pytest.mark.parametrize(
    ("change", "status", "code", "field"),
    [
        ({"imap": {"port": 70000}}, 422, "invalid_field", "imap.port"),
        ({"imap": {"port": 0}}, 422, "invalid_field", "imap.port"),
        ({"imap": {"port": "abc"}}, 422, "invalid_field", "imap.port"),
        ({"imap": {"host": "mail .example.com"}}, 422, "invalid_field", "imap.host"),
        ({"smtp": {"host": "smtp.example.com\r\nRCPT"}}, 422, "invalid_field", "smtp.host"),
        ({"smtp": {"security": "none"}}, 422, "invalid_field", "smtp.security"),
        ({"email": "not-an-address"}, 422, "invalid_field", "email"),
        ({"email": 42}, 422, "invalid_field", "email"),
        ({"username": "agent\x00"}, 422, "invalid_field", "username"),
        ({"password": "line\nbreak"}, 422, "invalid_field", "password"),
        ({"password": "x" * 1025}, 422, "invalid_field", "password"),
        # One line of printable characters (beyond ASCII too: AUTH PLAIN carries UTF-8).
        ({"password": "pässwörd\u2028"}, 422, "invalid_field", "password"),
        ({"username": "agënt\t@example.com"}, 422, "invalid_field", "username"),
        ({"preset": "hotmail"}, 422, "invalid_field", "preset"),
        ({"provider": "pop3"}, 422, "invalid_field", "provider"),
        ({"imap_host": "x"}, 422, "unknown_field", "imap_host"),
        ({"imap": {"host": "h.example.com", "tls": True}}, 422, "unknown_field", "imap.tls"),
        ({"imap": None}, 422, "invalid_field", "imap"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    org: Org, change: dict[str, Any], status: int, code: str, field: str
) -> None:
    body = {
        "provider": "imap",
        "preset": "custom",
        "email": "agent@example.com",
        "password": "secret",
        "imap": {"host": "imap.example.com", "port": 993, "security": "tls"},
        "smtp": {"host": "smtp.example.com", "port": 465, "security": "tls"},
    }
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(body.get(key), dict):
            body[key] = body[key] | value  # type: ignore[operator]
        else:
            body[key] = value
    response = org.client.put(org.config_path, body)
    assert response.status == status, response.text
    assert response.error["code"] == code
    assert response.error["field"] == field
    assert "Traceback" not in response.text
    assert "secret" not in response.text


def test_every_broken_rule_is_named_at_once(org: Org) -> None:
    """A form marks each field at fault in one round trip: the first problem is the error,
    and `errors` lists each, one per field, in plain words."""
    body = {
        "provider": "imap",
        "email": "not-an-address",
        "password": "s3cret-value",
        "imap": {"host": "mail .example.com", "port": "abc", "security": "tls"},
        "smtp_host": "x",
    }
    response = org.client.put(org.config_path, body)
    assert response.status == 422, response.text
    error = response.error
    problems = {problem["field"]: problem["code"] for problem in error["errors"]}
    assert problems == {
        "email": "invalid_field",
        "imap.host": "invalid_field",
        "imap.port": "invalid_field",
        "smtp_host": "unknown_field",
    }
    assert (error["code"], error["field"]) == (
        error["errors"][0]["code"],
        error["errors"][0]["field"],
    )
    email = next(problem for problem in error["errors"] if problem["field"] == "email")
    assert email["message"] == "email: must be an email address like name@example.com."
    host = next(problem for problem in error["errors"] if problem["field"] == "imap.host")
    assert "pattern" not in host["message"] and "^" not in host["message"]
    assert "s3cret-value" not in response.text
    # One problem: the error alone, as before.
    one = {"provider": "imap", "email": "a@example.com", "smtp_host": "x"}
    single = org.client.put(org.config_path, one).error
    assert (single["code"], single["field"], "errors" in single) == (
        "unknown_field",
        "smtp_host",
        False,
    )


def test_the_services_own_rules_are_named_at_once_too(org: Org) -> None:
    """What only the service can say (a custom preset's servers, a secret a new connection
    needs) comes in the same list."""
    body = {
        "provider": "imap",
        "email": "agent@example.com",
        "imap": {"port": 993, "security": "tls"},
        "smtp": {"host": "smtp.example.com"},
    }
    error = org.client.put(org.config_path, body).error
    assert [(problem["field"], problem["code"]) for problem in error["errors"]] == [
        ("imap.host", "invalid_field"),
        ("smtp.port", "invalid_field"),
        ("smtp.security", "invalid_field"),
        ("password", "invalid_field"),
    ]
    hints = [bool(problem.get("hint")) for problem in error["errors"]]
    assert hints == [True, True, True, False]  # nothing stored: no "stored secret" to explain


def test_a_refused_host_and_a_wrong_port_are_said_together_whatever_their_order(
    org: Org,
) -> None:
    """The metadata address (refused even where private networks are allowed) and a port
    that is not a mail port: both named, and the status is the form's, in either order."""
    metadata = {"host": "169.254.169.254", "port": 993, "security": "tls"}
    ssh = {"host": "smtp.example.com", "port": 22, "security": "tls"}
    cases = [
        (metadata, ssh, {("imap.host", "address_not_allowed"), ("smtp.port", "invalid_field")}),
        (
            ssh | {"host": "imap.example.com"},
            metadata,
            {("imap.port", "invalid_field"), ("smtp.host", "address_not_allowed")},
        ),
    ]
    for imap, smtp, expected in cases:
        body = {"provider": "imap", "email": "a@example.com", "password": "p", "imap": imap}
        response = org.client.put(org.config_path, body | {"smtp": smtp})
        assert response.status == 422, response.text
        assert {(p["field"], p["code"]) for p in response.error["errors"]} == expected
    both = {"host": "169.254.169.254", "port": 22, "security": "tls"}
    response = org.client.put(
        org.config_path,
        {"provider": "imap", "email": "a@example.com", "password": "p", "imap": both}
        | {"smtp": ssh | {"port": 465}},
    )
    assert {(p["field"], p["code"]) for p in response.error["errors"]} == {
        ("imap.port", "invalid_field"),
        ("imap.host", "address_not_allowed"),
    }


def test_the_view_says_what_an_oauth_app_needs_before_anything_is_saved(
    org: Org, local_api: Any
) -> None:
    from mailbridge.oauth.scopes import requested_scopes

    setup = org.client.get(org.config_path).json()["oauth_setup"]
    callback = local_api.url + "/api/engine/oauth/callback"
    assert setup == {
        provider: {"redirect_uri": callback, "scopes": requested_scopes(provider)}
        for provider in ("microsoft", "google")
    }


def test_custom_preset_needs_every_server_field(org: Org) -> None:
    response = org.client.put(
        org.config_path,
        {
            "provider": "imap",
            "email": "agent@example.com",
            "password": "secret",
            "imap": {"port": 993, "security": "tls"},
            "smtp": {"host": "smtp.example.com", "port": 465, "security": "tls"},
        },
    )
    assert response.status == 422
    assert response.error["field"] == "imap.host"
    assert response.error["hint"]


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"", 422, "missing_field"),
        (b"[]", 422, "invalid_field"),
        (b'{"provider": "imap"', 400, "invalid_json"),
        (b'{"password": "' + b"x" * (70 * 1024) + b'"}', 413, "payload_too_large"),
        (b"[" * 20_000 + b"]" * 20_000, 400, "invalid_json"),  # past the recursion limit
        (b'{"provider": "imap", "email": "\xff@example.com"}', 400, "invalid_json"),
    ],
)
def test_malformed_bodies_are_refused(org: Org, raw: bytes, status: int, code: str) -> None:
    response = org.client.put(org.config_path, raw=raw)
    assert response.status == status, response.text
    assert response.error["code"] == code


def test_a_malformed_agent_id_is_refused(org: Org) -> None:
    response = org.client.get("/bridge/agents/bad%20id!/email-config")
    assert response.status == 422
    assert response.error == {
        "code": "invalid_field",
        "message": response.error["message"],
        "field": "agentId",
    }
    # A control character does not even match the route: 404 in the same error shape.
    response = org.client.get("/bridge/agents/bad%00id/email-config")
    assert response.status == 404
    assert response.error["code"] == "not_found"


def test_routes_outside_the_template_are_not_found(org: Org) -> None:
    response = org.client.get("/bridge/agents")
    assert response.status == 404


def test_password_never_reaches_a_response_or_a_log_line(
    org: Org, imap_body: Body, logs: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    responses = [
        org.client.put(org.config_path, imap_body()),
        org.client.post(org.config_path + "/test"),
        org.client.get(org.config_path),
        org.client.put(org.config_path, imap_body(password=MAILBOX_PASSWORD + "-wrong")),
        org.client.post(org.config_path + "/test"),
        org.client.put(org.config_path, imap_body(password="bad\nvalue" + MAILBOX_PASSWORD)),
        org.client.delete(org.config_path),
    ]
    captured = capfd.readouterr()
    for response in responses:
        assert MAILBOX_PASSWORD not in response.text
        assert MAILBOX_PASSWORD not in str(response.headers)
    assert MAILBOX_PASSWORD not in captured.out + captured.err
    assert len(logs) >= 6  # the requests were logged...
    assert not [line for line in logs if MAILBOX_PASSWORD in line]  # ...without the password


def test_the_logger_redacts_secrets_passed_by_name(logs: list[str]) -> None:
    from mailbridge.core.observability import logger

    logger.info("careless", extra={"password": MAILBOX_PASSWORD, "client_secret": "s3cr3t"})
    logger.warning("careless", extra={"code": "c0d3", "error_code": "auth_failed"})
    logged = "\n".join(logs)
    assert logged.count('"[redacted]"') == 3
    assert MAILBOX_PASSWORD not in logged and "s3cr3t" not in logged and "c0d3" not in logged
    assert '"error_code":"auth_failed"' in logged  # what operators search for stays readable


def test_a_password_beyond_ascii_logs_in_by_auth_plain(
    org: Org, imap_body: Body, dovecot: Any, smtp: Any
) -> None:
    """Passphrases and non-English keyboards: LOGIN and smtplib's AUTH carry ASCII only,
    so such a password goes by AUTHENTICATE PLAIN and AUTH PLAIN in UTF-8 (RFC 4616), to the
    real Dovecot and SMTP server."""
    from conftest import MAILBOX_PASSWORDS

    # (Dovecot takes only ASCII user names by default: the password is the case.)
    login = f"juergen-{uuid.uuid4().hex[:6]}"
    password = f"Grüße aus Köln, пароль 密码 {uuid.uuid4().hex[:6]}"
    MAILBOX_PASSWORDS.add(password)  # a canary like the others
    for server in (dovecot, smtp):
        server.set_password(login, password)
    body = imap_body(password=password, username=login)
    assert org.client.put(org.config_path, body).status == 200
    result = org.client.post(org.config_path + "/test").json()
    assert result["ok"] is True, result
    assert (result["login"], result["inbox"]) == (login, {"total": 0, "unread": 0})
    assert {check["name"]: check["ok"] for check in result["checks"]} == {
        "imap": True,
        "smtp": True,
    }
    # The wrong one is still refused, as a wrong ASCII password is.
    wrong = imap_body(password=password + "!", username=login)
    assert org.client.put(org.config_path, wrong).status == 200
    refused = org.client.post(org.config_path + "/test").json()
    assert refused["error"]["code"] == "auth_failed"


def test_a_server_without_auth_plain_is_told_apart_from_a_wrong_password(
    org: Org, imap_body: Body, dovecot: Any, server_cert: tuple[Any, Any]
) -> None:
    """An SMTP server that offers LOGIN only cannot take a password beyond ASCII: said so,
    with that reason, and the password is never sent to it; the same password on the IMAP
    server that offers PLAIN still works."""
    from conftest import MAILBOX_PASSWORDS
    from mailbridge_tools.sandbox import SmtpServer

    login, password = f"kenji-{uuid.uuid4().hex[:6]}", f"パスワード\u3000{uuid.uuid4().hex[:6]}"
    MAILBOX_PASSWORDS.add(password)
    dovecot.set_password(login, password)
    with SmtpServer(*server_cert, {login: password}, offer_plain=False) as login_only:
        body = imap_body(password=password, username=login)
        body["smtp"]["port"] = login_only.starttls_port
        assert org.client.put(org.config_path, body).status == 200
        result = org.client.post(org.config_path + "/test").json()
        attempts = login_only.auth_attempts
    checks = {check["name"]: check for check in result["checks"]}
    assert checks["imap"]["ok"] is True
    refusal = checks["smtp"]["error"]
    assert refusal["code"] == "auth_unavailable"
    assert "beyond ASCII" in refusal["message"] and "AUTH PLAIN" in refusal["hint"]
    assert attempts == 0
