"""The tenancy rule for plaintext outputs: which Credentials may leave the operator decrypted.

While credbridge only writes ciphertext, a `<<NAME>>` reference is harmless: whoever writes it
gets an encrypted Secret they cannot open. Once a Credential can come back out as plaintext (a
CredentialBinding's Secret, a workload read, a push into Flowise), a reference becomes a way to
read the operator's environment. A tenant allowed to create Credentials in team-b must not be
able to write `<<CRED_TEAM_A_OPENAI_KEY>>`, bind it, and read team-a's key.

The rule, decided here once for every plaintext output: a Credential whose values come from the
operator's environment may be released as plaintext only when, for every variable it references,
the env policy has a namespace rule (`--env-policy VARIABLE_GLOB=NAMESPACE_GLOB,...`) that
matches the variable and the Credential's namespace. The allow-list alone (`--env-allow`, which
covers every namespace) is not a grant. A mirror is judged by its source: the source's `spec.data`
against the source's namespace, since that is where the values were resolved.

Values from `spec.valueFrom` Secrets and literals need no grant: they come from the namespace
itself.
"""

from __future__ import annotations

import collections.abc

from credbridge.core import envrefs


def referenced_variables(data: collections.abc.Mapping[str, object]) -> list[str]:
    """Returns every variable the values of `data` reference, sorted, without repeats."""
    found: set[str] = set()
    for value in data.values():
        found.update(envrefs.references(str(value)))
    return sorted(found)


def plaintext_denial(
    data: collections.abc.Mapping[str, object],
    namespace: str,
    policy: envrefs.EnvPolicy,
    *,
    output: str,
) -> str | None:
    """Returns None when a Credential with `spec.data` = `data`, resolved in `namespace`, may be
    released as plaintext; else the reason, naming the variables and the fix (never a value).

    `output` names what would receive the plaintext, for the message ("a CredentialBinding
    Secret", "a workload read", "Flowise").
    """
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
