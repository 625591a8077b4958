"""What every HTTP handler shares: the resolver, the caller, observability, and the one
mapping from errors to HTTP responses.

Every error leaves as `{"error": {"code", "message", "field"?, "hint"?}}`. Unexpected
exceptions are logged with their type and where they happened, never their text (which
could hold anything), and answered with a generic 500 that carries nothing from them.

Routes declare their responses for the OpenAPI document with `success`, `errors` and
`html_pages` below, and `security=JWT` when API Gateway's authorizer guards them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from traceback import extract_tb
from typing import Annotated, Any, cast

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseHeader,
)
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from .deadline import Deadline
from .errors import AppError, BadRequest, InvalidField, NotFound, PayloadTooLarge, Unauthorized
from .models import (
    ID_PATTERN,
    PROVIDERS,
    Caller,
    ErrorDetail,
    ErrorResponse,
    GatewayError,
)
from .observability import logger, metrics
from .settings import settings

__all__ = [
    "AgentId",
    "create_app",
    "current_caller",
    "lambda_handler",
    "logger",
    "metrics",
    "parse_if_match",
]

# What an invocation keeps, after its network exchanges, to record their outcome and answer.
_ANSWER_SECONDS = 3.0
# The path parameter of every agent route, checked before anything is looked up.
AgentId = Annotated[str, Path(pattern=ID_PATTERN)]


def _error_body(error: AppError) -> str:
    detail = ErrorDetail(code=error.code, message=error.message, field=error.field, hint=error.hint)
    return ErrorResponse(error=detail).model_dump_json(exclude_none=True)


def _error_response(error: AppError) -> Response[str]:
    if error.status < 500:
        logger.info("request refused", extra={"error_code": error.code, "status": error.status})
    else:
        # The cause's type says which dependency failed; its text is not logged (it could
        # quote a request).
        cause = type(error.__cause__).__name__ if error.__cause__ else None
        logger.warning(
            "request failed",
            extra={"error_code": error.code, "status": error.status, "cause": cause},
        )
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return Response(
        status_code=error.status,
        content_type=content_types.APPLICATION_JSON,
        body=_error_body(error),
        headers=headers,
    )


def _invalid_json() -> AppError:
    return BadRequest("invalid_json", "The request body is not valid JSON.")


def _validation_error(error: RequestValidationError) -> AppError:
    first = error.errors()[0]
    if first["type"] == "json_invalid":
        return _invalid_json()
    if first["type"] in {"union_tag_not_found", "union_tag_invalid"}:
        return InvalidField("provider", "provider must be one of imap, microsoft, google.")
    # loc is ("body", "imap", "port") or ("path", "agentId"): name the field, not the source.
    # A body that is a union by provider has the provider after "body": not a field either.
    loc = [str(part) for part in first["loc"]]
    if len(loc) > 2 and loc[0] == "body" and loc[1] in PROVIDERS:
        del loc[1]
    field = ".".join(loc[1:]) or loc[0]
    if first["type"] == "extra_forbidden":
        code, message = "unknown_field", f"{field} is not a known field."
    elif first["type"] == "missing":
        code, message = "missing_field", f"{field} is required."
    else:
        # pydantic's `msg` describes the rule, never the rejected value (which may be secret).
        code, message = "invalid_field", f"{field}: {first['msg'].rstrip('.')}."
    return AppError(code, message, field=field, status=422)


def create_app() -> APIGatewayHttpResolver:
    app = APIGatewayHttpResolver(enable_validation=True)

    @app.exception_handler(AppError)
    def handle_app_error(error: AppError) -> Response[str]:
        return _error_response(error)

    @app.exception_handler(RequestValidationError)
    def handle_validation_error(error: RequestValidationError) -> Response[str]:
        return _error_response(_validation_error(error))

    @app.not_found
    def handle_not_found(_: NotFoundError) -> Response[str]:
        return _error_response(NotFound("not_found", "No such route."))

    @app.exception_handler(Exception)
    def handle_unexpected(error: Exception) -> Response[str]:
        # Where it failed, never what it said: an exception's text can quote a request, or a
        # secret (an encoder naming a password's character, say).
        stack = [f"{f.filename}:{f.lineno} in {f.name}" for f in extract_tb(error.__traceback__)]
        logger.error("unexpected error", extra={"error_type": type(error).__name__, "stack": stack})
        return _error_response(
            AppError("internal_error", "Something went wrong on our side.", status=500)
        )

    return app


def parse_if_match(value: str | None) -> int | None:
    """The version an If-Match header names (`"3"`, `W/"3"`), or None without one."""
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        raise InvalidField("If-Match", 'If-Match must be an ETag this API gave, like "3".')
    return int(tag)


def current_caller(app: APIGatewayHttpResolver) -> Caller:
    """The caller's identity from the claims API Gateway's JWT authorizer verified."""
    authorizer = app.current_event.request_context.authorizer
    claims: dict[str, Any] = (authorizer.jwt_claim if authorizer else None) or {}
    org_id = claims.get(settings().org_claim)
    if not org_id or not claims.get("sub") or not re.fullmatch(ID_PATTERN, str(org_id)):
        raise Unauthorized("unauthorized", "The token does not name a user and an organization.")
    # Every later log line of this request says who asked.
    logger.append_keys(org_id=str(org_id), caller=str(claims["sub"]))
    role = claims.get(settings().role_claim)
    return Caller(
        subject=str(claims["sub"]), org_id=str(org_id), is_admin=role == settings().admin_role
    )


def _refused_body(event: dict[str, Any]) -> AppError | None:
    """Why the request's body is refused before any parsing, if it is: too large, not JSON
    (Powertools would read a form, and fail on a multipart body without a boundary), not
    UTF-8 (API Gateway passes such a body in base64, which Powertools fails to decode), or
    JSON nested past Python's recursion limit (on which Powertools' parser crashes)."""
    body = event.get("body") or ""
    limit = settings().max_body_bytes
    # In bytes, as sent: base64 carries 3 bytes in 4 characters, UTF-8 up to 4 in one.
    size = len(body) * 3 // 4 if event.get("isBase64Encoded") else len(body.encode())
    if size > limit:
        return PayloadTooLarge(
            "payload_too_large", f"The request body is larger than {limit} bytes."
        )
    if not body:
        return None
    content_type = (event.get("headers") or {}).get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type and media_type != content_types.APPLICATION_JSON:
        return AppError(
            "unsupported_media_type",
            "The request body must be JSON, sent with Content-Type: application/json.",
            status=415,
        )
    try:
        text = (
            base64.b64decode(body, validate=True).decode("utf-8")
            if event.get("isBase64Encoded")
            else body
        )
        json.loads(text)
    except (binascii.Error, UnicodeDecodeError):
        return _invalid_json()
    except RecursionError:
        return BadRequest("invalid_json", "The request body is JSON nested too deeply.")
    except ValueError:
        pass  # not JSON: the resolver's validation says so
    return None


def lambda_handler(
    app: APIGatewayHttpResolver,
) -> Callable[[dict[str, Any], LambdaContext], dict[str, Any]]:
    """The Lambda entry point for `app`, with logging, metrics, the body checks and the
    invocation's deadline."""

    # clear_state: keys appended for one request never leak into the next one's logs.
    @logger.inject_lambda_context(
        correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True
    )
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        logger.append_keys(path_parameters=event.get("pathParameters"))
        refused = _refused_body(event)
        if refused is not None:
            return {
                "statusCode": refused.status,
                "headers": {"Content-Type": content_types.APPLICATION_JSON},
                "body": _error_body(refused),
            }
        # Every network exchange of this invocation ends in time to record its outcome and
        # answer: a slow server becomes a `timeout` result, never a Lambda timeout.
        budget = context.get_remaining_time_in_millis() / 1000 - _ANSWER_SECONDS
        with Deadline(budget):
            return app.resolve(event, context)

    return handler


# ---- the contract: what routes declare for the OpenAPI document --------------------------

# The scheme itself is described where the document is generated (mailbridge_tools.openapi):
# its model would cost every cold start 30 ms, for a document no function serves.
BEARER_SCHEME = "platformJwt"
# The `security` of every route behind the authorizer.
JWT: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]

_ERRORS = {
    400: "The body is not valid JSON (`invalid_json`).",
    401: "No valid bearer token (API Gateway's own answer), or a token that names no user or "
    "organization (`unauthorized`).",
    403: "Only the organization's admins may do this (`admin_required`).",
    404: "Nothing by that id in the caller's organization; another organization's resource "
    "answers the same.",
    409: "The current state does not allow it; the code says why.",
    412: "`If-Match` names a version that is no longer current (`version_mismatch`).",
    413: "The body is larger than the deployment's limit, 64 KiB by default "
    "(`payload_too_large`), or than API Gateway's 10 MB.",
    415: "The body's Content-Type is not application/json (`unsupported_media_type`).",
    422: "A parameter or body field breaks a rule; `field` names it.",
    429: "Too many requests (`rate_limited`): retry after `Retry-After` seconds.",
    500: "A bug (`internal_error`); nothing about it is returned.",
    502: "The OAuth provider failed (`timeout`, `connection_failed`, `tls_certificate_invalid`, "
    "`provider_error`).",
    503: "A dependency failed (`storage_unavailable`, `token_refresh_busy`: retry after "
    "`Retry-After` seconds; what is stored is wholly the old or the new state) or is not set "
    "up (`oauth_not_configured`).",
}
# Every request passes the body checks and the handler of unexpected exceptions.
_ALWAYS = (400, 413, 415, 500)
# API Gateway answers these itself too, in its own shape.
_GATEWAY_STATUSES = frozenset({401, 413})


def _retry_after(description: str, *, required: bool) -> dict[str, OpenAPIResponseHeader]:
    # `required` is OpenAPI's; Powertools' type for a header lacks it.
    header = {"description": description, "required": required}
    return {
        "Retry-After": cast(
            OpenAPIResponseHeader, header | {"schema": {"type": "integer", "minimum": 1}}
        )
    }


_HEADERS = {
    429: _retry_after("Seconds until the limit allows another request.", required=True),
    503: _retry_after("Seconds after which a retry may succeed.", required=False),
}


def errors(*statuses: int) -> dict[int, OpenAPIResponse]:
    """The error responses of a route: `statuses`, plus the body checks' 400, 413 and 415 and
    the 500 of a bug, which every route can answer; all in the one error shape."""
    responses: dict[int, OpenAPIResponse] = {}
    for status in sorted({*statuses, *_ALWAYS}):
        model = ErrorResponse | GatewayError if status in _GATEWAY_STATUSES else ErrorResponse
        response: OpenAPIResponse = {
            "description": _ERRORS[status],
            "content": {content_types.APPLICATION_JSON: {"model": model}},
        }
        if status in _HEADERS:
            response["headers"] = _HEADERS[status]
        responses[status] = response
    return responses


def success(
    description: str,
    *,
    status: int = 200,
    headers: dict[str, OpenAPIResponseHeader] | None = None,
) -> dict[int, OpenAPIResponse]:
    """A route's success: its body is the handler's return annotation, and a 204 has none."""
    response: OpenAPIResponse = {"description": description}
    if status == 204:
        response["content"] = {}
    if headers:
        response["headers"] = headers
    return {status: response}


def html_pages(pages: dict[int, str], *statuses: int) -> dict[int, OpenAPIResponse]:
    """The responses of a route that answers HTML pages (descriptions by status) besides
    `errors(*statuses)`; a status that is both has both media types."""
    responses = errors(*statuses)
    for status, description in pages.items():
        page: OpenAPIResponse = {
            "description": description,
            "content": {"text/html": {"schema": {"type": "string"}}},
        }
        if status in responses:
            error = responses[status]
            page["description"] += f" Or: {error['description']}"
            page["content"] = {**page["content"], **error.get("content", {})}
        responses[status] = page
    return responses
