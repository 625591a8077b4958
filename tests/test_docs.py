"""The README and docs/*.md say only what works: every command they give is runnable or
checked, every path and link they name exists, and their tables of routes and settings are
the template's and the code's. Each failure names the page and what in it is broken.

Checked, in inline code and code blocks:
- `make <target> [VAR=value]`: the target is the Makefile's, and so is each variable;
- `python -m <module> [--flags]`: a module with an argparse CLI runs with `--help`, which
  lists each flag; any other is imported only (never run: `mailbridge_tools.openapi` writes
  openapi.json, `mailbridge_tools.build` runs sam);
- `sam ...`: a SAM CLI command, its `--config-env` an environment of samconfig.toml,
  `sam local invoke`'s function the template's;
- `--parameter-overrides KEY=value...`, of any command or alone: each KEY a parameter of
  template.yaml;
- `aws <service> <command> [--options]`: an operation of the AWS CLI's service model (from
  botocore), each option one of its parameters or a global option;
- `curl` lines (shell blocks) and `METHOD /path` mentions: a route of template.yaml, or one
  of the local run's own pages (a curl line's URL is its first argument that is no option's
  value; a URL without a path is no route);
- repository paths in backticks or shell blocks (placeholders like `<group>` match any one
  name), relative links and images, and their `#anchors`;
- docs/api.md's routes table is template.yaml's routes, docs/settings.md's table the
  fields of `Settings`, both ways.

The printed lines of the local run are run as printed by tests/test_local_run.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path

import pytest
from mailbridge_tools.template import function_ids, function_properties, load_template, routes

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Where a path named without its repository prefix may live: the layer's and the local
# tools' packages are often named from inside ("mailbridge/http/contract.py", "storage/...").
PATH_ROOTS = [
    ROOT,
    ROOT / "layers" / "shared",
    ROOT / "layers" / "shared" / "mailbridge",
    ROOT / "local",
    ROOT / "local" / "mailbridge_tools",
]
# fmt: off
FILE_SUFFIXES = (
    ".py", ".yaml", ".yml", ".toml", ".json", ".md", ".png", ".sh", ".txt", ".html", ".js",
    ".css",
)
SHELL_BLOCKS = {"sh", "bash", "shell", "console"}
# Blocks that hold no commands: data, code of another language, diagrams.
DATA_BLOCKS = {"json", "js", "javascript", "mermaid", "yaml", "python"}
# The AWS CLI's options that every command takes.
AWS_GLOBAL_OPTIONS = {
    "query", "output", "region", "profile", "endpoint-url", "no-cli-pager", "debug",
    "no-paginate", "max-items", "page-size", "starting-token", "cli-input-json",
}
SAM_COMMANDS = {
    "build", "deploy", "delete", "validate", "package", "sync", "logs", "init", "list",
    "local invoke", "local start-api", "local start-lambda", "local generate-event",
}
# fmt: on
HTTP_METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")
# Modules that do real work when run, whatever their arguments (openapi writes openapi.json,
# build runs sam): only imported, even should they take options one day.
IMPORT_ONLY = {"mailbridge_tools.openapi", "mailbridge_tools.build"}
# curl's options that take a value, which is not the URL; and the short ones among them,
# which may end a cluster of short flags (`-sX POST`).
# fmt: off
CURL_VALUE_OPTIONS = {
    "-H", "--header", "--json", "-d", "--data", "--data-raw", "--data-binary",
    "--data-urlencode", "-F", "--form", "-o", "--output", "--cacert", "--cert", "--key",
    "-X", "--request", "-u", "--user", "-w", "--write-out", "-A", "--user-agent", "-e",
    "--referer", "-b", "--cookie", "-c", "--cookie-jar", "-m", "--max-time",
    "--connect-timeout", "--retry", "-x", "--proxy", "--resolve", "-T", "--upload-file",
    "--url",
}
# fmt: on
CURL_SHORT_VALUE_FLAGS = {option[1] for option in CURL_VALUE_OPTIONS if len(option) == 2}
CURL_SENDS = {"-d", "--data", "--data-raw", "--data-binary", "--data-urlencode", "--json"}


# The pages' parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.relative_to(ROOT).as_posix()

    def blocks(self) -> list[tuple[str, str]]:
        """Its fenced code blocks: (language, body)."""
        return [
            (match[1].strip().lower(), match[2])
            for match in re.finditer(r"^```([^\n]*)\n(.*?)^```", self.text, re.M | re.S)
        ]

    def prose(self) -> str:
        """Its text without the fenced blocks."""
        return re.sub(r"^```[^\n]*\n.*?^```", "", self.text, flags=re.M | re.S)

    def inline_code(self) -> list[str]:
        """Its inline code spans, each on one line (a span may wrap in the source)."""
        return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", self.prose())]

    def commands(self) -> list[str]:
        """Where commands can be: inline code, and the blocks that are not data."""
        found = self.inline_code()
        for language, body in self.blocks():
            if language not in DATA_BLOCKS:
                # A text block may quote code in backticks too.
                found.extend(line.replace("`", " ") for line in logical_lines(body))
        return found

    def shell_lines(self) -> list[str]:
        return [
            line
            for lang, body in self.blocks()
            if lang in SHELL_BLOCKS
            for line in logical_lines(body)
        ]

    def headings(self) -> list[str]:
        return [
            match[1] for match in re.finditer(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", self.prose(), re.M)
        ]


def logical_lines(body: str) -> list[str]:
    """A block's lines, those continued with a backslash joined."""
    return [line for line in re.sub(r"\\\n\s*", " ", body).splitlines() if line.strip()]


def load_pages() -> list[Page]:
    return [Page(path, path.read_text(encoding="utf-8")) for path in PAGES]


@pytest.fixture(scope="module")
def pages() -> list[Page]:
    return load_pages()


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Page) -> set[str]:
    found: set[str] = set()
    for heading in page.headings():
        base = slug(heading)
        anchor, repeat = base, 0
        while anchor in found:
            repeat += 1
            anchor = f"{base}-{repeat}"
        found.add(anchor)
    return found


def problems_of(check: str, problems: list[str]) -> str:
    return f"{check}:\n  " + "\n  ".join(dict.fromkeys(problems))


# What the repository holds ---------------------------------------------------------------


@cache
def ignored_directories() -> frozenset[str]:
    """What runs make and git ignores (.venv, build/, artifacts/...): named in the docs as
    places things are written to, never checked for existence."""
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return frozenset(line.strip("/") for line in lines if line.endswith("/") and "*" not in line)


@cache
def file_names() -> frozenset[str]:
    """Every file and directory name in the repository, ignored directories left out."""
    names: set[str] = set()
    for _, directories, files in os.walk(ROOT):
        directories[:] = [d for d in directories if d not in ignored_directories() | {".git"}]
        names.update(directories, files)
    return frozenset(names)


def top_level_names() -> set[str]:
    return {entry.name for entry in ROOT.iterdir()} - ignored_directories() - {".git"}


@cache
def makefile() -> tuple[frozenset[str], frozenset[str]]:
    """The Makefile's targets and the variables it reads."""
    text = (ROOT / "Makefile").read_text()
    targets = {
        target
        for match in re.finditer(r"^([^\s#=:][^=:\n]*):(?!=)", text, re.M)
        for target in match[1].split()
    }
    variables = set(re.findall(r"\$\((\w+)\)", text))
    return frozenset(targets), frozenset(variables)


@cache
def template() -> dict[str, object]:
    return load_template()


@cache
def sam_environments() -> frozenset[str]:
    """samconfig.toml's environments: its tables of `[<env>.<command>.parameters]` with a
    `deploy` or `global` command section; not its other keys (`version`)."""
    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    return frozenset(
        name
        for name, table in config.items()
        if isinstance(table, dict)
        and any(
            isinstance(table.get(command), dict)
            and isinstance(table[command].get("parameters"), dict)
            for command in ("deploy", "global")
        )
    )


@cache
def template_parameters() -> frozenset[str]:
    return frozenset(template()["Parameters"])  # type: ignore[arg-type]


@cache
def route_keys() -> frozenset[str]:
    return frozenset(route.route_key for route in routes(template()))


def local_pages() -> set[str]:
    """The local run's own pages, which AWS does not have."""
    from mailbridge_tools.localapi.web import MAIL_EVENTS_ROUTE, OPENAPI_ROUTE

    return {f"GET {MAIL_EVENTS_ROUTE}", f"GET {OPENAPI_ROUTE}", "GET /"}


def route_pattern(route_key: str) -> re.Pattern[str]:
    method, _, path = route_key.partition(" ")
    parts = [
        r"[^/]+" if re.fullmatch(r"\{\w+\}", part) else re.escape(part) for part in path.split("/")
    ]
    return re.compile(f"{method} " + "/".join(parts))


def route_exists(method: str, path: str) -> bool:
    """A concrete path (placeholders `<x>`, `{x}` or `$X` standing for one segment) of a
    template route or of the local run's own pages. No path (a bare host or `$API`) is none:
    it is never taken for `/`."""
    if not path.startswith("/"):
        return False
    path = re.sub(r"<[^>/]+>|\{\w+\}|\$\{?\w+\}?", "x", path.split("?")[0]).rstrip("/") or "/"
    return any(
        route_pattern(key).fullmatch(f"{method} {path}") for key in route_keys() | local_pages()
    )


# The two commands ----------------------------------------------------------------------


def test_the_readme_starts_with_the_two_commands_ci_runs(pages: list[Page]) -> None:
    readme = pages[0]
    sections = re.findall(r"^## (.+)$", readme.prose(), re.M)
    assert sections[:1] == ["Two commands"], f"README.md: the first section is {sections[:1]}"
    block = readme.text.split("\n## Two commands\n", 1)[1].split("\n## ", 1)[0]
    _, body = Page(readme.path, block).blocks()[0]
    commands = [line.split("#", 1)[0].strip() for line in logical_lines(body)]
    assert commands == ["make run", "make test"], f"README.md's two commands: {commands}"
    ci = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert ci[-1] == commands[1], f".ci/run runs {ci[-1]!r}, the README's test command is make test"


# Commands ------------------------------------------------------------------------------


def make_problems(page: Page) -> Iterator[str]:
    targets, variables = makefile()
    for command in page.commands():
        pattern = r"(?<![\w./-])make\s+([a-z][\w.-]*)((?:\s+[A-Z_][A-Z0-9_]*=\S*)*)"
        for match in re.finditer(pattern, command):
            if match[1] not in targets:
                yield f"{page.name}: `{match[0]}`: the Makefile has no target {match[1]!r}"
            for variable in re.findall(r"([A-Z_][A-Z0-9_]*)=", match[2]):
                if variable not in variables:
                    yield f"{page.name}: `{match[0]}`: the Makefile reads no {variable}"


def python_modules(pages: list[Page]) -> dict[str, dict[str, set[str]]]:
    """Each `python -m` module the pages name: the flags each page gives it."""
    found: dict[str, dict[str, set[str]]] = {}
    for page in pages:
        for command in page.commands():
            for match in re.finditer(r"(?<![\w-])python3?(?:\.\d+)?\s+-m\s+([\w.]+)(.*)", command):
                # Up to the next command of the line.
                arguments = re.split(r"\s(?:&&|\|\||\||;)\s|\)", match[2])[0]
                flags = {
                    flag.split("=")[0] for flag in re.findall(r"(?<![\w-])--[\w-]+", arguments)
                }
                found.setdefault(match[1], {}).setdefault(page.name, set()).update(flags)
    return found


def module_source(module: str) -> str | None:
    """The source of what `python -m module` runs (a package's: all its files), None when
    there is nothing to run."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:
        return None  # its package is missing
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin)
    if origin.name != "__init__.py":
        return origin.read_text()
    if not (origin.parent / "__main__.py").exists():
        return None  # a package without __main__: `python -m` cannot run it
    return "\n".join(path.read_text() for path in sorted(origin.parent.glob("*.py")))


def has_cli(module: str, source: str) -> bool:
    """Whether `python -m module --help` only prints its options: an argparse parser."""
    return module not in IMPORT_ONLY and "ArgumentParser(" in source and "parse_args(" in source


def imported_name(module: str) -> str:
    """What to import for `python -m module` without running it: a package's `__main__`
    when that guards its work with `if __name__ == "__main__"`, else the package."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    main = Path(spec.origin).parent / "__main__.py"
    if Path(spec.origin).name == "__init__.py" and "__name__ ==" in main.read_text():
        return f"{module}.__main__"
    return module


@dataclass(frozen=True)
class ModuleCheck:
    error: str  # why it fails, "" when it imports (and --help answers)
    options: frozenset[str] | None  # what its --help lists; None: not run, imported only


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


@cache
def check_module(module: str) -> ModuleCheck:
    """`python -m module --help` for a module with an argparse CLI, an import of it for any
    other, in a fresh interpreter: a module broken at import fails either way."""
    source = module_source(module)
    assert source is not None, module
    cli = has_cli(module, source)
    if cli:
        command = [sys.executable, "-m", module, "--help"]
    else:
        command = [
            sys.executable,
            "-c",
            "import importlib, sys; importlib.import_module(sys.argv[1])",
        ]
        command.append(imported_name(module))
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=60, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return ModuleCheck(f"{' '.join(command[1:])} did not finish in 60 s", None)
    if result.returncode != 0:
        what = "--help" if cli else "importing it"
        return ModuleCheck(f"{what} failed: {last_line(result.stderr + result.stdout)}", None)
    if not cli:
        return ModuleCheck("", None)
    if "usage:" not in result.stdout:
        return ModuleCheck(f"--help printed no usage: {last_line(result.stdout)}", None)
    return ModuleCheck("", frozenset(re.findall(r"(?<![\w-])--[\w-]+", result.stdout)))


def python_problems(pages: list[Page]) -> list[str]:
    modules = python_modules(pages)
    problems = []
    runnable = []
    for module, by_page in sorted(modules.items()):
        try:
            source = module_source(module)
        except Exception as error:  # its package is broken at import
            problems.extend(
                f"{page}: `python -m {module}`: importing its package failed: {error!r}"
                for page in by_page
            )
            continue
        if source is None:
            problems.extend(f"{page}: `python -m {module}`: no such module" for page in by_page)
        else:
            runnable.append(module)
    # Each in its own interpreter, two at a time (CI has two cores).
    with ThreadPoolExecutor(max_workers=2) as pool:
        checks = dict(zip(runnable, pool.map(check_module, runnable), strict=True))
    for module, check in checks.items():
        for page, flags in modules[module].items():
            if check.error:
                problems.append(f"{page}: `python -m {module}`: {check.error}")
            elif check.options is None and flags:
                problems.append(
                    f"{page}: `python -m {module} {' '.join(sorted(flags))}`: the module takes "
                    "no argparse options to check the flags against"
                )
            elif check.options is not None:
                problems.extend(
                    f"{page}: `python -m {module}`: no option {flag} (its --help: "
                    f"{', '.join(sorted(check.options))})"
                    for flag in sorted(flags - check.options)
                )
    return problems


def test_make_commands_name_the_makefiles_targets_and_variables(pages: list[Page]) -> None:
    problems = [problem for page in pages for problem in make_problems(page)]
    assert not problems, problems_of("make commands", problems)


def test_python_modules_import_and_take_their_flags(pages: list[Page]) -> None:
    modules = python_modules(pages)
    assert "mailbridge_tools.localapi" in modules, "no python -m command found in the docs"
    problems = python_problems(pages)
    assert not problems, problems_of("python -m commands", problems)


def sam_problems(page: Page) -> Iterator[str]:
    functions = set(function_ids(template()))
    for command in page.commands():
        for match in re.finditer(r"(?<![\w./-])sam\s+([a-z][\w-]*)(.*)", command):
            words = match[2].replace("[", " ").replace("]", " ").split()
            name = match[1] + (f" {words[0]}" if match[1] == "local" and words else "")
            if name not in SAM_COMMANDS:
                yield f"{page.name}: `{match[0]}`: no SAM CLI command `sam {name}`"
            for flag, value in pairwise([*words, ""]):
                if flag == "--config-env" and value not in sam_environments():
                    yield f"{page.name}: `{match[0]}`: samconfig.toml has no environment {value!r}"
            invoked = words[1] if name == "local invoke" and len(words) > 1 else "-"
            if not invoked.startswith("-") and invoked not in functions:
                yield f"{page.name}: `{match[0]}`: the template has no function {invoked}"


def test_sam_commands_name_what_exists(pages: list[Page]) -> None:
    problems = [problem for page in pages for problem in sam_problems(page)]
    assert not problems, problems_of("sam commands", problems)


def parameter_overrides(page: Page) -> Iterator[tuple[str, str]]:
    """(what the page says, KEY) of each `--parameter-overrides KEY=value ...`, of whatever
    command (sam, the local run) or alone in prose; up to the next option or command.
    Both of SAM's forms: `KEY=value` (quoted or not) and `ParameterKey=KEY,ParameterValue=...`.
    """
    for command in page.commands():
        for match in re.finditer(r"(?<![\w-])--parameter-overrides(?:=|\s+)(.*)", command):
            said = re.split(r"\s(?:&&|\|\||\||;|#)(?:\s|$)|\)", match[0])[0].strip()
            arguments = said.removeprefix("--parameter-overrides").lstrip("= ")
            try:
                words = shlex.split(arguments)
            except ValueError:
                words = arguments.split()
            for override in (part for word in words for part in word.split()):
                if override.startswith("-"):
                    break  # the next option
                key = re.match(r"ParameterKey=([^,]+),|([^=,]+)=", override)
                if key:
                    yield said, key[1] or key[2]


def override_problems(page: Page) -> Iterator[str]:
    for said, key in parameter_overrides(page):
        if key not in template_parameters():
            yield f"{page.name}: `{said}`: template.yaml has no parameter {key}"


def test_parameter_overrides_name_the_templates_parameters(pages: list[Page]) -> None:
    assert any(parameter_overrides(page) for page in pages), "no --parameter-overrides found"
    problems = [problem for page in pages for problem in override_problems(page)]
    assert not problems, problems_of("--parameter-overrides", problems)


def aws_problems(page: Page) -> Iterator[str]:
    import botocore.session
    from botocore import xform_name
    from botocore.exceptions import UnknownServiceError

    session = botocore.session.get_session()
    for command in page.commands():
        for match in re.finditer(r"(?<![\w./-])aws\s+([a-z][\w-]*)\s+([a-z][\w-]*)(.*)", command):
            service, operation, rest = match[1], match[2], match[3]
            try:
                model = session.get_service_model(service)
            except UnknownServiceError:
                yield f"{page.name}: `{match[0]}`: the AWS CLI has no service {service}"
                continue
            names = {xform_name(name, "-"): name for name in model.operation_names}
            if operation not in names:
                yield f"{page.name}: `{match[0]}`: {service} has no command {operation}"
                continue
            shape = model.operation_model(names[operation]).input_shape
            members = {xform_name(member, "-") for member in (shape.members if shape else {})}
            for option in re.findall(r"(?<![\w-])--([\w-]+)", rest):
                if option not in members | AWS_GLOBAL_OPTIONS:
                    yield f"{page.name}: `{match[0]}`: aws {service} {operation} has no --{option}"


def test_aws_commands_are_the_cli_s_operations(pages: list[Page]) -> None:
    problems = [problem for page in pages for problem in aws_problems(page)]
    assert not problems, problems_of("aws commands", problems)


def curl_request(arguments: list[str]) -> tuple[str | None, str]:
    """A curl command's URL (its first argument that is no option's value) and method."""
    url: str | None = None
    method: str | None = None
    sends = False

    def given(option: str, value: str) -> None:
        nonlocal url, method, sends
        sends = sends or option in CURL_SENDS
        if option in ("-X", "--request"):
            method = value
        elif option == "--url" and url is None:
            url = value

    taking: str | None = None  # the option the next argument is the value of
    for word in arguments:
        if taking is not None:
            given(taking, word)
            taking = None
        elif word.startswith("--"):
            option, equals, value = word.partition("=")
            if equals:
                given(option, value)
            elif option in CURL_VALUE_OPTIONS:
                taking = option
        elif word.startswith("-") and len(word) > 1:
            # Short flags, one of which may take a value: `-sX POST`, `-XPOST`.
            for index, letter in enumerate(word[1:], start=2):
                if letter in CURL_SHORT_VALUE_FLAGS:
                    if word[index:]:
                        given(f"-{letter}", word[index:])
                    else:
                        taking = f"-{letter}"
                    break
        elif url is None:
            url = word
    return url, method or ("POST" if sends else "GET")


def route_mentions(page: Page) -> Iterator[tuple[str, str, str]]:
    """(what the page says, method, path) of its curl lines and `METHOD /path` mentions; the
    path is "" when a curl line gives none (no URL, a bare host or `$API`)."""
    variables: dict[str, str] = {}
    for line in page.shell_lines():
        for name, value in re.findall(r"(?:^|\s)(\w+)=(\"[^\"]*\"|'[^']*'|[^\s\"']\S*)", line):
            if not value.startswith("$("):  # a command's output: any one segment
                variables[name] = value.strip("\"'")
        for call in re.split(r"(?<![\w-])(?=curl\s)", line)[1:]:
            call = re.split(r"\s(?:\||&&|;)\s|\)", call)[0].strip()
            try:
                words = shlex.split(call, comments=True)
            except ValueError:
                words = call.split()
            url, method = curl_request(words[1:])
            if url is None:
                yield call, method, ""
                continue
            for _ in range(5):  # variables that name others
                url = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), url)
            path = re.sub(r"^(https?://[^/?#]+|\$\{?\w+\}?)", "", url)
            yield f"curl {url}", method, path
    for span in page.inline_code():
        for match in re.finditer(rf"\b({'|'.join(HTTP_METHODS)}) (/\S*)", span):
            yield match[0], match[1], match[2]


def route_problems(page: Page) -> Iterator[str]:
    for said, method, path in route_mentions(page):
        if not path.startswith("/"):
            yield f"{page.name}: `{said}`: no path to a route (an empty one is not /)"
        elif not route_exists(method, path):
            yield f"{page.name}: `{said}`: no route {method} {path} in template.yaml"


def test_routes_the_pages_call_exist(pages: list[Page]) -> None:
    problems = [problem for page in pages for problem in route_problems(page)]
    assert not problems, problems_of("routes", problems)


# Paths and links -----------------------------------------------------------------------


def repo_path_candidates(page: Page) -> Iterator[str]:
    words = [word for span in page.inline_code() for word in span.split()]
    for line in page.shell_lines():
        try:
            words.extend(shlex.split(line, comments=True))
        except ValueError:
            words.extend(line.split())
    for word in words:
        word = word.strip("()[],;:'\"")
        word = re.sub(r"^[A-Z_][A-Z0-9_]*=", "", word)  # VAR=path
        yield word


def looks_like_repo_path(word: str) -> bool:
    if not word or "://" in word:
        return False
    if word[0] in "/$~-<{." and not word.startswith(".ci/"):
        return False
    first = word.split("/")[0]
    if first in ignored_directories():
        return False  # written by runs
    if "/" in word:
        return first in top_level_names() or word.endswith(FILE_SUFFIXES)
    return word.endswith(FILE_SUFFIXES) and re.fullmatch(r"[\w.-]+", word) is not None


def path_exists(word: str) -> bool:
    if "/" not in word:
        return word in file_names()
    pattern = re.sub(r"<[^>/]+>|\{[^}/]+\}", "*", word.rstrip("/").removesuffix("/..."))
    return any(next(root.glob(pattern), None) is not None for root in PATH_ROOTS)


def test_repository_paths_exist(pages: list[Page]) -> None:
    problems = [
        f"{page.name}: `{word}`: no such file or directory"
        for page in pages
        for word in sorted(set(repo_path_candidates(page)))
        if looks_like_repo_path(word) and not path_exists(word)
    ]
    assert not problems, problems_of("repository paths", problems)


def link_problems(page: Page, by_path: dict[Path, Page]) -> Iterator[str]:
    prose = re.sub(r"`[^`]*`", "", page.prose())
    for match in re.finditer(r"!?\[(?:[^\]]|\n)*?\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", prose):
        target = match[1]
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = (page.path.parent / path).resolve() if path else page.path
        if not resolved.exists():
            yield f"{page.name}: link {target}: {path} does not exist"
            continue
        if anchor and resolved.suffix == ".md":
            linked = by_path.get(resolved) or Page(resolved, resolved.read_text(encoding="utf-8"))
            if anchor not in anchors(linked):
                yield f"{page.name}: link {target}: {linked.name} has no heading #{anchor}"


def test_links_and_images_resolve(pages: list[Page]) -> None:
    by_path = {page.path: page for page in pages}
    problems = [problem for page in pages for problem in link_problems(page, by_path)]
    assert not problems, problems_of("links", problems)


# The tables ----------------------------------------------------------------------------


def section(page: Page, heading: str) -> str:
    return page.text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def routes_table_problems(page: Page) -> Iterator[str]:
    """Its `## Routes` table against template.yaml's routes, both ways."""
    rows = re.findall(r"^\| ([A-Z, ]+) \| `([^`]+)` \|", section(page, "Routes"), re.M)
    listed = {f"{method.strip()} {path}" for methods, path in rows for method in methods.split(",")}
    for key in sorted(route_keys() - listed):
        yield f"{page.name}'s routes table: no row for {key} (a route of template.yaml)"
    for key in sorted(listed - route_keys()):
        yield f"{page.name}'s routes table: {key} is no route of template.yaml"


def settings_table_problems(page: Page) -> Iterator[str]:
    """Its table of variables against `Settings`' fields (a variable is its field's name in
    capitals), both ways."""
    from mailbridge.core.settings import Settings

    rows = re.findall(r"^\| (`[A-Z].*?) \|", page.text, re.M)
    listed = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}
    fields = {name.upper() for name in Settings._fields}
    for name in sorted(fields - listed):
        yield f"{page.name}'s settings table: no row for {name} (a field of Settings)"
    for name in sorted(listed - fields):
        yield f"{page.name}'s settings table: {name} is no field of Settings"


def test_the_routes_table_is_the_templates(pages: list[Page]) -> None:
    api = next(page for page in pages if page.name == "docs/api.md")
    problems = list(routes_table_problems(api))
    assert not problems, problems_of("the routes table", problems)


def test_the_settings_table_is_the_settings_fields(pages: list[Page]) -> None:
    settings = next(page for page in pages if page.name == "docs/settings.md")
    problems = list(settings_table_problems(settings))
    assert not problems, problems_of("the settings table", problems)


def test_deploying_names_the_python_sam_build_needs(pages: list[Page]) -> None:
    deploying = next(page for page in pages if page.name == "docs/deploying.md")
    runtimes = {
        str(function_properties(template(), function)["Runtime"])
        for function in function_ids(template())
    }
    for runtime in runtimes:
        assert f"`{runtime}`" in deploying.text, f"docs/deploying.md does not name {runtime}"
    assert "--use-container" in deploying.text, "docs/deploying.md: no --use-container"


# The checks catch what they should -----------------------------------------------------


def broken(text: str, name: str = "docs/example.md") -> Page:
    return Page(ROOT / name, text)


# Modules the self-test writes: one whose CLI, one whose import, is broken.
BROKEN_CLI = """import argparse
import mailbridge_no_such_dependency

argparse.ArgumentParser().parse_args()
"""
BROKEN_LIBRARY = "import mailbridge_no_such_dependency\n"


def test_the_checks_catch_a_broken_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mailbridge_docs_broken_cli.py").write_text(BROKEN_CLI)
    (tmp_path / "mailbridge_docs_broken_library.py").write_text(BROKEN_LIBRARY)
    monkeypatch.syspath_prepend(tmp_path)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    )
    page = broken(
        "`make runn` and `make run PORTT=1`\n\n"
        "[gone](nowhere.md) [anchor](api.md#no-such-heading) ![img](screenshots/no.png)\n\n"
        "`tests/test_nothing.py`, `GET /bridge/nothing`\n\n"
        "`python -m mailbridge_tools.no_such_module`, `python -m mailbridge_tools`, "
        "`python -m mailbridge_docs_broken_cli`, `python -m mailbridge_docs_broken_library`, "
        "`python -m mailbridge_tools.openapi --check`, "
        "`--parameter-overrides NoSuchInlineParameter=...`\n\n"
        "```sh\nsam deploy --config-env staging\nsam deploy --config-env version\n"
        "sam deploy --parameter-overrides LogLevel=INFO NoSuchSamParameter=x --guided\n"
        "sam deploy --parameter-overrides ParameterKey=NoSuchKeyParameter,ParameterValue=x\n"
        ".venv/bin/python -m mailbridge_tools.leftovers --stack x --no-such-flag\n"
        ".venv/bin/python -m mailbridge_tools.localapi \\\n"
        "  --parameter-overrides AllowPrivateMailServers=true NoSuchLocalParameter=1\n"
        "aws kms create-key --no-such-option x\ncurl -s $API/bridge/nowhere\n"
        "curl -H \"$AUTH\" $API/bridge/unset-header\ncurl -s -XPUT --json '{}' $API/bridge/x\n"
        'curl -s -H "$AUTH"\ncurl -s $API\n```\n\n'
        "## Routes\n\n| method | path | does |\n|---|---|---|\n"
        "| GET | `/bridge/email-presets` | the presets |\n| GET, POST | `/bridge/nothing` | x |\n\n"
        "## Settings\n\n| variable | default | meaning |\n|---|---|---|\n"
        "| `TABLE_NAME` | (from the stack) | the table |\n| `MAIL_NO_SUCH_SETTING` | none | x |\n"
    )
    found = "\n".join(
        [
            *make_problems(page),
            *link_problems(page, {}),
            *python_problems([page]),
            *sam_problems(page),
            *override_problems(page),
            *aws_problems(page),
            *route_problems(page),
            *routes_table_problems(page),
            *settings_table_problems(page),
            *(
                word
                for word in repo_path_candidates(page)
                if looks_like_repo_path(word) and not path_exists(word)
            ),
        ]
    )
    for expected in [
        "no target 'runn'",
        "reads no PORTT",
        "nowhere.md does not exist",
        "has no heading #no-such-heading",
        "screenshots/no.png does not exist",
        # python -m: a missing module, a package without __main__, one broken at import
        # (run with --help, or imported), a missing flag, flags for a module without options
        "`python -m mailbridge_tools.no_such_module`: no such module",
        "`python -m mailbridge_tools`: no such module",
        "`python -m mailbridge_docs_broken_cli`: --help failed: ModuleNotFoundError",
        "`python -m mailbridge_docs_broken_library`: importing it failed: ModuleNotFoundError",
        "`python -m mailbridge_tools.leftovers`: no option --no-such-flag",
        "`python -m mailbridge_tools.openapi --check`: the module takes no argparse options",
        "no environment 'staging'",
        "no environment 'version'",
        "template.yaml has no parameter NoSuchSamParameter",
        "template.yaml has no parameter NoSuchKeyParameter",
        "template.yaml has no parameter NoSuchLocalParameter",
        "template.yaml has no parameter NoSuchInlineParameter",
        "has no --no-such-option",
        "`curl $API/bridge/nowhere`: no route GET /bridge/nowhere",
        "`curl $API/bridge/unset-header`: no route GET /bridge/unset-header",
        "`curl $API/bridge/x`: no route PUT /bridge/x",
        '`curl -s -H "$AUTH"`: no path to a route',
        "`curl $API`: no path to a route",
        "`GET /bridge/nothing`: no route GET /bridge/nothing",
        "routes table: GET /bridge/nothing is no route",
        "routes table: POST /bridge/nothing is no route",
        "settings table: MAIL_NO_SUCH_SETTING is no field of Settings",
        "tests/test_nothing.py",
    ]:
        assert expected in found, f"{expected!r} not caught:\n{found}"
    # What is right on the same lines is not taken for wrong.
    for right in [
        "no parameter LogLevel",
        "no parameter AllowPrivateMailServers",
        "GET /bridge/email-presets is no route",
        "TABLE_NAME is no field",
        "`python -m mailbridge_tools.localapi`",
    ]:
        assert right not in found, f"{right!r} is no problem:\n{found}"
    # Modules that do real work when run are imported, never run.
    for module in IMPORT_ONLY:
        assert check_module(module) == ModuleCheck("", None), module
