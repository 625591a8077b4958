"""The README and docs/*.md say only what works: every command they give is runnable or
checked, every path and link they name exists, and their tables of routes and settings are
the template's and the code's. Each failure names the page and what in it is broken.

Checked, in inline code and code blocks:
- `make <target> [VAR=value]`: the target is the Makefile's, and so is each variable;
- `python -m <module> [--flags]`: the module imports, and `--help` lists each flag;
- `sam ...`: a SAM CLI command, its `--config-env` an environment of samconfig.toml, its
  `--parameter-overrides` the template's parameters, `sam local invoke`'s function the
  template's;
- `aws <service> <command> [--options]`: an operation of the AWS CLI's service model (from
  botocore), each option one of its parameters or a global option;
- `curl` lines (shell blocks) and `METHOD /path` mentions: a route of template.yaml, or one
  of the local run's own pages;
- repository paths in backticks or shell blocks (placeholders like `<group>` match any one
  name), relative links and images, and their `#anchors`.

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
    template route or of the local run's own pages."""
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
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    origin = Path(spec.origin)
    files = sorted(origin.parent.glob("*.py")) if origin.name == "__init__.py" else [origin]
    return "\n".join(path.read_text() for path in files)


def help_text(module: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    return result.stdout + result.stderr if result.returncode == 0 else ""


def test_make_commands_name_the_makefiles_targets_and_variables(pages: list[Page]) -> None:
    problems = [problem for page in pages for problem in make_problems(page)]
    assert not problems, problems_of("make commands", problems)


def test_python_modules_import_and_take_their_flags(pages: list[Page]) -> None:
    modules = python_modules(pages)
    assert "mailbridge_tools.localapi" in modules, "no python -m command found in the docs"
    problems = []
    to_ask = []
    for module, by_page in sorted(modules.items()):
        try:
            source = module_source(module)
        except ModuleNotFoundError:
            source = None
        if source is None:
            problems.extend(f"{page}: `python -m {module}`: no such module" for page in by_page)
        elif any(by_page.values()):
            if "ArgumentParser" not in source:
                problems.extend(
                    f"{page}: `python -m {module} {' '.join(sorted(flags))}`: the module takes "
                    "no argparse options to check the flags against"
                    for page, flags in by_page.items()
                    if flags
                )
            else:
                to_ask.append(module)
    # Only modules with an argparse parser are run, and only with --help.
    with ThreadPoolExecutor(max_workers=2) as pool:
        helps = dict(zip(to_ask, pool.map(help_text, to_ask), strict=True))
    for module in to_ask:
        known = set(re.findall(r"(?<![\w-])--[\w-]+", helps[module]))
        if not helps[module]:
            problems.append(f"`python -m {module} --help` failed")
            continue
        for page, flags in modules[module].items():
            problems.extend(
                f"{page}: `python -m {module}`: no option {flag} (its --help: "
                f"{', '.join(sorted(known))})"
                for flag in sorted(flags - known)
            )
    assert not problems, problems_of("python -m commands", problems)


def sam_problems(page: Page) -> Iterator[str]:
    parameters = set(template()["Parameters"])  # type: ignore[arg-type]
    functions = set(function_ids(template()))
    environments = set(tomllib.loads((ROOT / "samconfig.toml").read_text()))
    for command in page.commands():
        for match in re.finditer(r"(?<![\w./-])sam\s+([a-z][\w-]*)(.*)", command):
            words = match[2].replace("[", " ").replace("]", " ").split()
            name = match[1] + (f" {words[0]}" if match[1] == "local" and words else "")
            if name not in SAM_COMMANDS:
                yield f"{page.name}: `{match[0]}`: no SAM CLI command `sam {name}`"
            for flag, value in pairwise([*words, ""]):
                if flag == "--config-env" and value not in environments:
                    yield f"{page.name}: `{match[0]}`: samconfig.toml has no environment {value!r}"
            if "--parameter-overrides" in words:
                overrides = words[words.index("--parameter-overrides") + 1 :]
                for override in overrides:
                    if override.startswith("-"):
                        break
                    key = override.split("=")[0]
                    if "=" in override and key not in parameters:
                        yield f"{page.name}: `{match[0]}`: the template has no parameter {key}"
            invoked = words[1] if name == "local invoke" and len(words) > 1 else "-"
            if not invoked.startswith("-") and invoked not in functions:
                yield f"{page.name}: `{match[0]}`: the template has no function {invoked}"


def test_sam_commands_name_what_exists(pages: list[Page]) -> None:
    problems = [problem for page in pages for problem in sam_problems(page)]
    assert not problems, problems_of("sam commands", problems)


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


def route_mentions(page: Page) -> Iterator[tuple[str, str, str]]:
    """(what the page says, method, path) of its curl lines and `METHOD /path` mentions."""
    variables: dict[str, str] = {}
    for line in page.shell_lines():
        for name, value in re.findall(r"(?:^|\s)(\w+)=(\"[^\"]*\"|'[^']*'|[^\s\"']\S*)", line):
            if not value.startswith("$("):  # a command's output: any one segment
                variables[name] = value.strip("\"'")
        for call in re.split(r"(?<![\w-])(?=curl\s)", line)[1:]:
            call = re.split(r"\s(?:\||&&|;)\s|\)", call)[0]
            url = next(
                (word for word in shlex.split(call) if re.match(r"(\$\{?\w+\}?|https?://)", word)),
                None,
            )
            if url is None:
                continue
            for _ in range(5):  # variables that name others
                url = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], m[0]), url)
            method = re.search(r"-X\s+([A-Z]+)", call)
            sends = re.search(r"--json|-d\s|--data", call)
            chosen = method[1] if method else "POST" if sends else "GET"
            path = re.sub(r"^(https?://[^/]+|\$\{?\w+\}?)", "", url)
            yield f"curl {url}", chosen, path or "/"
    for span in page.inline_code():
        for match in re.finditer(rf"\b({'|'.join(HTTP_METHODS)}) (/\S*)", span):
            yield match[0], match[1], match[2]


def test_routes_the_pages_call_exist(pages: list[Page]) -> None:
    problems = [
        f"{page.name}: `{said}`: no route {method} {path} in template.yaml"
        for page in pages
        for said, method, path in route_mentions(page)
        if not route_exists(method, path)
    ]
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


def test_the_routes_table_is_the_templates(pages: list[Page]) -> None:
    api = next(page for page in pages if page.name == "docs/api.md")
    rows = re.findall(r"^\| ([A-Z, ]+) \| `([^`]+)` \|", section(api, "Routes"), re.M)
    listed = {f"{method.strip()} {path}" for methods, path in rows for method in methods.split(",")}
    missing = sorted(route_keys() - listed)
    extra = sorted(listed - route_keys())
    assert not missing and not extra, (
        f"docs/api.md's routes table: missing {missing} (in template.yaml), "
        f"not in template.yaml {extra}"
    )


def test_the_settings_table_is_the_settings_fields(pages: list[Page]) -> None:
    from mailbridge.core.settings import Settings

    settings = next(page for page in pages if page.name == "docs/settings.md")
    rows = re.findall(r"^\| (`[A-Z].*?) \|", settings.text, re.M)
    listed = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}
    fields = {field.alias for field in Settings.model_fields.values() if field.alias}
    assert listed == fields, (
        f"docs/settings.md's table: missing {sorted(fields - listed)} (Settings' fields), "
        f"not Settings' {sorted(listed - fields)}"
    )


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


def test_the_checks_catch_a_broken_page() -> None:
    page = broken(
        "`make runn` and `make run PORTT=1`\n\n"
        "[gone](nowhere.md) [anchor](api.md#no-such-heading) ![img](screenshots/no.png)\n\n"
        "`tests/test_nothing.py`, `GET /bridge/nothing`\n\n"
        "```sh\nsam deploy --config-env staging\n"
        "aws kms create-key --no-such-option x\ncurl -s $API/bridge/nowhere\n```\n"
    )
    found = "\n".join(
        [
            *make_problems(page),
            *link_problems(page, {}),
            *sam_problems(page),
            *aws_problems(page),
            *(
                f"{said} {method} {path}"
                for said, method, path in route_mentions(page)
                if not route_exists(method, path)
            ),
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
        "no environment 'staging'",
        "has no --no-such-option",
        "curl $API/bridge/nowhere GET /bridge/nowhere",
        "GET /bridge/nothing",
        "tests/test_nothing.py",
    ]:
        assert expected in found, f"{expected!r} not caught:\n{found}"
