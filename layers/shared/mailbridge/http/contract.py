"""What routes declare for the OpenAPI document: `security=JWT` where API Gateway's authorizer
guards them, their success with `success`, their errors with `errors`, and HTML pages with
`html_pages`; every error in the one error shape. And a versioned resource's answer, its
version as the ETag (`with_etag`).

The security scheme and the error shapes themselves are described where the document is
generated (mailbridge_tools.openapi, the errors from `http.models`): a security scheme's
model would cost every cold start 30 ms, and an error model Powertools would make a
validator of for each route's every error status at its first request, for a document no
function serves.
"""

from __future__ import annotations

from typing import TypeVar, cast

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.types import (
    OpenAPIResponse,
    OpenAPIResponseHeader,
)

BEARER_SCHEME = "platformJwt"
# The `security` of every route behind the authorizer.
JWT: list[dict[str, list[str]]] = [{BEARER_SCHEME: []}]
# The scopes a token must carry (one of a route's) on the routes of the agent runtime and of
# the platform; template.yaml's AuthorizationScopes make API Gateway check them.
MAIL_READ, MAIL_SEND, AGENTS_MANAGE = "mail.read", "mail.send", "agents.manage"


def jwt_with(*scopes: str) -> list[dict[str, list[str]]]:
    """The `security` of a route whose token must carry one of `scopes`."""
    return [{BEARER_SCHEME: list(scopes)}]


_ERRORS = {
    400: "The body is not valid JSON (`invalid_json`).",
    401: "No valid bearer token (API Gateway's own answer), or a token that names no user or "
    "organization (`unauthorized`).",
    403: "Only the organization's admins may do this (`admin_required`), or an agent's token "
    "asks for organization settings (`agent_token_not_allowed`); API Gateway's own 403 when "
    "the token lacks the route's scope.",
    404: "Nothing by that id in the caller's organization; another organization's resource "
    "answers the same.",
    409: "The current state does not allow it; the code says why.",
    412: "`If-Match` names a version that is no longer current (`version_mismatch`).",
    413: "The body is larger than the deployment's limit, 64 KiB by default "
    "(`payload_too_large`), or than API Gateway's 10 MB; or an attachment to download is "
    "larger than 4 MiB (`attachment_too_large`).",
    415: "The body's Content-Type is not application/json (`unsupported_media_type`).",
    422: "A parameter or body field breaks a rule; `field` names it.",
    429: "Too many requests (`rate_limited`, `sending_limit_reached`), or the provider or mail "
    "server asks to slow down (`provider_throttled`, `server_busy`): retry after "
    "`Retry-After` seconds.",
    500: "A bug (`internal_error`); nothing about it is returned.",
    502: "The provider or mail server failed (`timeout`, `connection_failed`, "
    "`tls_certificate_invalid`, `provider_error`, `server_error`...).",
    503: "A dependency failed (`storage_unavailable`, `token_refresh_busy`: retry after "
    "`Retry-After` seconds; what is stored is wholly the old or the new state) or is not set "
    "up (`oauth_not_configured`).",
}
# Every request passes the body checks and the handler of unexpected exceptions.
_ALWAYS = (400, 413, 415, 500)
# API Gateway answers these itself too, in its own shape (403: the token lacks the route's
# scope).
_GATEWAY_STATUSES = frozenset({401, 403, 413})
# The shapes of `http.models`, which the document's generator adds to its components.
_ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
_ERROR_OR_GATEWAYS = {"anyOf": [_ERROR, {"$ref": "#/components/schemas/GatewayError"}]}


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
        schema = _ERROR_OR_GATEWAYS if status in _GATEWAY_STATUSES else _ERROR
        response: OpenAPIResponse = {
            "description": _ERRORS[status],
            "content": {content_types.APPLICATION_JSON: {"schema": schema}},
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


# The header of `with_etag`'s answers, for `success(headers=...)`.
ETAG: dict[str, OpenAPIResponseHeader] = {
    "ETag": {
        "description": "The resource's version, for `If-Match`; absent while there is none.",
        "schema": {"type": "string", "pattern": '^"[0-9]+"$'},
    }
}
Content = TypeVar("Content")


def with_etag(body: Content, version: int | None) -> Response[Content]:
    """A 200 with `body`, and its version as the ETag when it has one: a write with
    `If-Match` then fails (412) if someone saved since."""
    headers = {"ETag": f'"{version}"'} if version is not None else {}
    return Response(200, content_types.APPLICATION_JSON, body, headers)


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
