"""Secrets Manager: per agent, one secret for the password or client secret and, for OAuth,
one for the tokens (written by callbacks and refreshes, never by saves, so the two writers
cannot overwrite each other's values); per shared app, its client secret.

Names are fixed, so whatever a failed request leaves behind is taken over by the next write
to that name or removed by the next delete; records pin versions, so it is never read in
their place.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from ..core.errors import ErrorCode, MailbridgeError, StaleWrite
from ..core.settings import settings
from ..core.types import SecretRef
from .aws import secretsmanager, storage_errors, storage_unavailable

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager.type_defs import CreateSecretRequestTypeDef

# Secret versions never change, so a value read once serves every later read of the same
# version in this instance: a rotated secret is a new version, read at its first use.
_VALUES_KEPT = 256
_WRITE_ATTEMPTS = 3
_values: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
_values_lock = threading.Lock()


def _keep(name: str, version: str, value: dict[str, Any]) -> None:
    with _values_lock:
        _values[(name, version)] = value
        while len(_values) > _VALUES_KEPT:
            _values.popitem(last=False)


class SecretsManagerStore:
    def name_for(self, agent_id: str) -> str:
        return f"{settings().secret_name_prefix}/agents/{agent_id}/email"

    def token_name_for(self, agent_id: str) -> str:
        return f"{settings().secret_name_prefix}/agents/{agent_id}/email-tokens"

    def shared_name_for(self, org_id: str, client_org_id: str | None, provider: str) -> str:
        owner = f"orgs/{org_id}" + (f"/client-orgs/{client_org_id}" if client_org_id else "")
        return f"{settings().secret_name_prefix}/{owner}/oauth-apps/{provider}"

    def read(self, *refs: SecretRef) -> list[dict[str, Any]]:
        """In at most one round trip when the versions are current (the usual case):
        BatchGetSecretValue returns current versions, and only a version that is not current
        any more is then fetched by its id."""
        with _values_lock:
            wanted = {(ref.name, ref.version) for ref in refs} - _values.keys()
        with storage_errors("Secrets Manager"):
            try:
                self._fetch(wanted)
            except secretsmanager().exceptions.ResourceNotFoundException:
                # Deleted under a record (a disconnect racing a save): no retry brings it back.
                raise MailbridgeError(
                    ErrorCode.SECRET_MISSING,
                    "The stored password or client secret is gone.",
                    hint="Enter it again and save.",
                ) from None
        with _values_lock:
            return [_values[(ref.name, ref.version)] for ref in refs]

    @staticmethod
    def _fetch(wanted: set[tuple[str, str]]) -> None:
        if len(wanted) > 1:
            answer = secretsmanager().batch_get_secret_value(
                SecretIdList=[name for name, _ in wanted]
            )
            for found in answer["SecretValues"]:
                key = (found["Name"], found["VersionId"])
                if key in wanted:
                    _keep(*key, json.loads(found["SecretString"]))
                    wanted.discard(key)
        for name, version in wanted:
            value = secretsmanager().get_secret_value(SecretId=name, VersionId=version)
            _keep(name, version, json.loads(value["SecretString"]))

    def write(
        self,
        name: str,
        value: dict[str, Any],
        *,
        exists: bool,
        org_id: str,
        agent_id: str | None = None,
    ) -> SecretRef:
        """`exists` saves a round trip when we know the secret does. A new secret is tagged
        with the stack, the organization and the agent it is for (a shared app's: none),
        and encrypted with the deployment's key if it has one."""
        document = json.dumps(value)
        tags = {"mailbridge:stack": settings().stack_name, "mailbridge:org": org_id}
        if agent_id is not None:
            tags["mailbridge:agent"] = agent_id
        creation: CreateSecretRequestTypeDef = {
            "Name": name,
            "SecretString": document,
            "Tags": [{"Key": tag, "Value": text} for tag, text in tags.items()],
        }
        if settings().secrets_kms_key_id:
            creation["KmsKeyId"] = settings().secrets_kms_key_id
        with storage_errors("Secrets Manager"):
            client = secretsmanager()
            # A concurrent save or removal may create or delete it in between: then the
            # other way, a few times.
            for _ in range(_WRITE_ATTEMPTS):
                try:
                    if exists:
                        put = client.put_secret_value(SecretId=name, SecretString=document)
                        return SecretRef(name=name, version=put["VersionId"])
                    created = client.create_secret(**creation)
                    return SecretRef(name=name, version=created["VersionId"])
                except client.exceptions.ResourceNotFoundException:
                    exists = False  # e.g. an agent that used a shared app until now
                except client.exceptions.ResourceExistsException:
                    exists = True  # left behind by a request that failed half-way: take it over
        raise storage_unavailable("Secrets Manager")

    def replace(self, name: str, value: dict[str, Any]) -> SecretRef:
        with storage_errors("Secrets Manager"):
            client = secretsmanager()
            try:
                put = client.put_secret_value(SecretId=name, SecretString=json.dumps(value))
            except client.exceptions.ResourceNotFoundException:
                raise StaleWrite from None
        return SecretRef(name=name, version=put["VersionId"])

    def delete(self, name: str) -> None:
        with storage_errors("Secrets Manager"):
            client = secretsmanager()
            with suppress(client.exceptions.ResourceNotFoundException):
                # No recovery window: the name must be reusable at once if the agent reconnects.
                client.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)
        with _values_lock:
            for key in [key for key in _values if key[0] == name]:
                del _values[key]
