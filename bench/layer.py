"""The shared layer as `sam build` makes it for the template's runtime and architecture (its
Makefile, with bytecode), and its unzipped size.

The Lambda runtime brings boto3 and botocore, so a layer holding them is a mistake (a
transitive dependency can pull them in): the report names them and who required them.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

# Sources and libraries (30 MB before issue 16) and their bytecode (about 10 MB), which
# spares every cold start compiling them; far under Lambda's 250 MB for code and layers.
LAYER_BUDGET_MB = 45
MB = 1024 * 1024  # Lambda's size quotas count in these
# What the Lambda Python runtimes already have; never worth packaging.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})
_ARCHITECTURES = {"arm64": "aarch64", "x86_64": "x86_64"}


@dataclass(frozen=True)
class LayerSpec:
    """What the template says the layer is built from and for."""

    requirements: Path
    runtime: str  # "python3.12"
    machine: str  # "aarch64"

    @property
    def python_version(self) -> str:
        return self.runtime.removeprefix("python")

    @classmethod
    def from_template(cls, template: dict[str, Any], template_dir: Path) -> LayerSpec:
        layers = [
            resource
            for resource in template["Resources"].values()
            if resource["Type"] == "AWS::Serverless::LayerVersion"
        ]
        if len(layers) != 1:
            raise ValueError(f"expected one layer in the template, found {len(layers)}")
        (layer,) = layers
        content = template_dir / layer["Properties"]["ContentUri"]
        return cls(
            requirements=content / "requirements.txt",
            runtime=layer["Properties"]["CompatibleRuntimes"][0],
            machine=_ARCHITECTURES[layer["Metadata"]["BuildArchitecture"]],
        )


@dataclass(frozen=True)
class LayerReport:
    size: int  # bytes, unzipped
    # Runtime-provided distributions found in the layer, each with who required it.
    runtime_provided: dict[str, list[str]]
    # The size had the runtime-provided ones and what only they need been left out.
    size_without_runtime_provided: int
    largest: list[tuple[str, int]]  # distributions by size, largest first

    @property
    def size_mb(self) -> float:
        return self.size / MB


def measure_layer(python_dir: Path, spec: LayerSpec) -> LayerReport:
    installed: dict[str, Distribution] = {
        canonicalize_name(d.metadata["Name"]): d for d in distributions(path=[str(python_dir)])
    }
    sizes = {name: _distribution_size(dist, python_dir) for name, dist in installed.items()}
    roots = [
        Requirement(line)
        for line in (
            raw.split("#", 1)[0].strip() for raw in spec.requirements.read_text().splitlines()
        )
        if line
    ]
    marker_environment = {
        "python_version": spec.python_version,
        "python_full_version": f"{spec.python_version}.0",
        "platform_machine": spec.machine,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    pulled_by = _requirers(installed, roots, marker_environment, stop=frozenset())
    needed = _requirers(installed, roots, marker_environment, stop=RUNTIME_PROVIDED)
    total = sum(path.stat().st_size for path in python_dir.rglob("*") if path.is_file())
    left_out = sum(size for name, size in sizes.items() if name not in needed)
    return LayerReport(
        size=total,
        runtime_provided={
            name: sorted(pulled_by.get(name, set()))
            for name in sorted(RUNTIME_PROVIDED & installed.keys())
        },
        size_without_runtime_provided=total - left_out,
        largest=sorted(sizes.items(), key=lambda item: item[1], reverse=True),
    )


def _distribution_size(dist: Distribution, python_dir: Path) -> int:
    size = 0
    for file in dist.files or []:
        path = (python_dir / file).resolve()
        if path.is_file() and path.is_relative_to(python_dir.resolve()):
            size += path.stat().st_size
    return size


def _requirers(
    installed: dict[str, Distribution],
    roots: list[Requirement],
    marker_environment: dict[str, str],
    stop: frozenset[str],
) -> dict[str, set[str]]:
    """Every distribution the roots need, not going through `stop`, with the distributions
    that required it ("requirements.txt" for a root)."""
    requirers: dict[str, set[str]] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    pending = [(root, "requirements.txt") for root in roots]
    while pending:
        requirement, requirer = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in stop:
            continue
        requirers.setdefault(name, set()).add(requirer)
        extras = frozenset(requirement.extras)
        if (name, extras) in visited or name not in installed:
            continue
        visited.add((name, extras))
        for line in installed[name].requires or []:
            dependency = Requirement(line)
            applies = dependency.marker is None or any(
                dependency.marker.evaluate({**marker_environment, "extra": extra})
                for extra in extras | {""}
            )
            if applies:
                pending.append((dependency, name))
    return requirers
