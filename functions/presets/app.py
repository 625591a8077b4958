"""GET /bridge/email-presets: the provider preset catalogue."""

from mailbridge.api import JWT, create_app, errors, lambda_handler, success
from mailbridge.models import PresetList
from mailbridge.presets import PRESETS

app = create_app()


@app.get(
    "/bridge/email-presets",
    summary="The provider presets: servers, ports and security of each",
    tags=["Email connection"],
    security=JWT,
    responses=success("The catalogue, `custom` included.") | errors(401),
)
def list_presets() -> PresetList:
    return PresetList(presets=list(PRESETS.values()))


handler = lambda_handler(app)
