"""The import rules of docs/architecture.md, checked on the source of the layer and the
handlers: who may import boto3 and the provider libraries, and which package may import
which. Every import counts, those made only for type checking included."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "shared"
FUNCTIONS = ROOT / "functions"

AWS_LIBRARIES = ("boto3", "botocore", "mypy_boto3_dynamodb", "mypy_boto3_secretsmanager")
PROVIDER_LIBRARIES = (
    *("imapclient", "imaplib", "smtplib", "msal", "google", "requests", "urllib3"),
    *("dns", "defusedxml"),  # email discovery
)
DOMAIN = ("agents", "connections", "oauth", "orgs", "mail", "newmail", "audit", "discovery")
FEATURE_MODELS = (
    *(f"mailbridge.{feature}.models" for feature in DOMAIN),
    "mailbridge.connections.records",  # what is stored of a connection
    "mailbridge.connections.request_models",  # what saving a connection starts from and takes
    "mailbridge.orgs.records",  # what is stored of shared apps and client organizations
    "mailbridge.orgs.admin_models",  # what the organization's own routes take and give
    "mailbridge.audit.history_models",  # what the audit trail's routes take and give
    "mailbridge.newmail.events",  # the event sent for each new message
)
# Where the domain declares what it needs of the adapters.
PORTS = (
    "mailbridge.oauth.providers",
    "mailbridge.oauth.scopes",
    "mailbridge.connections.mail_servers",
    "mailbridge.mail.mailboxes",
    "mailbridge.mail.ids",
    "mailbridge.mail.parsing",  # one reader of headers for every provider's summaries
    "mailbridge.discovery.lookups",
)


@dataclass(frozen=True)
class Module:
    name: str  # dotted; a handler is "functions.<group>.app"
    source: str

    @property
    def package(self) -> str:
        """The layer package it belongs to (`core`, `storage`...), or `functions`."""
        parts = self.name.split(".")
        return parts[0] if parts[0] == "functions" else parts[1] if len(parts) > 2 else ""

    def imports(self) -> Iterator[str]:
        """Every module it imports, relative imports resolved."""
        yield from (name for name, _ in self.imports_with_context())

    def imports_with_context(self) -> Iterator[tuple[str, bool]]:
        """Every module it imports, and whether only for type checking."""
        tree = ast.parse(self.source)
        type_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
            for statement in node.body
            for inner in ast.walk(statement)
        }
        package = self.name.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from . import x` and `from .pkg import module` name modules too.
                names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            yield from ((name, id(node) in type_only) for name in names)


def within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def violations(module: Module) -> list[str]:
    """What `module` imports against the rules."""
    found = []
    own = f"mailbridge.{module.package}"
    domain = tuple(f"mailbridge.{feature}" for feature in DOMAIN)
    for imported, type_only in set(module.imports_with_context()):
        if (
            module.name in FEATURE_MODELS
            and within(imported, "mailbridge")
            and not within(imported, "mailbridge.core", *FEATURE_MODELS)
        ):
            found.append(f"{imported}: a feature's models import core and other models only")
        if within(imported, *AWS_LIBRARIES) and module.package != "storage":
            found.append(f"{imported}: only mailbridge.storage talks to AWS")
        if within(imported, *PROVIDER_LIBRARIES) and module.package != "adapters":
            found.append(f"{imported}: only mailbridge.adapters import the provider libraries")
        if module.package in DOMAIN and within(imported, "aws_lambda_powertools.event_handler"):
            found.append(f"{imported}: the domain knows no HTTP")
        if not within(imported, "mailbridge") or within(imported, own):
            continue
        if within(imported, "mailbridge.adapters"):
            found.append(f"{imported}: adapters are reached through their port, never imported")
        elif module.package == "core":
            found.append(f"{imported}: core imports no other package of mailbridge")
        elif module.package == "storage":
            if not within(imported, "mailbridge.core", *FEATURE_MODELS):
                found.append(f"{imported}: storage imports core and the features' models only")
        elif module.package in DOMAIN and within(imported, "mailbridge.http"):
            found.append(f"{imported}: the domain knows no HTTP")
        elif module.package in DOMAIN and within(imported, "mailbridge.storage"):
            if not (within(imported, "mailbridge.storage.protocols") and type_only):
                found.append(f"{imported}: the domain sees stores as storage.protocols types")
        elif module.package in ("http", "adapters") and within(
            imported, "mailbridge.storage", "mailbridge.http"
        ):
            found.append(f"{imported}: {module.package} imports neither storage nor http")
        elif (
            module.package == "http"
            and within(imported, *domain)
            and not within(imported, *FEATURE_MODELS)
        ):
            found.append(f"{imported}: http imports the features' models only")
        elif (
            module.package == "adapters"
            and within(imported, *domain)
            and not within(imported, *FEATURE_MODELS, *PORTS)
        ):
            found.append(f"{imported}: adapters import the features' models and ports only")
    return sorted(found)


def layer_and_handlers() -> list[Module]:
    modules = []
    for path in sorted((LAYER / "mailbridge").rglob("*.py")):
        parts = path.relative_to(LAYER).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if parts[-1] == "__init__":
            name += ".__init__"  # resolves `from . import x` inside the package itself
        modules.append(Module(name, path.read_text()))
    for path in sorted(FUNCTIONS.glob("*/app.py")):
        modules.append(Module(f"functions.{path.parent.name}.app", path.read_text()))
    return modules


MODULES = layer_and_handlers()


@pytest.mark.parametrize("module", MODULES, ids=[module.name for module in MODULES])
def test_imports_follow_the_architecture(module: Module) -> None:
    assert violations(module) == []


def test_every_package_of_the_map_is_checked() -> None:
    packages = {module.package for module in MODULES}
    assert packages >= {"core", "http", "storage", "adapters", "functions", *DOMAIN}


def test_the_rules_name_modules_that_exist() -> None:
    """A module renamed away from FEATURE_MODELS or PORTS would switch its rule off."""
    assert {*FEATURE_MODELS, *PORTS} <= {module.name for module in MODULES}


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("mailbridge.connections.service", "import boto3", "talks to AWS"),
        ("mailbridge.oauth.flow", "from ..adapters import google", "through their port"),
        ("mailbridge.oauth.flow", "from msal import ClientApplication", "provider libraries"),
        ("mailbridge.core.errors", "from ..http.errors import STATUS", "core imports no"),
        ("mailbridge.storage.agents", "from ..connections.service import view", "models only"),
        ("mailbridge.orgs.client_orgs", "from ..storage.orgs import X", "storage.protocols"),
        ("mailbridge.orgs.client_orgs", "from ..storage.protocols import X", "protocols types"),
        ("mailbridge.orgs.models", "from .inherited_apps import resolve_app", "models import core"),
        ("mailbridge.connections.records", "from .service import view", "models import core"),
        ("mailbridge.orgs.client_orgs", "from ..http.caller import Caller", "knows no HTTP"),
        ("mailbridge.http.app", "from ..oauth.flow import authorize", "http imports the"),
        ("mailbridge.adapters.imap", "from ..storage.aws import dynamodb", "neither storage"),
        ("mailbridge.adapters.google", "from ..oauth.flow import authorize", "and ports only"),
        ("functions.oauth.app", "from mailbridge.adapters.google import X", "their port"),
        (
            "mailbridge.connections.checks",
            "from aws_lambda_powertools.event_handler import Response",
            "knows no HTTP",
        ),
    ],
)
def test_the_rules_catch_what_they_forbid(name: str, source: str, expected: str) -> None:
    found = violations(Module(name, source))
    assert any(expected in problem for problem in found), found


def test_every_error_code_has_its_status_in_the_one_table() -> None:
    from mailbridge.core.errors import ErrorCode
    from mailbridge.http.errors import STATUS

    assert set(STATUS) == set(ErrorCode)


def test_the_api_page_lists_each_code_under_its_status() -> None:
    """Every code the Errors table of docs/api.md lists is under the status STATUS gives it."""
    from mailbridge.core.errors import ErrorCode
    from mailbridge.http.errors import STATUS

    page = (ROOT / "docs" / "api.md").read_text()
    section = page.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d{3}) \|(.*)\|$", section, re.MULTILINE)
    listed = 0
    for status, codes in rows:
        for code in re.findall(r"`([a-z_]+)`", codes):
            if code in ErrorCode.__members__.values():
                assert STATUS[ErrorCode(code)] == int(status), code
                listed += 1
    assert listed >= 20, section
