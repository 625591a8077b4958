"""The API's OpenAPI 3.1 document, generated from the code: `python -m mailbridge_tools.openapi`
(`make openapi`) writes openapi.json.

Each function of template.yaml is imported as Lambda would import it, and its Powertools
resolver describes its routes from the models it validates with and the responses its route
decorators declare. The functions' documents are merged into one and held against the template,
which decides what API Gateway routes to each function and which routes need the JWT.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import version
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from .functions import load_function_module
from .template import TEMPLATE_PATH, Route, load_template, routes

OPENAPI_PATH = TEMPLATE_PATH.parent / "openapi.json"
REGENERATE = "make openapi"
_DESCRIPTION = (
    "Connects each agent of an AI-agent platform to a real mailbox: IMAP/SMTP with an app "
    "password, Microsoft OAuth or Google OAuth. Generated from the functions' routes and "
    f"models by `{REGENERATE}`; docs/api.md explains the API."
)
_SCHEMA_REF = "#/components/schemas/"
_PLATFORM_JWT = HTTPBearer(
    bearerFormat="JWT",
    description="The platform's JWT, verified by API Gateway's authorizer (issuer, audience, "
    "expiry, signature); its `sub` and organization claim name the caller. A route that lists "
    "scopes needs a token whose `scope` (or `scp`) claim carries one of them: `mail.read` and "
    "`mail.send` for an agent's mail (an agent runtime's token, whose `agent_id` claim names "
    "its one agent, or an organization admin's), `agents.manage` for the platform.",
)


class ContractError(ValueError):
    """The functions' routes and the template's disagree."""


def build_document(api_routes: list[Route]) -> dict[str, Any]:
    """The document of every route in `api_routes`, in their order."""
    operations: dict[tuple[str, str, str], dict[str, Any]] = {}
    components: dict[str, dict[str, Any]] = {}
    # Imported with the functions, not with this module: the layer reads its settings from
    # the environment as it loads, which the caller sets first (as Lambda does).
    from mailbridge.http.contract import BEARER_SCHEME

    for function, route in {route.function: route for route in api_routes}.items():
        resolver = load_function_module(function, route.code_uri, route.handler).app
        schema = resolver.get_openapi_schema(security_schemes={BEARER_SCHEME: _PLATFORM_JWT})
        part = schema.model_dump(mode="json", by_alias=True, exclude_none=True)
        for path, item in part["paths"].items():
            for method, operation in item.items():
                operations[(function, method.upper(), path)] = operation
        for kind, entries in part.get("components", {}).items():
            merged = components.setdefault(kind, {})
            for name, entry in entries.items():
                if merged.setdefault(name, entry) != entry:
                    raise ContractError(f"two functions define {kind} {name} differently")

    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes:
        operation = operations.pop((route.function, route.method, route.path), None)
        if operation is None:
            raise ContractError(f"{route.route_key}: {route.function} declares no such route")
        security = operation.get("security") or []
        if bool(security) != route.authorized:
            raise ContractError(
                f"{route.route_key}: the template's authorizer and the route's `security` disagree"
            )
        declared = sorted(
            scope for requirement in security for s in requirement.values() for scope in s
        )
        if declared != sorted(route.scopes):
            raise ContractError(
                f"{route.route_key}: the template's AuthorizationScopes {list(route.scopes)} and "
                f"the route's `security` scopes {declared} disagree"
            )
        _drop_powertools_422(operation["responses"])
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    if operations:
        unrouted = ", ".join(
            f"{method} {path} ({function})" for function, method, path in operations
        )
        raise ContractError(f"declared by a function but routed by no template event: {unrouted}")

    schemas = {**_error_schemas(), **components.get("schemas", {})}
    components["schemas"] = _referenced(schemas, paths)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "mailbridge",
            "version": version("mailbridge"),
            "description": _DESCRIPTION,
        },
        "paths": paths,
        "components": components,
    }


def _error_schemas() -> dict[str, Any]:
    """The error shapes `http.contract.errors` refers to, from their models (`http.models`),
    written as Powertools writes the functions' schemas: the routes name them without
    loading them."""
    from aws_lambda_powertools.event_handler.openapi.models import Schema
    from mailbridge.http.models import ErrorResponse, GatewayError
    from pydantic import TypeAdapter
    from pydantic.json_schema import GenerateJsonSchema

    generator = GenerateJsonSchema(ref_template=_SCHEMA_REF + "{model}")
    models = (ErrorResponse, GatewayError)
    _, definitions = generator.generate_definitions(
        inputs=[(model, "serialization", TypeAdapter(model).core_schema) for model in models]
    )
    return {
        name: Schema.model_validate(definition).model_dump(
            mode="json", by_alias=True, exclude_none=True
        )
        for name, definition in definitions.items()
    }


def _drop_powertools_422(responses: dict[str, Any]) -> None:
    """Powertools declares a 422 in its own shape on every route of a validating resolver;
    ours answer 422 in the error shape, and only the routes that validate input declare it."""
    if _refs(responses.get("422")) == {"HTTPValidationError"}:
        del responses["422"]


def _referenced(schemas: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    """The schemas that `paths` use, directly or through other schemas."""
    used: set[str] = set()
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending |= _refs(schemas[name])
    return {name: schema for name, schema in schemas.items() if name in used}


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        ref = value.get("$ref")
        own = {ref.removeprefix(_SCHEMA_REF)} if isinstance(ref, str) else set()
        return own.union(*(_refs(item) for item in value.values()))
    if isinstance(value, list):
        return set().union(*(_refs(item) for item in value))
    return set()


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    # Importing a function builds its stores, which read the table's name; nothing reaches
    # AWS, and the document does not depend on the value.
    os.environ.setdefault("TABLE_NAME", "openapi")
    document = build_document(routes(load_template()))
    OPENAPI_PATH.write_text(render(document), encoding="utf-8")
    print(f"wrote {OPENAPI_PATH.name}")


if __name__ == "__main__":
    main()
