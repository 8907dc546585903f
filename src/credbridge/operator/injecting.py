"""The mutating webhook that injects `credbridge fetch` into Pods annotated `credbridge.io/inject`.

Thin on purpose: it reads the namespace's labels (the opt-in), asks core.injection for the Pod's
new volumes and containers, and hands them to kopf, which answers the API server with the JSON
patch. Refusals name the annotation and the fix.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import kopf

from credbridge.core import injection, names
from credbridge.kube import errors, fetching

logger = logging.getLogger(__name__)


def register(
    registry: kopf.OperatorRegistry, api: Any, settings: injection.InjectionSettings, *, ignore_failures: bool
) -> None:
    """Register the Pod mutating handler (path /inject-pods) into `registry`.

    `ignore_failures` sets the failurePolicy of the webhook configuration kopf manages itself
    (development); the chart writes its own configuration, with a namespaceSelector.
    """

    @kopf.on.mutate(
        "",
        "v1",
        "pods",
        id="inject-pods",
        operations=["CREATE"],
        annotations={names.INJECT_ANNOTATION: kopf.PRESENT},
        ignore_failures=ignore_failures,
        registry=registry,
    )
    def inject_pod(body: kopf.Body, patch: kopf.Patch, warnings: list[str], **kwargs: Any) -> None:
        pod = copy.deepcopy(dict(body))
        namespace = str((pod.get("metadata") or {}).get("namespace") or kwargs.get("namespace") or "")
        try:
            found = fetching.read_namespace(api, namespace)
        except errors.ApiError as error:
            raise kopf.AdmissionError(
                f"credbridge could not check the {names.INJECTION_NAMESPACE_LABEL} label: {error}: retry",
                code=503,
            ) from None
        labels = ((found or {}).get("metadata") or {}).get("labels") or {}
        plan = injection.plan_injection(pod, labels, settings)
        logger.debug("injection into a Pod in %s: %s", namespace, type(plan).__name__)
        if isinstance(plan, injection.Refusal):
            raise kopf.AdmissionError(plan.message, code=400)
        if isinstance(plan, injection.Skip):
            if plan.warning:
                warnings.append(plan.warning)
            return
        patch.spec["volumes"] = plan.volumes
        patch.spec["initContainers"] = plan.init_containers
        patch.spec["containers"] = plan.containers
