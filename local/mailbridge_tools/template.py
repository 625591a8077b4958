"""Reads the SAM template: routes, functions' environment and the table, for local runs and tests.

Everything local is derived from template.yaml, so a route, a variable or a key that changes
there changes here too, and local runs cannot drift from what is deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE_PATH = Path(__file__).resolve().parent.parent.parent / "template.yaml"

_FUNCTION = "AWS::Serverless::Function"
_TABLE = "AWS::DynamoDB::Table"
# Short tags whose long form has no "Fn::" prefix.
_UNPREFIXED_TAGS = {"Ref", "Condition"}


class TemplateError(ValueError):
    """The template lacks something a local run needs, or has something it cannot emulate."""


class _CloudFormationLoader(yaml.SafeLoader):
    """A SafeLoader that reads CloudFormation short tags (`!Ref X`) in their long form."""


def _intrinsic(loader: yaml.SafeLoader, tag: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {tag if tag in _UNPREFIXED_TAGS else f"Fn::{tag}": value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as file:
        template: dict[str, Any] = yaml.load(file, Loader=_CloudFormationLoader)  # noqa: S506
    return template


@dataclass(frozen=True)
class Route:
    """One HttpApi event of a function: what API Gateway routes to it."""

    method: str
    path: str
    function: str
    code_uri: Path
    handler: str
    authorized: bool
    # A token must carry one of these (API Gateway's AuthorizationScopes); empty: any token.
    scopes: tuple[str, ...] = ()

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


def _is_intrinsic(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) == 1
        and any(key in _UNPREFIXED_TAGS or key.startswith("Fn::") for key in value)
    )


def _merge_globals(defaults: Any, own: Any) -> Any:
    """SAM's rule for Globals: maps merge, lists append, anything else is replaced."""
    if isinstance(defaults, dict) and isinstance(own, dict):
        if _is_intrinsic(defaults) or _is_intrinsic(own):
            return own
        merged = dict(defaults)
        for key, value in own.items():
            merged[key] = _merge_globals(defaults[key], value) if key in defaults else value
        return merged
    if isinstance(defaults, list) and isinstance(own, list):
        return defaults + own
    return own


def function_properties(template: dict[str, Any], function_logical_id: str) -> dict[str, Any]:
    """A function's Properties with the template's Globals.Function applied, as SAM does."""
    function = _resources(template, _FUNCTION).get(function_logical_id)
    if function is None:
        raise TemplateError(f"no {_FUNCTION} named {function_logical_id} in the template")
    defaults = template.get("Globals", {}).get("Function", {})
    properties: dict[str, Any] = _merge_globals(defaults, function.get("Properties", {}))
    return properties


def _default_authorizer(template: dict[str, Any], event: dict[str, Any]) -> str | None:
    api_properties = template.get("Globals", {}).get("HttpApi", {})
    api_id = event.get("ApiId")
    if isinstance(api_id, dict) and "Ref" in api_id:
        api = template["Resources"][api_id["Ref"]]
        api_properties = _merge_globals(api_properties, api.get("Properties", {}))
    authorizer: str | None = api_properties.get("Auth", {}).get("DefaultAuthorizer")
    return authorizer


def routes(template: dict[str, Any], base_dir: Path = TEMPLATE_PATH.parent) -> list[Route]:
    """Every HttpApi event of every function; CodeUri is relative to `base_dir`."""
    found: list[Route] = []
    for logical_id in _resources(template, _FUNCTION):
        properties = function_properties(template, logical_id)
        code_uri = properties.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError(f"{logical_id}: only a local directory CodeUri can run locally")
        for event_id, event in properties.get("Events", {}).items():
            if event.get("Type") != "HttpApi":
                continue
            event_properties = event.get("Properties", {})
            if "Path" not in event_properties or "Method" not in event_properties:
                raise TemplateError(f"{logical_id}.{event_id}: needs both Path and Method")
            auth = event_properties.get("Auth", {})
            authorizer = auth.get("Authorizer") or _default_authorizer(template, event_properties)
            found.append(
                Route(
                    method=event_properties["Method"].upper(),
                    path=event_properties["Path"],
                    function=logical_id,
                    code_uri=(base_dir / code_uri).resolve(),
                    handler=properties["Handler"],
                    authorized=authorizer not in (None, "NONE"),
                    scopes=tuple(auth.get("AuthorizationScopes", ())),
                )
            )
    return found


def table_logical_id(template: dict[str, Any]) -> str:
    """The logical id of the template's one DynamoDB table."""
    tables = list(_resources(template, _TABLE))
    if len(tables) != 1:
        raise TemplateError(f"expected exactly one {_TABLE}, found {len(tables)}")
    return tables[0]


def table_properties(template: dict[str, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = template["Resources"][table_logical_id(template)]["Properties"]
    return properties


def create_table(client: DynamoDBClient, table_name: str, template: dict[str, Any]) -> None:
    """Creates `table_name` with the template table's keys, indexes, billing and TTL.

    Backup and encryption settings are left out: they change nothing a test can observe.
    """
    properties = table_properties(template)
    optional = ("GlobalSecondaryIndexes", "LocalSecondaryIndexes", "ProvisionedThroughput")
    client.create_table(
        TableName=table_name,
        KeySchema=properties["KeySchema"],
        AttributeDefinitions=properties["AttributeDefinitions"],
        BillingMode=properties.get("BillingMode", "PROVISIONED"),
        **{key: properties[key] for key in optional if key in properties},
    )
    # DynamoDB accepts a TTL change only once the table is ACTIVE.
    client.get_waiter("table_exists").wait(TableName=table_name)
    if "TimeToLiveSpecification" in properties:
        client.update_time_to_live(
            TableName=table_name, TimeToLiveSpecification=properties["TimeToLiveSpecification"]
        )


def _parameter_default(template: dict[str, Any], name: str) -> Any:
    return template.get("Parameters", {}).get(name, {}).get("Default")


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def function_environment(
    template: dict[str, Any], function_logical_id: str, resolved: dict[str, str]
) -> dict[str, str]:
    """The function's environment variables with Globals applied and every `Ref` resolved.

    `resolved` maps logical ids and parameter names to values; parameters it does not name
    take their Default. Anything else (Fn::Sub, Fn::GetAtt, a Ref without a value) raises.
    """
    properties = function_properties(template, function_logical_id)
    variables = properties.get("Environment", {}).get("Variables", {})
    environment: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, dict) and list(value) == ["Ref"]:
            target = value["Ref"]
            resolved_value = resolved.get(target, _parameter_default(template, target))
            if resolved_value is None:
                raise TemplateError(
                    f"{function_logical_id}: {name} refers to {target}, which has no default: "
                    "give it a value in `resolved`"
                )
            environment[name] = _env_text(resolved_value)
        elif isinstance(value, dict | list):
            raise TemplateError(
                f"{function_logical_id}: {name} = {value!r} cannot be resolved locally"
            )
        else:
            environment[name] = _env_text(value)
    return environment
