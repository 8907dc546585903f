"""`credbridge seal`: encrypt credential values to the cluster's public key, so the whole Credential lives in Git.

A GitOps repo that holds `<<CRED_...>>` references or valueFrom Secrets still needs someone to put
the secret into the cluster by another way, a step nobody reviews. Sealed values close that gap:
anyone with the cluster's public key (fetched once, `--fetch-cert`, kept next to the manifests)
seals a value offline, and only the operator can open it. Unlike a sealed Secret, the value is
checked against its CredentialType before it is sealed — with the same messages as `credbridge
validate` — so a malformed key is refused on the laptop, not found when the application fails.

Values come from stdin or a prompt that does not echo, never from the command line (argv is
visible to every user of the machine and lands in shell history). Sealed values go to stdout;
plaintext never does.

`--reseal` moves the sealed values of manifests to the active key after a sealing key rotation
without anyone holding a private key: the operator, which opens them anyway, seals each one again
with the active key and shows the result (ciphertext only) in the Credential's
`status.resealedData`; this command copies them into the files, only where the value it replaces
is the one in the file (a SHA-256 match), and changes nothing else in them.

Exit codes: 0 done, 1 refused (a value or manifest failed validation, or a value could not be
resealed), 2 an input, the certificate or the cluster could not be read.
"""

from __future__ import annotations

import argparse
import collections.abc
import getpass
import os
import pathlib
import secrets
import ssl
import sys
import tempfile
import typing
import urllib.error
import urllib.request

import yaml

from credbridge.cli import keys, validate
from credbridge.core import envrefs, names, registry, sealing, validation

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_UNREADABLE = 2
CERT_PATH = "/v1/sealing-keys/cert.pem"
_FETCH_TIMEOUT = 10.0

Json = dict[str, typing.Any]


class SealError(Exception):
    """Sealing cannot go on; `code` is the exit code, the message names the input and the fix, never a value."""

    def __init__(self, message: str, code: int = EXIT_UNREADABLE) -> None:
        super().__init__(message)
        self.code = code


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "seal",
        help="encrypt values to the cluster's public key for spec.sealedData (safe to commit)",
        description=(
            "Seal one value (from stdin or a prompt, never the command line) for one field of one Credential, or "
            "every secret field of Credential manifests (-f), to the cluster's sealing public key. Values are checked "
            "against their CredentialType first. Sealed values work only where they were sealed for: the namespace, "
            "Credential and field (--scope strict, the default), or any Credential of the namespace "
            "(--scope namespace)."
        ),
    )
    source = parser.add_argument_group("the public key (default: read from the cluster)")
    source.add_argument("--cert", metavar="FILE", help="seal offline with this certificate (from --fetch-cert)")
    source.add_argument(
        "--fetch-cert",
        metavar="FILE",
        help="save the cluster's active sealing certificate to FILE (then seal offline with --cert FILE)",
    )
    source.add_argument(
        "--endpoint",
        metavar="URL",
        help="read the certificate from the operator's endpoint (https://HOST:PORT) instead of its ConfigMap",
    )
    source.add_argument("--ca-file", metavar="FILE", help="CA bundle that signed the endpoint's certificate")
    source.add_argument(
        "--sealing-configmap",
        default=names.DEFAULT_SEALING_CONFIGMAP,
        metavar="NAME",
        help="ConfigMap the operator publishes the keys in (default: %(default)s)",
    )
    keys.add_keyring_arguments(source)
    what = parser.add_argument_group("what to seal")
    what.add_argument("-n", "--namespace", default="default", metavar="NS", help="the Credential's namespace")
    what.add_argument("--name", metavar="NAME", help="the Credential (required for --scope strict)")
    what.add_argument("--type", dest="type_name", metavar="TYPE", help="the Credential's type, to check the value")
    what.add_argument(
        "--field",
        action="append",
        default=[],
        dest="fields",
        metavar="F",
        help="the field to seal a value for; with -f, a field to seal (repeatable; default: the password fields)",
    )
    what.add_argument("--all", action="store_true", help="with -f: seal every field given as a literal value")
    what.add_argument(
        "--scope",
        choices=["strict", "namespace"],
        default="strict",
        help="where the sealed value may be used: this namespace+Credential+field (strict, default) or the namespace",
    )
    what.add_argument(
        "--raw", action="store_true", help="keep a trailing newline of the value read from stdin (default: drop one)"
    )
    what.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        dest="paths",
        metavar="PATH",
        help="Credential manifests with plain values to seal (a file, a directory, or - for stdin); with --reseal "
        "the manifests to rewrite in place",
    )
    what.add_argument("-o", "--output", metavar="FILE", help="with -f: write the sealed manifests here, not stdout")
    what.add_argument(
        "--reseal",
        action="store_true",
        help="rewrite the sealed values in -f manifests that an older sealing key sealed, with the values the "
        "operator re-sealed to the active key (status.resealedData); needs read access to the Credentials",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    try:
        if args.fetch_cert:
            return _fetch_cert(args)
        if args.reseal:
            return _reseal(args)
        if args.paths:
            return _seal_manifests(args)
        return _seal_value(args)
    except SealError as error:
        print(f"credbridge seal: {error}", file=sys.stderr)
        return error.code


# ---- the public key ------------------------------------------------------------------------------


def _fetch_from_endpoint(url: str, ca_file: str | None) -> str:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()
    target = url.rstrip("/") + CERT_PATH
    try:
        with urllib.request.urlopen(target, timeout=_FETCH_TIMEOUT, context=context) as response:  # noqa: S310
            return str(response.read(64 * 1024).decode("utf-8"))
    except (urllib.error.URLError, OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "reason", None) or type(error).__name__
        raise SealError(f"cannot read {target}: {reason}: check --endpoint and --ca-file") from None


def _fetch_from_cluster(args: argparse.Namespace) -> str:
    from credbridge.kube import credentials

    try:
        api = credentials.connect(as_user=args.as_user)
        _, pem = credentials.read_sealing_certificate(api, args.operator_namespace, args.sealing_configmap)
    except credentials.ApiError as error:
        raise SealError(f"{error} (or seal offline with --cert FILE)") from None
    return pem


def _certificate(args: argparse.Namespace) -> tuple[bytes, str]:
    """(public key, where it came from) from --cert, the endpoint or the cluster."""
    if args.cert:
        path = pathlib.Path(args.cert)
        try:
            text, origin = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as error:
            raise SealError(f"cannot read certificate {path}: {getattr(error, 'strerror', None) or error}") from None
    elif args.endpoint:
        text, origin = _fetch_from_endpoint(args.endpoint, args.ca_file), args.endpoint
    else:
        origin = f"ConfigMap {args.operator_namespace}/{args.sealing_configmap}"
        text = _fetch_from_cluster(args)
    try:
        return sealing.parse_public_key_pem(text), origin
    except sealing.CertificateError as error:
        raise SealError(f"{origin}: {error}") from None


def _fetch_cert(args: argparse.Namespace) -> int:
    public_key, origin = _certificate(args)
    destination = pathlib.Path(args.fetch_cert)
    destination.write_text(sealing.public_key_pem(public_key), encoding="utf-8")
    print(f"saved sealing certificate {sealing.key_id_for(public_key)} from {origin} to {destination}")
    print(
        f"Seal offline with --cert {destination}. The key id is part of every value sealed with it; compare it with "
        "`kubectl get configmap -n NAMESPACE credbridge-sealing-keys` before you trust a copy.",
        file=sys.stderr,
    )
    return EXIT_OK


# ---- one value -----------------------------------------------------------------------------------


def _read_value(prompt: str, raw: bool) -> str:
    """The value from a prompt without echo (a terminal) or stdin; never from argv."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    value = sys.stdin.read()
    if not raw:
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    return value


def _types(extra: collections.abc.Iterable[collections.abc.Mapping[str, typing.Any]] = ()) -> registry.Registry:
    known = registry.Registry.builtin()
    for body in extra:
        try:
            known = known.with_custom(registry.type_from_object(body))
        except registry.TypeDefinitionError:
            continue  # `credbridge validate` reports it; sealing only needs the types it can read
    return known


def _cluster_type(args: argparse.Namespace, type_name: str) -> registry.CredentialTypeSpec | None:
    """A custom CredentialType from the cluster, when it is reachable (offline: None)."""
    from credbridge.kube import credentials

    try:
        api = credentials.connect(as_user=args.as_user)
        found = credentials.list_credential_types(api)
    except credentials.ApiError:
        return None
    return _types(found).get(type_name)


def _scope(args: argparse.Namespace, name: str | None, field: str) -> sealing.Scope:
    problem = sealing.scope_problem(args.namespace, name, field)
    if problem is not None:
        raise SealError(problem, EXIT_REFUSED)
    return sealing.Scope(args.namespace) if args.scope == "namespace" else sealing.Scope(args.namespace, name, field)


def _seal_value(args: argparse.Namespace) -> int:
    if len(args.fields) != 1 or not args.type_name or (args.scope == "strict" and not args.name):
        raise SealError(
            "to seal one value give --type TYPE and one --field F, and --name NAME for --scope strict (or -f with "
            "a Credential manifest); the value is read from stdin or a prompt",
            EXIT_REFUSED,
        )
    field = args.fields[0]
    cred_type = _types().get(args.type_name) or _cluster_type(args, args.type_name)
    if cred_type is None:
        problems = validation.check_spec(None, args.type_name, {}, ())
        raise SealError(validation.summarize(problems), EXIT_REFUSED)
    scope = _scope(args, args.name, field)
    public_key, origin = _certificate(args)
    value = _read_value(f"value of {field} for {scope.describe()} (not shown): ", args.raw)
    if not value:
        raise SealError("nothing to seal: the value is empty", EXIT_REFUSED)
    problems = validation.check_field_value(cred_type, field, value, "the value to seal")
    if problems:
        raise SealError(f"not sealed: {validation.summarize(problems)}", EXIT_REFUSED)
    token = sealing.seal_value(value, public_key, scope, secrets.token_bytes)
    print(f"{field}: {token}")
    where = (
        f"Credential {args.namespace}/{args.name}" if scope.strict else f"a Credential in namespace {args.namespace}"
    )
    print(
        f"sealed with key {sealing.key_id_for(public_key)} ({origin}) for {scope.describe()}: put the line under "
        f"spec.sealedData of {where}",
        file=sys.stderr,
    )
    return EXIT_OK


# ---- manifests -----------------------------------------------------------------------------------


def _documents(paths: collections.abc.Sequence[str]) -> tuple[list[validate.Document], list[str]]:
    report = validate.Report()
    documents = list(validate.read_documents(paths, report))
    return documents, report.unreadable


def _fields_to_seal(
    args: argparse.Namespace, cred_type: registry.CredentialTypeSpec, data: collections.abc.Mapping[str, str]
) -> tuple[list[str], list[str]]:
    """(fields to seal, problems): the named ones, every literal (--all), or the password fields given as literals."""
    literal = [field for field, value in data.items() if value and not envrefs.has_references(value)]
    if args.all:
        chosen = literal
    elif args.fields:
        chosen = list(args.fields)
    else:
        chosen = validation.literal_secret_fields(cred_type, data)
    problems = []
    for field in chosen:
        if field not in data or not data[field]:
            problems.append(f"field {field!r} has no value in spec.data to seal: give it one, or do not name it")
        elif envrefs.has_references(data[field]):
            problems.append(
                f"field {field!r} holds a <<NAME>> reference, which the operator fills in from its environment: "
                "seal the value itself, or leave the reference in spec.data"
            )
    return [field for field in chosen if field in literal], problems


def _sealed_manifest(
    args: argparse.Namespace, document: validate.Document, known: registry.Registry, public_key: bytes
) -> tuple[Json, list[str], list[str]]:
    """(the document with its chosen values sealed, the sealed fields, problems). Validation comes first:
    with a problem nothing is sealed."""
    body = document.body
    subject, namespace = validate.document_subject(document, args.namespace)
    findings = validate.credential_findings(
        body, namespace, known, policy=envrefs.EnvPolicy(allow=("*",)), literal_secrets="allow"
    )
    problems = [f"{subject}: {message}" for message, warning in findings if not warning]
    name = str((body.get("metadata") or {}).get("name") or "")
    spec = body.get("spec") or {}
    cred_type = known.get(str(spec.get("type", "")))
    if problems or cred_type is None:
        return dict(body), [], problems
    data = {str(field): str(value) for field, value in (spec.get("data") or {}).items()}
    chosen, choice_problems = _fields_to_seal(args, cred_type, data)
    if choice_problems:
        return dict(body), [], [f"{subject}: {problem}" for problem in choice_problems]
    sealed = dict(spec.get("sealedData") or {})
    for field in chosen:
        scope_problem = sealing.scope_problem(namespace, name if args.scope == "strict" else None, field)
        if scope_problem is not None:
            return dict(body), [], [f"{subject}: {scope_problem}"]
        scope = sealing.Scope(namespace) if args.scope == "namespace" else sealing.Scope(namespace, name, field)
        sealed[field] = sealing.seal_value(
            envrefs.decode_literal(data.pop(field)), public_key, scope, secrets.token_bytes
        )
    new_spec = {key: value for key, value in spec.items() if key not in ("data", "sealedData")}
    if data:
        new_spec["data"] = data
    if sealed:
        new_spec["sealedData"] = sealed
    ordered = {key: new_spec[key] for key in ("type", "displayName", "id", "data", "sealedData") if key in new_spec}
    ordered.update({key: value for key, value in new_spec.items() if key not in ordered})
    return {**body, "spec": ordered}, chosen, []


def _seal_manifests(args: argparse.Namespace) -> int:
    documents, unreadable = _documents(args.paths)
    if unreadable:
        raise SealError("; ".join(unreadable))
    known = _types(doc.body for doc in documents if doc.body.get("kind") == names.CREDENTIAL_TYPE_KIND)
    credentials = [doc for doc in documents if doc.body.get("kind") == names.CREDENTIAL_KIND]
    if not credentials:
        raise SealError("no Credential in the input: give Credential manifests with plain values in spec.data")
    public_key, origin = _certificate(args)
    output: list[Json] = []
    problems: list[str] = []
    summary: list[str] = []
    for document in documents:
        if document.body.get("kind") != names.CREDENTIAL_KIND:
            output.append(dict(document.body))
            continue
        sealed_body, fields, found = _sealed_manifest(args, document, known, public_key)
        problems.extend(f"{document.source}:{document.index}: {problem}" for problem in found)
        output.append(sealed_body)
        subject, _ = validate.document_subject(document, args.namespace)
        summary.append(f"{subject}: {'sealed ' + ', '.join(fields) if fields else 'nothing to seal'}")
    if problems:
        for line in problems:
            print(line, file=sys.stderr)
        raise SealError(f"nothing sealed: {len(problems)} problem(s) in the input", EXIT_REFUSED)
    text = yaml.safe_dump_all(output, sort_keys=False, width=1_000_000, allow_unicode=True)
    if args.output:
        _write_atomically(pathlib.Path(args.output), text)
    else:
        sys.stdout.write(text)
    for line in summary:
        print(line, file=sys.stderr)
    print(f"sealed with key {sealing.key_id_for(public_key)} ({origin})", file=sys.stderr)
    return EXIT_OK


def _write_atomically(path: pathlib.Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, encoding="utf-8", prefix=f".{path.name}."
    ) as out:
        out.write(text)
    os.chmod(out.name, mode)
    os.replace(out.name, path)


# ---- reseal --------------------------------------------------------------------------------------


def _active_key_id(args: argparse.Namespace) -> str:
    if args.cert or args.endpoint:
        return sealing.key_id_for(_certificate(args)[0])
    from credbridge.kube import credentials

    try:
        api = credentials.connect(as_user=args.as_user)
        key_id, _ = credentials.read_sealing_certificate(api, args.operator_namespace, args.sealing_configmap)
    except credentials.ApiError as error:
        raise SealError(str(error)) from None
    return key_id


def _replacement(
    token: str, field: str, credential: Json | None, active: str, subject: str
) -> tuple[str | None, str | None]:
    """(the re-sealed value, or None and why) for `token` in `field`, from the Credential as in the cluster."""
    header = sealing.read_header(token)
    if header is None:
        return None, f"{subject}: spec.sealedData.{field} is not a sealed value: seal it again with credbridge seal"
    if credential is None:
        return None, f"{subject}: not in the cluster: apply it first, or seal field {field!r} again from its value"
    entry = ((credential.get("status") or {}).get("resealedData") or {}).get(field)
    if not isinstance(entry, dict) or entry.get("from") != sealing.token_digest(token):
        return None, (
            f"{subject}: the operator has not re-sealed field {field!r} as it is in this file (status.resealedData): "
            "apply the manifest, wait for its SealedWithOldKey condition, then run --reseal again"
        )
    value = entry.get("value")
    new_header = sealing.read_header(str(value))
    if new_header is None or new_header.key_id != active or new_header.scope != header.scope:
        return None, (
            f"{subject}: status.resealedData.{field} is not sealed with the active key {active} for the same scope: "
            "wait for the operator to re-seal it, then run --reseal again"
        )
    return str(value), None


def _reseal(args: argparse.Namespace) -> int:
    if not args.paths:
        raise SealError("--reseal needs -f with the manifests (files or directories) to rewrite", EXIT_REFUSED)
    from credbridge.kube import credentials

    active = _active_key_id(args)
    report = validate.Report()
    sources = [source for source, _ in validate.read_inputs(args.paths, report)]
    if report.unreadable or "<stdin>" in sources:
        raise SealError("; ".join(report.unreadable) or "--reseal rewrites files in place: give files or directories")
    try:
        api = credentials.connect(as_user=args.as_user)
    except credentials.ApiError as error:
        raise SealError(str(error)) from None
    cluster: dict[tuple[str, str], Json | None] = {}
    problems: list[str] = []
    resealed = 0
    files = 0
    for source in sources:
        path = pathlib.Path(source)
        text = path.read_text(encoding="utf-8-sig")
        new_text = text
        documents, unreadable = _documents([source])
        problems.extend(unreadable)
        for document in documents:
            if document.body.get("kind") != names.CREDENTIAL_KIND:
                continue
            subject, namespace = validate.document_subject(document, args.namespace)
            name = str((document.body.get("metadata") or {}).get("name") or "")
            for field, token in ((document.body.get("spec") or {}).get("sealedData") or {}).items():
                header = sealing.read_header(str(token))
                if header is not None and header.key_id == active:
                    continue
                key = (namespace, name)
                if key not in cluster:
                    try:
                        cluster[key] = credentials.read_credential(api, namespace, name)
                    except credentials.ApiError as error:
                        raise SealError(str(error)) from None
                value, problem = _replacement(str(token), str(field), cluster[key], active, f"{source}: {subject}")
                if value is None:
                    problems.append(str(problem))
                elif str(token) not in new_text:
                    problems.append(
                        f"{source}: {subject}: spec.sealedData.{field} is written across lines: put it on one line, "
                        "then run --reseal again"
                    )
                else:
                    new_text = new_text.replace(str(token), value)
                    resealed += 1
        if new_text != text:
            _write_atomically(path, new_text)
            files += 1
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"re-sealed {resealed} value(s) in {files} file(s) with sealing key {active}")
    if problems:
        print(f"{len(problems)} value(s) could not be re-sealed (see above)", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_OK
