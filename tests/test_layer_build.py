"""The layer as `sam build` builds it (issue 16): its Makefile, run as SAM runs it, ships every
module with bytecode for the functions' runtime, which Lambda loads without compiling.

Lambda cannot write `__pycache__` into /opt: a layer without bytecode compiles every module it
imports on every cold start (BENCHMARKS.md measures the difference).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from mailbridge_bench.deployed import LAYER_DIR, LAYER_TARGET, build_layer
from mailbridge_bench.layer import LayerSpec
from mailbridge_tools.build import find_python
from mailbridge_tools.template import TEMPLATE_PATH, load_template
from support import require_component

TEMPLATE = load_template()
SPEC = LayerSpec.from_template(TEMPLATE, TEMPLATE_PATH.parent)
# PEP 552's flags: hash-based, the source not checked. Valid whatever timestamps the zip
# gives the sources, which never change in a published layer.
UNCHECKED_HASH = 0b01


@pytest.fixture(scope="module")
def runtime_python() -> str:
    python = find_python(SPEC.runtime)
    require_component(python is not None, f"{SPEC.runtime}, the functions' runtime's Python")
    assert python is not None
    return python


@pytest.fixture(scope="module")
def layer(runtime_python: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built for the template's architecture, as deployed. pip reaches PyPI: not through the
    test CA the session trusts for its fake providers (conftest's REQUESTS_CA_BUNDLE)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        return build_layer(runtime_python, tmp_path_factory.mktemp("layer"), SPEC.machine)


def _runtime_value(python: str, expression: str) -> str:
    return subprocess.run(
        [python, "-c", f"import importlib.util, sys; sys.stdout.write({expression})"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout


def test_the_template_builds_the_layer_with_its_makefile() -> None:
    ((logical_id, layer),) = [
        (name, resource)
        for name, resource in TEMPLATE["Resources"].items()
        if resource["Type"] == "AWS::Serverless::LayerVersion"
    ]
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert Path(TEMPLATE_PATH.parent / layer["Properties"]["ContentUri"]) == LAYER_DIR
    makefile = (LAYER_DIR / "Makefile").read_text()
    # sam build runs `make build-<LogicalId>`, with the Makefile's defaults: the functions'
    # runtime's Python and architecture (the tests and the benchmark set both).
    assert f"build-{logical_id}" == LAYER_TARGET
    assert f"\n{LAYER_TARGET}:" in makefile
    assert f"RUNTIME_PYTHON ?= {SPEC.runtime}\n" in makefile
    assert f"PLATFORM ?= manylinux2014_{SPEC.machine}\n" in makefile
    runtimes = {
        resource["Properties"].get("Runtime", TEMPLATE["Globals"]["Function"]["Runtime"])
        for resource in TEMPLATE["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    assert runtimes == {SPEC.runtime} == set(layer["Properties"]["CompatibleRuntimes"])


def test_every_module_has_bytecode_for_the_runtime(runtime_python: str, layer: Path) -> None:
    magic = bytes.fromhex(_runtime_value(runtime_python, "importlib.util.MAGIC_NUMBER.hex()"))
    tag = _runtime_value(runtime_python, "sys.implementation.cache_tag")
    sources = sorted(layer.rglob("*.py"))
    assert (layer / "mailbridge" / "connections" / "models.py") in sources
    assert (layer / "pydantic" / "main.py") in sources  # the dependencies too
    missing, wrong = [], []
    for source in sources:
        cached = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not cached.exists():
            missing.append(source)
            continue
        header = cached.read_bytes()[:8]
        if header[:4] != magic or int.from_bytes(header[4:8], "little") != UNCHECKED_HASH:
            wrong.append(cached)
    assert not missing, missing[:5]
    assert not wrong, wrong[:5]
    # Nothing compiled for another Python (a developer's __pycache__) is shipped.
    assert {path.name.split(".")[-2] for path in layer.rglob("*.pyc")} == {tag}


def test_the_runtime_loads_the_bytecode_whatever_the_sources_say(
    runtime_python: str, layer: Path
) -> None:
    """As on Lambda: bytecode writing off, the sources' timestamps those of the zip. A source
    changed after the build is not recompiled: the module comes from its .pyc. (A module of
    the standard library's imports only: the layer's compiled libraries are for Lambda's CPU.)"""
    models = layer / "mailbridge" / "core" / "deadline.py"
    original = models.read_bytes()
    try:
        models.write_bytes(original + b"\nCHANGED_AFTER_THE_BUILD = True\n")
        for path in layer.rglob("*.py"):
            os.utime(path, (315532800, 315532800))  # 1980-01-01, a zip's earliest time
        loaded = subprocess.run(
            [
                *(runtime_python, "-s", "-B", "-c"),
                "import sys; sys.path.insert(0, sys.argv[1]); "
                "import mailbridge.core.deadline as m; "
                "print(hasattr(m, 'CHANGED_AFTER_THE_BUILD'))",
                str(layer),
            ],
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    finally:
        models.write_bytes(original)
    assert loaded.stdout.strip() == "False"
