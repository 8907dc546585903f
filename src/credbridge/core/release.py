"""The release rule: whether a Credential's plaintext may leave the operator to a given output.

While credbridge only writes ciphertext, a `<<NAME>>` reference is harmless: whoever writes it
gets an encrypted Secret they cannot open. Once a Credential comes back out as plaintext — a
CredentialBinding's Secret, a workload read, a push into Flowise, a verification probe, an OAuth2
refresh — a reference becomes a way to read the operator's environment. A tenant allowed to
create Credentials in team-b must not be able to write `<<CRED_TEAM_A_OPENAI_KEY>>`, bind it, and
read team-a's key. Every consumer asks `denial` before it opens a managed Secret, and none decides
this on its own.

The rule, in the order it is checked:
1. A mirror is judged by its source (the source's `spec.data`, in the source's namespace: that is
   where the values were resolved). When the source cannot be seen, nothing is released: whether
   its values may leave cannot be judged (`SourceNotVisible`).
2. Outputs stored in the cluster as plain Secrets need the cluster's switch (`--binding-secrets`,
   `PlaintextDenied`) and, for a mirror, the consent of its owner: a CredentialShare covering the
   consumer's namespace with `spec.allowPlaintextBindings: true` (`ShareForbidsBinding`).
3. Values from the operator's environment leave only when, for every variable referenced, the
   env policy has a namespace rule (`--env-policy VARIABLE_GLOB=NAMESPACE_GLOB,...`) matching the
   variable and the namespace the values were resolved in (`EnvNotGranted`). The allow-list alone
   (`--env-allow`, which covers every namespace) is not a grant. Values from `spec.valueFrom`
   Secrets and literals need no grant: they come from the namespace itself.

4. Only when the admin asks for it (`--verification-block-consumers`, `Policy.block_unverified`):
   a Credential whose last check found it `Invalid` (the service refused it) is held back from
   every output but the check itself (`NotVerified`). Verification informs and never blocks
   otherwise. A held-back Credential withdraws nothing: a binding keeps the Secret it wrote, a
   Flowise keeps what was pushed; new content waits until a check accepts it.

Every refusal names the variables, shares or switches and the fix, never a value.
"""

from __future__ import annotations

import collections.abc
import dataclasses

from credbridge.core import conditions, envrefs, planning, sharing, views

SOURCE_NOT_VISIBLE = "SourceNotVisible"
PLAINTEXT_DENIED = "PlaintextDenied"
SHARE_FORBIDS_BINDING = "ShareForbidsBinding"
ENV_NOT_GRANTED = "EnvNotGranted"
REASONS = (SOURCE_NOT_VISIBLE, PLAINTEXT_DENIED, SHARE_FORBIDS_BINDING, ENV_NOT_GRANTED)
"""The reasons `denial` gives that withdraw what was released (a binding deletes its Secret)."""
NOT_VERIFIED = "NotVerified"
"""The reason of step 4: new content is held back, nothing released before is withdrawn."""
VERIFIED_CONDITION = "Verified"
BLOCKING_OUTCOMES = frozenset({"Invalid"})
"""Verified reasons that hold a Credential back under `block_unverified`. Forbidden (a permission the
check needs but the consumer may not) and RateLimited (the key works, it is busy) do not."""


VERIFICATION_PROBE = "a verification probe"
"""The output name of a check: `external(VERIFICATION_PROBE, namespace)`."""


@dataclasses.dataclass(frozen=True)
class Output:
    """Where the plaintext would go."""

    description: str
    """What receives it, for messages: "a CredentialBinding Secret", "a workload read", "Flowise"."""
    namespace: str
    """The namespace of the object asking for it (the binding's, the reader's, the target's)."""
    plain_secret: bool = False
    """True when the plaintext is stored in the cluster as a plain Secret: the cluster switch and a
    mirror's share consent apply."""
    verification: bool = False
    """True for a verification check: never held back by the outcome of an earlier check (step 4)."""


def binding_secret(namespace: str) -> Output:
    return Output("a CredentialBinding Secret", namespace, plain_secret=True)


def workload_read(namespace: str) -> Output:
    return Output("a workload read", namespace)


def external(system: str, namespace: str) -> Output:
    """An external system a consumer pushes into (Flowise) or talks to (a verification probe)."""
    return Output(system, namespace, verification=system == VERIFICATION_PROBE)


@dataclasses.dataclass(frozen=True)
class Policy:
    """The operator's settings the rule applies."""

    env: envrefs.EnvPolicy
    plain_secrets: bool = True
    """`--binding-secrets=allow`: plain Secret outputs are allowed at all."""
    block_unverified: bool = False
    """`--verification-block-consumers=on`: hold back Credentials a check found Invalid (step 4)."""


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the operator gathered about the Credential to release."""

    credential: views.CredentialView
    source: views.CredentialView | None = None
    """For a mirror: its source Credential as the operator sees it; None when it cannot see it."""
    shares: collections.abc.Sequence[views.ShareView] = ()
    """For a mirror and a plain-Secret output: the CredentialShares in the source's namespace."""
    consumer_namespace: views.NamespaceView | None = None
    """For a mirror and a plain-Secret output: the Namespace of the output (shares that select by label)."""


def denial(facts: Facts, output: Output, policy: Policy) -> planning.Failure | None:
    """None when the Credential's plaintext may go to `output`; else why not (fail closed)."""
    credential = facts.credential
    where = f"Credential {credential.namespace}/{credential.name}"
    judged = credential
    if credential.shared_from is not None:
        source = facts.source
        if source is None or source.key != credential.shared_from or source.deleting:
            origin = "/".join(credential.shared_from)
            return planning.Failure(
                SOURCE_NOT_VISIBLE,
                f"{where} is a mirror of {origin}, which the operator cannot see (deleted, or not in its watch), "
                f"so whether its values may go to {output.description} cannot be judged: nothing is released "
                "until the source is back",
            )
        judged = source
        where = f"{where} (a mirror of Credential {source.namespace}/{source.name})"
    if output.plain_secret:
        if not policy.plain_secrets:
            return planning.Failure(
                PLAINTEXT_DENIED,
                f"plain Secret output of CredentialBindings is turned off in this cluster (--binding-secrets=deny, "
                f"Helm value bindings.secrets): {where} cannot go to {output.description}; remove spec.secret, or "
                "ask an operator admin",
            )
        if credential.shared_from is not None:
            refused = share_denial(output.namespace, credential, facts.shares, facts.consumer_namespace)
            if refused is not None:
                return planning.Failure(SHARE_FORBIDS_BINDING, refused)
    refused = env_denial(judged.data, judged.namespace, policy.env, output=output.description)
    if refused is not None:
        return planning.Failure(ENV_NOT_GRANTED, f"{where}: {refused}")
    if policy.block_unverified and not output.verification:
        verified = conditions.find(judged.status, VERIFIED_CONDITION)
        if verified is not None and verified.get("status") == "False" and verified.get("reason") in BLOCKING_OUTCOMES:
            return planning.Failure(
                NOT_VERIFIED,
                f"{where} is held back from {output.description}: its last check found it {verified.get('reason')} "
                "and this cluster holds back such credentials (--verification-block-consumers, Helm value "
                "verification.blockConsumers); fix the credential, then run `credbridge verify` "
                f"{judged.name} -n {judged.namespace} (what was released before stays as it is)",
            )
    return None


def referenced_variables(data: collections.abc.Mapping[str, object]) -> list[str]:
    """Every variable the values of `data` reference, sorted, without repeats."""
    found: set[str] = set()
    for value in data.values():
        found.update(envrefs.references(str(value)))
    return sorted(found)


def env_denial(
    data: collections.abc.Mapping[str, object], namespace: str, policy: envrefs.EnvPolicy, *, output: str
) -> str | None:
    """None when values `data` resolved in `namespace` may leave as plaintext; else why (step 3 above)."""
    ungranted = [name for name in referenced_variables(data) if not policy.grants_explicitly(name, namespace)]
    if not ungranted:
        return None
    listed = ", ".join(ungranted)
    rules = " ".join(f"--env-policy '{name}={namespace}'" for name in ungranted)
    return (
        f"values of this Credential come from the operator's environment ({listed}), and the env policy "
        f"does not grant {'that variable' if len(ungranted) == 1 else 'those variables'} to namespace "
        f"{namespace} explicitly, so it may not be released as plaintext to {output}: an operator admin "
        f"can add a namespace rule ({rules}; Helm value envPolicy), or the Credential can take "
        "the value from a Secret in its namespace (spec.valueFrom)"
    )


def share_denial(
    output_namespace: str,
    mirror: views.CredentialView,
    shares: collections.abc.Sequence[views.ShareView],
    namespace: views.NamespaceView | None,
) -> str | None:
    """Why the owner of a shared Credential does not let its mirror be stored as a plain Secret, or None.

    Allowed when any share of the source that covers `output_namespace` says
    `spec.allowPlaintextBindings: true`.
    """
    assert mirror.shared_from is not None
    source_namespace, source_name = mirror.shared_from
    covering = [
        share
        for share in shares
        if share.credential == source_name
        and output_namespace in sharing.targets(share, [namespace] if namespace else [])
    ]
    if any(share.spec.get("allowPlaintextBindings") is True for share in covering):
        return None
    listed = ", ".join(sorted(share.name for share in covering)) or "(none)"
    return (
        f"Credential {mirror.name} is shared from {source_namespace}/{source_name} by CredentialShare {listed}, "
        "which does not allow plain Secret bindings of its mirrors: the owners of namespace "
        f"{source_namespace} can set spec.allowPlaintextBindings: true on the share, or remove spec.secret "
        "from this binding"
    )
