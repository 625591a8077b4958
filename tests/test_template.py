"""template.yaml's operations pieces, held to what they are for: the access log says who
called what and never a query string, the public routes are throttled tighter, every
function has its log group and is watched by an errors and a throttles alarm, the alarms'
metrics are ones the code emits, the key reaches every policy that touches secrets, and
samconfig.toml's environments give the template values it takes. (cfn-lint, in `make
lint`, checks the template against CloudFormation's schemas.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from mailbridge_tools.localapi.iam import SECRET_SUFFIX, Authorization, Policy
from mailbridge_tools.template import (
    TEMPLATE_PATH,
    function_ids,
    function_policy,
    function_properties,
    load_template,
    resolve,
    routes,
)

ROOT = TEMPLATE_PATH.parent
TEMPLATE = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
ACCOUNT = "123456789012"
KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1d2c3b4a-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


def of_type(resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == resource_type}


def test_the_access_log_is_one_json_line_of_who_called_what() -> None:
    api = RESOURCES["HttpApi"]["Properties"]["AccessLogSettings"]
    assert api["DestinationArn"] == {"Fn::GetAtt": "ApiAccessLogs.Arn"}
    form = resolve(TEMPLATE, api["Format"], {}, "the access log")
    variables = set(re.findall(r"\$context\.[\w.]+", form))
    # What API Gateway puts in each is text without quotes (the status, times: digits):
    # the line stays JSON.
    line = json.loads(re.sub(r"\$context\.[\w.]+", "200", form))
    assert set(line) >= {"requestId", "route", "status", "latencyMs", "org"}
    assert (line["status"], line["latencyMs"]) == (200, 200)  # numbers, to compare
    assert line["org"] == "200" and "$context.authorizer.claims.org_id" in variables
    # The route's key ("GET /api/engine/oauth/callback"): never the path or its query,
    # which carries the callback's authorization code.
    assert not {v for v in variables if re.search(r"path|query|request\.", v, re.I)}
    assert "$context.routeKey" in variables


def test_the_public_routes_are_throttled_tighter_than_the_stage() -> None:
    api = RESOURCES["HttpApi"]["Properties"]
    assert api["DefaultRouteSettings"] == {
        "ThrottlingRateLimit": {"Ref": "ThrottlingRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottlingBurstLimit"},
    }
    public = {route.route_key for route in routes(TEMPLATE, ROOT) if not route.authorized}
    assert public == {
        "GET /api/engine/oauth/callback",
        "POST /api/engine/push/google",
        "POST /api/engine/push/microsoft",
    }
    tighter = {
        "ThrottlingRateLimit": {"Ref": "PublicRouteRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "PublicRouteBurstLimit"},
    }
    assert api["RouteSettings"] == dict.fromkeys(public, tighter)
    parameters = TEMPLATE["Parameters"]
    for limit in ("RateLimit", "BurstLimit"):
        assert (
            parameters[f"PublicRoute{limit}"]["Default"]
            < parameters[f"Throttling{limit}"]["Default"]
        )


def test_every_function_logs_to_its_group_kept_as_long_as_the_parameter_says() -> None:
    groups = of_type("AWS::Logs::LogGroup")
    for function in function_ids(TEMPLATE):
        group = function_properties(TEMPLATE, function)["LoggingConfig"]["LogGroup"]["Ref"]
        assert groups[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert groups["ApiAccessLogs"]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert TEMPLATE["Parameters"]["LogRetentionDays"]["Default"] == 30


def _alarm_metrics(alarm: dict[str, Any]) -> list[dict[str, Any]]:
    properties = alarm["Properties"]
    if "Metrics" not in properties:
        return [{key: properties.get(key) for key in ("Namespace", "MetricName", "Dimensions")}]
    return [
        query["MetricStat"]["Metric"] for query in properties["Metrics"] if "MetricStat" in query
    ]


ALARMS = of_type("AWS::CloudWatch::Alarm")


def test_every_function_is_watched_for_errors_and_throttles() -> None:
    watched: dict[str, list[str]] = {"Errors": [], "Throttles": []}
    for alarm in ALARMS.values():
        for metric in _alarm_metrics(alarm):
            if metric["Namespace"] == "AWS/Lambda":
                [dimension] = metric["Dimensions"]
                watched[metric["MetricName"]].append(dimension["Value"]["Ref"])
    for functions in watched.values():
        assert sorted(functions) == sorted(function_ids(TEMPLATE))


@pytest.mark.parametrize("name", sorted(ALARMS))
def test_each_alarm_notifies_the_optional_topic_and_takes_at_most_ten_metrics(name: str) -> None:
    properties = ALARMS[name]["Properties"]
    to_topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert properties["AlarmActions"] == properties["OKActions"] == to_topic
    assert properties["TreatMissingData"] == "notBreaching"
    # CloudWatch's limit for an alarm on metric math.
    assert len(_alarm_metrics(ALARMS[name])) <= 10


def test_the_alarms_watch_metrics_the_code_emits() -> None:
    sources = [
        path.read_text()
        for folder in ("layers/shared/mailbridge", "functions")
        for path in (ROOT / folder).rglob("*.py")
    ]
    ours = {
        metric["MetricName"]
        for alarm in ALARMS.values()
        for metric in _alarm_metrics(alarm)
        if metric["Namespace"] == "Mailbridge"
    }
    assert ours == {"ConnectionTestPassed", "ConnectionTestFailed", "TokenRefreshFailed"}
    for name in ours:
        assert any(f'"{name}"' in source for source in sources), name
    # Powertools' one dimension: the service, as the template names it.
    service = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]
    for alarm in ALARMS.values():
        for metric in _alarm_metrics(alarm):
            if metric["Namespace"] == "Mailbridge":
                assert metric["Dimensions"] == [
                    {"Name": "service", "Value": service},
                    {"Name": "stack", "Value": {"Ref": "AWS::StackName"}},
                ]


def _policy(function: str, key: str) -> Policy:
    resolved = {
        "EmailTable.Arn": f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t",
        "MailboxQueue.Arn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:q",
        "MailEventBus.Arn": f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/b",
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": ACCOUNT,
        "KmsKeyArn": key,
    }
    return Policy(function, tuple(function_policy(TEMPLATE, function, resolved)))


@pytest.mark.parametrize("function", function_ids(TEMPLATE))
def test_a_function_that_touches_secrets_or_the_table_may_use_the_key_and_only_with_one(
    function: str,
) -> None:
    secrets = [
        f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:mailbridge/{owner}{SECRET_SUFFIX}"
        for owner in ("agents/a/email", "orgs/o/oauth-apps/google")
    ]
    with_key, without = _policy(function, KEY), _policy(function, "")

    def allowed(policy: Policy, action: str, resource: str) -> bool:
        return policy.decision(Authorization(action, resource)) == "allowed"

    reads = any(allowed(with_key, "secretsmanager:GetSecretValue", s) for s in secrets)
    writes = any(
        allowed(with_key, f"secretsmanager:{action}", s)
        for action in ("CreateSecret", "PutSecretValue")
        for s in secrets
    )
    # DynamoDB uses the table's key as the caller: every function using the table.
    table = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/t"
    uses_table = any(
        allowed(with_key, f"dynamodb:{action}", resource)
        for action in ("Query", "GetItem", "PutItem", "UpdateItem", "DeleteItem", "BatchGetItem")
        for resource in (table, f"{table}/index/ConnectedByProvider")
    )
    assert allowed(with_key, "kms:Decrypt", KEY) is (reads or writes or uses_table)
    assert allowed(with_key, "kms:GenerateDataKey", KEY) is writes
    assert not any(statement.actions[0].startswith("kms:") for statement in without.statements)


def test_the_metrics_carry_the_dimensions_the_alarms_watch() -> None:
    """What a function emits, as Lambda starts it (STACK_NAME set), in a fresh interpreter:
    the service and the stack, as the alarms name them."""
    code = (
        "from aws_lambda_powertools.metrics import MetricUnit\n"
        "from mailbridge.core.observability import metrics\n"
        "metrics.add_metric(name='TokenRefreshFailed', unit=MetricUnit.Count, value=1)\n"
        "print(json.dumps(metrics.serialize_metric_set()))"
    )
    environment = os.environ | {
        "STACK_NAME": "mailbridge-dev",
        "POWERTOOLS_SERVICE_NAME": "mailbridge",
    }
    emitted = subprocess.run(
        [sys.executable, "-c", "import json\n" + code],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
        timeout=60,
    )
    document = json.loads(emitted.stdout)
    [directive] = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "Mailbridge"
    assert sorted(directive["Dimensions"][0]) == ["service", "stack"]
    assert (document["service"], document["stack"]) == ("mailbridge", "mailbridge-dev")


def test_the_table_and_the_secrets_follow_the_key() -> None:
    table = RESOURCES["EmailTable"]["Properties"]
    assert table["SSESpecification"]["Fn::If"][0] == "HasKmsKey"
    assert table["SSESpecification"]["Fn::If"][1]["KMSMasterKeyId"] == {"Ref": "KmsKeyArn"}
    variables = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
    assert variables["SECRETS_KMS_KEY_ID"] == {"Ref": "KmsKeyArn"}
    assert TEMPLATE["Parameters"]["KmsKeyArn"]["Default"] == ""


def _allows(parameter: dict[str, Any], value: str) -> bool:
    if "AllowedValues" in parameter:
        return value in [str(allowed) for allowed in parameter["AllowedValues"]]
    if parameter["Type"] == "Number":
        number = float(value)
        return parameter.get("MinValue", number) <= number <= parameter.get("MaxValue", number)
    return re.fullmatch(parameter.get("AllowedPattern", ".*"), value) is not None


@pytest.mark.parametrize("environment", ["default", "production"])
def test_samconfig_gives_each_environment_values_the_template_takes(environment: str) -> None:
    config = tomllib.loads(Path(ROOT / "samconfig.toml").read_text())[environment]
    assert config["global"]["parameters"]["stack_name"]
    overrides = dict(o.split("=", 1) for o in config["deploy"]["parameters"]["parameter_overrides"])
    for name, value in overrides.items():
        assert _allows(TEMPLATE["Parameters"][name], value), (name, value)


def test_samconfig_environments_do_not_share_secrets() -> None:
    config = tomllib.loads(Path(ROOT / "samconfig.toml").read_text())
    prefixes = {
        dict(o.split("=", 1) for o in env["deploy"]["parameters"]["parameter_overrides"])[
            "SecretNamePrefix"
        ]
        for env in config.values()
        if isinstance(env, dict)
    }
    assert len(prefixes) == 2
