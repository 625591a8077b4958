"""What a request says about who calls and what they expect: the caller from the verified
JWT, path ids, and If-Match."""

from __future__ import annotations

import re
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
from aws_lambda_powertools.event_handler.openapi.params import Path

from ..agents.models import Caller
from ..core.errors import ErrorCode, InvalidField, MailbridgeError
from ..core.observability import logger
from ..core.settings import settings
from ..core.types import ID_PATTERN

# The path parameter of every agent route, checked before anything is looked up.
AgentId = Annotated[str, Path(pattern=ID_PATTERN)]
# A version is counted up from 1 by each save: 18 digits are more than any will reach, and
# fewer than a DynamoDB number holds (38).
_MAX_VERSION_DIGITS = 18


def current_caller(app: APIGatewayHttpResolver) -> Caller:
    """The caller's identity from the claims API Gateway's JWT authorizer verified."""
    authorizer = app.current_event.request_context.authorizer
    return caller_of((authorizer.jwt_claim if authorizer else None) or {})


def caller_of(claims: dict[str, Any]) -> Caller:
    """The caller the verified claims name: a subject of an organization, or 401."""
    org_id = claims.get(settings().org_claim)
    agent_id = claims.get(settings().agent_claim)
    if (
        not org_id
        or not claims.get("sub")
        or not re.fullmatch(ID_PATTERN, str(org_id))
        or (agent_id is not None and not re.fullmatch(ID_PATTERN, str(agent_id)))
    ):
        raise MailbridgeError(
            ErrorCode.UNAUTHORIZED, "The token does not name a user and an organization."
        )
    # Every later log line of this request says who asked.
    logger.append_keys(org_id=str(org_id), caller=str(claims["sub"]), agent_token=agent_id)
    role = claims.get(settings().role_claim)
    return Caller(
        subject=str(claims["sub"]),
        org_id=str(org_id),
        # An agent's token is never an admin's, whatever role it carries.
        is_admin=agent_id is None and role == settings().admin_role,
        agent_id=None if agent_id is None else str(agent_id),
    )


def parse_if_match(value: str | None) -> int | None:
    """The version an If-Match header names (`"3"`, `W/"3"`), or None without one."""
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    # ASCII digits: "²" is a digit to isdigit(), and not to int().
    if not (tag.isascii() and tag.isdigit()) or len(tag) > _MAX_VERSION_DIGITS:
        raise InvalidField("If-Match", 'If-Match must be an ETag this API gave, like "3".')
    return int(tag)
