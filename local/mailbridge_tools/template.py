"""Reads the SAM template: routes, functions' code, environment, IAM policies and other
events (schedules, SQS queues), the table, the queues and event buses, for local runs and
tests.

Everything local is derived from template.yaml, so a route, a variable or a key that changes
there changes here too, and local runs cannot drift from what is deployed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE_PATH = Path(__file__).resolve().parent.parent.parent / "template.yaml"

_FUNCTION = "AWS::Serverless::Function"
_TABLE = "AWS::DynamoDB::Table"
_QUEUE = "AWS::SQS::Queue"
_EVENT_BUS = "AWS::Events::EventBus"
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


def function_ids(template: dict[str, Any]) -> list[str]:
    """The logical ids of every function, in the template's order."""
    return list(_resources(template, _FUNCTION))


@dataclass(frozen=True)
class FunctionCode:
    """Where a function's code is: its CodeUri directory and its Handler."""

    code_uri: Path
    handler: str


def function_code(
    template: dict[str, Any], function_logical_id: str, base_dir: Path = TEMPLATE_PATH.parent
) -> FunctionCode:
    """The function's code; CodeUri is relative to `base_dir`."""
    properties = function_properties(template, function_logical_id)
    code_uri = properties.get("CodeUri")
    if not isinstance(code_uri, str):
        raise TemplateError(
            f"{function_logical_id}: only a local directory CodeUri can run locally"
        )
    return FunctionCode((base_dir / code_uri).resolve(), properties["Handler"])


def routes(template: dict[str, Any], base_dir: Path = TEMPLATE_PATH.parent) -> list[Route]:
    """Every HttpApi event of every function; CodeUri is relative to `base_dir`."""
    found: list[Route] = []
    for logical_id in _resources(template, _FUNCTION):
        properties = function_properties(template, logical_id)
        code = function_code(template, logical_id, base_dir)
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
                    code_uri=code.code_uri,
                    handler=code.handler,
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


# -- what invokes a function besides API Gateway

# The event types a local run emulates: API Gateway, EventBridge Scheduler, Lambda's SQS
# event source mapping.
_EMULATED_EVENTS = ("HttpApi", "ScheduleV2", "SQS")
_REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"


@dataclass(frozen=True)
class Schedule:
    """One ScheduleV2 event of a function: EventBridge Scheduler invokes the function with
    `input` at every tick of `expression`."""

    function: str
    name: str  # the event's name under the function's Events
    expression: str  # resolved: rate(1 minute), cron(...) or at(...)
    input: Any  # the payload: the event's Input, parsed ({} without one)
    enabled: bool
    # The template parameter the expression is (`!Ref NewMailPollRate`), if it is one.
    parameter: str | None = None


@dataclass(frozen=True)
class QueueSource:
    """One SQS event of a function: Lambda's event source mapping from a queue of the
    template to the function, in batches."""

    function: str
    name: str  # the event's name under the function's Events
    queue: str  # the queue's logical id
    batch_size: int
    report_item_failures: bool  # FunctionResponseTypes has ReportBatchItemFailures
    enabled: bool


def _events(template: dict[str, Any], event_type: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(function, event name, Properties) of every event of that type, in template order."""
    found = []
    for function in _resources(template, _FUNCTION):
        for name, event in function_properties(template, function).get("Events", {}).items():
            if event.get("Type") == event_type:
                found.append((function, name, event.get("Properties", {})))
    return found


def check_events(template: dict[str, Any]) -> None:
    """Refuses a function event of a type the local run does not emulate: that function would
    silently never run here."""
    for function in _resources(template, _FUNCTION):
        for name, event in function_properties(template, function).get("Events", {}).items():
            if event.get("Type") not in _EMULATED_EVENTS:
                raise TemplateError(
                    f"{function}.{name}: {event.get('Type')} events are not emulated locally "
                    f"(only {', '.join(_EMULATED_EVENTS)})"
                )


def schedules(template: dict[str, Any], resolved: Mapping[str, Any]) -> list[Schedule]:
    """Every ScheduleV2 event of every function, its expression resolved (`resolve`)."""
    found = []
    for function, name, properties in _events(template, "ScheduleV2"):
        where = f"{function}.{name}"
        expression = properties.get("ScheduleExpression")
        if expression is None:
            raise TemplateError(f"{where}: needs a ScheduleExpression")
        payload = properties.get("Input")
        try:
            parsed = (
                {} if payload is None else json.loads(resolve(template, payload, resolved, where))
            )
        except (TypeError, ValueError) as error:
            raise TemplateError(f"{where}: its Input is not JSON text: {error}") from None
        parameter = expression.get("Ref") if isinstance(expression, dict) else None
        found.append(
            Schedule(
                function=function,
                name=name,
                expression=str(resolve(template, expression, resolved, where)),
                input=parsed,
                enabled=resolve(template, properties.get("State", "ENABLED"), resolved, where)
                != "DISABLED",
                parameter=parameter if isinstance(parameter, str) else None,
            )
        )
    return found


def queue_sources(template: dict[str, Any]) -> list[QueueSource]:
    """Every SQS event of every function; its Queue must be `!GetAtt <a queue of the
    template>.Arn`."""
    queues = _resources(template, _QUEUE)
    found: list[QueueSource] = []
    for function, name, properties in _events(template, "SQS"):
        where = f"{function}.{name}"
        if "FilterCriteria" in properties:
            raise TemplateError(f"{where}: FilterCriteria is not emulated locally")
        target = properties.get("Queue")
        attribute = target.get("Fn::GetAtt") if isinstance(target, dict) else None
        if isinstance(attribute, str):
            attribute = attribute.split(".")
        if not (isinstance(attribute, list) and attribute[1:] == ["Arn"]):
            raise TemplateError(f"{where}: its Queue must be !GetAtt <queue>.Arn to run locally")
        if attribute[0] not in queues:
            raise TemplateError(f"{where}: no {_QUEUE} named {attribute[0]} in the template")
        if any(source.queue == attribute[0] for source in found):
            raise TemplateError(
                f"{where}: a second SQS event from {attribute[0]}; the local run delivers a "
                "queue to one function"
            )
        found.append(
            QueueSource(
                function=function,
                name=name,
                queue=attribute[0],
                batch_size=int(properties.get("BatchSize", 10)),
                report_item_failures=_REPORT_BATCH_ITEM_FAILURES
                in properties.get("FunctionResponseTypes", []),
                enabled=properties.get("Enabled", True) is not False,
            )
        )
    return found


# -- queues and event buses

# A queue's Properties that are SQS attributes of the same name; QueueName names it and its
# Tags change nothing a test can observe.
_QUEUE_ATTRIBUTES = frozenset(
    {
        "ContentBasedDeduplication",
        "DeduplicationScope",
        "DelaySeconds",
        "FifoQueue",
        "FifoThroughputLimit",
        "KmsDataKeyReusePeriodSeconds",
        "KmsMasterKeyId",
        "MaximumMessageSize",
        "MessageRetentionPeriod",
        "ReceiveMessageWaitTimeSeconds",
        "RedriveAllowPolicy",
        "RedrivePolicy",
        "SqsManagedSseEnabled",
        "VisibilityTimeout",
    }
)
_QUEUE_OTHER_PROPERTIES = frozenset({"QueueName", "Tags"})


def queue_ids(template: dict[str, Any]) -> list[str]:
    """The logical ids of the template's SQS queues."""
    return list(_resources(template, _QUEUE))


def queue_properties(template: dict[str, Any], queue_logical_id: str) -> dict[str, Any]:
    properties: dict[str, Any] = _resources(template, _QUEUE)[queue_logical_id].get(
        "Properties", {}
    )
    return properties


def queue_attributes(
    template: dict[str, Any], queue_logical_id: str, resolved: Mapping[str, Any]
) -> dict[str, str]:
    """The queue's SQS attributes from its Properties, resolved (`resolve`), as SQS takes
    them: text, and the redrive policies as JSON."""
    properties = queue_properties(template, queue_logical_id)
    unknown = set(properties) - _QUEUE_ATTRIBUTES - _QUEUE_OTHER_PROPERTIES
    if unknown:
        raise TemplateError(
            f"{queue_logical_id}: {', '.join(sorted(unknown))} cannot be emulated locally"
        )
    attributes = {}
    for name, value in properties.items():
        if name in _QUEUE_ATTRIBUTES:
            text = resolve(template, value, resolved, f"{queue_logical_id}.{name}")
            attributes[name] = json.dumps(text) if isinstance(text, dict) else _env_text(text)
    return attributes


def event_bus_names(template: dict[str, Any], resolved: Mapping[str, Any]) -> dict[str, str]:
    """The template's EventBridge buses: their names by logical id, resolved (`resolve`)."""
    names = {}
    for logical_id, bus in _resources(template, _EVENT_BUS).items():
        properties = bus.get("Properties", {})
        if "EventSourceName" in properties:
            raise TemplateError(f"{logical_id}: a partner event bus cannot be emulated locally")
        name = resolve(template, properties.get("Name"), resolved, f"{logical_id}.Name")
        if not isinstance(name, str) or not name:
            raise TemplateError(f"{logical_id}: needs a Name")
        names[logical_id] = name
    return names


def _parameter_default(template: dict[str, Any], name: str) -> Any:
    return template.get("Parameters", {}).get(name, {}).get("Default")


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _named_value(
    template: dict[str, Any], name: str, resolved: Mapping[str, Any], where: str
) -> Any:
    value = resolved.get(name, _parameter_default(template, name))
    if value is None:
        raise TemplateError(
            f"{where} refers to {name}, which has no default: give it a value in `resolved`"
        )
    return value


def resolve(template: dict[str, Any], value: Any, resolved: Mapping[str, Any], where: str) -> Any:
    """`value` with every Ref, Fn::GetAtt and Fn::Sub in it replaced, as CloudFormation would.

    `resolved` maps logical ids, parameter names, pseudo parameters (`AWS::Region`) and
    attributes (`EmailTable.Arn`) to their values; parameters it does not name take their
    Default. Any other intrinsic function, or a name without a value, raises, naming `where`.
    """
    if isinstance(value, list):
        return [resolve(template, item, resolved, where) for item in value]
    if not isinstance(value, dict):
        return value
    if not _is_intrinsic(value):
        return {key: resolve(template, item, resolved, where) for key, item in value.items()}
    [(function, argument)] = value.items()
    if function == "Ref" and isinstance(argument, str):
        return _named_value(template, argument, resolved, where)
    if function == "Fn::GetAtt":
        target = argument if isinstance(argument, str) else ".".join(argument)
        return _named_value(template, target, resolved, where)
    if function == "Fn::Sub":
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {name: resolve(template, v, resolved, where) for name, v in variables.items()}

        def substitute(match: re.Match[str]) -> str:
            name = match[1]
            if name.startswith("!"):  # ${!Literal} is the text ${Literal}
                return f"${{{name[1:]}}}"
            if name in values:
                return _env_text(values[name])
            return _env_text(_named_value(template, name, resolved, where))

        return _SUB_VARIABLE.sub(substitute, text)
    if function == "Fn::If":
        condition, when_true, when_false = argument
        chosen = when_true if _holds(template, condition, resolved, where) else when_false
        return resolve(template, chosen, resolved, where)
    raise TemplateError(f"{where}: {function} cannot be resolved locally")


def _holds(
    template: dict[str, Any], condition: str, resolved: Mapping[str, Any], where: str
) -> bool:
    """Whether the template's condition `condition` holds (Fn::Equals, Fn::Not, Condition)."""
    definition = template.get("Conditions", {}).get(condition)
    if definition is None:
        raise TemplateError(f"{where}: no condition named {condition}")
    return _truth(template, definition, resolved, where)


def _truth(template: dict[str, Any], value: Any, resolved: Mapping[str, Any], where: str) -> bool:
    [(function, argument)] = value.items()
    if function == "Fn::Equals":
        left, right = (resolve(template, side, resolved, where) for side in argument)
        return bool(left == right)
    if function == "Fn::Not":
        return not _truth(template, argument[0], resolved, where)
    if function == "Condition":
        return _holds(template, argument, resolved, where)
    raise TemplateError(f"{where}: {function} cannot be evaluated locally")


def _chosen(template: dict[str, Any], value: Any, resolved: Mapping[str, Any], where: str) -> Any:
    """`value`, or the branch its condition picks if it is an Fn::If; None for the
    AWS::NoValue that leaves an item out of a list."""
    while isinstance(value, dict) and list(value) == ["Fn::If"]:
        condition, when_true, when_false = value["Fn::If"]
        value = when_true if _holds(template, condition, resolved, where) else when_false
    return None if value == {"Ref": "AWS::NoValue"} else value


def function_environment(
    template: dict[str, Any], function_logical_id: str, resolved: Mapping[str, Any]
) -> dict[str, str]:
    """The function's environment variables with Globals applied and every Ref, GetAtt and
    Sub resolved (`resolve`); a value that is not text once resolved raises."""
    properties = function_properties(template, function_logical_id)
    variables = properties.get("Environment", {}).get("Variables", {})
    environment: dict[str, str] = {}
    for name, value in variables.items():
        text = resolve(template, value, resolved, f"{function_logical_id}: {name}")
        if isinstance(text, dict | list):
            raise TemplateError(
                f"{function_logical_id}: {name} = {value!r} cannot be resolved locally"
            )
        environment[name] = _env_text(text)
    return environment


@dataclass(frozen=True)
class PolicyStatement:
    """One statement of a function's execution role, its Refs and Subs resolved."""

    effect: str  # Allow or Deny
    actions: tuple[str, ...]  # service:Operation, with * and ? wildcards
    resources: tuple[str, ...]  # ARNs, with * and ? wildcards


_STATEMENT_KEYS = {"Sid", "Effect", "Action", "Resource"}
# What would change a function's permissions in ways only IAM itself could evaluate.
_ROLE_PROPERTIES = ("Role", "PermissionsBoundary")


def _text_list(value: Any, where: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(item, str) for item in values):
        raise TemplateError(f"{where}: expected text or a list of text, found {value!r}")
    return tuple(values)


def function_policy(
    template: dict[str, Any], function_logical_id: str, resolved: Mapping[str, Any]
) -> list[PolicyStatement]:
    """The statements of the execution role SAM makes for the function: its Policies, Globals
    applied, every Ref, GetAtt and Sub resolved (`resolve`).

    Only policy documents written out (`- Statement: [...]`) are read; a statement may be an
    Fn::If of the template's conditions (AWS::NoValue leaves it out). What cannot be
    evaluated here is refused rather than guessed: a managed policy (by name or ARN), a SAM
    policy template (DynamoDBCrudPolicy...), a Role or PermissionsBoundary of the function's
    own, and statements with Condition, NotAction, NotResource or Principal. (SAM also attaches
    AWSLambdaBasicExecutionRole, and with Tracing AWSXrayWriteOnlyAccess: logs and traces,
    which reach neither DynamoDB nor Secrets Manager.)
    """
    properties = function_properties(template, function_logical_id)
    for name in _ROLE_PROPERTIES:
        if name in properties:
            raise TemplateError(
                f"{function_logical_id}: its {name} cannot be evaluated locally; grant "
                "permissions with Policies statements"
            )
    policies = properties.get("Policies", [])
    statements: list[PolicyStatement] = []
    for index, policy in enumerate(policies if isinstance(policies, list) else [policies]):
        where = f"{function_logical_id}.Policies[{index}]"
        if not isinstance(policy, dict) or _is_intrinsic(policy):
            raise TemplateError(
                f"{where}: the managed policy {policy!r} cannot be evaluated locally; write its "
                "statements out"
            )
        if "Statement" not in policy:
            raise TemplateError(
                f"{where}: the SAM policy template {', '.join(policy)} cannot be evaluated "
                "locally; write its statements out"
            )
        listed = policy["Statement"]
        for number, written in enumerate(listed if isinstance(listed, list) else [listed]):
            at = f"{where}.Statement[{number}]"
            statement = _chosen(template, written, resolved, at)
            if statement is None:
                continue  # a condition leaves it out
            unknown = set(statement) - _STATEMENT_KEYS
            if unknown:
                raise TemplateError(
                    f"{at}: {', '.join(sorted(unknown))} cannot be evaluated locally"
                )
            if statement.get("Effect") not in ("Allow", "Deny"):
                raise TemplateError(f"{at}: Effect must be Allow or Deny")
            statements.append(
                PolicyStatement(
                    effect=statement["Effect"],
                    actions=_text_list(
                        resolve(template, statement.get("Action"), resolved, at), at
                    ),
                    resources=_text_list(
                        resolve(template, statement.get("Resource"), resolved, at), at
                    ),
                )
            )
    return statements
