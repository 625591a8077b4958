"""OAuth connections: starting a sign-in, finishing it at the public callback and its popup
page, the one path that hands out access tokens (refreshing them), and the port to the
providers (`providers`: scopes, permissions, the adapter protocol)."""
