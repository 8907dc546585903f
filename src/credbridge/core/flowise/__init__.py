"""Pure logic of the Flowise bridge: Flowise's stored credential format, the sync plan of a
FlowiseTarget, and the manifests `credbridge import flowise` writes.

Nothing here talks to Flowise or the cluster; the operator and the CLI gather the inputs (what a
Flowise lists, what a target's status says it pushed, the decrypted fields of a Credential) and
apply what these modules decide.
"""
