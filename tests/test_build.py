"""`make build`: what `sam build` needs is checked first and said in one line each, with how
to get it; then it is sam build, run from the repository with the options given."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mailbridge_tools.template import TEMPLATE_PATH

# A pyenv shim for a version that is not selected: on PATH, but it fails.
FAILING = "#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n"
WORKING = "#!/bin/sh\nexit 0\n"
# Records where and with what it ran.
SAM = '#!/bin/sh\necho "$PWD $*" > "$RECORD"\n'


def build(
    tools: dict[str, str], directory: Path, *arguments: str
) -> subprocess.CompletedProcess[str]:
    for name, script in tools.items():
        (directory / name).write_text(script)
        (directory / name).chmod(0o755)
    environment = os.environ | {"PATH": str(directory), "RECORD": str(directory / "ran")}
    command = [sys.executable, "-m", "mailbridge_tools.build", *arguments]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=60, check=False
    )


def test_each_missing_tool_is_said_with_how_to_get_it(tmp_path: Path) -> None:
    done = build({"python3.12": FAILING}, tmp_path)

    assert done.returncode == 1
    python, sam = done.stderr.splitlines()
    assert python.startswith("mailbridge: python3.12 is not on PATH")
    assert "pyenv install 3.12" in python and "SAM_ARGS=--use-container" in python
    assert sam.startswith("mailbridge: sam is not on PATH: install the AWS SAM CLI (https://")
    assert not (tmp_path / "ran").exists()


def test_with_both_it_is_sam_build_from_the_repository(tmp_path: Path) -> None:
    done = build({"python3.12": WORKING, "sam": SAM}, tmp_path, "--cached")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran").read_text() == f"{TEMPLATE_PATH.parent} build --cached\n"


def test_in_docker_the_local_python_is_not_needed(tmp_path: Path) -> None:
    done = build({"sam": SAM}, tmp_path, "--use-container")

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran").read_text().endswith(" build --use-container\n")


def test_pyenvs_runtime_python_is_found_when_not_selected(tmp_path: Path) -> None:
    """pyenv's shim fails for an installed version that is not selected: the build finds
    the interpreter under `pyenv root` and puts it first on PATH for sam build."""
    versions = tmp_path / "pyenv-root" / "versions" / "3.12.9" / "bin"
    versions.mkdir(parents=True)
    (versions / "python3.12").write_text(WORKING)
    (versions / "python3.12").chmod(0o755)
    pyenv = f"#!/bin/sh\necho {tmp_path / 'pyenv-root'}\n"
    sam = '#!/bin/sh\ncommand -v python3.12 > "$RECORD"\n'
    done = build({"python3.12": FAILING, "pyenv": pyenv, "sam": sam}, tmp_path)

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ran").read_text() == f"{versions / 'python3.12'}\n"


def test_pyenvs_newest_patch_release_is_taken(tmp_path: Path) -> None:
    for version in ("3.12.9", "3.12.10"):
        interpreter = tmp_path / "pyenv-root" / "versions" / version / "bin" / "python3.12"
        interpreter.parent.mkdir(parents=True)
        interpreter.write_text(WORKING)
        interpreter.chmod(0o755)
    pyenv = f"#!/bin/sh\necho {tmp_path / 'pyenv-root'}\n"
    sam = '#!/bin/sh\ncommand -v python3.12 > "$RECORD"\n'
    done = build({"python3.12": FAILING, "pyenv": pyenv, "sam": sam}, tmp_path)

    assert done.returncode == 0, done.stderr
    assert "/versions/3.12.10/bin/python3.12" in (tmp_path / "ran").read_text()
