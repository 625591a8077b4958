"""Deployment settings are validated once, as a handler loads: a wrong value stops the instance
at start with a message naming the variable, instead of failing some later request."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated, get_origin

import pytest
from mailbridge.core.settings import MAIL_PORTS, Settings, SettingsError, load_settings
from mailbridge_bench.imports import handler_targets, lambda_environment
from mailbridge_tools.template import load_template

TEMPLATE = load_template()


def test_the_defaults_make_valid_settings() -> None:
    settings = load_settings({"TABLE_NAME": "table"})
    assert settings.mail_allowed_ports == MAIL_PORTS
    assert settings.allowed_ui_origins == frozenset()
    assert settings.oauth_redirect_uri == "/api/engine/oauth/callback"


def test_lists_and_ranges_are_read_as_the_template_documents_them() -> None:
    settings = load_settings(
        {
            "TABLE_NAME": "table",
            "MAIL_EXTRA_PORTS": "1143, 2000 - 2002",
            "ALLOWED_UI_ORIGINS": "https://app.example/,https://admin.example",
            "PUBLIC_BASE_URL": "https://agents.example/",
            "MAIL_ALLOW_PRIVATE_NETWORKS": "true",
            "MAIL_EXTRA_CA_FILE": "",  # a parameter left blank is not set
        }
    )
    assert settings.mail_allowed_ports == MAIL_PORTS | {1143, 2000, 2001, 2002}
    assert settings.allowed_ui_origins == {"https://app.example", "https://admin.example"}
    assert settings.oauth_redirect_uri == "https://agents.example/api/engine/oauth/callback"
    assert settings.mail_allow_private_networks is True
    assert settings.mail_extra_ca_file is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MAIL_TIMEOUT_SECONDS", "ten"),
        ("MAIL_TIMEOUT_SECONDS", "0"),
        ("MAIL_EXTRA_PORTS", "1143,imap"),
        ("MAIL_EXTRA_PORTS", "70000"),
        ("MAIL_ALLOW_PRIVATE_NETWORKS", "sometimes"),
        ("MAIL_ALLOW_PRIVATE_NETWORKS", "yes"),
        ("TESTS_PER_AGENT_PER_MINUTE", "-1"),
        ("MAX_BODY_BYTES", "64k"),
        ("PROVIDER_TIMEOUT_SECONDS", "nan"),
        ("PROVIDER_TIMEOUT_SECONDS", "901"),
        ("AUDIT_RETENTION_DAYS", "0"),
        ("DISCOVERY_HTTPS_PORT", "65536"),
        ("DISCOVERY_DNS_SERVER", "dns.example"),
        ("DISCOVERY_DNS_SERVER", "10.0.0.2:0"),
        ("GMAIL_PUSH_TOPIC", "mail-topic"),
        ("MAX_BODY_BYTES", "65536.0"),  # whole numbers have no decimal point
        ("TESTS_PER_ORG_PER_MINUTE", "\u0661\u0662"),  # Arabic-Indic 12: ASCII digits only
        ("MAIL_TIMEOUT_SECONDS", "\u0661\u0660"),
        ("MAIL_TIMEOUT_SECONDS", "1e1"),
        ("TESTS_PER_ORG_PER_MINUTE", "+40"),
        ("MAX_SEND_BYTES", "1_000"),
        ("MAIL_EXTRA_PORTS", "\u0661\u0662"),
        ("MAIL_EXTRA_PORTS", "2000-1999"),
        ("MAIL_EXTRA_PORTS", "1-99999999999"),  # refused before a billion ports are listed
        ("DISCOVERY_DNS_SERVER", "10.0.0.2:\u0661\u0662"),
    ],
)
def test_a_wrong_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({"TABLE_NAME": "table", variable: value})
    assert variable in str(refused.value)
    assert repr(value) in str(refused.value)


def test_every_field_is_text_or_has_a_reader() -> None:
    """`load_settings` gives a field without a reader the variable's text: any other type
    needs one (`Annotated[type, reader]`), or it would hold a string mypy cannot see."""
    for name, annotation in Settings.__annotations__.items():
        if annotation in (str, str | None):
            continue
        assert get_origin(annotation) is Annotated, f"{name}: {annotation} without a reader"
        assert callable(annotation.__metadata__[0]), name


def test_every_variable_is_read_into_its_field() -> None:
    """Each field from the variable of its name in capitals, parsed by its reader."""
    environment = {name.upper(): "" for name in Settings._fields} | {
        "TABLE_NAME": "table",
        "MAX_SEND_BYTES": "1024",
        "MAIL_TIMEOUT_SECONDS": "2.5",
        "MAIL_EXTRA_CA_FILE": "/opt/ca.pem",
        "DISCOVERY_HTTPS_PORT": "8443",
        "DISCOVERY_DNS_SERVER": "[::1]:5353",
        "GMAIL_PUSH_TOPIC": "projects/p/topics/mail",
        "GRAPH_BASE_URL": "http://127.0.0.1:8080/v1.0/",
    }
    settings = load_settings(environment)
    assert settings.table_name == "table"
    assert settings.max_send_bytes == 1024
    assert settings.mail_timeout_seconds == 2.5
    assert settings.mail_extra_ca_file == "/opt/ca.pem"
    assert settings.discovery_https_port == 8443
    assert settings.discovery_dns_address == ("::1", 5353)
    assert settings.gmail_push_topic == "projects/p/topics/mail"
    assert settings.graph_base_url == "http://127.0.0.1:8080/v1.0"
    # Every variable left blank keeps its field's default.
    for name in Settings._fields:
        if environment[name.upper()] == "":
            assert getattr(settings, name) == Settings._field_defaults[name], name


def test_the_table_is_required() -> None:
    with pytest.raises(SettingsError, match="TABLE_NAME"):
        load_settings({})


def test_a_handler_with_a_wrong_setting_does_not_start() -> None:
    """In a fresh interpreter, as Lambda's init phase: loading the handler fails, naming the
    variable; the same handler with the template's environment loads."""
    target = next(t.handler for t in handler_targets(TEMPLATE) if t.handler is not None)
    environment = lambda_environment(TEMPLATE, target.function, {})
    load = (
        "import sys; from pathlib import Path; "
        "from mailbridge_tools.functions import load_function_module; "
        "load_function_module(sys.argv[1], Path(sys.argv[2]), sys.argv[3])"
    )

    def start(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", load, *target.arguments()],
            env=environment | extra,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    assert start({}).returncode == 0
    failed = start({"PROVIDER_TIMEOUT_SECONDS": "forever"})
    assert failed.returncode != 0
    assert "SettingsError" in failed.stderr
    assert "PROVIDER_TIMEOUT_SECONDS" in failed.stderr
