"""Organization-wide email settings: shared OAuth apps (of an org or of one of its client
organizations) and client organizations' email policies. Admins write; members read."""

from typing import Annotated

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from mailbridge.api import (
    JWT,
    create_app,
    current_caller,
    errors,
    lambda_handler,
    logger,
    success,
)
from mailbridge.client_orgs import delete_email_policy, get_email_policy, save_email_policy
from mailbridge.models import (
    ID_PATTERN,
    ClientOrg,
    EmailPolicyRequest,
    OAuthProvider,
    SharedAppRequest,
    SharedAppView,
)
from mailbridge.shared_apps import delete_shared_app, get_shared_app, save_shared_app
from mailbridge.storage import OrgStore, SecretStore

app = create_app()
secrets, orgs = SecretStore(), OrgStore()

# Organization ids come from the platform, like agent ids, and follow the same rule.
OwnerId = Annotated[str, Path(pattern=ID_PATTERN)]
Provider = Annotated[OAuthProvider, Path()]
ORG_APP = "/bridge/orgs/<orgId>/email-oauth-apps/<provider>"
CLIENT_ORG_APP = "/bridge/client-orgs/<clientOrgId>/email-oauth-apps/<provider>"
POLICY = "/bridge/client-orgs/<clientOrgId>/email-policy"
APPS, POLICIES = ["Shared OAuth apps"], ["Client organizations"]
# Members read; writes need an admin (403).
READ_ERRORS = errors(401, 404, 422, 503)
WRITE_ERRORS = errors(401, 403, 404, 409, 422, 503)
DELETE_ERRORS = errors(401, 403, 404, 422, 503)
DELETED = success("Deleted.", status=204)


def _deleted(what: str) -> Response[str]:
    logger.info(f"{what} deleted")
    return Response(status_code=204, body="")


@app.get(
    ORG_APP,
    summary="The organization's shared app for the provider, without its secret",
    tags=APPS,
    security=JWT,
    responses=success("The app.") | READ_ERRORS,
)
def get_org_app(orgId: OwnerId, provider: Provider) -> SharedAppView:
    return get_shared_app(orgs, current_caller(app), "org", orgId, provider)


@app.put(
    ORG_APP,
    summary="Register or replace the organization's shared app",
    tags=APPS,
    security=JWT,
    responses=success("The saved app.") | WRITE_ERRORS,
)
def put_org_app(
    orgId: OwnerId, provider: Provider, request: Annotated[SharedAppRequest, Body()]
) -> SharedAppView:
    caller = current_caller(app)
    return save_shared_app(orgs, secrets, caller, "org", orgId, provider, request)


@app.delete(
    ORG_APP,
    summary="Remove it; agents that used it go to `error`",
    tags=APPS,
    security=JWT,
    responses=DELETED | DELETE_ERRORS,
)
def delete_org_app(orgId: OwnerId, provider: Provider) -> Response[str]:
    delete_shared_app(orgs, secrets, current_caller(app), "org", orgId, provider)
    return _deleted("shared oauth app")


@app.get(
    CLIENT_ORG_APP,
    summary="A client organization's shared app, without its secret",
    tags=APPS,
    security=JWT,
    responses=success("The app.") | READ_ERRORS,
)
def get_client_org_app(clientOrgId: OwnerId, provider: Provider) -> SharedAppView:
    return get_shared_app(orgs, current_caller(app), "client_org", clientOrgId, provider)


@app.put(
    CLIENT_ORG_APP,
    summary="Register or replace a client organization's shared app",
    tags=APPS,
    security=JWT,
    responses=success("The saved app.") | WRITE_ERRORS,
)
def put_client_org_app(
    clientOrgId: OwnerId, provider: Provider, request: Annotated[SharedAppRequest, Body()]
) -> SharedAppView:
    caller = current_caller(app)
    return save_shared_app(orgs, secrets, caller, "client_org", clientOrgId, provider, request)


@app.delete(
    CLIENT_ORG_APP,
    summary="Remove it; agents that used it go to `error`",
    tags=APPS,
    security=JWT,
    responses=DELETED | DELETE_ERRORS,
)
def delete_client_org_app(clientOrgId: OwnerId, provider: Provider) -> Response[str]:
    caller = current_caller(app)
    delete_shared_app(orgs, secrets, caller, "client_org", clientOrgId, provider)
    return _deleted("shared oauth app")


@app.get(
    POLICY,
    summary="A client organization and its email policy",
    tags=POLICIES,
    security=JWT,
    responses=success("The policy.") | READ_ERRORS,
)
def get_policy(clientOrgId: OwnerId) -> ClientOrg:
    return get_email_policy(orgs, current_caller(app), clientOrgId)


@app.put(
    POLICY,
    summary="Create or replace it; the first save makes the client organization yours",
    tags=POLICIES,
    security=JWT,
    responses=success("The saved policy.") | WRITE_ERRORS,
)
def put_policy(clientOrgId: OwnerId, request: Annotated[EmailPolicyRequest, Body()]) -> ClientOrg:
    return save_email_policy(orgs, current_caller(app), clientOrgId, request)


@app.delete(
    POLICY,
    summary="Remove the client organization's policy",
    tags=POLICIES,
    security=JWT,
    responses=DELETED | DELETE_ERRORS,
)
def delete_policy(clientOrgId: OwnerId) -> Response[str]:
    delete_email_policy(orgs, secrets, current_caller(app), clientOrgId)
    return _deleted("email policy")


handler = lambda_handler(app)
