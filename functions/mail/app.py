"""The agent's mailbox, read: list, read one message, download an attachment, mark read or
unread. For the agent's runtime (its token names the agent) and the organization's admins."""

import base64
from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from mailbridge.core.types import OPAQUE_ID_PATTERN
from mailbridge.http.app import create_app, lambda_handler
from mailbridge.http.caller import AgentId, current_caller
from mailbridge.http.contract import MAIL_READ, errors, jwt_with, success
from mailbridge.mail.models import (
    AttachmentContent,
    Folder,
    Message,
    MessagePage,
    ReadState,
)
from mailbridge.mail.service import Stores, get_attachment, get_message, list_messages, set_read
from mailbridge.storage.agents import DynamoAgentStore
from mailbridge.storage.orgs import DynamoOrgStore
from mailbridge.storage.secrets import SecretsManagerStore
from pydantic.json_schema import SkipJsonSchema

app = create_app()
stores = Stores(DynamoAgentStore(), SecretsManagerStore(), DynamoOrgStore())
TAGS = ["Mail"]
READ = jwt_with(MAIL_READ)
# Reading runs into the provider or mail server: its failures (502), its throttling (429),
# and a broken connection (409, recorded as the agent's status).
READ_ERRORS = errors(401, 403, 404, 409, 422, 429, 502, 503)
MESSAGES = "/bridge/agents/<agentId>/mail/messages"
MessageId = Annotated[str, Path(pattern=OPAQUE_ID_PATTERN, description="As listed.")]
AttachmentId = Annotated[str, Path(pattern=r"^[0-9]{1,4}$", description="As the message lists it.")]


@app.get(
    MESSAGES,
    summary="List a folder's messages, newest first",
    tags=TAGS,
    security=READ,
    responses=success("A page of messages, and the cursor of the next one.") | READ_ERRORS,
)
def list_folder(
    agentId: AgentId,
    folder: Annotated[Folder, Query(description="Which folder.")] = "inbox",
    unread: Annotated[bool, Query(description="Only unread messages.")] = False,
    cursor: Annotated[
        str | SkipJsonSchema[None],
        Query(pattern=OPAQUE_ID_PATTERN, description="The previous page's `next_cursor`."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="At most this many.")] = 50,
) -> MessagePage:
    return list_messages(
        stores,
        current_caller(app),
        agentId,
        folder=folder,
        unread_only=unread,
        cursor=cursor,
        limit=limit,
    )


@app.get(
    f"{MESSAGES}/<messageId>",
    summary="Read one message: headers, text and HTML bodies, attachments' descriptions",
    description="Reading does not mark it read.",
    tags=TAGS,
    security=READ,
    responses=success("The message.") | READ_ERRORS,
)
def read_message(agentId: AgentId, messageId: MessageId) -> Message:
    return get_message(stores, current_caller(app), agentId, messageId)


@app.get(
    f"{MESSAGES}/<messageId>/attachments/<attachmentId>",
    summary="Download one attachment, in base64",
    description="Up to 4 MiB; larger ones answer `413 attachment_too_large`.",
    tags=TAGS,
    security=READ,
    responses=success("The attachment.") | errors(401, 403, 404, 409, 413, 422, 429, 502, 503),
)
def download_attachment(
    agentId: AgentId,
    messageId: MessageId,
    attachmentId: AttachmentId,
) -> AttachmentContent:
    info, content = get_attachment(stores, current_caller(app), agentId, messageId, attachmentId)
    return AttachmentContent(**info.model_dump(), content=base64.b64encode(content).decode())


@app.patch(
    f"{MESSAGES}/<messageId>",
    summary="Mark a message read or unread",
    tags=TAGS,
    security=READ,
    responses=success("Done.", status=204) | READ_ERRORS,
)
def mark(
    agentId: AgentId, messageId: MessageId, request: Annotated[ReadState, Body()]
) -> Response[str]:
    set_read(stores, current_caller(app), agentId, messageId, request.read)
    return Response(status_code=204, body="")


handler = lambda_handler(app)
