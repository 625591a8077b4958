"""The README's local workflows, end to end: `python -m mailbridge_tools.localapi --sandbox`
prints a token, a demo agent and the sandbox; its printed lines, run by bash as printed,
connect the agent by each of the three methods, test it and use its mail, and no secret
shows up in a response or a log. A taken port is said in one line, a signal stops every
process the sandbox started, and `--invoke` runs a sample event (`make invoke`)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from mailbridge_tools.sandbox import dovecot_binary
from support import ApiClient, require_component

EVENTS = Path(__file__).parent.parent / "events"
# A reader's shell and curl run the printed lines.
BASH, CURL = shutil.which("bash") or "bash", shutil.which("curl")


@dataclass
class LocalRun:
    process: subprocess.Popen[str]
    welcome: list[str]

    def line(self, containing: str) -> str:
        return next(line for line in self.welcome if containing in line)

    @property
    def url(self) -> str:
        return self.line("mailbridge local API: ").removeprefix("mailbridge local API: ")

    def export(self, name: str) -> str:
        return self.line(f"export {name}=").split("=", 1)[1]


@contextmanager
def launched(*arguments: str, in_background: bool = False) -> Iterator[LocalRun]:
    """The run command with these arguments, until its welcome has been printed; with
    `in_background`, started by a shell as `command &` is, which makes it ignore SIGINT."""
    command = [sys.executable, "-m", "mailbridge_tools.localapi", "--port", "0", *arguments]
    if in_background:
        command = [BASH, "-c", '"$@" & wait', "bash", *command]
    process = subprocess.Popen(
        command,
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
        # Read while it stops: it logs on its way out, and a full pipe would hold it.
        process.communicate(timeout=30)


_END_OF_LINE = "----- end of a printed line -----"


def run_as_printed(lines: list[str], variables: dict[str, str]) -> list[str]:
    """Runs the printed lines in order, in one bash as a reader pasting them would (a line
    may set a variable a later one uses), with curl failing on any HTTP error; what each
    printed."""
    script = ["set -euo pipefail", 'curl() { command curl --fail-with-body "$@"; }']
    for line in lines:
        script += [line, f"echo; echo '{_END_OF_LINE}'"]
    done = subprocess.run(
        [BASH, "-c", "\n".join(script)],
        env=os.environ | variables,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return [printed.strip() for printed in done.stdout.split(_END_OF_LINE)[:-1]]


@pytest.fixture(scope="module")
def local_run() -> Iterator[LocalRun]:
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    with launched("--sandbox") as run:
        yield run


def test_parameter_overrides_reach_the_functions() -> None:
    """The README's way to try a self-hosted server: private addresses and its ports. With
    a customer-managed key too, the password's secret is created under it, tagged with the
    stack, organization and agent, and the connection test reads it (IAM enforced)."""
    body = {"provider": "imap", "email": "me@example.com", "password": "p"}
    body |= {"imap": {"host": "127.0.0.1", "port": 1143, "security": "starttls"}}
    body |= {"smtp": {"host": "127.0.0.1", "port": 1587, "security": "starttls"}}
    key = "arn:aws:kms:us-east-1:123456789012:key/0b6c2d4e-8f1a-4b3c-9d5e-7a6b5c4d3e2f"
    overrides = ("AllowPrivateMailServers=true", "ExtraMailPorts=1143,1587", f"KmsKeyArn={key}")
    path = "/bridge/agents/demo-agent/email-config"
    for arguments, status in (((), 422), (("--parameter-overrides", *overrides), 200)):
        with launched(*arguments) as run:
            client = ApiClient(run.url, run.export("MAILBRIDGE_TOKEN"))
            saved = client.put(path, body)
            assert saved.status == status, saved.text
            if status != 200:
                continue
            tested = client.post(path + "/test")
            assert tested.status == 200, tested.text  # nothing listens on 1143: refused
            assert tested.json()["checks"][0]["error"]["code"] == "connection_refused"
            moto = run.line("AWS (moto)").rsplit(" ", 1)[1]
            found = boto3.client(
                "secretsmanager",
                endpoint_url=moto,
                region_name="us-east-1",
                aws_access_key_id="local",
                aws_secret_access_key="local",
            ).describe_secret(SecretId="mailbridge/agents/demo-agent/email")
    assert found["KmsKeyId"] == key
    assert {tag["Key"]: tag["Value"] for tag in found["Tags"]} == {
        "mailbridge:stack": "mailbridge-local",
        "mailbridge:org": "demo-org",
        "mailbridge:agent": "demo-agent",
    }


def test_a_taken_port_is_said_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "mailbridge_tools.localapi", "--port", str(port)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"mailbridge: port {port} on 127.0.0.1 is taken (another run?); choose another: "
        f"make run PORT={port + 1}, make sandbox PORT={port + 1}\n"
    )


def test_invoke_runs_a_sample_event_against_the_demo_agents() -> None:
    """`make invoke EVENT=...`: the handler's answer alone on stdout (the function's logs go
    to stderr), for the demo agent, which is there. (tests/test_events.py runs every event.)"""
    command = [sys.executable, "-m", "mailbridge_tools.localapi"]
    command += ["--invoke", str(EVENTS / "put_email_config.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["statusCode"], json.loads(answer["body"])["status"]) == (200, "configured")
    assert '"message":"email config saved"' in done.stderr


def _processes_under(pid: int) -> dict[int, str]:
    """Every process `pid` started, and theirs: their command lines, by pid."""
    found: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if parent == pid:
            child = int(stat.parent.name)
            found |= {child: command, **_processes_under(child)}
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie has ended; only its parent has not collected it yet


def test_the_first_signal_stops_and_the_next_ones_wait() -> None:
    """The run's handler: the first SIGTERM or SIGINT stops it in order (KeyboardInterrupt,
    as Ctrl-C in a terminal); any later one is ignored, so an impatient second signal does
    not cut that stopping short and leave Dovecot running."""
    from mailbridge_tools.localapi.cli import _stop_on_signals

    before = {each: signal.getsignal(each) for each in (signal.SIGINT, signal.SIGTERM)}
    try:
        _stop_on_signals()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
        assert {signal.getsignal(each) for each in before} == {signal.SIG_IGN}
        signal.raise_signal(signal.SIGTERM)  # ignored: nothing raised
        signal.raise_signal(signal.SIGINT)
    finally:
        for each, handler in before.items():
            signal.signal(each, handler)


@pytest.mark.parametrize(
    ("stop", "in_background"),
    [(signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT in the background"],
)
def test_a_signal_stops_every_process_the_sandbox_started(
    stop: signal.Signals, in_background: bool
) -> None:
    """Dovecot is a process of its own, which a sandbox stopped by a signal's default action
    left running; stopped in order, it ends with its processes and its directory. In the
    background a shell starts it with SIGINT ignored, which it must take back."""
    require_component(dovecot_binary() is not None, "Dovecot (Debian package dovecot-imapd)")
    started: dict[int, str] = {}
    try:
        with launched("--sandbox", in_background=in_background) as run:
            server = run.process.pid
            if in_background:  # the shell's child
                [server] = (
                    pid
                    for pid, command in _processes_under(server).items()
                    if "mailbridge_tools.localapi" in command
                )
            started = _processes_under(server)
            os.kill(server, stop)
            status = run.process.wait(timeout=30)
            assert run.process.stdout is not None
            said = run.process.stdout.read()
    finally:
        left = _ended_or_killed(started)
    assert (status, said.rstrip().splitlines()[-1]) == (0, "stopped")
    assert left == []
    directories = re.findall(r"-c (\S+)/dovecot\.conf", " ".join(started.values()))
    assert len(directories) == 1, started
    assert not Path(directories[0]).exists()


def _ended_or_killed(processes: dict[int, str]) -> list[str]:
    """Waits a little for the processes to end (Dovecot's master waits for its own); the
    command lines of those still running, which are killed: they must not outlive a test."""
    ends_at = time.monotonic() + 5
    while any(_running(pid) for pid in processes) and time.monotonic() < ends_at:
        time.sleep(0.05)
    left = {pid: command for pid, command in processes.items() if _running(pid)}
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return list(left.values())


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


def test_the_printed_commands_work_as_printed(local_run: LocalRun) -> None:
    """Every call the welcome and the sandbox print, run by bash as printed: each answers
    2xx, and together they connect the demo agent by each method, test it, and read and
    reply as its runtime."""
    require_component(CURL is not None, "curl")
    url, token = local_run.url, local_run.export("MAILBRIDGE_TOKEN")
    variables = {
        "MAILBRIDGE_TOKEN": token,
        "MAILBRIDGE_AGENT_TOKEN": local_run.export("MAILBRIDGE_AGENT_TOKEN"),
    }

    # The lines to paste: calls, calls whose answer a variable keeps, and the drop command.
    commands = [
        line.strip()
        for line in local_run.welcome
        if re.match(r"\s+((\w+=\$\()?curl |\S+ -m mailbridge_tools\.sandbox\.drop )", line)
    ]

    def printed(containing: str) -> str:
        return next(line for line in commands if containing in line)

    tries = commands[: commands.index(printed("curl -s -X PUT"))]
    assert f"{url}/bridge/agents/demo-agent/email-config" in " ".join(tries)
    steps = [(f"try {number}", line) for number, line in enumerate(tries)]
    steps += [("save imap", printed('"provider": "imap"')), ("test imap", printed("/test"))]
    steps += [
        ("list", printed("messages?unread=true&limit=1")),
        ("pick", printed("MESSAGE_ID=$(curl")),
        ("open", printed("/messages/$MESSAGE_ID")),
        ("reply", printed("Idempotency-Key")),
        ("drop", printed("mailbridge_tools.sandbox.drop")),
    ]
    oauth_steps = []
    for provider in ("microsoft", "google"):
        oauth_steps += [
            (f"save {provider}", printed(f'"provider": "{provider}"')),
            (f"authorize {provider}", printed("SIGN_IN=$(curl")),
            (f"sign in {provider}", printed('"$SIGN_IN"')),
            (f"test {provider}", printed("/test")),
        ]
    # Every printed line runs.
    assert {line for _, line in steps + oauth_steps} == set(commands)

    def run(named: list[tuple[str, str]]) -> dict[str, str]:
        outputs = run_as_printed([line for _, line in named], variables)
        return dict(zip((name for name, _ in named), outputs, strict=True))

    client = ApiClient(url, token)
    path = "/bridge/agents/demo-agent/email-config"
    assert client.get(path).json()["status"] == "not_connected"
    out = run(steps)
    assert all(json.loads(out[f"try {number}"]) for number in range(len(tries)))
    # Settings from the address: the demo domains through the sandbox's DNS server.
    discovered = {
        line.partition("email=")[2].rstrip('"'): json.loads(out[f"try {number}"])
        for number, line in enumerate(tries)
        if "/bridge/email-discovery?" in line
    }
    imap_body = json.loads(printed('"provider": "imap"').split("--json '")[1].rstrip("'"))
    demo = discovered["demo@example.com"]
    for protocol in ("imap", "smtp"):
        assert {key: demo[protocol][key] for key in ("host", "port", "security")} == imap_body[
            protocol
        ]
        assert demo[protocol]["source"] == "srv"
    contoso = discovered["demo@contoso.example"]
    assert (contoso["provider"]["id"], contoso["recommended"]["method"]) == (
        "microsoft365",
        "microsoft",
    )
    assert contoso["tenant"]["source"] == "openid_configuration"
    assert discovered["demo@workspace.example"]["provider"] == {
        "id": "google",
        "source": "mx",
        "confidence": "high",
    }
    assert discovered["jane@gmail.com"]["provider"]["source"] == "preset"

    tested = json.loads(out["test imap"])
    assert tested["ok"] is True, tested
    assert tested["inbox"] == {"total": 12, "unread": 5}
    listed, opened, replied = (json.loads(out[name]) for name in ("list", "open", "reply"))
    assert opened["id"] == listed["messages"][0]["id"] and opened["text"]
    assert replied["recipients"] == [(opened["reply_to"] or [opened["sender"]])[0]["address"]]
    agent = ApiClient(url, variables["MAILBRIDGE_AGENT_TOKEN"])
    sent = agent.get("/bridge/agents/demo-agent/mail/messages?folder=sent").json()["messages"]
    assert sent[0]["subject"] == "Re: " + opened["subject"], sent
    assert sent[0]["thread_id"] == opened["thread_id"]

    # The OAuth methods, through the sandbox's fake providers: signed in, then tested.
    out |= run(oauth_steps)
    for provider, account in (("microsoft", "contoso"), ("google", "workspace")):
        assert json.loads(out[f"save {provider}"])["status"] == "awaiting_authorization"
        assert out[f"sign in {provider}"] == "200"  # the callback page
        oauth_test = json.loads(out[f"test {provider}"])
        assert oauth_test["ok"] is True, oauth_test
        assert account in oauth_test["email"]

    # Everything the process printed after its welcome is the service's own logging.
    local_run.process.terminate()
    assert local_run.process.stdout is not None
    logs = local_run.process.stdout.read()
    assert '"message"' in logs  # the handlers' JSON log lines are there...

    def body(step: str) -> dict[str, str]:
        line = dict(steps + oauth_steps)[step]
        saved: dict[str, str] = json.loads(line[line.index("'") + 1 : line.rindex("'")])
        return saved

    password, secret = body("save imap")["password"], body("save microsoft")["client_secret"]
    for text in [*out.values(), logs]:
        assert password not in text  # ...and neither the password
        assert secret not in text  # nor the client secret are
