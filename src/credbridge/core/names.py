"""Names credbridge writes into the cluster, in one place.

Labels, annotations, the API group and the Secret type are a contract with users (selectors,
dashboards, GitOps diffs) and with older operator versions, so every module reads them from here
instead of spelling them again.
"""

from __future__ import annotations

GROUP = "credbridge.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

CREDENTIAL_KIND = "Credential"
CREDENTIAL_PLURAL = "credentials"
CREDENTIAL_TYPE_KIND = "CredentialType"
CREDENTIAL_TYPE_PLURAL = "credentialtypes"
CREDENTIAL_SHARE_KIND = "CredentialShare"
CREDENTIAL_SHARE_PLURAL = "credentialshares"
CREDENTIAL_BINDING_KIND = "CredentialBinding"
CREDENTIAL_BINDING_PLURAL = "credentialbindings"

SECRET_TYPE = "credbridge.io/credential"
"""`type` of every Secret the operator manages; consumers can select on it."""

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "credbridge"
MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"
"""Label selector of everything credbridge writes (managed Secrets, mirrors, the keyring it made)."""
UNMANAGED_SELECTOR = f"{MANAGED_BY_LABEL}!={MANAGED_BY_VALUE}"
"""Label selector of every Secret credbridge did not write."""
CREDENTIAL_LABEL = f"{GROUP}/credential"
TYPE_LABEL = f"{GROUP}/type"
BUILTIN_LABEL = f"{GROUP}/builtin"
SHARED_FROM_LABEL = f"{GROUP}/shared-from"
"""On mirrors and their Secrets: `<namespace>.<name>` of the source, for selection and clean-up."""
SHARE_LABEL = f"{GROUP}/share"
"""On mirrors: `<namespace>.<share name>` of the CredentialShare that made them."""

BINDING_LABEL = f"{GROUP}/binding"
"""On a CredentialBinding's plain Secret: the binding's name."""
BOUND_CREDENTIAL_LABEL = f"{GROUP}/bound-credential"
"""On a CredentialBinding's plain Secret: the Credential it renders (not `credential`, which marks
a Credential's own encrypted Secret)."""

CONTENT_HMAC_ANNOTATION = f"{GROUP}/content-hmac"
RESTARTED_AT_ANNOTATION = f"{GROUP}/restartedAt"
"""On the pod template of a workload a CredentialBinding rolled out: when, as kubectl rollout restart does."""
RESTARTED_BY_ANNOTATION = f"{GROUP}/restartedBy"
"""On the pod template of a workload a CredentialBinding rolled out: which binding did it."""
ACTIVE_KEY_ANNOTATION = f"{GROUP}/active-key"
KEY_FINGERPRINTS_ANNOTATION = f"{GROUP}/key-fingerprints"
"""On the keyring Secret: `{"<keyId>": "<fingerprint>"}`, keyed commitments to each key's bytes."""
ACTIVE_SEALING_KEY_ANNOTATION = f"{GROUP}/active-sealing-key"
"""On the keyring Secret: the id of the sealing key pair whose public key `credbridge seal` seals to."""
SEALING_KEY_SINCE_ANNOTATION = f"{GROUP}/active-sealing-key-since"
"""On the keyring Secret: when the active sealing key became active (RFC 3339), for scheduled rotation."""
SEALING_KEY_PREFIX = "sealing."
"""Keyring Secret data entries `sealing.<keyId>` hold sealing private keys (the other entries are AES keys)."""
ACCEPT_SHARES_ANNOTATION = f"{GROUP}/accept-shares-from"
ALLOW_DELETE_IN_USE_ANNOTATION = f"{GROUP}/allow-delete-in-use"

USE_VERB = "use"
"""The custom RBAC verb that lets an identity read a Credential's or binding's values from the read endpoint."""
TOKEN_AUDIENCE = GROUP
"""Audience of the ServiceAccount tokens the read endpoint accepts (projected tokens), and nothing else."""
INJECT_ANNOTATION = f"{GROUP}/inject"
"""On Pods: comma-separated CredentialBindings whose values the mutating webhook makes available as files."""
INJECTION_NAMESPACE_LABEL = f"{GROUP}/injection"
"""On namespaces: `enabled` opts the namespace's Pods in to injection."""
INJECTION_NAMESPACE_VALUE = "enabled"

SECRET_KEY_ENCRYPTED_DATA = "encryptedData"
SECRET_KEY_CREDENTIAL_NAME = "credentialName"
SECRET_KEY_NAME = "name"
SECRET_KEY_ID = "id"

DEFAULT_KEYRING_SECRET = "credbridge-keyring"
DEFAULT_SEALING_CONFIGMAP = "credbridge-sealing-keys"
"""ConfigMap in the operator namespace where the operator publishes the sealing public keys."""
SEALING_CERT_KEY = "cert.pem"
"""Key of that ConfigMap holding the active public key: what `credbridge seal --fetch-cert` saves."""
SEALING_ACTIVE_KEY = "activeKeyId"
"""Key of that ConfigMap naming the active sealing key id."""
DEFAULT_OPERATOR_NAMESPACE = "credbridge-system"
"""Where the keyring lives when neither --operator-namespace nor $POD_NAMESPACE says otherwise."""
DEFAULT_ENV_ALLOW = ("CRED_*",)

READY_CONDITION = "Ready"
SEALED_WITH_OLD_KEY_CONDITION = "SealedWithOldKey"
"""True while some spec.sealedData value is sealed with a sealing key other than the active one."""


def mirror_name(source_namespace: str, source_name: str) -> str:
    """Name of the mirror Credential of `source_namespace/source_name` in a target namespace.

    Both parts are DNS labels/subdomains, so the dot cannot collide with a name a user could
    choose for another source.
    """
    return f"{source_namespace}.{source_name}"
