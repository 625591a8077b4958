"""Each handler imports only what its routes need (issue 7, cold start per handler).

Checked by the modules a fresh interpreter has loaded, not by time, so the test is not
noisy; `make bench` measures the time. Each function runs with the environment Lambda gives
it, from template.yaml.
"""

from __future__ import annotations

import ast
import gc
import json
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from mailbridge_bench.imports import (
    CONNECTION_TEST_ROUTE,
    GET_CONFIG_ROUTE,
    function_serving,
    handler_targets,
    lambda_environment,
)
from mailbridge_tools.sandbox import Sandbox
from mailbridge_tools.template import load_template

TEMPLATE = load_template()
HANDLERS = {
    target.handler.function: target.handler
    for target in handler_targets(TEMPLATE)
    if target.handler
}
CONNECTION_TEST = function_serving(TEMPLATE, CONNECTION_TEST_ROUTE)
LIST_MESSAGES_ROUTE = "GET /bridge/agents/{agentId}/mail/messages"
SEND_ROUTE = "POST /bridge/agents/{agentId}/mail/send"
CHILD = Path(__file__).with_name("handler_imports.py")

# What each kind of connection needs, and only it: heavy libraries and our adapters for them.
PROVIDER_MODULES = {
    "imap": (
        "imapclient",
        "imaplib",
        "smtplib",
        "mailbridge.adapters.imap",
        "mailbridge.adapters.smtp",
    ),
    "microsoft": ("msal", "mailbridge.adapters.microsoft"),
    "google": ("google.auth", "google.oauth2", "mailbridge.adapters.google"),
}
# What the mail routes load for each kind of connection: its mailbox adapter and, for OAuth,
# the provider's token path.
MAIL_MODULES = {
    "imap": ("imapclient", "imaplib", "smtplib", "mailbridge.adapters.imap_mailbox"),
    "microsoft": ("msal", "mailbridge.adapters.microsoft", "mailbridge.adapters.graph"),
    "google": ("google.auth", "mailbridge.adapters.google", "mailbridge.adapters.gmail"),
}
MAIL_FUNCTIONS = sorted(
    {function_serving(TEMPLATE, route) for route in (LIST_MESSAGES_ROUTE, SEND_ROUTE)}
)
# What email discovery needs to look a domain up, loaded at its first lookup.
DISCOVERY_MODULES = ("dns", "defusedxml", "mailbridge.adapters.discovery")
DISCOVERY_ROUTE = "GET /bridge/email-discovery"
# What a function's routes use only past its cold start, by the route serving it: loaded at
# first use, never at import (docs/architecture.md, "What a cold start loads").
TOKEN_PATH = "mailbridge.oauth.tokens"  # an OAuth connection's alone
NOT_AT_IMPORT = {
    # The Email tab's first call: its writes (what they take, and the audit trail they
    # record) are another function's.
    GET_CONFIG_ROUTE: (
        "mailbridge.connections.saving",
        "mailbridge.connections.request_models",
        "mailbridge.connections.disconnecting",
        "mailbridge.audit",
        "mailbridge.storage.secrets",
        "mailbridge.storage.newmail",
        "mailbridge.newmail",
        "mailbridge.orgs.admin_models",  # the organization's own routes
        TOKEN_PATH,
    ),
    # New mail's models are the mailbox port's annotations only.
    LIST_MESSAGES_ROUTE: (
        "mailbridge.mail.sending",
        "mailbridge.mail.compose",
        "mailbridge.newmail",
        TOKEN_PATH,
    ),
    # The audit trail's histories are its own route's, and the Email tab's banners and app
    # views its own; sending records refusals and enforces the policy only.
    SEND_ROUTE: (
        "mailbridge.newmail",
        "mailbridge.audit.history_models",
        "mailbridge.orgs.models",
        TOKEN_PATH,
    ),
    CONNECTION_TEST_ROUTE: (TOKEN_PATH,),
    "DELETE /bridge/agents/{agentId}": (TOKEN_PATH, "mailbridge.connections.service"),
    # The pushes find feeds by mailbox and queue looks: no agent record is read.
    "POST /api/engine/push/google": ("mailbridge.storage.agents", "mailbridge.connections"),
    "POST /api/engine/push/microsoft": ("mailbridge.storage.agents", "mailbridge.connections"),
}
# No handler needs an adapter, or a provider's library, to start; nor the Unicode database,
# which the first login checked (a save's) loads; nor the error shapes' models, which only
# the OpenAPI document's generator reads.
NEVER_AT_IMPORT = (
    "unicodedata",
    "mailbridge.http.models",
    "mailbridge.adapters",
    *(m for kind in (PROVIDER_MODULES, MAIL_MODULES) for ms in kind.values() for m in ms),
    *DISCOVERY_MODULES,
)


def loaded(modules: list[str], names: tuple[str, ...]) -> set[str]:
    """The modules among `modules` that are one of `names` or inside one of them."""
    return {m for m in modules if any(m == name or m.startswith(name + ".") for name in names)}


def run_as_instance(function: str, *arguments: str) -> dict[str, Any]:
    """Runs Python with `arguments` in a fresh interpreter with `function`'s Lambda
    environment; what it printed last, as JSON."""
    completed = subprocess.run(
        [sys.executable, *arguments],
        env=lambda_environment(TEMPLATE, function, Sandbox.parameters()),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    printed: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return printed


def load_in_fresh_interpreter(
    function: str, provider: str | None = None, step: str = "check"
) -> dict[str, Any]:
    # The IMAP step connects to a closed loopback port: allowed as the sandbox allows it.
    arguments = [*HANDLERS[function].arguments(), *([provider, step] if provider else [])]
    return run_as_instance(function, str(CHILD), *arguments)


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_no_handler_loads_an_adapter_or_a_provider_library_to_start(function: str) -> None:
    modules = load_in_fresh_interpreter(function)["at_import"]
    assert "mailbridge" in modules, "the handler did not load the layer: nothing was checked"
    assert loaded(modules, NEVER_AT_IMPORT) == set()


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_every_function_ends_its_init_with_what_it_loaded_frozen(function: str) -> None:
    # Its modules, classes and models: tens of thousands of objects the collector skips.
    assert load_in_fresh_interpreter(function)["frozen"] > 20_000


@pytest.mark.parametrize("function", sorted(HANDLERS))
def test_every_function_freezes_its_init_with_its_last_statement(function: str) -> None:
    # A freeze before the last statement would leave out what the rest of the import allocates.
    handler = HANDLERS[function]
    source = handler.code_uri / f"{handler.name.rpartition('.')[0]}.py"
    last = ast.parse(source.read_text()).body[-1]
    call = last.value if isinstance(last, ast.Assign | ast.Expr) else None
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), ast.dump(last)
    assert call.func.id in ("lambda_handler", "freeze_long_lived")


def test_a_process_that_is_no_lambda_instance_never_freezes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mailbridge.core.lifecycle import freeze_long_lived

    # The local run: every function loaded into one process, this one.
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() == 0
    finally:
        gc.unfreeze()  # had it frozen, this process would never collect again what it holds


# In a Lambda instance whose init is over: each client asked for by 8 threads at once, as
# new mail's looks and sends ask; what was made, and what each first use froze.
_CLIENTS_FROZEN = """
import gc, json, threading
import boto3
from mailbridge.storage import aws

made = []
make_client = boto3.client
def counted(*args, **kwargs):
    made.append(args[0])
    return make_client(*args, **kwargs)
boto3.client = counted
gc.freeze()  # the init's end, as the handler module's last statement
report = {"made": made}
for first_use in (aws.dynamodb, aws.secretsmanager, aws.events, aws.sqs):
    before = gc.get_freeze_count()
    start, got = threading.Barrier(8), []
    def ask():
        start.wait()
        got.append(first_use())
    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client = got[0]
    report[first_use.__name__] = {
        "frozen": gc.get_freeze_count() - before,
        "one client": len(got) == 8 and all(other is client for other in got),
        # The collector lists only what it still scans.
        "client frozen": not any(tracked is client for tracked in gc.get_objects()),
    }
print(json.dumps(report))
"""
_SERVICES = ["dynamodb", "secretsmanager", "events", "sqs"]


def test_every_aws_client_is_made_once_and_frozen_with_its_service_model() -> None:
    # Kept for the instance's life: the first (the session, the endpoints, DynamoDB's model)
    # is some 30,000 objects, each later one a few thousand, that no collection need scan
    # again; a second copy made by another thread would be frozen and never collected.
    report = run_as_instance(CONNECTION_TEST, "-c", _CLIENTS_FROZEN)
    assert report.pop("made") == _SERVICES
    assert all(each["one client"] and each["client frozen"] for each in report.values()), report
    assert report["dynamodb"]["frozen"] > 20_000, report
    assert all(report[service]["frozen"] > 1_000 for service in _SERVICES[1:]), report


@pytest.mark.parametrize("route", sorted(NOT_AT_IMPORT))
def test_a_function_loads_at_import_what_its_cold_start_needs_only(route: str) -> None:
    # A module renamed away from the list would pass unnoticed.
    layer = Path(__file__).resolve().parent.parent / "layers" / "shared"
    for name in NOT_AT_IMPORT[route]:
        path = layer.joinpath(*name.split("."))
        assert path.is_dir() or path.with_suffix(".py").is_file(), name
    modules = load_in_fresh_interpreter(function_serving(TEMPLATE, route))["at_import"]
    assert "mailbridge.storage.aws" in modules, "the handler did not load: nothing was checked"
    assert loaded(modules, NOT_AT_IMPORT[route]) == set()


@pytest.mark.parametrize("provider", sorted(PROVIDER_MODULES))
def test_a_connection_test_loads_its_provider_and_no_other(provider: str) -> None:
    steps = load_in_fresh_interpreter(CONNECTION_TEST, provider)
    assert loaded(steps["at_import"], NEVER_AT_IMPORT) == set()

    after = steps["after_provider"]
    assert set(PROVIDER_MODULES[provider]) <= set(after)
    others = [m for p, ms in PROVIDER_MODULES.items() if p != provider for m in ms]
    assert loaded(after, tuple(others)) == set()
    if provider == "imap":
        assert steps["checks"] == ["imap", "smtp"]


@pytest.mark.parametrize("function", MAIL_FUNCTIONS)
@pytest.mark.parametrize("provider", sorted(MAIL_MODULES))
def test_a_mail_route_loads_its_connections_adapter_and_no_other(
    function: str, provider: str
) -> None:
    steps = load_in_fresh_interpreter(function, provider, "mail")
    assert loaded(steps["at_import"], NEVER_AT_IMPORT) == set()
    after = steps["after_provider"]
    assert set(MAIL_MODULES[provider]) <= set(after)
    others = [m for p, ms in MAIL_MODULES.items() if p != provider for m in ms]
    assert loaded(after, tuple(others)) == set()


def test_email_discovery_loads_its_adapter_at_first_use_and_no_provider() -> None:
    steps = load_in_fresh_interpreter(function_serving(TEMPLATE, DISCOVERY_ROUTE), "discovery")
    assert loaded(steps["at_import"], NEVER_AT_IMPORT) == set()
    after = steps["after_provider"]
    assert loaded(after, DISCOVERY_MODULES) >= set(DISCOVERY_MODULES)
    providers = [m for kind in (PROVIDER_MODULES, MAIL_MODULES) for ms in kind.values() for m in ms]
    assert loaded(after, tuple(providers)) == set()


def test_the_benchmark_prints_a_ratio_at_its_budget_only_when_it_holds() -> None:
    from mailbridge_bench.report import _rounded_up, within

    for ratio, printed, holds in [
        (1.15, "1.150", True),
        (1.1500000004, "1.150", True),
        (1.1504, "1.151", False),
        (0.7139, "0.714", True),
    ]:
        assert (_rounded_up(ratio), within(ratio, 1.15)) == (printed, holds)


def test_the_benchmarks_rounds_start_at_depths_spread_across_a_frame_chunk() -> None:
    from mailbridge_bench.imports import FRAME_CHUNK_SLOTS, stack_offset

    offsets = [stack_offset(round_number, 9) for round_number in range(1, 10)]
    assert offsets[0] == 0 and stack_offset(0, 9) == 0  # the first and the warm-up
    steps = {later - earlier for earlier, later in pairwise(offsets)}
    assert steps <= {FRAME_CHUNK_SLOTS // 9, FRAME_CHUNK_SLOTS // 9 + 1}
    assert offsets[-1] + min(steps) <= FRAME_CHUNK_SLOTS


@pytest.mark.parametrize("offset", [0, 700])
def test_the_benchmarks_probe_imports_from_as_deep_as_its_round_asks(
    offset: int, tmp_path: Path
) -> None:
    from mailbridge_bench.imports import PROBE

    # The module imported reports the most local slots of a frame that runs it.
    (tmp_path / "witness.py").write_text(
        "import sys\n"
        "frame, most = sys._getframe(), 0\n"
        "while frame:\n"
        "    most, frame = max(most, frame.f_code.co_nlocals), frame.f_back\n"
        "print('deepest frame:', most)\n"
    )
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"paths": [str(tmp_path)], "module": "witness", "stack_offset": offset})
    )
    completed = subprocess.run(
        [sys.executable, "-s", "-B", str(PROBE), str(spec)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    most = int(completed.stdout.split("deepest frame:")[1].split()[0])
    assert most == offset + 1 if offset else most < 50  # the slots, and `call`
    assert "import_seconds" in json.loads(completed.stdout.splitlines()[-1])


@pytest.mark.parametrize(
    ("status", "answer", "handled"),
    [
        (200, None, True),
        (409, None, True),
        (503, None, False),
        (None, {"queued": 0}, True),
        (None, {"batchItemFailures": []}, True),
        (None, {"batchItemFailures": [{"itemIdentifier": "m1"}]}, False),
        (None, None, False),
    ],
)
def test_the_benchmark_counts_a_first_request_only_if_it_was_handled(
    status: int | None, answer: dict[str, Any] | None, handled: bool
) -> None:
    from mailbridge_bench.imports import _handled

    assert _handled(status, answer) is handled
