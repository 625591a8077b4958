"""The local API adapter and template reader, on a throwaway template with an echo function;
IAM as the local run enforces it, there and on the real template; and what invokes functions
besides API Gateway (schedules, SQS queues) and the bus's events, on a throwaway template
with a ticking and a working function, and on the real one."""

from __future__ import annotations

import base64
import contextvars
import hashlib
import http.client
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from mailbridge_tools.devauth import DevIssuer
from mailbridge_tools.localapi import LocalApi
from mailbridge_tools.localapi.triggers import rate_seconds
from mailbridge_tools.sandbox import DEMO_MAILBOX, DovecotServer
from mailbridge_tools.template import (
    PolicyStatement,
    Route,
    TemplateError,
    check_events,
    function_environment,
    function_policy,
    load_template,
    queue_sources,
    routes,
    table_properties,
)

TEMPLATE = """\
Parameters:
  JwtIssuer:
    Type: String
  Greeting:
    Type: String
    Default: hello
  SecretPrefix:
    Type: String
    Default: echo
Globals:
  Function:
    Handler: app.handler
    Timeout: 10
    Environment:
      Variables:
        TABLE_NAME: !Ref Table
        GREETING: !Ref Greeting
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            IdentitySource: $request.header.Authorization
            JwtConfiguration:
              issuer: !Ref JwtIssuer
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
        - {AttributeName: sk, AttributeType: S}
        - {AttributeName: org, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
        - {AttributeName: sk, KeyType: RANGE}
      GlobalSecondaryIndexes:
        - IndexName: by-org
          KeySchema:
            - {AttributeName: org, KeyType: HASH}
          Projection: {ProjectionType: KEYS_ONLY}
      TimeToLiveSpecification:
        AttributeName: expires_at
        Enabled: true
  EchoFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: echo/
      MemorySize: 256
      Environment:
        Variables:
          ROLE: echo
      Policies:
        - Statement:
            - Effect: Allow
              Action:
                - dynamodb:GetItem
                - dynamodb:Put*
                - dynamodb:ConditionCheckItem
                - dynamodb:BatchWriteItem
              Resource: !GetAtt Table.Arn
            - Effect: Allow
              Action: dynamodb:Query
              Resource: !Sub "${Table.Arn}/index/by-org"
            - Effect: Allow
              Action: [secretsmanager:CreateSecret, secretsmanager:GetSecretValue]
              Resource: !Sub
                - arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${P}*
                - P: !Sub ${SecretPrefix}/
            - Effect: Deny
              Action: "secretsmanager:*"
              Resource: arn:*:secretsmanager:*:*:secret:echo/locked/*
            - Effect: Allow
              Action: secretsmanager:BatchGetSecretValue
              Resource: "*"
      Events:
        GetThing:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: "/things/{thingId}", Method: GET}
        PutThing:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: "/things/{thingId}", Method: PUT}
        Health:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Path: /health, Method: GET, Auth: {Authorizer: NONE}}
"""

# Echoes what it was given; two paths exercise the other response shapes.
ECHO_APP = """
import json
import os
import time

BUSY = []  # this instance's requests in flight


def handler(event, context):
    if "run" in event:  # a test's code, run as this function's (LocalApi.invoke)
        return event["run"]()
    if event["rawPath"] == "/things/boom":
        raise RuntimeError("boom")
    if event["rawPath"] == "/things/plain":
        return {"plain": True}
    if event["rawPath"] == "/things/slow":
        BUSY.append(1)
        time.sleep(0.3)
        overlapped = len(BUSY) > 1
        BUSY.pop()
        return {"instance": id(BUSY), "overlapped": overlapped}
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json"},
        "cookies": ["a=1", "b=2"],
        "body": json.dumps({
            "event": event,
            "env": {name: os.environ.get(name) for name in ("TABLE_NAME", "GREETING", "ROLE")},
            "context": {
                "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "remaining_ms": context.get_remaining_time_in_millis(),
            },
        }),
    }
"""


def write_template(directory: Path) -> Path:
    (directory / "echo").mkdir()
    (directory / "echo" / "app.py").write_text(ECHO_APP)
    path = directory / "template.yaml"
    path.write_text(TEMPLATE)
    return path


@pytest.fixture(scope="module")
def template_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="module")
def api(template_path: Path) -> Iterator[LocalApi]:
    # A table name of its own: every moto server in a process shares one set of backends.
    table_name = f"localapi-test-{uuid.uuid4().hex[:8]}"
    with LocalApi(template_path=template_path, table_name=table_name) as running:
        yield running


def call(
    api: LocalApi,
    method: str,
    path: str,
    *,
    token: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = None,
) -> tuple[int, http.client.HTTPResponse, bytes]:
    connection = http.client.HTTPConnection(api.host, api.port, timeout=10)
    try:
        connection.putrequest(method, path)
        for name, value in headers or []:
            connection.putheader(name, value)
        if token is not None:
            connection.putheader("Authorization", f"Bearer {token}")
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def echoed(api: LocalApi, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    status, _, body = call(api, method, path, token=api.issuer.mint("user-1", "org-1"), **kwargs)
    assert status == 200, body
    echo: dict[str, Any] = json.loads(body)
    return echo


def test_routes_come_from_http_api_events(template_path: Path) -> None:
    found = routes(load_template(template_path), template_path.parent)

    code_uri = template_path.parent / "echo"
    assert found == [
        Route("GET", "/things/{thingId}", "EchoFunction", code_uri, "app.handler", True),
        Route("PUT", "/things/{thingId}", "EchoFunction", code_uri, "app.handler", True),
        Route("GET", "/health", "EchoFunction", code_uri, "app.handler", False),
    ]


def test_the_real_template_routes_to_existing_code() -> None:
    for route in routes(load_template()):
        assert (route.code_uri / "app.py").is_file(), route


def test_function_environment_resolves_refs_and_defaults(template_path: Path) -> None:
    template = load_template(template_path)

    environment = function_environment(template, "EchoFunction", {"Table": "local-table"})

    assert environment == {"TABLE_NAME": "local-table", "GREETING": "hello", "ROLE": "echo"}


def test_function_environment_refuses_what_it_cannot_resolve(template_path: Path) -> None:
    template = load_template(template_path)
    variables = template["Resources"]["EchoFunction"]["Properties"]["Environment"]["Variables"]

    variables["SECRET_ARN"] = {"Fn::Sub": "arn:${AWS::Partition}:secretsmanager"}
    with pytest.raises(TemplateError, match="SECRET_ARN refers to AWS::Partition"):
        function_environment(template, "EchoFunction", {"Table": "local-table"})
    variables["SECRET_ARN"] = {"Fn::ImportValue": "elsewhere"}
    with pytest.raises(TemplateError, match="SECRET_ARN: Fn::ImportValue cannot be resolved"):
        function_environment(template, "EchoFunction", {"Table": "local-table"})

    del template["Resources"]["EchoFunction"]["Properties"]["Environment"]
    with pytest.raises(TemplateError, match="TABLE_NAME refers to Table"):
        function_environment(template, "EchoFunction", {})


def test_function_environment_resolves_sub_and_getatt(template_path: Path) -> None:
    template = load_template(template_path)
    variables = template["Resources"]["EchoFunction"]["Properties"]["Environment"]["Variables"]
    variables["TABLE_INDEX"] = {"Fn::Sub": "${Table.Arn}/index/${Name}-${!Literal}"}
    variables["TABLE_INDEX"]["Fn::Sub"] = [variables["TABLE_INDEX"]["Fn::Sub"], {"Name": "x"}]
    variables["TABLE_ARN"] = {"Fn::GetAtt": ["Table", "Arn"]}

    environment = function_environment(
        template, "EchoFunction", {"Table": "t", "Table.Arn": "arn:table/t"}
    )

    assert environment["TABLE_INDEX"] == "arn:table/t/index/x-${Literal}"
    assert environment["TABLE_ARN"] == "arn:table/t"


def test_create_table_matches_the_template(api: LocalApi, template_path: Path) -> None:
    expected = table_properties(load_template(template_path))
    client = boto3.client("dynamodb")  # the running LocalApi points it at its moto server
    try:
        table = client.describe_table(TableName=api.table_name)["Table"]
        ttl = client.describe_time_to_live(TableName=api.table_name)
    finally:
        client.close()

    assert table["KeySchema"] == expected["KeySchema"]
    assert table["AttributeDefinitions"] == expected["AttributeDefinitions"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "by-org"
    assert index["KeySchema"] == expected["GlobalSecondaryIndexes"][0]["KeySchema"]
    assert ttl["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "expires_at",
    }


def test_event_carries_path_query_headers_cookies_and_claims(api: LocalApi) -> None:
    echo = echoed(
        api,
        "GET",
        "/things/a%2520b?x=1&x=2&empty=",
        headers=[("X-Multi", "one"), ("X-Multi", "two"), ("Cookie", "c=3; d=4")],
    )

    event = echo["event"]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /things/{thingId}"
    # Decoded once, as HTTP APIs do.
    assert event["rawPath"] == "/things/a%20b"
    assert event["pathParameters"] == {"thingId": "a%20b"}
    assert event["rawQueryString"] == "x=1&x=2&empty="
    assert event["queryStringParameters"] == {"x": "1,2", "empty": ""}
    assert event["headers"]["x-multi"] == "one,two"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["c=3", "d=4"]
    assert "body" not in event
    context = event["requestContext"]
    assert context["http"]["method"] == "GET"
    assert context["http"]["sourceIp"] == "127.0.0.1"
    assert context["stage"] == "$default"
    claims = context["authorizer"]["jwt"]["claims"]
    assert claims["sub"] == "user-1"
    assert claims["org_id"] == "org-1"
    assert claims["role"] == "admin"
    assert claims["aud"] == api.issuer.audience
    assert claims["exp"].isdigit()  # as API Gateway passes claims: strings
    assert context["authorizer"]["jwt"]["scopes"] is None


def test_function_runs_with_template_environment_and_context(api: LocalApi) -> None:
    echo = echoed(api, "GET", "/things/1")

    assert echo["env"] == {"TABLE_NAME": api.table_name, "GREETING": "hello", "ROLE": "echo"}
    assert echo["context"]["function_name"] == "EchoFunction"
    assert echo["context"]["memory_limit_in_mb"] == 256
    assert 0 < echo["context"]["remaining_ms"] <= 10_000


def test_concurrent_requests_run_in_instances_of_their_own(api: LocalApi) -> None:
    """As Lambda scales out: an instance never takes two requests at once; a busy function
    gets another instance, and an idle one is used again."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        started = time.monotonic()
        answers = list(pool.map(lambda _: echoed(api, "GET", "/things/slow"), range(3)))
        elapsed = time.monotonic() - started
    assert not any(answer["overlapped"] for answer in answers)
    instances = {answer["instance"] for answer in answers}
    assert len(instances) == 3 and elapsed < 0.8, (instances, elapsed)  # not one by one
    assert echoed(api, "GET", "/things/slow")["instance"] in instances


def test_bodies_pass_as_text_or_base64(api: LocalApi) -> None:
    text = echoed(api, "PUT", "/things/1", body='{"name": "é"}'.encode())["event"]
    binary = echoed(api, "PUT", "/things/1", body=b"\xff\x00")["event"]

    assert (text["body"], text["isBase64Encoded"]) == ('{"name": "é"}', False)
    assert (base64.b64decode(binary["body"]), binary["isBase64Encoded"]) == (b"\xff\x00", True)


def test_response_maps_headers_cookies_and_bare_values(api: LocalApi) -> None:
    token = api.issuer.mint("user-1", "org-1")
    _, response, _ = call(api, "GET", "/things/1", token=token)
    status, plain, body = call(api, "GET", "/things/plain", token=token)

    assert response.headers.get_all("Set-Cookie") == ["a=1", "b=2"]
    assert (status, plain.headers["Content-Type"], json.loads(body)) == (
        200,
        "application/json",
        {"plain": True},
    )


@pytest.mark.parametrize(
    "token",
    [
        None,
        "not-a-jwt",
        DevIssuer().mint("user-1", "org-1"),  # signed by another key
        "expired",
    ],
)
def test_authorized_routes_refuse_missing_and_bad_tokens(api: LocalApi, token: str | None) -> None:
    if token == "expired":
        token = api.issuer.mint("user-1", "org-1", ttl_seconds=-60)

    status, response, body = call(api, "GET", "/things/1", token=token)

    assert (status, json.loads(body)) == (401, {"message": "Unauthorized"})
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_route_without_authorizer_needs_no_token(api: LocalApi) -> None:
    status, _, body = call(api, "GET", "/health")

    assert status == 200
    assert "authorizer" not in json.loads(body)["event"]["requestContext"]


def test_undeclared_method_is_405_with_allow(api: LocalApi) -> None:
    status, response, body = call(api, "DELETE", "/things/1")

    assert (status, json.loads(body)) == (405, {"message": "Method Not Allowed"})
    assert response.headers["Allow"] == "GET, PUT"


def test_unknown_path_is_404(api: LocalApi) -> None:
    for path in ("/nothing", "/things", "/things/1/more"):
        status, _, body = call(api, "GET", path)
        assert (status, json.loads(body)) == (404, {"message": "Not Found"}), path


def test_oversized_body_is_413_unread(api: LocalApi) -> None:
    connection = http.client.HTTPConnection(api.host, api.port, timeout=10)
    try:
        connection.putrequest("PUT", "/things/1")
        connection.putheader("Content-Length", str(10 * 1024 * 1024 + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert (response.status, json.loads(response.read())) == (
            413,
            {"message": "Request Entity Too Large"},
        )
    finally:
        connection.close()


def test_handler_exception_is_500_and_logged(
    api: LocalApi, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, body = call(api, "GET", "/things/boom", token=api.issuer.mint("user-1", "org-1"))

    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    assert "RuntimeError: boom" in caplog.text


def test_stop_restores_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TABLE_NAME", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://before.invalid")
    seen: list[str] = []

    with LocalApi(
        template_path=write_template(tmp_path),
        table_name=f"localapi-test-{uuid.uuid4().hex[:8]}",
        seed=lambda running: seen.append(running.table_name),
    ) as running:
        assert os.environ["TABLE_NAME"] == running.table_name
        assert os.environ["AWS_ENDPOINT_URL"] == running.aws_endpoint_url

    assert seen == [running.table_name]
    assert "TABLE_NAME" not in os.environ
    assert os.environ["AWS_ENDPOINT_URL"] == "http://before.invalid"


# -- IAM: each function's calls held to its Policies


def as_echo(api: LocalApi, run: Callable[[], Any]) -> Any:
    """Runs `run` in an invocation of EchoFunction: its AWS calls are the function's."""
    return api.invoke({"routeKey": "GET /things/{thingId}", "rawPath": "/things/run", "run": run})


def access_denied(api: LocalApi, run: Callable[[], Any]) -> str:
    """The message of the AccessDeniedException that `run`, as EchoFunction, fails with."""
    with pytest.raises(ClientError) as raised:
        as_echo(api, run)
    error = raised.value.response["Error"]
    assert error["Code"] == "AccessDeniedException", error
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    message: str = error["Message"]
    return message


def key(name: str) -> dict[str, Any]:
    return {"pk": {"S": f"thing#{name}"}, "sk": {"S": "thing"}}


def table(api: LocalApi, name: str | None = None) -> str:
    return f"arn:aws:dynamodb:us-east-1:123456789012:table/{name or api.table_name}"


def secret(name: str) -> str:
    return f"arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-Xy12Ab"


def refused(action: str, resource: str) -> str:
    return (
        "User: arn:aws:sts::123456789012:assumed-role/EchoFunctionRole/EchoFunction is not "
        f"authorized to perform: {action} on resource: {resource} because no identity-based "
        f"policy allows the {action} action"
    )


@pytest.fixture
def dynamodb(api: LocalApi) -> Iterator[Any]:
    client = boto3.client("dynamodb")  # the running LocalApi points it at its moto server
    yield client
    client.close()


@pytest.fixture
def secretsmanager(api: LocalApi) -> Iterator[Any]:
    client = boto3.client("secretsmanager")
    yield client
    client.close()


def test_policy_statements_resolve_refs_subs_and_getatts(template_path: Path) -> None:
    resolved = {
        "Table": "t",
        "Table.Arn": "arn:aws:dynamodb:r:1:table/t",
        "AWS::Partition": "aws",
        "AWS::Region": "r",
        "AWS::AccountId": "1",
    }

    statements = function_policy(load_template(template_path), "EchoFunction", resolved)

    assert statements[1] == PolicyStatement(
        "Allow", ("dynamodb:Query",), ("arn:aws:dynamodb:r:1:table/t/index/by-org",)
    )
    assert statements[2].resources == ("arn:aws:secretsmanager:r:1:secret:echo/*",)
    assert statements[3].effect == "Deny"


@pytest.mark.parametrize(
    ("policies", "refusal"),
    [
        (["AmazonDynamoDBFullAccess"], "managed policy 'AmazonDynamoDBFullAccess'"),
        ([{"DynamoDBCrudPolicy": {"TableName": {"Ref": "Table"}}}], "policy template Dyn"),
        (
            [
                {
                    "Statement": [
                        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {}}
                    ]
                }
            ],
            r"Statement\[0\]: Condition cannot be evaluated",
        ),
        ([{"Statement": [{"Effect": "Maybe", "Action": "s3:*", "Resource": "*"}]}], "Effect"),
    ],
)
def test_what_the_local_run_cannot_evaluate_is_refused(
    template_path: Path, policies: list[Any], refusal: str
) -> None:
    template = load_template(template_path)
    template["Resources"]["EchoFunction"]["Properties"]["Policies"] = policies

    with pytest.raises(TemplateError, match=refusal):
        function_policy(template, "EchoFunction", {})


def test_a_role_of_the_functions_own_is_refused_from_globals_too(template_path: Path) -> None:
    template = load_template(template_path)
    template["Globals"]["Function"]["PermissionsBoundary"] = "arn:aws:iam::1:policy/boundary"

    with pytest.raises(TemplateError, match="EchoFunction: its PermissionsBoundary"):
        function_policy(template, "EchoFunction", {})


def test_calls_the_policy_allows_pass(api: LocalApi, dynamodb: Any, secretsmanager: Any) -> None:
    item = {**key("allowed"), "org": {"S": "org-1"}}
    name = f"echo/{uuid.uuid4().hex}"

    def run() -> Any:
        dynamodb.put_item(TableName=api.table_name, Item=item)
        by_org = dynamodb.query(
            TableName=api.table_name,
            IndexName="by-org",
            KeyConditionExpression="org = :org",
            ExpressionAttributeValues={":org": {"S": "org-1"}},
        )
        secretsmanager.create_secret(Name=name, SecretString="s")
        return (
            dynamodb.get_item(TableName=api.table_name, Key=key("allowed"))["Item"],
            by_org["Count"],
            secretsmanager.get_secret_value(SecretId=name)["SecretString"],
        )

    assert as_echo(api, run) == (item, 1, "s")


def test_an_action_the_policy_lacks_is_access_denied(
    api: LocalApi, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    message = access_denied(
        api, lambda: dynamodb.delete_item(TableName=api.table_name, Key=key("any"))
    )

    assert message == refused("dynamodb:DeleteItem", table(api))
    # What a failing test shows: the function, and what its policy lacks.
    assert f"EchoFunction may not dynamodb:DeleteItem on {table(api)}" in caplog.text


def test_a_resource_outside_the_policy_is_access_denied(
    api: LocalApi, dynamodb: Any, secretsmanager: Any
) -> None:
    # Query is allowed on the index only, not on the table.
    query = access_denied(
        api,
        lambda: dynamodb.query(
            TableName=api.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": "thing#any"}},
        ),
    )
    other_prefix = access_denied(
        api, lambda: secretsmanager.create_secret(Name="other/secret", SecretString="s")
    )
    tagged = access_denied(
        api,
        lambda: secretsmanager.create_secret(
            Name="echo/tagged", SecretString="s", Tags=[{"Key": "k", "Value": "v"}]
        ),
    )
    locked = access_denied(api, lambda: secretsmanager.get_secret_value(SecretId="echo/locked/one"))

    assert query == refused("dynamodb:Query", table(api))
    assert other_prefix == refused("secretsmanager:CreateSecret", secret("other/secret"))
    assert tagged == refused("secretsmanager:TagResource", secret("echo/tagged"))
    assert locked.endswith(
        f"secretsmanager:GetSecretValue on resource: {secret('echo/locked/one')} "
        "with an explicit deny in an identity-based policy"
    )


KEY = "arn:aws:kms:us-east-1:123456789012:key/6f3c1b2a-0d4e-4f5a-9b8c-7d6e5f4a3b2c"


def test_a_secret_under_a_customer_managed_key_needs_the_key(
    api: LocalApi, secretsmanager: Any
) -> None:
    """Secrets Manager uses the key as the caller: reading needs kms:Decrypt on it, writing
    kms:GenerateDataKey too. EchoFunction's policy names no key."""
    name = f"echo/{uuid.uuid4().hex}"
    secretsmanager.create_secret(Name=name, SecretString="s", KmsKeyId=KEY)  # no invocation
    under_aws_key = f"echo/{uuid.uuid4().hex}"
    secretsmanager.create_secret(Name=under_aws_key, SecretString="s")

    read = access_denied(api, lambda: secretsmanager.get_secret_value(SecretId=name))
    batch = access_denied(
        api, lambda: secretsmanager.batch_get_secret_value(SecretIdList=[under_aws_key, name])
    )
    created = access_denied(
        api,
        lambda: secretsmanager.create_secret(
            Name=f"echo/{uuid.uuid4().hex}", SecretString="s", KmsKeyId=KEY
        ),
    )

    assert read == batch == refused("kms:Decrypt", KEY)
    assert created == refused("kms:GenerateDataKey", KEY)
    # A secret under AWS's own key needs no permission on any key.
    assert as_echo(api, lambda: secretsmanager.get_secret_value(SecretId=under_aws_key))


def test_transactions_and_batches_are_checked_item_by_item(
    api: LocalApi, dynamodb: Any, secretsmanager: Any
) -> None:
    dynamodb.put_item(TableName=api.table_name, Item=key("checked"))  # no invocation: unchecked
    check = {
        "ConditionCheck": {
            "TableName": api.table_name,
            "Key": key("checked"),
            "ConditionExpression": "attribute_exists(pk)",
        }
    }
    put = {"Put": {"TableName": api.table_name, "Item": key("transacted")}}
    delete = {"Delete": {"TableName": api.table_name, "Key": key("checked")}}

    as_echo(api, lambda: dynamodb.transact_write_items(TransactItems=[check, put]))
    with_delete = access_denied(
        api,
        lambda: dynamodb.transact_write_items(
            TransactItems=[{"Put": {"TableName": api.table_name, "Item": key("never")}}, delete]
        ),
    )
    transact_get = as_echo(
        api,
        lambda: dynamodb.transact_get_items(
            TransactItems=[{"Get": {"TableName": api.table_name, "Key": key("transacted")}}]
        ),
    )
    writes = [{"PutRequest": {"Item": key("batched")}}]
    as_echo(api, lambda: dynamodb.batch_write_item(RequestItems={api.table_name: writes}))
    other_table = access_denied(
        api,
        lambda: dynamodb.batch_write_item(
            RequestItems={api.table_name: writes, "other-table": writes}
        ),
    )
    batch_get = access_denied(
        api,
        lambda: dynamodb.batch_get_item(RequestItems={api.table_name: {"Keys": [key("batched")]}}),
    )
    secrets = access_denied(
        api,
        lambda: secretsmanager.batch_get_secret_value(SecretIdList=["echo/a", "other/b"]),
    )

    assert with_delete == refused("dynamodb:DeleteItem", table(api))
    # Refused as a whole, before anything was sent: the allowed Put did not happen either.
    assert "Item" not in dynamodb.get_item(TableName=api.table_name, Key=key("never"))
    assert transact_get["Responses"][0]["Item"] == key("transacted")
    assert other_table == refused("dynamodb:BatchWriteItem", table(api, "other-table"))
    assert batch_get == refused("dynamodb:BatchGetItem", table(api))
    assert secrets == refused("secretsmanager:GetSecretValue", secret("other/b"))


def test_calls_outside_an_invocation_are_not_checked(api: LocalApi, dynamodb: Any) -> None:
    dynamodb.put_item(TableName=api.table_name, Item=key("seeded"))

    dynamodb.delete_item(TableName=api.table_name, Key=key("seeded"))  # a test's, unchecked
    access_denied(api, lambda: dynamodb.delete_item(TableName=api.table_name, Key=key("seeded")))


def test_clients_made_before_and_after_the_start_are_checked(tmp_path: Path) -> None:
    """The layer's clients live as long as the process: one made before a LocalApi starts
    is held to the policies as much as one made after."""
    early = boto3.client(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",  # never reached: refused before anything is sent
        aws_access_key_id="early",
        aws_secret_access_key="early",
    )
    with LocalApi(
        template_path=write_template(tmp_path), table_name=f"localapi-test-{uuid.uuid4().hex[:8]}"
    ) as running:
        late = boto3.client("dynamodb")
        for client in (early, late):
            message = access_denied(
                running, lambda c=client: c.delete_item(TableName=running.table_name, Key=key("a"))
            )
            assert message == refused("dynamodb:DeleteItem", table(running))
        late.close()
    early.close()


def test_a_worker_thread_is_checked_when_it_keeps_the_invocations_context(
    api: LocalApi, dynamodb: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """As the layer's adapters run their threads (contextvars.copy_context().run). A thread
    that does not is no function's: not checked, and logged as such."""

    def delete() -> None:
        dynamodb.delete_item(TableName=api.table_name, Key=key("threaded"))

    def in_the_invocations_context() -> None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pool.submit(contextvars.copy_context().run, delete).result()

    def in_a_bare_thread() -> None:
        thread = threading.Thread(target=delete, name="lost-context")
        thread.start()
        thread.join()

    access_denied(api, in_the_invocations_context)
    as_echo(api, in_a_bare_thread)

    assert "dynamodb.DeleteItem from thread lost-context is outside any invocation" in caplog.text


def test_reseed_puts_the_table_and_the_runs_secrets_back_to_the_seed() -> None:
    """What each of the benchmark's first requests starts from: what requests wrote since
    (an item, a secret the run's stack tagged) is gone and the seed's items are back; other
    secrets stay. (A seed of its own: the demo seed writes through the layer's clients,
    which would outlive this run's moto; `make bench` runs that one.)"""

    def seed(running: LocalApi) -> None:
        client = boto3.client("dynamodb")
        client.put_item(TableName=running.table_name, Item=key("seeded"))
        client.close()

    with LocalApi(table_name=f"localapi-test-{uuid.uuid4().hex[:8]}", seed=seed) as api:
        dynamodb, secretsmanager = boto3.client("dynamodb"), boto3.client("secretsmanager")

        def items() -> list[dict[str, Any]]:
            return dynamodb.scan(TableName=api.table_name)["Items"]

        def secret(stack: str, tag: str = "mailbridge:stack") -> str:
            created = secretsmanager.create_secret(
                Name=f"mailbridge/agents/{uuid.uuid4().hex}/email",
                SecretString="{}",
                Tags=[{"Key": tag, "Value": stack}],
            )
            return str(created["ARN"])

        assert items() == [key("seeded")]
        dynamodb.put_item(TableName=api.table_name, Item=key("written"))
        dynamodb.delete_item(TableName=api.table_name, Key=key("seeded"))
        ours = secret(api.table_name)
        # Another run's, one whose name starts as ours, and our name under another tag.
        others = {
            secret("another-run"),
            secret(f"{api.table_name}-2"),
            secret(api.table_name, tag="mailbridge:org"),
        }

        api.reseed()

        def exists(arn: str) -> bool:
            try:
                secretsmanager.describe_secret(SecretId=arn)
            except ClientError as error:
                if error.response["Error"]["Code"] == "ResourceNotFoundException":
                    return False
                raise
            return True

        assert items() == [key("seeded")]
        assert not exists(ours)
        assert all(exists(arn) for arn in others)
        dynamodb.close()
        secretsmanager.close()


def test_the_real_template_holds_each_function_to_its_policy() -> None:
    """The presets function has no AWS permission at all; the settings of organizations
    reach their own secrets, not the agents'."""
    with LocalApi(table_name=f"localapi-test-{uuid.uuid4().hex[:8]}") as real:
        dynamodb = boto3.client("dynamodb")
        secretsmanager = boto3.client("secretsmanager")
        with real.acting_as("PresetsFunction"), pytest.raises(ClientError) as presets:
            dynamodb.get_item(TableName=real.table_name, Key=key("any"))
        with real.acting_as("OrgSettingsFunction"), pytest.raises(ClientError) as org_settings:
            secretsmanager.delete_secret(SecretId="mailbridge/agents/any/email")
        dynamodb.close()
        secretsmanager.close()

    assert presets.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "dynamodb:GetItem on resource: " + table(real) in str(presets.value)
    assert org_settings.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "secretsmanager:DeleteSecret on resource: " + secret(
        "mailbridge/agents/any/email"
    ) in str(org_settings.value)


def test_the_real_templates_functions_may_use_the_key_it_is_given() -> None:
    """With KmsKeyArn, each function that reads or writes secrets may use that key, and
    only with it: the policies follow the parameter."""
    name = f"mailbridge/agents/{uuid.uuid4().hex}/email"
    writers = (
        "EmailConfigWriteFunction",
        "OAuthFunction",
        "ConnectionTestFunction",
        "MailFunction",
    )
    writers += ("MailSendFunction", "AgentsFunction", "NewMailWorkerFunction")
    without_secrets = (
        "EmailConfigFunction",
        "AuditFunction",
        "GmailPushFunction",
        "PresetsFunction",
    )
    for parameters, allowed in (({"KmsKeyArn": KEY}, True), ({}, False)):
        with LocalApi(
            table_name=f"localapi-test-{uuid.uuid4().hex[:8]}", parameters=parameters
        ) as real:
            secretsmanager = boto3.client("secretsmanager")
            if allowed:
                secretsmanager.create_secret(Name=name, SecretString="{}", KmsKeyId=KEY)
            outcomes = {}
            for function in writers + without_secrets:
                with real.acting_as(function):
                    try:
                        secretsmanager.put_secret_value(SecretId=name, SecretString="{}")
                        outcomes[function] = "wrote"
                    except ClientError as error:
                        outcomes[function] = str(error).split("perform: ")[1].split(" ")[0]
            secretsmanager.close()
        if allowed:
            # The functions without secrets may not touch them, key or not.
            assert outcomes == dict.fromkeys(writers, "wrote") | dict.fromkeys(
                without_secrets, "secretsmanager:PutSecretValue"
            )
        else:
            # The same secret (moto's backends outlive a run), under a key no policy names.
            assert {outcomes[function] for function in writers} == {"kms:GenerateDataKey"}


# -- what invokes a function besides API Gateway: schedules, queues, and the bus's events

TRIGGERED_TEMPLATE = """\
Parameters:
  JwtIssuer:
    Type: String
  TickRate:
    Type: String
    Default: rate(1 minute)
Globals:
  Function:
    Handler: app.handler
    Timeout: 10
    Environment:
      Variables:
        TABLE_NAME: !Ref Table
        WORK_QUEUE_URL: !Ref WorkQueue
Resources:
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
  Bus:
    Type: AWS::Events::EventBus
    Properties:
      Name: !Sub ${AWS::StackName}-bus
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 120
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt DeadLetters.Arn
        maxReceiveCount: 2
  DeadLetters:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600
  TickFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: tick/
      Policies:
        - Statement:
            - Effect: Allow
              Action: sqs:SendMessage
              Resource: !GetAtt WorkQueue.Arn
      Events:
        Tick:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: !Ref TickRate
            Input: '{"jobs": ["ticked"]}'
        Daily:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 day)
  WorkFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: work/
      Environment:
        Variables:
          BUS_NAME: !Ref Bus
          BUS_ARN: !GetAtt Bus.Arn
      Policies:
        - Statement:
            - Effect: Allow
              Action: events:PutEvents
              Resource: !GetAtt Bus.Arn
            - Effect: Allow
              Action: sqs:SendMessage
              Resource: !GetAtt WorkQueue.Arn
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 3
            FunctionResponseTypes: [ReportBatchItemFailures]
"""

# Sends each job of its input to the queue.
TICK_APP = """
import os

import boto3

sqs = boto3.client("sqs")


def handler(event, context):
    for job in event.get("jobs", []):
        sqs.send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=job)
    return {"input": event}
"""

# Puts an event on the bus for each record it is given (the record in it), then does what the
# body's first word says: spawn (sends a message of its own), fail (reported failed),
# raise-once and bogus-once (the whole batch fails at its first receive, by an exception or an
# itemIdentifier of no record of the batch); anything else succeeds.
WORK_APP = """
import json
import os

import boto3

events = boto3.client("events")
sqs = boto3.client("sqs")


def handler(event, context):
    records = event["Records"]
    events.put_events(
        Entries=[
            {
                "EventBusName": os.environ["BUS_NAME"],
                "Source": "test.work",
                "DetailType": "Delivered",
                "Detail": json.dumps({"body": record["body"], "record": record}),
            }
            for record in records
        ]
    )
    failures = []
    for record in records:
        kind = record["body"].split(":")[0]
        first = record["attributes"]["ApproximateReceiveCount"] == "1"
        if kind == "spawn":
            body = record["body"].replace("spawn", "spawned", 1)
            sqs.send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=body)
        elif kind == "fail":
            failures.append({"itemIdentifier": record["messageId"]})
        elif kind == "raise-once" and first:
            raise RuntimeError("the whole batch fails")
        elif kind == "bogus-once" and first:
            failures.append({"itemIdentifier": "no-record-of-this-batch"})
    return {"batchItemFailures": failures}
"""


def write_triggered_template(directory: Path) -> Path:
    for name, code in (("tick", TICK_APP), ("work", WORK_APP)):
        (directory / name).mkdir()
        (directory / name / "app.py").write_text(code)
    path = directory / "template.yaml"
    path.write_text(TRIGGERED_TEMPLATE)
    return path


@pytest.fixture(scope="module")
def triggered_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_triggered_template(tmp_path_factory.mktemp("triggered"))


@pytest.fixture(scope="module")
def triggered(triggered_path: Path) -> Iterator[LocalApi]:
    table_name = f"localapi-test-{uuid.uuid4().hex[:8]}"
    with LocalApi(template_path=triggered_path, table_name=table_name) as running:
        yield running


@pytest.fixture
def sqs(triggered: LocalApi) -> Iterator[Any]:
    """An SQS client; the work queue starts empty, what earlier tests left delivered."""
    triggered.process_queue("WorkQueue")
    client = boto3.client("sqs")
    yield client
    client.close()


@pytest.fixture
def events(triggered: LocalApi) -> Iterator[Any]:
    client = boto3.client("events")
    yield client
    client.close()


def queue_arn(api: LocalApi, queue: str) -> str:
    return f"arn:aws:sqs:us-east-1:123456789012:{api.table_name}-{queue}"


def bus_arn(name: str) -> str:
    return f"arn:aws:events:us-east-1:123456789012:event-bus/{name}"


def dead_letters_url(api: LocalApi, sqs: Any) -> str:
    url: str = sqs.get_queue_url(QueueName=f"{api.table_name}-DeadLetters")["QueueUrl"]
    return url


def delivered(api: LocalApi, token: str) -> list[dict[str, Any]]:
    """The records the work function was given whose body has `token`, oldest first."""
    return [
        event["detail"]["record"]
        for event in api.mail_events()
        if event["source"] == "test.work" and token in event["detail"]["body"]
    ]


def receive_counts(api: LocalApi, token: str) -> list[tuple[str, int]]:
    return [
        (record["body"].split(":")[0], int(record["attributes"]["ApproximateReceiveCount"]))
        for record in delivered(api, token)
    ]


def queue_is_empty(sqs: Any) -> bool:
    attributes = sqs.get_queue_attributes(
        QueueUrl=os.environ["WORK_QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return set(attributes.values()) == {"0"}


def test_queues_and_buses_are_made_from_the_template_and_resolved(
    triggered: LocalApi, sqs: Any, events: Any
) -> None:
    work_url = os.environ["WORK_QUEUE_URL"]
    attributes = sqs.get_queue_attributes(QueueUrl=work_url, AttributeNames=["All"])["Attributes"]
    dead = sqs.get_queue_attributes(
        QueueUrl=dead_letters_url(triggered, sqs), AttributeNames=["All"]
    )["Attributes"]
    bus = events.describe_event_bus(Name=os.environ["BUS_NAME"])

    # Named as CloudFormation names them, after the stack (the table's name here).
    assert work_url.endswith(f"/123456789012/{triggered.table_name}-WorkQueue")
    assert attributes["QueueArn"] == queue_arn(triggered, "WorkQueue")
    assert attributes["VisibilityTimeout"] == "120"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": queue_arn(triggered, "DeadLetters"),
        "maxReceiveCount": 2,
    }
    assert dead["MessageRetentionPeriod"] == "1209600"
    assert os.environ["BUS_NAME"] == f"{triggered.table_name}-bus"
    assert bus["Arn"] == os.environ["BUS_ARN"] == bus_arn(f"{triggered.table_name}-bus")


def test_a_function_may_send_to_and_put_on_only_what_its_policy_names(
    triggered: LocalApi, sqs: Any, events: Any
) -> None:
    work_url = os.environ["WORK_QUEUE_URL"]
    entry = {"Source": "test.iam", "DetailType": "Checked", "Detail": "{}"}
    on_the_bus = {**entry, "EventBusName": os.environ["BUS_NAME"]}
    batch = [{"Id": "1", "MessageBody": "iam:batched"}]
    dead_url = dead_letters_url(triggered, sqs)  # GetQueueUrl: not the function's to do
    refusals = {}
    with triggered.acting_as("TickFunction"):
        sqs.send_message(QueueUrl=work_url, MessageBody="iam:sent")
        sqs.send_message_batch(QueueUrl=work_url, Entries=batch)
        for name, call in {
            "dead letters": lambda: sqs.send_message(QueueUrl=dead_url, MessageBody="iam:never"),
            "batch to dead letters": lambda: sqs.send_message_batch(
                QueueUrl=dead_url, Entries=batch
            ),
            "receive": lambda: sqs.receive_message(QueueUrl=work_url),
            "put": lambda: events.put_events(Entries=[on_the_bus]),
        }.items():
            with pytest.raises(ClientError) as refused_call:
                call()
            refusals[name] = refused_call.value.response["Error"]
    with triggered.acting_as("WorkFunction"):
        assert events.put_events(Entries=[on_the_bus])["FailedEntryCount"] == 0
        by_arn = {**entry, "EventBusName": os.environ["BUS_ARN"]}
        assert events.put_events(Entries=[by_arn])["FailedEntryCount"] == 0
        with pytest.raises(ClientError) as default_bus:
            events.put_events(Entries=[on_the_bus, entry])  # one entry on the default bus

    assert {error["Code"] for error in refusals.values()} == {"AccessDeniedException"}
    role = "assumed-role/TickFunctionRole/TickFunction"
    dead = queue_arn(triggered, "DeadLetters")
    assert (
        f"{role} is not authorized to perform: sqs:SendMessage on resource: {dead} "
        in (refusals["dead letters"]["Message"])
    )
    assert f"sqs:SendMessage on resource: {dead} " in refusals["batch to dead letters"]["Message"]
    assert (
        f"sqs:ReceiveMessage on resource: {queue_arn(triggered, 'WorkQueue')} "
        in (refusals["receive"]["Message"])
    )
    bus = os.environ["BUS_ARN"]
    assert f"events:PutEvents on resource: {bus} " in refusals["put"]["Message"]
    assert f"events:PutEvents on resource: {bus_arn('default')} " in str(default_bus.value)
    assert triggered.process_queue("WorkQueue") == 2  # what was allowed is in the queue


def test_run_schedule_invokes_with_the_schedules_input(triggered: LocalApi, sqs: Any) -> None:
    assert triggered.run_schedule("TickFunction", "Tick") == {"input": {"jobs": ["ticked"]}}
    assert triggered.run_schedule("TickFunction", "Daily") == {"input": {}}  # no Input
    with pytest.raises(ValueError, match="TickFunction has no ScheduleV2 event named Work"):
        triggered.run_schedule("TickFunction", "Work")
    assert [body for body, _ in receive_counts(triggered, "ticked")] == []
    assert triggered.process_queue("WorkQueue") == 1
    assert receive_counts(triggered, "ticked") == [("ticked", 1)]


def test_process_queue_gives_lambdas_sqs_event_and_deletes_what_succeeded(
    triggered: LocalApi, sqs: Any
) -> None:
    token = uuid.uuid4().hex
    sqs.send_message(
        QueueUrl=os.environ["WORK_QUEUE_URL"],
        MessageBody=f"plain:{token}",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "plain"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01"},
        },
    )
    sqs.send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=f"spawn:{token}")

    # The message the function sends meanwhile is delivered too.
    assert triggered.process_queue("WorkQueue") == 3
    assert receive_counts(triggered, token) == [("plain", 1), ("spawn", 1), ("spawned", 1)]
    assert queue_is_empty(sqs)
    record = delivered(triggered, token)[0]
    assert set(record) == {
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "md5OfMessageAttributes",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    }
    assert (record["eventSource"], record["awsRegion"]) == ("aws:sqs", "us-east-1")
    assert record["eventSourceARN"] == queue_arn(triggered, "WorkQueue")
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()  # noqa: S324
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId"} <= set(record["attributes"])
    assert record["messageAttributes"] == {
        "kind": {
            "stringValue": "plain",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "blob": {
            "binaryValue": "AAE=",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }


def test_a_reported_failure_alone_is_retried_until_the_dead_letter_queue(
    triggered: LocalApi, sqs: Any
) -> None:
    token = uuid.uuid4().hex
    for kind in ("ok", "fail"):
        sqs.send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=f"{kind}:{token}")

    # maxReceiveCount 2: received twice, then moved to the dead-letter queue.
    assert triggered.process_queue("WorkQueue") == 3
    assert receive_counts(triggered, token) == [("ok", 1), ("fail", 1), ("fail", 2)]
    assert queue_is_empty(sqs)
    assert f"fail:{token}" in triggered.dead_letters("DeadLetters")
    assert f"fail:{token}" in triggered.dead_letters("DeadLetters")  # they stay there


@pytest.mark.parametrize("kind", ["raise-once", "bogus-once"])
def test_an_exception_or_an_invalid_answer_fails_the_whole_batch(
    triggered: LocalApi, sqs: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = uuid.uuid4().hex
    for body in (f"sibling:{token}", f"{kind}:{token}"):
        sqs.send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=body)

    assert triggered.process_queue("WorkQueue") == 4
    # Both tried again; the second time they succeed, and nothing is dead-lettered.
    assert receive_counts(triggered, token) == [
        ("sibling", 1),
        (kind, 1),
        ("sibling", 2),
        (kind, 2),
    ]
    assert queue_is_empty(sqs)
    assert not [body for body in triggered.dead_letters("DeadLetters") if token in body]
    assert "WorkFunction" in caplog.text and "whole batch" in caplog.text


def test_mail_events_are_the_bus_events_as_a_target_receives_them(
    triggered: LocalApi, sqs: Any, events: Any
) -> None:
    token = uuid.uuid4().hex
    sqs.send_message(QueueUrl=os.environ["WORK_QUEUE_URL"], MessageBody=f"ok:{token}")
    # Not on the template's bus: not recorded.
    events.put_events(Entries=[{"Source": "elsewhere", "DetailType": "x", "Detail": "{}"}])
    triggered.process_queue("WorkQueue")

    [event] = [e for e in triggered.mail_events() if token in e["detail"].get("body", "")]
    status, _, body = call(triggered, "GET", "/local/mail-events")

    assert set(event) == {
        "version",
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
        "detail",
    }
    assert (event["source"], event["detail-type"], event["account"]) == (
        "test.work",
        "Delivered",
        "123456789012",
    )
    assert event["detail"]["body"] == f"ok:{token}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    assert not [e for e in triggered.mail_events() if e["source"] == "elsewhere"]
    assert status == 200 and event in json.loads(body)["events"]


def test_the_local_run_refuses_triggers_it_cannot_emulate(triggered_path: Path) -> None:
    template = load_template(triggered_path)
    events_of_work = template["Resources"]["WorkFunction"]["Properties"]["Events"]
    events_of_work["Work"]["Properties"]["FilterCriteria"] = {"Filters": []}
    with pytest.raises(TemplateError, match="Work: FilterCriteria is not emulated"):
        queue_sources(template)
    events_of_work["Upload"] = {"Type": "S3", "Properties": {}}
    with pytest.raises(TemplateError, match="Upload: S3 events are not emulated"):
        check_events(template)
    with pytest.raises(TemplateError, match="only rate"):
        rate_seconds("cron(0 12 * * ? *)")
    assert [rate_seconds(f"rate({n})") for n in ("1 minute", "5 minutes", "2 hours", "1 day")] == [
        60,
        300,
        7200,
        86400,
    ]


def test_in_the_background_schedules_tick_and_queues_are_delivered_until_stop(
    triggered_path: Path,
) -> None:
    seen: list[dict[str, Any]] = []
    arrived = threading.Event()

    def observe(event: dict[str, Any]) -> None:
        seen.append(event)
        arrived.set()

    started = time.monotonic()
    with LocalApi(
        template_path=triggered_path,
        table_name=f"localapi-test-{uuid.uuid4().hex[:8]}",
        background=True,
        schedule_periods={"TickRate": 0.2},  # the Tick schedule's parameter
    ) as running:
        running.mail_event_observers.append(observe)
        names = {"localapi-clock", "localapi-sqs-WorkQueue", "localapi-bus-events"}
        assert names <= {thread.name for thread in threading.enumerate()}
        # Tick, the worker, the bus and the recorder, all by themselves.
        assert arrived.wait(10)
    elapsed = time.monotonic() - started

    assert seen[0]["detail"]["body"] == "ticked"
    assert not names & {thread.name for thread in threading.enumerate()}
    assert elapsed < 5, elapsed


def test_the_real_template_makes_its_queues_and_bus_and_holds_functions_to_them() -> None:
    with LocalApi(table_name=f"localapi-test-{uuid.uuid4().hex[:8]}") as real:
        stack = real.table_name
        environment = dict(os.environ)
        sqs_client, events_client = boto3.client("sqs"), boto3.client("events")
        dynamodb_client = boto3.client("dynamodb")
        redrive = sqs_client.get_queue_attributes(
            QueueUrl=environment["SYNC_QUEUE_URL"], AttributeNames=["RedrivePolicy"]
        )["Attributes"]["RedrivePolicy"]
        dead_url = sqs_client.get_queue_url(QueueName=f"{stack}-MailboxDeadLetterQueue")
        entry = {
            "EventBusName": environment["EVENT_BUS_NAME"],
            "Source": "mailbridge",
            "DetailType": "Mail Received",
            "Detail": "{}",
        }
        query = {
            "TableName": stack,
            "KeyConditionExpression": "connected_provider = :p",
            "ExpressionAttributeValues": {":p": {"S": "imap"}},
        }
        with real.acting_as("NewMailDispatchFunction"):
            dynamodb_client.query(IndexName="ConnectedByProvider", **query)
            sqs_client.send_message(QueueUrl=environment["SYNC_QUEUE_URL"], MessageBody="{}")
            refused_calls = []
            for refused_call in (
                lambda: dynamodb_client.query(**(query | {"KeyConditionExpression": "pk = :p"})),
                lambda: sqs_client.send_message(QueueUrl=dead_url["QueueUrl"], MessageBody="{}"),
                lambda: events_client.put_events(Entries=[entry]),
            ):
                with pytest.raises(ClientError) as raised:
                    refused_call()
                refused_calls.append(str(raised.value))
        with real.acting_as("NewMailWorkerFunction"):
            assert events_client.put_events(Entries=[entry])["FailedEntryCount"] == 0
        recorded = real.mail_events()
        for client in (sqs_client, events_client, dynamodb_client):
            client.close()

    assert environment["SYNC_QUEUE_URL"].endswith(f"/{stack}-MailboxQueue")
    assert environment["EVENT_BUS_NAME"] == f"{stack}-mail"
    assert json.loads(redrive) == {
        "deadLetterTargetArn": f"arn:aws:sqs:us-east-1:123456789012:{stack}-MailboxDeadLetterQueue",
        "maxReceiveCount": 3,
    }
    assert "dynamodb:Query on resource: " + table(real) + " " in refused_calls[0]
    assert f":{stack}-MailboxDeadLetterQueue because" in refused_calls[1]
    assert "events:PutEvents on resource: " + bus_arn(f"{stack}-mail") in refused_calls[2]
    assert [(event["source"], event["detail-type"]) for event in recorded] == [
        ("mailbridge", "Mail Received")
    ]


def test_drop_puts_new_mail_in_the_demo_mailbox(dovecot: DovecotServer) -> None:
    from mailbridge_tools.sandbox.drop import drop

    password = uuid.uuid4().hex
    dovecot.set_password(DEMO_MAILBOX, password)

    drop(dovecot.imap_port, password, "Dropped for a test", "Hello.")

    [message] = dovecot.folder_messages(DEMO_MAILBOX, "INBOX")
    assert message.flags == ()  # unseen, as new mail is
    assert b"Subject: Dropped for a test" in message.raw
    assert b"From: Dana Reyes <dana@workspace.example>" in message.raw
