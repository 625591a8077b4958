"""The code as Lambda lays it out, built the way `sam build` builds it: the layer by its
Makefile (layers/shared/Makefile) into `<root>/opt/python`, with and without its bytecode,
each function's code into its own task root, and boto3 where the runtime keeps it.

The layer is built for this machine's architecture (its compiled libraries must load here)
with the runtime's own Python, whose bytecode the layer ships: what Lambda runs, but for
the CPU.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from mailbridge_tools.template import TEMPLATE_PATH

LAYER_DIR = TEMPLATE_PATH.parent / "layers" / "shared"
LAYER_TARGET = "build-SharedLayer"
# The runtime's own packages (/var/runtime on Lambda): boto3 and what it needs, compiled as
# the runtime's are. Unpinned: each runtime version ships a recent boto3.
RUNTIME_PACKAGES = ("boto3",)


@dataclass(frozen=True)
class Deployment:
    """One runtime's deployed form, in directories laid out as Lambda's."""

    runtime: str  # "python3.12"
    python: str  # that runtime's interpreter here
    version: str  # its patch release, "3.12.1": Lambda runs a later one of the same runtime
    layer: Path  # /opt/python, with the layer's bytecode
    layer_without_bytecode: Path  # the same sources, as sam build's python builder left them
    runtime_packages: Path  # /var/runtime
    task_roots: dict[str, Path]  # /var/task, by function logical id


def build_layer(python: str, artifacts: Path, machine: str) -> Path:
    """Runs the layer's Makefile as sam build does (ARTIFACTS_DIR, the target), for
    `machine`; the layer's python/ directory."""
    artifacts = artifacts.resolve()  # make runs in the layer's directory
    shutil.rmtree(artifacts, ignore_errors=True)
    environment = os.environ | {
        "ARTIFACTS_DIR": str(artifacts),
        "RUNTIME_PYTHON": python,
        "PLATFORM": f"manylinux2014_{machine}",
    }
    make = subprocess.run(  # noqa: S603 - make from PATH, our Makefile's target
        ["make", "--makefile", str(LAYER_DIR / "Makefile"), LAYER_TARGET],  # noqa: S607
        cwd=LAYER_DIR,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if make.returncode != 0:
        raise RuntimeError(f"the layer's build failed:\n{make.stdout}{make.stderr}")
    return artifacts / "python"


def build_deployment(
    runtime: str, python: str, task_sources: dict[str, Path], root: Path
) -> Deployment:
    """Builds everything under `root` (replaced): the layer for this machine, its copy
    without bytecode, the runtime's boto3, and a task root per function of `task_sources`
    (its CodeUri), copied as sam build copies it."""
    layer = build_layer(python, root / "opt", platform.machine())
    without = root / "opt-without-bytecode" / "python"
    shutil.rmtree(without.parent, ignore_errors=True)
    shutil.copytree(layer, without, ignore=shutil.ignore_patterns("__pycache__"))
    runtime_packages = root / "runtime"
    shutil.rmtree(runtime_packages, ignore_errors=True)
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for command in (
        [*pip, "--target", str(runtime_packages), *RUNTIME_PACKAGES],
        [python, "-m", "compileall", "-q", "-j", "0", str(runtime_packages)],
    ):
        subprocess.run(command, capture_output=True, check=True)  # noqa: S603
    task_roots = {}
    for function, code_uri in task_sources.items():
        task_roots[function] = root / "task" / function
        shutil.rmtree(task_roots[function], ignore_errors=True)
        shutil.copytree(
            code_uri, task_roots[function], ignore=shutil.ignore_patterns("__pycache__")
        )
    version = subprocess.run(  # noqa: S603 - the runtime's interpreter, fixed arguments
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Deployment(runtime, python, version, layer, without, runtime_packages, task_roots)
