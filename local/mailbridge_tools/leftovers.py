"""What a deleted stack leaves behind, found by its tag and removed on request:

    python -m mailbridge_tools.leftovers --stack mailbridge [--region eu-west-1]
        [--delete-secrets [--without-recovery]] [--delete-table]

Two things outlive `sam delete`, both tagged `mailbridge:stack=<stack name>`:
- the secrets: the functions create them at run time (an agent's password or client secret
  and tokens, a shared app's client secret), so they are no resources of the stack;
- the table, retained on purpose (DeletionPolicy: Retain): agents, connections and the
  audit trail survive a deletion by mistake.

Without an option it lists them. `--delete-secrets` schedules each secret's deletion with
Secrets Manager's 30-day recovery window (`aws secretsmanager restore-secret` brings one
back; `--without-recovery` deletes them at once, freeing their names for a stack deployed
again); `--delete-table` deletes the table. Both refuse while the stack still exists: its
functions would be using them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_secretsmanager import SecretsManagerClient

STACK_TAG = "mailbridge:stack"


@dataclass(frozen=True)
class Leftovers:
    secrets: list[str]  # names
    tables: list[str]


def find(
    stack: str,
    secrets: SecretsManagerClient,
    dynamodb: DynamoDBClient,
    *,
    scheduled: bool = False,
) -> Leftovers:
    """The secrets and tables tagged with `stack`; secrets already scheduled for deletion
    too with `scheduled` (their names stay taken until they are deleted)."""
    found_tables = []
    for names in dynamodb.get_paginator("list_tables").paginate():
        for table in names["TableNames"]:
            arn = dynamodb.describe_table(TableName=table)["Table"]["TableArn"]
            table_tags = dynamodb.list_tags_of_resource(ResourceArn=arn).get("Tags", [])
            if any(tag["Key"] == STACK_TAG and tag["Value"] == stack for tag in table_tags):
                found_tables.append(table)
    return Leftovers(stack_secrets(stack, secrets, scheduled=scheduled), found_tables)


def stack_secrets(
    stack: str, secrets: SecretsManagerClient, *, scheduled: bool = False
) -> list[str]:
    """The names of the secrets tagged with `stack`, sorted; those already scheduled for
    deletion too with `scheduled`."""
    found = []
    # The filters match a tag key and a tag value's prefix, not necessarily of one tag:
    # checked below.
    for listed in secrets.get_paginator("list_secrets").paginate(
        Filters=[
            {"Key": "tag-key", "Values": [STACK_TAG]},
            {"Key": "tag-value", "Values": [stack]},
        ],
        IncludePlannedDeletion=scheduled,
    ):
        for secret in listed["SecretList"]:
            secret_tags = {tag["Key"]: tag["Value"] for tag in secret.get("Tags", [])}
            if secret_tags.get(STACK_TAG) == stack:
                found.append(secret["Name"])
    return sorted(found)


def stack_exists(stack: str) -> bool:
    client = boto3.client("cloudformation")
    try:
        stacks = client.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        if "does not exist" in str(error):
            return False
        raise
    finally:
        client.close()
    return any(found["StackStatus"] != "DELETE_COMPLETE" for found in stacks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mailbridge_tools.leftovers",
        description="Find, and remove, the secrets and the table a deleted stack leaves.",
    )
    parser.add_argument("--stack", required=True, help="the deleted stack's name")
    parser.add_argument("--region", help="its region (default: the AWS CLI's)")
    parser.add_argument("--delete-secrets", action="store_true", help="delete its secrets")
    parser.add_argument(
        "--without-recovery",
        action="store_true",
        help="delete the secrets at once: a stack deployed again with the same secret names "
        "cannot create them while their deletion is pending",
    )
    parser.add_argument(
        "--delete-table", action="store_true", help="delete its table: every agent's record"
    )
    args = parser.parse_args(argv)
    if args.without_recovery and not args.delete_secrets:
        parser.error("--without-recovery goes with --delete-secrets")
    if args.region:
        boto3.setup_default_session(region_name=args.region)
    deleting = args.delete_secrets or args.delete_table
    if deleting and stack_exists(args.stack):
        parser.exit(1, f"mailbridge: stack {args.stack} still exists; delete it first\n")
    secrets, dynamodb = boto3.client("secretsmanager"), boto3.client("dynamodb")
    leftovers = find(args.stack, secrets, dynamodb, scheduled=args.without_recovery)
    for name in leftovers.secrets:
        print(f"secret {name}")
        if args.delete_secrets:
            if args.without_recovery:
                secrets.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
            else:
                secrets.delete_secret(SecretId=name)  # recoverable for 30 days
    for table in leftovers.tables:
        print(f"table {table}")
        if args.delete_table:
            dynamodb.delete_table(TableName=table)
    print(
        f"stack {args.stack}: {len(leftovers.secrets)} secrets"
        f"{' (deleted)' if args.delete_secrets else ''}, {len(leftovers.tables)} tables"
        f"{' (deleted)' if args.delete_table else ''}"
    )


if __name__ == "__main__":
    main()
