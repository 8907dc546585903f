"""kopf handlers: the thin edge between kopf's watch streams and webhook server and the controller.

Every handler is an event handler (no change-detection state, so kopf writes no annotations,
finalizers or progress into our objects) that hands a plain copy of the body to the controller.
Admission handlers gather what the decision needs and ask core.admission to decide.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf

from credbridge.core import admission, binding, names, views
from credbridge.kube import fetching
from credbridge.operator import bindings as bindings_module
from credbridge.operator import controller as controller_module

logger = logging.getLogger(__name__)

WEBHOOK_IDS = ("validate-credentials", "validate-credentialbindings", "protect-mirror-secrets")
"""Ids of our admission handlers: kopf names them in its log lines and in the webhook URLs."""


class QuietRefusals(logging.Filter):
    """Drops kopf's ERROR line for a refusal by one of our webhooks; `_enforce` logs it at INFO.

    A refused `kubectl apply` is the user's mistake, not the operator's. kopf reports every
    `AdmissionError` as "Webhook '<id>' failed permanently: <message>" at ERROR; it reports an
    unexpected exception in the same handler as "... failed with an exception ...", with the
    traceback, and that line is kept: a real handler error stays an ERROR.
    """

    _prefixes = tuple(f"Webhook {webhook_id!r} failed permanently: " for webhook_id in WEBHOOK_IDS)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and record.getMessage().startswith(self._prefixes))


def _plain(body: Any) -> dict[str, Any]:
    """A private copy of what the views keep (spec, status, metadata without managedFields, data)."""
    metadata = {key: value for key, value in (body.get("metadata") or {}).items() if key != "managedFields"}
    return copy.deepcopy(
        {"metadata": metadata, **{key: body[key] for key in ("spec", "status", "data", "type") if key in body}}
    )


def _metadata_only(body: Any) -> dict[str, Any]:
    """A private copy of an object's metadata alone (for decisions that must never see Secret data)."""
    return {"metadata": copy.deepcopy(dict(body.get("metadata") or {}))}


def register(
    registry: kopf.OperatorRegistry,
    controller: controller_module.Controller,
    *,
    operator_username: str,
    webhooks: bool,
) -> None:
    """Register the handlers of the controller's kinds and the admission webhooks into `registry`.

    Consumers (bindings, the Flowise sync) register the handlers of their own kinds themselves
    (operator/consumers.py); their Credential, Secret and share events come through the controller.
    """

    # Event handlers are coroutines: they only update the cache and queue keys (no I/O), so they
    # run on kopf's event loop instead of a thread-pool hop per event. The views the controller
    # makes copy what they keep (core.views.kept), so bodies are passed as they are.
    @kopf.on.event(names.GROUP, names.VERSION, names.CREDENTIAL_PLURAL, registry=registry)
    async def credential_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.credential_changed(type, body)

    @kopf.on.event(names.GROUP, names.VERSION, names.CREDENTIAL_SHARE_PLURAL, registry=registry)
    async def share_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.share_changed(type, body)

    @kopf.on.event(names.GROUP, names.VERSION, names.CREDENTIAL_TYPE_PLURAL, registry=registry)
    def type_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        # Synchronous: reverting a built-in type writes to the API server.
        controller.type_changed(type, _plain(body))

    # kopf lists and watches only managed Secrets (a server-side label selector, see
    # runner.kopf_settings_for); other Secrets reach the controller through the metadata-only watch.
    @kopf.on.event("", "v1", "secrets", registry=registry)
    async def secret_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.secret_changed(type, body)

    @kopf.on.event("", "v1", "namespaces", registry=registry)
    async def namespace_event(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.namespace_changed(type, body)

    if not webhooks:
        return

    @kopf.on.validate(
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_PLURAL,
        id="validate-credentials",
        operations=["CREATE", "UPDATE", "DELETE"],
        registry=registry,
    )
    def validate_credential(warnings: list[str], userinfo: kopf.UserInfo, **kwargs: Any) -> None:
        operation, new, old = str(kwargs.get("operation")), kwargs.get("new"), kwargs.get("old")
        new_obj = _plain(new) if new is not None else None
        old_obj = _plain(old) if old is not None else None
        pods: list[str] = []
        using: list[str] = []
        if operation == "DELETE" and old_obj is not None and not (old_obj.get("spec") or {}).get("sharedFrom"):
            old_view = views.CredentialView.from_object(old_obj)
            using, pods = bindings_module.usage(controller.api, old_view.namespace, old_view.name, old_view.secret_name)
        decision = admission.review_credential(
            operation,
            new_obj,
            old_obj,
            username=str(userinfo.get("username", "")),
            operator_username=operator_username,
            types=controller.types_including(str(((new_obj or old_obj or {}).get("spec") or {}).get("type", ""))),
            literal_secrets=controller.settings.admission.literal_secrets,
            pods_using_secret=pods,
            bindings_using=using,
        )
        _enforce(decision, warnings, operation, "Credential", new_obj or old_obj, userinfo)

    @kopf.on.validate(
        names.GROUP,
        names.VERSION,
        names.CREDENTIAL_BINDING_PLURAL,
        id="validate-credentialbindings",
        operations=["CREATE", "UPDATE"],
        registry=registry,
    )
    def validate_binding(warnings: list[str], userinfo: kopf.UserInfo, **kwargs: Any) -> None:
        operation, new, old = str(kwargs.get("operation")), kwargs.get("new"), kwargs.get("old")
        new_obj = _plain(new) if new is not None else None
        view = binding.BindingView.from_object(new_obj or {})
        credential = None
        if binding.reference_problem(view.credential_name) is None:
            cached = controller.cache.credential((view.namespace, view.credential_name))
            credential = (
                {"spec": dict(cached.spec)}
                if cached is not None
                else fetching.read_credential(controller.api, view.namespace, view.credential_name)
            )
        type_name = str(((credential or {}).get("spec") or {}).get("type", ""))
        decision = admission.review_binding(
            operation,
            new_obj,
            _plain(old) if old is not None else None,
            credential=credential,
            types=controller.types_including(type_name),
            binding_secrets=controller.settings.bindings.secrets,
        )
        _enforce(decision, warnings, operation, "CredentialBinding", new_obj or old, userinfo)

    @kopf.on.validate(
        "",
        "v1",
        "secrets",
        id="protect-mirror-secrets",
        operations=["UPDATE", "DELETE"],
        # Becomes the webhook's objectSelector: only mirror Secrets reach the webhook, so the
        # operator's writes of every other managed Secret do not wait for (or depend on) it.
        labels={names.MANAGED_BY_LABEL: names.MANAGED_BY_VALUE, names.SHARED_FROM_LABEL: kopf.PRESENT},
        registry=registry,
    )
    def protect_mirror_secret(warnings: list[str], userinfo: kopf.UserInfo, **kwargs: Any) -> None:
        operation, new, old = str(kwargs.get("operation")), kwargs.get("new"), kwargs.get("old")
        # Metadata is all the decision needs: Secret data never enters the decision or its message.
        decision = admission.review_managed_secret(
            operation,
            _metadata_only(new) if new is not None else None,
            _metadata_only(old) if old is not None else None,
            username=str(userinfo.get("username", "")),
            operator_username=operator_username,
        )
        _enforce(decision, warnings, operation, "Secret", old if old is not None else new, userinfo)


def _enforce(
    decision: admission.Decision,
    warnings: list[str],
    operation: str,
    kind: str,
    obj: Any,
    userinfo: kopf.UserInfo,
) -> None:
    warnings.extend(decision.warnings)
    if not decision.allowed:
        metadata = (obj or {}).get("metadata") or {}
        # The decision's message names objects, fields and the fix, never a value.
        logger.info(
            "refused %s of %s %s/%s by %s: %s",
            operation,
            kind,
            metadata.get("namespace"),
            metadata.get("name"),
            userinfo.get("username", "?"),
            decision.message,
        )
        raise kopf.AdmissionError(decision.message, code=403)
