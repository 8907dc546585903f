"""The only code that talks to OAuth2 providers (their token endpoints), as `credbridge.flowise` is
for Flowise and `credbridge.kube` for the API server.

`transport.post_form` sends one bounded HTTPS request; `client.TokenClient` turns the token
requests `core.oauth2.provider` builds into `core.oauth2.outcomes` (tokens, "authorize again",
or a failure to retry). Nothing here logs or raises with a token, a client secret or a body.
"""
