"""`credbridge validate`: check credbridge manifests offline, the way the cluster will, for GitOps CI.

A Credential that passes CI but fails in the cluster is found late, by whoever depends on it.
This command runs the same checks as the admission webhook and the reconciler — the type
registry, `validation.check_spec`, the `<<NAME>>` allow-list, the literal-secret policy, the form
and scope of sealed values (it cannot open them: only the operator holds the key) — on YAML
files, without a cluster, and reports like a compiler: one line per problem, naming the file,
the document and the object, then a summary. Messages come from core and name fields and
variables only, never a value from the files.

Exit codes: 0 clean (warnings allowed), 1 problems found, 2 an input could not be read or parsed.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import pathlib
import sys
import typing

import yaml

from credbridge.cli import run
from credbridge.core import admission, envrefs, lint, names, registry, sealing, validation
from credbridge.operator import settings as operator_settings

EXIT_CLEAN = 0
EXIT_PROBLEMS = 1
EXIT_UNREADABLE = 2
STDIN = "-"
YAML_SUFFIXES = (".yaml", ".yml")
CREDBRIDGE_KINDS = (
    names.CREDENTIAL_KIND,
    names.CREDENTIAL_SHARE_KIND,
    names.CREDENTIAL_TYPE_KIND,
    names.CREDENTIAL_BINDING_KIND,
)

Json = collections.abc.Mapping[str, typing.Any]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check Credential, CredentialShare and CredentialType manifests offline (for CI)",
        description=(
            "Check credbridge manifests without a cluster: Credentials against the built-in types and any "
            "CredentialTypes in the same inputs, <<NAME>> references against the allow-list, literal secrets, "
            "and CredentialShare basics. Prints one line per problem (FILE:DOC: KIND NAMESPACE/NAME: MESSAGE, "
            "DOC counting YAML documents from 0). Exit 0 when clean, 1 with problems, 2 when a file cannot be "
            "read or parsed."
        ),
    )
    parser.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        dest="paths",
        metavar="PATH",
        help="a YAML file, a directory (searched recursively for *.yaml and *.yml) or - for stdin; repeatable",
    )
    run.add_policy_arguments(parser)
    parser.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="namespace assumed for objects without metadata.namespace (default: %(default)s)",
    )
    parser.set_defaults(handler=handle)


@dataclasses.dataclass(frozen=True)
class Document:
    """One object from the inputs and where it came from."""

    source: str
    """The file as given on the command line (or found in a directory), `<stdin>` for `-`."""
    index: int
    """Position of the YAML document in its file, counting from 0 (as `yq`'s document index)."""
    body: Json


@dataclasses.dataclass(frozen=True)
class Finding:
    """A problem (or warning) with one object; `message` names fields and variables, never values."""

    document: Document
    subject: str
    """`Kind namespace/name` of the object."""
    message: str
    warning: bool = False

    def line(self) -> str:
        prefix = "warning: " if self.warning else ""
        return f"{self.document.source}:{self.document.index}: {self.subject}: {prefix}{self.message}"


@dataclasses.dataclass
class Report:
    """Everything one run found."""

    findings: list[Finding] = dataclasses.field(default_factory=list)
    unreadable: list[str] = dataclasses.field(default_factory=list)
    """One message per input that could not be read or parsed."""
    credentials_checked: int = 0

    @property
    def problems(self) -> int:
        return sum(1 for finding in self.findings if not finding.warning)

    @property
    def warnings(self) -> int:
        return sum(1 for finding in self.findings if finding.warning)


def handle(args: argparse.Namespace) -> int:
    given = run.policy_values(args)
    try:
        policy = operator_settings.env_policy(given["env.allow"], given["env.namespace_rules"])
    except ValueError as error:
        print(f"credbridge validate: {error}", file=sys.stderr)
        return EXIT_UNREADABLE
    report = Report()
    documents = list(read_documents(args.paths, report))
    check_documents(
        documents,
        report,
        policy=policy,
        literal_secrets=given["admission.literal_secrets"],
        default_namespace=args.namespace,
    )
    for finding in report.findings:
        print(finding.line())
    for message in report.unreadable:
        print(message, file=sys.stderr)
    print(_summary(report))
    if report.unreadable:
        return EXIT_UNREADABLE
    return EXIT_PROBLEMS if report.problems else EXIT_CLEAN


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _summary(report: Report) -> str:
    text = f"{_plural(report.credentials_checked, 'credential')} checked, {_plural(report.problems, 'problem')}"
    if report.warnings:
        text += f", {_plural(report.warnings, 'warning')}"
    if report.unreadable:
        text += f"; {_plural(len(report.unreadable), 'input')} could not be read"
    return text


# Reading -------------------------------------------------------------------------------------


def _yaml_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """YAML files under `directory`, sorted, skipping hidden directories and files (.git, .github)."""
    found = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix in YAML_SUFFIXES and path.is_file():
            found.append(path)
    return sorted(found)


def read_inputs(paths: collections.abc.Sequence[str], report: Report) -> collections.abc.Iterator[tuple[str, str]]:
    """(name, text) of every input; what cannot be read goes to `report.unreadable`."""
    for given in paths:
        if given == STDIN:
            yield "<stdin>", sys.stdin.read()
            continue
        path = pathlib.Path(given)
        if path.is_dir():
            files = _yaml_files(path)
            if not files:
                report.unreadable.append(f"{given}: no *.yaml or *.yml files in this directory")
            candidates = files
        else:
            candidates = [path]
        for candidate in candidates:
            try:
                yield str(candidate), candidate.read_text(encoding="utf-8-sig")
            except FileNotFoundError:
                report.unreadable.append(f"{candidate}: no such file or directory")
            except UnicodeDecodeError as error:
                report.unreadable.append(f"{candidate}: not UTF-8 text (byte {error.start})")
            except OSError as error:
                report.unreadable.append(f"{candidate}: cannot be read ({error.strerror or type(error).__name__})")


def _syntax_error(source: str, error: yaml.YAMLError) -> str:
    """Where and why the YAML is malformed, without quoting the file (the offending line may hold a secret)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        problem = error.problem or "malformed YAML"
        context = f" ({error.context})" if error.context else ""
        return f"{source}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}{context}"
    if isinstance(error, yaml.reader.ReaderError):
        return f"{source}: YAML syntax error: {error.reason} at character {error.position}"
    return f"{source}: YAML syntax error ({type(error).__name__})"


def read_documents(paths: collections.abc.Sequence[str], report: Report) -> collections.abc.Iterator[Document]:
    """Every mapping document in the inputs; the items of a `kind: List` count as their document."""
    for source, text in read_inputs(paths, report):
        try:
            bodies = list(yaml.safe_load_all(text))
        except yaml.YAMLError as error:
            report.unreadable.append(_syntax_error(source, error))
            continue
        for index, body in enumerate(bodies):
            if not isinstance(body, collections.abc.Mapping):
                continue
            items = body.get("items") if str(body.get("kind", "")).endswith("List") else None
            if isinstance(items, list):
                for item in items:
                    if isinstance(item, collections.abc.Mapping):
                        yield Document(source, index, item)
            else:
                yield Document(source, index, body)


# Checking ------------------------------------------------------------------------------------


def document_subject(document: Document, default_namespace: str) -> tuple[str, str]:
    """(`Kind namespace/name`, namespace) of a document, with placeholders for what is missing."""
    metadata = document.body.get("metadata")
    metadata = metadata if isinstance(metadata, collections.abc.Mapping) else {}
    kind = str(document.body.get("kind"))
    name = metadata.get("name")
    name_text = str(name) if isinstance(name, str) and name else "<no name>"
    if kind == names.CREDENTIAL_TYPE_KIND:
        return f"{kind} {name_text}", ""
    namespace = metadata.get("namespace")
    namespace_text = str(namespace) if isinstance(namespace, str) and namespace else default_namespace
    return f"{kind} {namespace_text}/{name_text}", namespace_text


def _is_credbridge(body: Json) -> bool:
    api_version = str(body.get("apiVersion", ""))
    return api_version.split("/", maxsplit=1)[0] == names.GROUP and body.get("kind") in CREDBRIDGE_KINDS


def check_documents(
    documents: collections.abc.Sequence[Document],
    report: Report,
    *,
    policy: envrefs.EnvPolicy,
    literal_secrets: str,
    default_namespace: str,
) -> None:
    """Check every credbridge object; CredentialTypes first, so Credentials anywhere in the inputs can use them."""
    ours = [document for document in documents if _is_credbridge(document.body)]
    known = registry.Registry.builtin()

    def add(document: Document, subject: str, message: str, *, warning: bool = False) -> None:
        report.findings.append(Finding(document, subject, message, warning))

    checked: list[tuple[Document, str, str]] = []
    for document in ours:
        subject, namespace = document_subject(document, default_namespace)
        if document.body.get("apiVersion") != names.API_VERSION:
            add(
                document,
                subject,
                f"apiVersion {document.body.get('apiVersion')} is not served: use {names.API_VERSION}",
            )
            continue
        metadata = document.body.get("metadata")
        if not isinstance(metadata, collections.abc.Mapping) or not metadata.get("name"):
            add(document, subject, "metadata.name is missing: name the object")
            continue
        if document.body.get("kind") == names.CREDENTIAL_TYPE_KIND:
            try:
                known = known.with_custom(registry.type_from_object(document.body))
            except registry.TypeDefinitionError as error:
                add(document, subject, str(error))
            continue
        checked.append((document, subject, namespace))

    credentials = {
        (namespace, str(document.body["metadata"]["name"])): document.body
        for document, _, namespace in checked
        if document.body.get("kind") == names.CREDENTIAL_KIND
    }
    for document, subject, namespace in checked:
        if document.body.get("kind") == names.CREDENTIAL_KIND:
            report.credentials_checked += 1
            for message, warning in credential_findings(
                document.body, namespace, known, policy=policy, literal_secrets=literal_secrets
            ):
                add(document, subject, message, warning=warning)
        elif document.body.get("kind") == names.CREDENTIAL_BINDING_KIND:
            for message in binding_problems(document.body, namespace, credentials, known):
                add(document, subject, message)
        else:
            for message in share_problems(document.body):
                add(document, subject, message)


def _data_strings(
    value: object, problems: list[tuple[str, bool]], where: str = "spec.data"
) -> tuple[dict[str, str], set[str]]:
    """The string entries of spec.data (or `where`), and the names of entries that are not strings (each a problem)."""
    if value is None:
        return {}, set()
    if not isinstance(value, collections.abc.Mapping):
        problems.append((f"{where} must be a mapping of field name to value", False))
        return {}, set()
    strings: dict[str, str] = {}
    not_strings: set[str] = set()
    for key, entry in value.items():
        if isinstance(entry, str):
            strings[str(key)] = entry
        else:
            # YAML reads unquoted 6379, true or 2024-01-01 as other types; the API server refuses them.
            problems.append((f"{where}.{key} must be a string: quote the value in YAML", False))
            not_strings.add(str(key))
    return strings, not_strings


def _value_from_fields(value: object, problems: list[tuple[str, bool]]) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, collections.abc.Mapping):
        problems.append(("spec.valueFrom must be a mapping of field name to {secretKeyRef: {name, key}}", False))
        return []
    for field, reference in value.items():
        secret_ref = reference.get("secretKeyRef") if isinstance(reference, collections.abc.Mapping) else None
        if not isinstance(secret_ref, collections.abc.Mapping):
            problems.append((f"spec.valueFrom.{field} must be {{secretKeyRef: {{name, key}}}}", False))
            continue
        for part in ("name", "key"):
            if not isinstance(secret_ref.get(part), str) or not secret_ref.get(part):
                problems.append(
                    (f"spec.valueFrom.{field}.secretKeyRef.{part} is missing: name the Secret and its key", False)
                )
    return [str(field) for field in value]


def credential_findings(
    body: Json,
    namespace: str,
    known: registry.Registry,
    *,
    policy: envrefs.EnvPolicy,
    literal_secrets: str,
) -> list[tuple[str, bool]]:
    """(message, is_warning) for one Credential, in the order a reader fixes them."""
    findings: list[tuple[str, bool]] = []
    spec = body.get("spec")
    if not isinstance(spec, collections.abc.Mapping):
        return [("spec is missing: set spec.type and spec.data", False)]
    if spec.get("sharedFrom") is not None:
        return [
            (
                "spec.sharedFrom is set: mirrors are made by the operator only; share the source Credential "
                "with a CredentialShare instead",
                False,
            )
        ]
    type_name = spec.get("type")
    if not isinstance(type_name, str):
        return [("spec.type must be a string naming a CredentialType, e.g. openAIApi", False)]
    data, not_strings = _data_strings(spec.get("data"), findings)
    sealed, _ = _data_strings(spec.get("sealedData"), findings, where="spec.sealedData")
    value_from = _value_from_fields(spec.get("valueFrom"), findings)
    cred_type = known.get(type_name)
    findings.extend(
        (problem.message, False)
        for problem in validation.check_spec(cred_type, type_name, data, value_from, sealed)
        # A field given as a non-string is reported above, not again as missing.
        if not (problem.rule == "required" and problem.field in not_strings)
    )
    if cred_type is not None:
        findings.extend(
            (f"field {name!r} is not defined by type {cred_type.name!r}: remove it from spec.data", False)
            for name in sorted(not_strings)
            if cred_type.field(name) is None
        )
    name = str((body.get("metadata") or {}).get("name") or "")
    findings.extend(
        (placement.message, False)
        for placement in (sealing.placement(field, token, namespace, name) for field, token in sorted(sealed.items()))
        if placement.verdict != "ok"
    )
    for field, value in data.items():
        for variable in envrefs.references(value):
            reason = policy.check(variable, namespace)
            if reason is not None:
                findings.append((f"field {field!r}: {reason}", False))
    if cred_type is not None and literal_secrets != "allow":
        findings.extend(
            (
                f"field {field!r} is a password field holding a literal value in spec.data, which puts the secret "
                "in Git: seal it (credbridge seal, spec.sealedData), or use a <<CRED_...>> reference or spec.valueFrom",
                literal_secrets == "warn",
            )
            for field in validation.literal_secret_fields(cred_type, {k: v for k, v in data.items() if v})
        )
    if cred_type is not None:
        findings.extend((warning.message, True) for warning in lint.lint_literals(cred_type, data))
    return findings


def share_problems(body: Json) -> list[str]:
    """Problems with one CredentialShare that the API server or the operator would reject."""
    spec = body.get("spec")
    if not isinstance(spec, collections.abc.Mapping):
        return ["spec is missing: set spec.credential and spec.namespaces or spec.namespaceSelector"]
    problems = []
    credential = spec.get("credential")
    if not isinstance(credential, str) or not credential:
        problems.append("spec.credential is missing: name the Credential (in this namespace) to share")
    target_namespaces = spec.get("namespaces")
    selector = spec.get("namespaceSelector")
    if target_namespaces is not None and (
        not isinstance(target_namespaces, list)
        or not all(isinstance(entry, str) and entry for entry in target_namespaces)
    ):
        problems.append("spec.namespaces must be a list of namespace names")
    elif selector is not None and not isinstance(selector, collections.abc.Mapping):
        problems.append("spec.namespaceSelector must be a label selector (matchLabels and/or matchExpressions)")
    elif not target_namespaces and selector is None:
        problems.append("no target namespaces: set spec.namespaces and/or spec.namespaceSelector")
    return problems


def binding_problems(
    body: Json, namespace: str, credentials: collections.abc.Mapping[tuple[str, str], Json], types: registry.Registry
) -> list[str]:
    """Problems with one CredentialBinding that the webhook would refuse: its reference, templates and
    rollout targets, and the fields it names when its Credential is among the inputs."""
    spec = body.get("spec")
    if not isinstance(spec, collections.abc.Mapping) or not isinstance(spec.get("credential"), str):
        return ["spec.credential is missing: name a Credential (or mirror) in this namespace"]
    obj = {**body, "metadata": {**body["metadata"], "namespace": namespace}}
    decision = admission.review_binding(
        "CREATE",
        obj,
        None,
        credential=credentials.get((namespace, str(spec["credential"]))),
        types=types,
        binding_secrets="allow",
    )
    return [] if decision.allowed else [decision.message]
