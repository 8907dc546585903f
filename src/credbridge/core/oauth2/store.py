"""Where a Credential's OAuth2 tokens are written: the Secret its `spec.valueFrom` reads them from.

A Credential's values come from `spec.data`, the operator's environment or Secrets; of these only
a Secret can be written by a program, so tokens live in one: `credbridge oauth2 authorize` and
the operator's refresh write the token keys of that Secret (and no other key), and the Credential
reconciles from it like from any other referenced Secret — encrypted into the managed Secret,
pushed to Flowise, rendered by bindings. One place holds the newest refresh token; nothing has to
be copied back.

The Credential says where, with one `valueFrom` entry per token field, all naming the same Secret:

    valueFrom:
      refresh_token: {secretKeyRef: {name: gmail-tokens, key: refresh_token, optional: true}}
      access_token:  {secretKeyRef: {name: gmail-tokens, key: access_token, optional: true}}
      expires_at:    {secretKeyRef: {name: gmail-tokens, key: expires_at, optional: true}}

`optional: true` keeps the Credential Ready before the first authorization. `access_token` and
`expires_at` are needed, `refresh_token` too for the authorization-code grant; `token_received_at`
(recommended: it lets the refresh schedule survive restarts exactly), `token_type`, `expires_in`
and `granted_scope` are written when the Credential lists them.
"""

from __future__ import annotations

import collections.abc
import dataclasses

from credbridge.core import redaction, registry, views
from credbridge.core.oauth2 import tokens

TOKENS_ANNOTATION = "credbridge.io/oauth2-credential"
"""On a token Secret that `credbridge oauth2 authorize` or the operator created or updated: the Credential
whose tokens it holds."""


class TokenStoreError(ValueError):
    """The Credential does not say where its tokens go; the message names the fields and the fix."""


@dataclasses.dataclass(frozen=True)
class TokenStore:
    """The Secret a Credential reads its tokens from, and the key of each token field in it."""

    namespace: str
    secret_name: str
    keys: collections.abc.Mapping[str, str]
    """Token field (Flowise's name) → key in the Secret, for the token fields the Credential lists."""

    def secret_data(self, values: collections.abc.Mapping[str, redaction.Redacted]) -> dict[str, redaction.Redacted]:
        """The Secret keys to write for token `values` (field → value): only fields the Credential lists."""
        return {self.keys[field]: value for field, value in values.items() if field in self.keys}

    def fields_from(self, secret_data: collections.abc.Mapping[str, str]) -> dict[str, str]:
        """The token fields as they are in the Secret's (decoded) data now; absent keys are left out."""
        return {field: secret_data[key] for field, key in self.keys.items() if key in secret_data}


def _example(secret: str, fields: collections.abc.Iterable[str]) -> str:
    entry = "spec.valueFrom.{field}: {{secretKeyRef: {{name: {secret}, key: {field}, optional: true}}}}"
    return "; ".join(entry.format(field=field, secret=secret) for field in fields)


def required_fields(grant: str) -> tuple[str, ...]:
    """The token fields a Credential must list for `grant`."""
    if grant == "authorization_code":
        return (tokens.REFRESH_TOKEN, tokens.ACCESS_TOKEN, tokens.EXPIRES_AT)
    return (tokens.ACCESS_TOKEN, tokens.EXPIRES_AT)


def token_store(credential: views.CredentialView, cred_type: registry.CredentialTypeSpec) -> TokenStore:
    """Where `credential` keeps its tokens; raises TokenStoreError naming what is missing and the fix."""
    where = f"Credential {credential.namespace}/{credential.name}"
    if cred_type.oauth2 is None:
        raise TokenStoreError(f"{where}: type {cred_type.name!r} is not an OAuth2 type: it has no tokens")
    data = credential.spec.get("data") or {}
    in_data = sorted(field for field in tokens.TOKEN_FIELDS if field in data)
    if in_data:
        raise TokenStoreError(
            f"{where}: token field(s) {', '.join(in_data)} are set in spec.data, which credbridge cannot update: "
            "take them from a Secret with spec.valueFrom instead"
        )
    refs: dict[str, tuple[str, str]] = {}
    for field in tokens.TOKEN_FIELDS:
        source = credential.value_from.get(field)
        if source is None:
            continue
        ref = source.get("secretKeyRef") or {}
        refs[field] = (str(ref.get("name", "")), str(ref.get("key", "")))
    default_secret = f"{credential.name}-oauth2-tokens"
    secret_names = sorted({name for name, _ in refs.values()})
    missing = [field for field in required_fields(cred_type.oauth2.grant) if field not in refs]
    if missing:
        secret = secret_names[0] if len(secret_names) == 1 else default_secret
        raise TokenStoreError(f"{where}: it does not say where its OAuth2 tokens go: add {_example(secret, missing)}")
    if len(secret_names) > 1:
        raise TokenStoreError(
            f"{where}: its token fields come from several Secrets ({', '.join(secret_names)}): take every token "
            "field from one Secret, so a refresh writes them together"
        )
    secret_name = secret_names[0]
    if secret_name == credential.secret_name:
        raise TokenStoreError(
            f"{where}: its token fields come from Secret {secret_name}, which is the Credential's own managed Secret: "
            "use another Secret for the tokens"
        )
    return TokenStore(credential.namespace, secret_name, {field: key for field, (_, key) in refs.items()})
