"""The README's run command, end to end: `python -m mailbridge_tools.localapi --sandbox`
prints a token, a demo agent and the sandbox; with them, curl-like calls connect the agent
by each of the three methods and test it, and no secret shows up in a response or a log."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import requests
from mailbridge_tools.sandbox import dovecot_binary
from support import ApiClient, require_component


@dataclass
class LocalRun:
    process: subprocess.Popen[str]
    welcome: list[str]

    def line(self, containing: str) -> str:
        return next(line for line in self.welcome if containing in line)


@contextmanager
def launched(*arguments: str) -> Iterator[LocalRun]:
    """The run command with these arguments, until its welcome has been printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mailbridge_tools.localapi", "--port", "0", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        welcome: list[str] = []
        for line in process.stdout:
            # What the sandbox's seeding logged comes first; the welcome starts here.
            if welcome or line.startswith("mailbridge local API: "):
                welcome.append(line.rstrip("\n"))
            if line.startswith("Everything lives in memory"):
                break
        yield LocalRun(process, welcome)
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def curl(line: str, variables: dict[str, str]) -> requests.Response:
    """What this printed `curl -s [-X METHOD] [-H HEADER]... URL [--json BODY]` line does,
    with the shell's variables (and placeholders) replaced."""
    for name, value in variables.items():
        line = line.replace(name, value)
    words = shlex.split(line)
    assert words[:2] == ["curl", "-s"], line
    method, headers, url, body = "GET", {}, "", None
    options = iter(words[2:])
    for word in options:
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, _, value = next(options).partition(": ")
            headers[name] = value
        elif word == "--json":
            body = json.loads(next(options))
        else:
            url = word
    return requests.request(method, url, headers=headers, json=body, timeout=30)


@pytest.fixture(scope="module")
def local_run() -> Iterator[LocalRun]:
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    with launched("--sandbox") as run:
        yield run


def test_parameter_overrides_reach_the_functions() -> None:
    """The README's way to try a self-hosted server: private addresses and its ports."""
    body = {"provider": "imap", "email": "me@example.com", "password": "p"}
    body |= {"imap": {"host": "127.0.0.1", "port": 1143, "security": "starttls"}}
    body |= {"smtp": {"host": "127.0.0.1", "port": 1587, "security": "starttls"}}
    overrides = ("AllowPrivateMailServers=true", "ExtraMailPorts=1143,1587")
    for arguments, status in (((), 422), (("--parameter-overrides", *overrides), 200)):
        with launched(*arguments) as run:
            url = run.line("mailbridge local API: ").removeprefix("mailbridge local API: ")
            token = run.line("export MAILBRIDGE_TOKEN=").split("=", 1)[1]
            saved = ApiClient(url, token).put("/bridge/agents/demo-agent/email-config", body)
            assert saved.status == status, saved.text


def test_the_sandbox_shows_each_state(local_run: LocalRun) -> None:
    """Each state agent the sandbox prints is in the state it says, as its Email tab reads
    it, and its history says how it got there."""
    url = local_run.line("mailbridge local API: ").removeprefix("mailbridge local API: ")
    token = local_run.line("export MAILBRIDGE_TOKEN=").split("=", 1)[1]
    client = ApiClient(url, token)
    printed = [line for line in local_run.welcome if "&agent=state-" in line]
    shown = {}
    for line in printed:
        agent_id = line.rsplit("&agent=", 1)[1]
        assert line.rsplit(": ", 1)[1] == f"{url}/#token={token}&agent={agent_id}"
        view = client.get(f"/bridge/agents/{agent_id}/email-config").json()
        shown[agent_id] = (view["status"], view["reason"], [w["code"] for w in view["warnings"]])
    # Google agents inherit the organization's app, whose secret the sandbox says expires
    # in 20 days: each is warned, whatever its state.
    assert shown == {
        "state-configured": ("configured", "untested", []),
        "state-awaiting-authorization": (
            "awaiting_authorization",
            "authorization_required",
            ["app_secret_expiring"],
        ),
        "state-connected": ("connected", "verified", []),
        "state-send-missing": ("connected", "verified", ["send_permission_missing"]),
        "state-app-expiring": ("connected", "verified", ["app_secret_expiring"]),
        "state-wrong-password": ("error", "auth_failed", []),
        "state-outside-policy": ("error", "email_domain_not_allowed", []),
        "state-app-secret-refused": ("error", "oauth_client_invalid", []),
        "state-client-org-missing": ("error", "client_org_missing", []),
    }
    history = client.get("/bridge/agents/state-outside-policy/email-history").json()
    assert [entry["action"] for entry in history["entries"]] == [
        "tested",
        "connection_saved",
        "agent_registered",
    ]


def test_the_printed_commands_connect_the_demo_agent(local_run: LocalRun) -> None:
    url = local_run.line("mailbridge local API: ").removeprefix("mailbridge local API: ")
    token = local_run.line("export MAILBRIDGE_TOKEN=").split("=", 1)[1]
    assert f"{url}/bridge/agents/demo-agent/email-config" in local_run.line('email-config"')
    put_line = local_run.line("curl -s -X PUT")
    body = json.loads(put_line[put_line.index("'") + 1 : put_line.rindex("'")])
    client = ApiClient(url, token)
    path = "/bridge/agents/demo-agent/email-config"

    assert client.get(path).json()["status"] == "not_connected"
    responses = [client.put(path, body), client.post(path + "/test"), client.get(path)]
    assert [r.status for r in responses] == [200, 200, 200], [r.text for r in responses]
    tested, read = responses[1].json(), responses[2].json()
    assert tested["ok"] is True, tested
    assert tested["inbox"] == {"total": 12, "unread": 5}
    assert tested["email"] == body["email"]
    assert read["status"] == "connected"

    # The agent's runtime reads its newest unread message and replies, by the printed lines.
    agent_token = local_run.line("export MAILBRIDGE_AGENT_TOKEN=").split("=", 1)[1]
    variables = {"$MAILBRIDGE_AGENT_TOKEN": agent_token}
    listed = curl(local_run.line("messages?unread=true"), variables)
    assert listed.status_code == 200, listed.text
    newest = listed.json()["messages"][0]
    variables["<id>"] = newest["id"]
    opened = curl(local_run.line("messages/<id>"), variables)
    assert opened.status_code == 200 and opened.json()["text"], opened.text
    original = opened.json()
    replied = curl(local_run.line("Idempotency-Key"), variables)
    assert replied.status_code == 200, replied.text
    assert replied.json()["recipients"] == [
        (original["reply_to"] or [original["sender"]])[0]["address"]
    ]
    sent = ApiClient(url, agent_token).get("/bridge/agents/demo-agent/mail/messages?folder=sent")
    assert sent.json()["messages"][0]["subject"] == "Re: " + original["subject"], sent.text
    assert sent.json()["messages"][0]["thread_id"] == original["thread_id"]
    texts = [listed.text, opened.text, replied.text, sent.text]

    # The OAuth methods, through the sandbox's fake providers.
    ca_file = local_run.line("CA certificate").rsplit(" ", 1)[1]
    for provider, account in (("microsoft", "contoso"), ("google", "workspace")):
        oauth_line = local_run.line(f'"provider": "{provider}"')
        oauth_body = json.loads(oauth_line[oauth_line.index("'") + 1 : oauth_line.rindex("'")])
        assert client.put(path, oauth_body).json()["status"] == "awaiting_authorization"
        started = client.post(path + "/authorize", {"origin": url}).json()
        signed_in = requests.get(
            started["authorization_url"], allow_redirects=False, verify=ca_file, timeout=10
        )
        page = ApiClient(url, None).get(signed_in.headers["Location"].removeprefix(url))
        assert page.status == 200 and '"status": "connected"' in page.text, page.text
        oauth_test = client.post(path + "/test").json()
        assert oauth_test["ok"] is True, oauth_test
        assert account in oauth_test["email"]
        responses.append(page)

    # Everything the process printed after its welcome is the service's own logging.
    local_run.process.terminate()
    assert local_run.process.stdout is not None
    logs = local_run.process.stdout.read()
    assert '"message"' in logs  # the handlers' JSON log lines are there...
    secret = local_run.line('"provider": "microsoft"').split('"client_secret": "')[1].split('"')[0]
    for text in [*(r.text for r in responses), *texts, logs]:
        assert body["password"] not in text  # ...and neither the password
        assert secret not in text  # nor the client secret are
