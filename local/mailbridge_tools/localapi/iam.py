"""What IAM does on Lambda: each function's calls to AWS are allowed or refused by its execution
role, whose statements are the function's Policies in template.yaml. moto allows everything,
so without this a policy that lacks an action passes every test here and fails in AWS.

Whose call: a call made during an invocation of a function (its handler, and the load of its
module on a new instance) is that function's. `acting_as` marks the invocation in a context
variable; a worker thread keeps it when it runs in a copy of the function's context
(`contextvars.copy_context().run`, as the layer's adapters do). A call made outside any
invocation is nobody's and is not checked: a test seeding the table, the local run's own
setup, and what AWS itself does in the block of `aws_itself` (Lambda's event source mapping
receiving and deleting messages, the recorder of the bus's events). Any other call from a
thread other than the main one while invocations run is most likely a function's thread
that lost its context: it is logged as unchecked.

Every client: the check wraps botocore's `BaseClient._make_api_call`, which every operation,
paginator and waiter of every client goes through, whenever and however the client was made.
(A client's event hooks are a copy of its session's, taken when it is made: a hook registered
on the session later would miss the clients made before it, such as the layer's, which live
as long as the process.) `enforce()` installs the check while a LocalApi runs.

What a call needs, as the Service Authorization Reference lists it:
- DynamoDB: the operation's name as the action, on the table's ARN (a Query or Scan of an
  index: the index's, `table/<name>/index/<index>`). TransactWriteItems needs, per item, the
  action of what it does (PutItem, UpdateItem, DeleteItem, ConditionCheckItem); TransactGetItems
  GetItem per item; BatchGetItem and BatchWriteItem their own action on each table they name.
- Secrets Manager: the operation's name as the action, on the secret's ARN, which is its name
  followed by `-` and six characters AWS chooses (so a policy names secrets with a wildcard).
  CreateSecret with Tags also needs TagResource; BatchGetSecretValue needs its own action on
  "*", GetSecretValue on each secret of SecretIdList and, with Filters, ListSecrets. (One secret
  not allowed refuses the whole batch here; AWS may instead answer the others and list that
  one under Errors: either way it is not read.)
- KMS through Secrets Manager: a secret encrypted with a customer-managed key (its KmsKeyId)
  is encrypted and decrypted by Secrets Manager as the caller, who needs on that key
  kms:Decrypt to read a value (GetSecretValue, each secret of BatchGetSecretValue), and
  kms:GenerateDataKey and kms:Decrypt to write one (CreateSecret, PutSecretValue). The key
  is the one the call names or, for a secret that exists, moto's record of it.
- SQS: the operation's name on the queue's ARN (from its QueueUrl or QueueName); a batch
  needs the action of one (SendMessageBatch: sqs:SendMessage, DeleteMessageBatch:
  sqs:DeleteMessage, ChangeMessageVisibilityBatch: sqs:ChangeMessageVisibility).
- EventBridge: PutEvents needs events:PutEvents on the ARN of each bus its entries name
  (EventBusName, a name or an ARN; without one, the account's default bus).
- Anything else: the operation's name on "*".

A call the policy does not allow fails as in AWS, before anything is sent: a ClientError
AccessDeniedException naming the action and the resource. The log says which function lacks
what, for the test that fails because of it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from typing import Any, cast

from botocore.client import BaseClient
from botocore.exceptions import ClientError
from moto.secretsmanager.models import SecretsManagerBackend, secretsmanager_backends

from ..template import PolicyStatement
from .aws import ACCOUNT_ID, PARTITION

_log = logging.getLogger(__name__)

# Stands for the six characters AWS appends to a secret's name in its ARN.
SECRET_SUFFIX = "-Xy12Ab"


@dataclass(frozen=True)
class Authorization:
    """What IAM checks for a call: an action on a resource."""

    action: str
    resource: str


@dataclass(frozen=True)
class Policy:
    """A function's execution role: nothing is allowed that no statement allows, and an explicit
    Deny wins over any Allow."""

    function: str
    statements: tuple[PolicyStatement, ...] = ()

    def decision(self, needed: Authorization) -> str:
        """allowed, implicitly denied (no statement allows it) or explicitly denied."""
        effects = {
            statement.effect
            for statement in self.statements
            if any(
                _matches(pattern, needed.action, ignore_case=True) for pattern in statement.actions
            )
            and any(
                _matches(pattern, needed.resource, ignore_case=False)
                for pattern in statement.resources
            )
        }
        if "Deny" in effects:
            return "explicit deny"
        return "allowed" if "Allow" in effects else "implicit deny"


@cache
def _pattern(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    # IAM's wildcards: * any run of characters (slashes too), ? any one character.
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.compile(regex, re.IGNORECASE if ignore_case else 0)


def _matches(pattern: str, value: str, *, ignore_case: bool) -> bool:
    """Actions match whatever their case; resources (ARNs) exactly."""
    return _pattern(pattern, ignore_case).fullmatch(value) is not None


# -- what a call needs


_TRANSACT_WRITE_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def authorizations(
    service: str, operation: str, params: dict[str, Any], region: str
) -> list[Authorization]:
    """The actions and resources IAM checks for `operation` of `service` (its IAM prefix)
    called with `params` in `region`."""
    if service == "dynamodb":
        return _dynamodb(operation, params, region)
    if service == "secretsmanager":
        return _secretsmanager(operation, params, region)
    if service == "sqs":
        return _sqs(operation, params, region)
    if service == "events" and operation == "PutEvents":
        return _put_events(params, region)
    return [Authorization(f"{service}:{operation}", "*")]


def _dynamodb(operation: str, params: dict[str, Any], region: str) -> list[Authorization]:
    def table(name: Any) -> str:
        text = str(name)
        return (
            text
            if text.startswith("arn:")
            else f"arn:{PARTITION}:dynamodb:{region}:{ACCOUNT_ID}:table/{text}"
        )

    if operation == "TransactWriteItems":
        return [
            Authorization(
                f"dynamodb:{_TRANSACT_WRITE_ACTIONS.get(kind, kind)}",
                table(request.get("TableName")),
            )
            for item in params.get("TransactItems", [])
            for kind, request in item.items()
        ]
    if operation == "TransactGetItems":
        return [
            Authorization("dynamodb:GetItem", table(item.get("Get", {}).get("TableName")))
            for item in params.get("TransactItems", [])
        ]
    if operation in ("BatchGetItem", "BatchWriteItem"):
        return [
            Authorization(f"dynamodb:{operation}", table(name))
            for name in params.get("RequestItems", {})
        ]
    if "TableName" not in params:
        return [Authorization(f"dynamodb:{operation}", "*")]
    resource = table(params["TableName"])
    if params.get("IndexName"):
        resource += f"/index/{params['IndexName']}"
    return [Authorization(f"dynamodb:{operation}", resource)]


def _secretsmanager(operation: str, params: dict[str, Any], region: str) -> list[Authorization]:
    def secret(name: Any) -> str:
        text = str(name)
        if text.startswith("arn:"):
            return text
        return f"arn:{PARTITION}:secretsmanager:{region}:{ACCOUNT_ID}:secret:{text}{SECRET_SUFFIX}"

    if operation == "CreateSecret":
        created = secret(params.get("Name"))
        needed = [Authorization("secretsmanager:CreateSecret", created)]
        if params.get("Tags"):
            needed.append(Authorization("secretsmanager:TagResource", created))
        return needed + _key_use(params.get("KmsKeyId"), _WRITE_KEY_ACTIONS)
    if operation == "BatchGetSecretValue":
        needed = [Authorization("secretsmanager:BatchGetSecretValue", "*")]
        if params.get("Filters"):
            needed.append(Authorization("secretsmanager:ListSecrets", "*"))
        for name in params.get("SecretIdList", []):
            needed.append(Authorization("secretsmanager:GetSecretValue", secret(name)))
            needed += _key_use(_secret_key(str(name), region), _READ_KEY_ACTIONS)
        return needed
    if "SecretId" in params:
        needed = [Authorization(f"secretsmanager:{operation}", secret(params["SecretId"]))]
        key_actions = _KEY_ACTIONS.get(operation, ())
        if key_actions:
            needed += _key_use(_secret_key(str(params["SecretId"]), region), key_actions)
        return needed
    return [Authorization(f"secretsmanager:{operation}", "*")]


_READ_KEY_ACTIONS = ("kms:Decrypt",)
_WRITE_KEY_ACTIONS = ("kms:GenerateDataKey", "kms:Decrypt")
# What Secrets Manager does with a secret's key as the caller, by operation.
_KEY_ACTIONS = {"GetSecretValue": _READ_KEY_ACTIONS, "PutSecretValue": _WRITE_KEY_ACTIONS}


def _key_use(key: Any, actions: tuple[str, ...]) -> list[Authorization]:
    """Using a customer-managed key (none: AWS's own, which needs no permission here)."""
    return [Authorization(action, str(key)) for action in actions] if key else []


def _secret_key(secret_id: str, region: str) -> str | None:
    """The customer-managed key moto recorded for a secret, if it has one (and exists)."""
    store = secretsmanager_backends[ACCOUNT_ID][region].secrets
    found = store.get(secret_id)
    key = getattr(found, "kms_key_id", None)
    return None if key in (None, SecretsManagerBackend.DEFAULT_KMS_KEY_ALIAS) else str(key)


_SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _sqs(operation: str, params: dict[str, Any], region: str) -> list[Authorization]:
    action = f"sqs:{_SQS_BATCH_ACTIONS.get(operation, operation)}"
    if "QueueUrl" in params:
        # https://sqs.<region>.amazonaws.com/<account>/<name>; moto's: http://<host>/<account>/<name>
        account, name = str(params["QueueUrl"]).rstrip("/").split("/")[-2:]
    elif "QueueName" in params:
        account = str(params.get("QueueOwnerAWSAccountId") or ACCOUNT_ID)
        name = str(params["QueueName"])
    else:
        return [Authorization(action, "*")]
    return [Authorization(action, f"arn:{PARTITION}:sqs:{region}:{account}:{name}")]


def _put_events(params: dict[str, Any], region: str) -> list[Authorization]:
    def bus(name: str) -> str:
        if name.startswith("arn:"):
            return name
        return f"arn:{PARTITION}:events:{region}:{ACCOUNT_ID}:event-bus/{name}"

    buses = {
        bus(str(entry.get("EventBusName") or "default")) for entry in params.get("Entries", [])
    }
    return [Authorization("events:PutEvents", arn) for arn in sorted(buses)]


# -- whose call, and the check


_acting: contextvars.ContextVar[Policy | None] = contextvars.ContextVar(
    "mailbridge_localapi_acting_as", default=None
)
_aws_itself: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "mailbridge_localapi_aws_itself", default=False
)
_state_lock = threading.Lock()
_invocations = 0  # in flight, in every LocalApi of the process
_installs = 0  # LocalApis running, each with the check installed
# The one method every call of every client goes through (not in botocore's type stubs).
_API_CALL = "_make_api_call"
_unchecked: Callable[..., Any] | None = None  # botocore's own


@contextmanager
def acting_as(policy: Policy) -> Iterator[None]:
    """The AWS calls made in this block (and in threads that run in a copy of its context) are
    `policy.function`'s, checked against `policy`."""
    global _invocations
    token = _acting.set(policy)
    with _state_lock:
        _invocations += 1
    try:
        yield
    finally:
        _acting.reset(token)
        with _state_lock:
            _invocations -= 1


@contextmanager
def aws_itself() -> Iterator[None]:
    """The AWS calls made in this block, outside any invocation in it, are AWS's own (Lambda
    polling a queue for its event source mapping, EventBridge's target): no function's, so
    neither checked nor reported as a thread that lost its invocation's context."""
    token = _aws_itself.set(True)
    try:
        yield
    finally:
        _aws_itself.reset(token)


@contextmanager
def enforce() -> Iterator[None]:
    """Checks every AWS call made in an invocation while the block runs (LocalApi's, from
    start to stop; several may run at once)."""
    global _installs, _unchecked
    with _state_lock:
        if _installs == 0:
            _unchecked = getattr(BaseClient, _API_CALL)
            setattr(BaseClient, _API_CALL, _checked_api_call)
        _installs += 1
    try:
        yield
    finally:
        with _state_lock:
            _installs -= 1
            if _installs == 0:
                setattr(BaseClient, _API_CALL, _unchecked)


def _checked_api_call(client: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
    policy = _acting.get()
    if policy is None:
        if not _aws_itself.get():
            _note_unattributed(client, operation_name)
    else:
        _authorize(policy, client, operation_name, api_params)
    assert _unchecked is not None  # installed before this could be called
    return _unchecked(client, operation_name, api_params)


def _authorize(
    policy: Policy, client: BaseClient, operation_name: str, api_params: dict[str, Any]
) -> None:
    model = client.meta.service_model
    service = model.signing_name or model.endpoint_prefix  # IAM's prefix for the service
    for needed in authorizations(service, operation_name, api_params, client.meta.region_name):
        decision = policy.decision(needed)
        if decision == "allowed":
            continue
        _log.error(
            "IAM: %s may not %s on %s (%s): its Policies in template.yaml lack it, so AWS "
            "would refuse this %s call with AccessDeniedException",
            policy.function,
            needed.action,
            needed.resource,
            decision,
            operation_name,
        )
        raise _access_denied(client, operation_name, policy.function, needed, decision)


def _access_denied(
    client: BaseClient, operation_name: str, function: str, needed: Authorization, decision: str
) -> ClientError:
    """The error AWS answers, as botocore raises it."""
    why = (
        "with an explicit deny in an identity-based policy"
        if decision == "explicit deny"
        else f"because no identity-based policy allows the {needed.action} action"
    )
    message = (
        f"User: arn:aws:sts::{ACCOUNT_ID}:assumed-role/{function}Role/{function} is not "
        f"authorized to perform: {needed.action} on resource: {needed.resource} {why}"
    )
    response: Any = {
        "Error": {"Code": "AccessDeniedException", "Message": message},
        "ResponseMetadata": {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": 400,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        },
    }
    # ClientError itself unless the service models the code (none of ours does).
    error_class = cast("type[ClientError]", client.exceptions.from_code("AccessDeniedException"))
    return error_class(response, operation_name)


def _note_unattributed(client: BaseClient, operation_name: str) -> None:
    thread = threading.current_thread()
    with _state_lock:
        running = _invocations
    if running and thread is not threading.main_thread():
        _log.warning(
            "IAM: %s.%s from thread %s is outside any invocation while %d run, so no policy "
            "checks it; a function's worker thread must run in a copy of the invocation's "
            "context (contextvars.copy_context().run)",
            client.meta.service_model.service_name,
            operation_name,
            thread.name,
            running,
        )
