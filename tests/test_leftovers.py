"""docs/operations.md's way to find and remove what a deleted stack leaves: the secrets the
functions created and the retained table, by their `mailbridge:stack` tag, against the
local run's AWS (moto)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from mailbridge_tools.leftovers import main
from support import Org

Body = Callable[..., dict[str, Any]]


def run(capsys: pytest.CaptureFixture[str], *arguments: str) -> list[str]:
    main(list(arguments))
    return capsys.readouterr().out.splitlines()


def test_the_service_tags_each_secret_with_its_stack(
    local_api: Any, org: Org, imap_body: Body, capsys: pytest.CaptureFixture[str]
) -> None:
    """The local run is a stack named after its table: a password saved there is found."""
    assert org.client.put(org.config_path, imap_body()).status == 200
    found = run(capsys, "--stack", local_api.table_name)
    assert f"secret mailbridge/agents/{org.agent_id}/email" in found


def test_what_a_deleted_stack_leaves_is_listed_then_deleted(
    local_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    gone, other = f"gone-{uuid.uuid4().hex[:8]}", f"live-{uuid.uuid4().hex[:8]}"
    secrets, dynamodb = boto3.client("secretsmanager"), boto3.client("dynamodb")
    names = {stack: f"{stack}/agents/agent-1/email" for stack in (gone, other)}
    for stack, name in names.items():
        tags = [
            {"Key": "mailbridge:stack", "Value": stack},
            {"Key": "mailbridge:org", "Value": "o"},
        ]
        secrets.create_secret(Name=name, SecretString="{}", Tags=tags)
    # A secret whose tags name the stack only as another tag's value is not the stack's.
    secrets.create_secret(
        Name=f"{other}/unrelated",
        SecretString="{}",
        Tags=[{"Key": "mailbridge:stack", "Value": other}, {"Key": "note", "Value": gone}],
    )
    dynamodb.create_table(
        TableName=gone,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=[{"Key": "mailbridge:stack", "Value": gone}],
    )

    listed = run(capsys, "--stack", gone)
    assert listed == [
        f"secret {names[gone]}",
        f"table {gone}",
        f"stack {gone}: 1 secrets, 1 tables",
    ]
    deleted = run(capsys, "--stack", gone, "--delete-secrets", "--delete-table")
    assert deleted[-1] == f"stack {gone}: 1 secrets (deleted), 1 tables (deleted)"
    assert run(capsys, "--stack", gone) == [f"stack {gone}: 0 secrets, 0 tables"]
    assert gone not in dynamodb.list_tables()["TableNames"]
    # Recoverable for 30 days; the other stack's are untouched.
    assert secrets.describe_secret(SecretId=names[gone])["DeletedDate"]
    assert "DeletedDate" not in secrets.describe_secret(SecretId=names[other])
    # Already scheduled, deleted at once: the name is free for a stack deployed again.
    run(capsys, "--stack", gone, "--delete-secrets", "--without-recovery")
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.describe_secret(SecretId=names[gone])
    secrets.create_secret(Name=names[gone], SecretString="{}")
    secrets.close()
    dynamodb.close()


def test_nothing_is_deleted_while_the_stack_exists(
    local_api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    live = f"live-{uuid.uuid4().hex[:8]}"
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(
        StackName=live,
        TemplateBody=json.dumps({"Resources": {"Alarms": {"Type": "AWS::SNS::Topic"}}}),
    )
    secrets = boto3.client("secretsmanager")
    name = f"{live}/agents/agent-1/email"
    secrets.create_secret(
        Name=name, SecretString="{}", Tags=[{"Key": "mailbridge:stack", "Value": live}]
    )

    with pytest.raises(SystemExit) as refused:
        main(["--stack", live, "--delete-secrets"])

    assert refused.value.code == 1
    assert f"stack {live} still exists" in capsys.readouterr().err
    assert "DeletedDate" not in secrets.describe_secret(SecretId=name)
    cloudformation.close()
    secrets.close()
