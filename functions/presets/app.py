"""GET /bridge/email-presets: the provider preset catalogue."""

from mailbridge.api import create_app, lambda_handler
from mailbridge.models import PresetList
from mailbridge.presets import PRESETS

app = create_app()


@app.get("/bridge/email-presets")
def list_presets() -> PresetList:
    return PresetList(presets=list(PRESETS.values()))


handler = lambda_handler(app)
