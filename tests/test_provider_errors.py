"""The providers' refusals that need their own words, as the real ones answer them: Exchange
Online refusing passwords for SMTP AUTH (`535 5.7.139`, `550 5.7.30`), Entra ID asking for
multi-factor authentication or consent (`AADSTS50076`, `50079`, `65001`) and Google ending a
grant (`invalid_grant`). Each is classified once, in its adapter, and reads the same in a
connection test, a refresh and a use of the mail: its code says what a client does, its hint
says precisely how."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from mailbridge_tools.sandbox import FakeMicrosoft, SmtpServer
from support import (
    GOOGLE_ACCOUNT,
    MS_ACCOUNT,
    MailAgent,
    Mailbox,
    OAuthAgent,
    Org,
    age_tokens,
    posted,
)

# Exchange Online's replies to AUTH, word for word (the host in brackets varies).
SMTP_AUTH_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the "
    "Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. "
    "[AM0PR02CA0001.eurprd02.prod.outlook.com 2026-11-30T09:00:00.000Z 08DD0A1B2C3D4E5F]"
)
BASIC_AUTH_UNSUPPORTED = "550 5.7.30 Basic authentication is not supported for Client Submission."
SEND = {"to": ["someone@example.org"], "subject": "Hello", "text": "Hello."}

# What each Entra refusal must say: its code in our message, and the way out in the hint.
ENTRA = {
    50076: ("AADSTS50076", "multi-factor prompt"),
    50079: ("AADSTS50079", "https://aka.ms/mfasetup"),
    65001: ("AADSTS65001", "Grant admin consent"),
}


def _runtime(agent: OAuthAgent, local_api: Any) -> MailAgent:
    """The agent's own client of the mail routes."""
    login = MS_ACCOUNT if agent.provider == "microsoft" else GOOGLE_ACCOUNT

    def deliver(address: str, raw: bytes, *, unseen: bool) -> object:
        return agent.fake.deliver(address, raw, unread=unseen)

    return MailAgent(local_api, agent.org, Mailbox(login, ""), deliver=deliver)


def _smtp_check(result: dict[str, Any]) -> dict[str, Any]:
    (check,) = [check for check in result["checks"] if check["name"] == "smtp"]
    return check


# ---- Exchange Online: SMTP AUTH without passwords -------------------------------------------


@pytest.mark.parametrize(
    ("reply", "said"),
    [(SMTP_AUTH_DISABLED, "5.7.139"), (BASIC_AUTH_UNSUPPORTED, "5.7.30")],
    ids=["535-5.7.139", "550-5.7.30"],
)
def test_a_connection_test_names_passwords_refused_by_exchange(
    org: Org, imap_body: Callable[..., dict[str, Any]], smtp: SmtpServer, reply: str, said: str
) -> None:
    assert org.client.put(org.config_path, imap_body()).status == 200
    with smtp.refusing_passwords(reply):
        response = org.client.post(org.config_path + "/test")
    result = response.json()
    assert (result["ok"], result["status"]) == (False, "error"), result
    assert next(c for c in result["checks"] if c["name"] == "imap")["ok"] is True
    error = _smtp_check(result)["error"]
    # Not a wrong password: a new app password cannot help, OAuth can.
    assert error["code"] == "auth_unavailable"
    assert said in error["message"]
    assert "Microsoft OAuth" in error["hint"] and "will not help" in error["hint"]
    assert "Authentication unsuccessful" not in response.text  # our words, not the server's
    assert "Basic authentication is not supported" not in response.text
    last_error = org.client.get(org.config_path).json()["last_error"]
    assert (last_error["code"], last_error["hint"]) == ("auth_unavailable", error["hint"])
    # The same password works where the server takes passwords.
    assert org.client.post(org.config_path + "/test").json()["ok"] is True


def test_only_exchanges_codes_are_read_as_passwords_refused(
    org: Org, imap_body: Callable[..., dict[str, Any]], smtp: SmtpServer
) -> None:
    """Another server's 535 is still the password's."""
    assert org.client.put(org.config_path, imap_body()).status == 200
    with smtp.refusing_passwords("535 5.7.8 Authentication credentials invalid"):
        result = org.client.post(org.config_path + "/test").json()
    error = _smtp_check(result)["error"]
    assert error["code"] == "auth_failed"
    assert "app password" in error["hint"]


def test_a_send_refused_by_exchange_says_why_and_sends_nothing(
    imap_agent: MailAgent, smtp: SmtpServer
) -> None:
    before = len(smtp.messages)
    with smtp.refusing_passwords(SMTP_AUTH_DISABLED):
        failed = imap_agent.runtime.request(
            "POST", imap_agent.send_path, SEND, headers={"Idempotency-Key": "exo-1"}
        )
    assert (failed.status, failed.error["code"]) == (409, "auth_unavailable"), failed.text
    assert "Microsoft OAuth" in failed.error["hint"]
    assert "SmtpClientAuthentication" not in failed.text
    assert len(smtp.messages) == before
    status = imap_agent.org.client.get(imap_agent.org.config_path).json()
    assert status["status"] == "error"
    assert (status["last_error"]["code"], status["last_error"]["during"]) == (
        "auth_unavailable",
        "sending",
    )


def test_the_microsoft_365_preset_says_passwords_are_going(org: Org) -> None:
    presets = {p["id"]: p for p in org.client.get("/bridge/email-presets").json()["presets"]}
    note = presets["microsoft365"]["note"]
    for said in ("no longer accepts passwords for IMAP", "2022-2023", "SMTP AUTH"):
        assert said in note
    assert "off by default at the end of December 2026" in note
    assert note.startswith("Use the Microsoft OAuth connection method")


# ---- Entra ID: multi-factor authentication and consent ----------------------------------


@pytest.mark.parametrize("aadsts", sorted(ENTRA))
def test_a_connection_test_names_what_entra_asks_for(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, aadsts: int
) -> None:
    microsoft_agent.connect()
    age_tokens(microsoft_agent.org.agent_id)
    microsoft.refuse_next_token(aadsts)
    response = microsoft_agent.org.client.post(microsoft_agent.path + "/test")
    result = response.json()
    said, way_out = ENTRA[aadsts]
    assert result["ok"] is False and result["status"] == "error"
    assert result["error"]["code"] == "reauthorization_required"
    assert said in result["error"]["message"] and way_out in result["error"]["hint"]
    assert "Re-authorize" in result["error"]["hint"]
    # Entra's description (trace and correlation ids, the app's id) stays out of it.
    assert "Trace ID" not in response.text and "configuration change" not in response.text
    last_error = microsoft_agent.get()["last_error"]
    assert (last_error["code"], last_error["hint"]) == (
        "reauthorization_required",
        result["error"]["hint"],
    )


@pytest.mark.parametrize("aadsts", sorted(ENTRA))
def test_a_refresh_refused_by_entra_carries_the_precise_hint(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, aadsts: int
) -> None:
    """The one token path, as every use of an OAuth connection takes it."""
    from mailbridge.core.errors import ErrorCode, ProviderError
    from mailbridge.oauth.tokens import fresh_access_token
    from mailbridge.storage.agents import DynamoAgentStore
    from mailbridge.storage.orgs import DynamoOrgStore
    from mailbridge.storage.secrets import SecretsManagerStore

    microsoft_agent.connect()
    age_tokens(microsoft_agent.org.agent_id)
    agents = DynamoAgentStore()
    agent, config = agents.load(microsoft_agent.org.agent_id)
    assert agent is not None and config is not None
    before = microsoft.refresh_count
    microsoft.refuse_next_token(aadsts)
    with pytest.raises(ProviderError) as refused:
        fresh_access_token(agents, SecretsManagerStore(), DynamoOrgStore(), agent, config)
    said, way_out = ENTRA[aadsts]
    assert refused.value.code is ErrorCode.REAUTHORIZATION_REQUIRED
    assert said in refused.value.message
    assert refused.value.hint is not None and way_out in refused.value.hint
    assert microsoft.refresh_count == before  # refused: nothing redeemed
    # What the hint asks for brings it back.
    url = microsoft_agent.authorization_url("reauthorize")
    assert posted(microsoft_agent.callback(microsoft_agent.sign_in(url)))[0]["status"] == (
        "connected"
    )
    assert microsoft_agent.test()["ok"] is True


def test_a_use_of_the_mail_refused_for_mfa_says_so(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft, local_api: Any
) -> None:
    assert microsoft_agent.connect().status == 200
    mail = _runtime(microsoft_agent, local_api)
    age_tokens(microsoft_agent.org.agent_id)
    microsoft.refuse_next_token(50076)
    failed = mail.runtime.get(mail.messages_path())
    assert (failed.status, failed.error["code"]) == (409, "reauthorization_required")
    assert "multi-factor prompt" in failed.error["hint"]
    assert "AADSTS50076" in failed.error["message"]
    config = microsoft_agent.get()
    assert config["status"] == "error"
    assert config["last_error"]["hint"] == failed.error["hint"]


def test_consent_missing_at_sign_in_is_a_refusal_with_the_admin_consent_hint(
    microsoft_agent: OAuthAgent, microsoft: FakeMicrosoft
) -> None:
    microsoft_agent.save()
    location = microsoft_agent.sign_in(microsoft_agent.authorization_url())
    microsoft.refuse_next_token(65001)  # the code is redeemed, and refused
    page = microsoft_agent.callback(location)
    assert "Trace ID" not in page.text
    last_error = microsoft_agent.get()["last_error"]
    assert last_error["code"] == "authorization_denied"
    assert "AADSTS65001" in last_error["message"]
    assert "Grant admin consent" in last_error["hint"]


# ---- Google: a grant that ended ---------------------------------------------------------


def test_google_invalid_grant_says_when_google_ends_a_grant(
    google_agent: OAuthAgent, local_api: Any
) -> None:
    assert google_agent.connect().status == 200
    google_agent.fake.revoke_all_grants()
    age_tokens(google_agent.org.agent_id)
    tested = google_agent.test()
    assert tested["error"]["code"] == "reauthorization_required"
    hint = tested["error"]["hint"]
    assert "Re-authorize" in hint and "6 months" in hint and "Testing" in hint
    assert "invalid_grant" in tested["error"]["message"]
    assert "Token has been expired or revoked" not in str(tested)  # Google's own words

    mail = _runtime(google_agent, local_api)
    failed = mail.runtime.get(mail.messages_path())
    assert (failed.status, failed.error["code"]) == (409, "reauthorization_required")
    assert failed.error["hint"] == hint
