"""The only code that talks HTTP to Flowise servers.

`client` wraps Flowise's REST API (credentials, component credential types, version) with
bounded timeouts and response sizes, TLS verification against a configurable CA, and typed
errors that never quote a request body. `bootstrap` makes the first admin and an API key of a
fresh Flowise, for the local test Flowise and the docs' examples.
"""
