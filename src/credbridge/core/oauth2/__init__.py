"""OAuth2 credentials that stay alive: the pure part.

An OAuth2 Credential (a CredentialType with an `oauth2` section, such as Flowise's `gmailOAuth2`)
holds, besides its client configuration, tokens: a refresh token obtained once by
`credbridge oauth2 authorize` (or none, for the client-credentials grant) and an access token
that the operator renews before it expires. Everything here is pure — the clock, randomness and
the network come in as arguments — so the CLI, the operator's refresh controller and the tests
share one implementation:

- `tokens`: Flowise's field names for tokens and the token-response parsing;
- `outcomes`: what a token request ended in (tokens, "authorize again", or a transient failure);
- `pkce`, `authorization`: the authorization-code flow (verifier/challenge, a `state` bound to
  one Credential, the authorization URL, the redirect's parsing);
- `provider`: a Credential's client configuration and the token requests made from it;
- `store`: where a Credential's tokens live (the Secret its `valueFrom` names);
- `schedule`, `planning`: when to refresh, how to back off, and the `OAuth2Ready` condition.

Submodules are imported by name (`from credbridge.core.oauth2 import tokens`); this package
imports none of them, so `core.registry` can use `tokens` without a cycle.
"""
