"""The local API adapter and template reader, on a throwaway template with an echo function;
and IAM as the local run enforces it, there and on the real template."""

from __future__ import annotations

import base64
import contextvars
import http.client
import json
import os
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
from mailbridge_tools.template import (
    PolicyStatement,
    Route,
    TemplateError,
    function_environment,
    function_policy,
    load_template,
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
