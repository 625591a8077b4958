"""`make build`: `sam build`, once what it needs is there. SAM builds each function, and the
layer by its Makefile (layers/shared/Makefile: the packages with their bytecode), with the
functions' runtime's own Python (python3.12 for the template's `Runtime: python3.12`), found
on PATH; without it, it fails deep in its output. This finds pyenv's when it is installed but
not selected, and otherwise says first what is missing and how to get it.

    python -m mailbridge_tools.build [sam build options...]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .template import TEMPLATE_PATH, function_ids, function_properties, load_template

# Where SAM CLI comes from; it is not a Python dependency of this project (it pins its own).
SAM_INSTALL = "https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/install-sam-cli.html"


def runtime_python(template: dict[str, object]) -> str:
    """The interpreter `sam build` looks for: python3.12 for `Runtime: python3.12`."""
    runtimes = {
        str(function_properties(template, function).get("Runtime"))
        for function in function_ids(template)
    }
    if len(runtimes) != 1 or not next(iter(runtimes)).startswith("python"):
        raise SystemExit(
            f"mailbridge: expected one Python runtime in the template, found {runtimes}"
        )
    return runtimes.pop()


def find_python(python: str) -> str | None:
    """An interpreter named `python` ("python3.12") that runs: the one on PATH, else pyenv's
    installed version of it (selected or not), else None."""
    if _runs(python):
        return python
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return None
    root = subprocess.run(  # noqa: S603 - pyenv from PATH, fixed arguments
        [pyenv, "root"], capture_output=True, text=True, timeout=30, check=False
    ).stdout.strip()
    version = python.removeprefix("python")
    found = Path(root).glob(f"versions/{version}.*/bin/{python}") if root else []
    # The newest patch release: 3.12.10 after 3.12.9.
    installed = sorted(found, key=_version)
    return str(installed[-1]) if installed and _runs(str(installed[-1])) else None


def _version(interpreter: Path) -> list[int]:
    """The version of pyenv's `versions/<version>/bin/pythonX.Y`, by its numeric parts."""
    return [int(part) for part in interpreter.parents[1].name.split(".") if part.isdigit()]


def _runs(python: str) -> bool:
    try:
        # Run, not only found: a pyenv shim is on PATH for versions that are not selected.
        return (
            subprocess.run(  # noqa: S603 - a fixed interpreter name
                [python, "-c", "pass"], capture_output=True, timeout=30, check=False
            ).returncode
            == 0
        )
    except FileNotFoundError:
        return False


def missing_tools(python: str | None) -> list[str]:
    """What `sam build` would fail on, each in one line with how to get it; `python` is the
    interpreter it needs (None: it builds in Docker)."""
    problems = []
    if python is not None and not _runs(python):
        version = python.removeprefix("python")
        problems.append(
            f"{python} is not on PATH, and sam build builds with the functions' runtime's "
            f"Python: install Python {version} (`pyenv install {version}` then "
            f"`pyenv shell {version}`, `uv python install {version}`, or your system's "
            f"{python} package), or build in Docker with `make build SAM_ARGS=--use-container`"
        )
    if shutil.which("sam") is None:
        problems.append(f"sam is not on PATH: install the AWS SAM CLI ({SAM_INSTALL})")
    return problems


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    in_docker = "--use-container" in arguments
    python = None if in_docker else runtime_python(load_template(TEMPLATE_PATH))
    found = find_python(python) if python else None
    if found and found != python:
        # pyenv's, not selected: sam build finds it by name on PATH.
        os.environ["PATH"] = f"{Path(found).parent}{os.pathsep}{os.environ['PATH']}"
    problems = missing_tools(python)
    if problems:
        raise SystemExit("\n".join(f"mailbridge: {problem}" for problem in problems))
    os.chdir(TEMPLATE_PATH.parent)
    # SAM CLI from PATH, as the user installed it.
    os.execvp("sam", ["sam", "build", *arguments])  # noqa: S606, S607


if __name__ == "__main__":
    main()
