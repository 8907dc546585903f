"""In-process benchmarks of the pure core: the `cb1` envelope, sealed values and credential validation.

These run without a cluster, in this process. Each subject is timed in rounds interleaved with
its baseline (baseline, subject, baseline, subject, ...), so a CPU frequency change or a noisy
neighbour hits both alike; the row reports the median round.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers import aead

from benchmarks import BenchmarkError, Options, Record, Result, progress
from credbridge.core import envelope, registry, sealing, validation

PLAINTEXT_BYTES = 1024
"""Size of the plaintext sealed by the envelope benchmark."""

_KEY_ID = "0a1b2c3d"


def _rounds(options: Options) -> tuple[int, float]:
    """Number of rounds and seconds per round for each subject."""
    return (3, 0.1) if options.quick else (7, 0.4)


def _rate(operation: Callable[[], object], seconds: float) -> float:
    """Runs `operation` in batches for about `seconds` and returns operations per second."""
    batch, done = 16, 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < seconds:
        for _ in range(batch):
            operation()
        done += batch
        elapsed = time.perf_counter() - started
    return done / elapsed


def compare(
    subject: Callable[[], object], baseline: Callable[[], object], options: Options
) -> tuple[float, float, dict[str, Any]]:
    """Median ops/s of `subject` and `baseline`, timed in interleaved rounds, and the raw rounds."""
    rounds, seconds = _rounds(options)
    subject(), baseline()  # warm up caches and lazy imports outside the timed rounds
    subject_rates: list[float] = []
    baseline_rates: list[float] = []
    for _ in range(rounds):
        baseline_rates.append(_rate(baseline, seconds))
        subject_rates.append(_rate(subject, seconds))
    details = {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "subject_ops_per_s": [round(rate, 1) for rate in subject_rates],
        "baseline_ops_per_s": [round(rate, 1) for rate in baseline_rates],
    }
    return statistics.median(subject_rates), statistics.median(baseline_rates), details


def bench_envelope(options: Options, record: Record) -> None:
    """seal + open_envelope of 1 KiB vs bare AESGCM encrypt + decrypt of the same bytes and AAD."""
    progress("envelope: timing cb1 seal+open against bare AESGCM encrypt+decrypt")
    key = os.urandom(envelope.KEY_BYTES)
    keys = {_KEY_ID: key}
    plaintext = os.urandom(PLAINTEXT_BYTES)
    aad = envelope.associated_data("team-a", "production-openai", "6f1c0e2a-7d4b-4a35-9c1e-0d8f3b2a9e71", "openAIApi")
    cipher = aead.AESGCM(key)

    def seal_and_open() -> bytes:
        token = envelope.seal(plaintext, _KEY_ID, key, aad, os.urandom)
        return envelope.open_envelope(token, keys, aad)

    def bare_aesgcm() -> bytes:
        nonce = os.urandom(envelope.NONCE_BYTES)
        return cipher.decrypt(nonce, cipher.encrypt(nonce, plaintext, aad), aad)

    if seal_and_open() != plaintext or bare_aesgcm() != plaintext:
        raise BenchmarkError("envelope: a round trip did not return the plaintext")
    value, baseline, details = compare(seal_and_open, bare_aesgcm, options)
    record(
        Result(
            benchmark="envelope",
            name="envelope seal+open (1 KiB)",
            value=value,
            unit="ops/s",
            baseline_name="bare AESGCM encrypt+decrypt",
            baseline_value=baseline,
            note=(
                "ratio < 1 is the cost of the cb1 format (key checks, AESGCM per call, base64url, "
                "token parsing) over the bare cipher with a reused AESGCM object"
            ),
            details={**details, "plaintext_bytes": PLAINTEXT_BYTES, "aad_bytes": len(aad)},
        )
    )


def bench_sealing(options: Options, record: Record) -> None:
    """Sealed values (cbs1, HPKE) against the cb1 envelope, one direction at a time.

    Seal: what `credbridge seal` does per value once the certificate is read — check the value
    against its field, seal it to the public key — against a cb1 seal of the same bytes. Open: what
    the reconciler does per sealed value — judge the header (form, scope, key), open it — against a
    cb1 open. Sealing costs two X25519 operations (the ephemeral key pair, the shared secret) and
    opening one, where the envelope costs none: that is the price of sealing without the secret key.
    """
    cred_type = registry.Registry.builtin().get("openAIApi")
    if cred_type is None:
        raise BenchmarkError("sealing: built-in type openAIApi is missing")
    private_key = os.urandom(sealing.KEY_BYTES)
    public_key = sealing.public_key_of(private_key)
    private_keys = {sealing.key_id_for(public_key): private_key}
    value = "sk-" + os.urandom(PLAINTEXT_BYTES).hex()[: PLAINTEXT_BYTES - 3]
    plaintext = value.encode()
    scope = sealing.Scope("team-a", "production-openai", "openAIApiKey")
    key = os.urandom(envelope.KEY_BYTES)
    keys = {_KEY_ID: key}
    aad = envelope.associated_data("team-a", "production-openai", "6f1c0e2a-7d4b-4a35-9c1e-0d8f3b2a9e71", "openAIApi")

    def cli_seal() -> str:
        if validation.check_field_value(cred_type, "openAIApiKey", value, "the value to seal"):
            raise BenchmarkError("sealing: the benchmark value fails validation")
        return sealing.seal_value(value, public_key, scope, os.urandom)

    def envelope_seal() -> str:
        return envelope.seal(plaintext, _KEY_ID, key, aad, os.urandom)

    token = cli_seal()
    sealed_envelope = envelope_seal()

    def operator_open() -> str:
        placement = sealing.placement("openAIApiKey", token, "team-a", "production-openai", private_keys)
        if placement.verdict != "ok":
            raise BenchmarkError(f"sealing: the benchmark value is judged {placement.verdict}")
        return sealing.open_value(token, private_keys)

    def envelope_open() -> bytes:
        return envelope.open_envelope(sealed_envelope, keys, aad)

    if operator_open() != value or envelope_open() != plaintext:
        raise BenchmarkError("sealing: a round trip did not return the value")
    progress("sealing: timing credbridge seal's per-value work against a cb1 envelope seal")
    seals, seal_baseline, seal_details = compare(cli_seal, envelope_seal, options)
    record(
        Result(
            benchmark="sealing",
            name="sealed value seal, CLI path (1 KiB)",
            value=seals,
            unit="seals/s",
            baseline_name="cb1 envelope seal",
            baseline_value=seal_baseline,
            note="validation + HPKE seal (ephemeral X25519 key pair, X25519, HKDF, AES-256-GCM) vs AES-GCM alone",
            details={**seal_details, "value_bytes": len(plaintext), "token_chars": len(token)},
        )
    )
    progress("sealing: timing the reconciler's open of a sealed value against a cb1 envelope open")
    opens, open_baseline, open_details = compare(operator_open, envelope_open, options)
    record(
        Result(
            benchmark="sealing",
            name="sealed value open, operator path (1 KiB)",
            value=opens,
            unit="opens/s",
            baseline_name="cb1 envelope open",
            baseline_value=open_baseline,
            note="header check (form, scope, key) + HPKE open (one X25519, HKDF, AES-256-GCM) vs AES-GCM alone",
            details={**open_details, "value_bytes": len(plaintext)},
        )
    )


_TYPICAL: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    # type: (spec.data as written in Git, the same fields once references are resolved)
    "openAIApi": (
        {"openAIApiKey": "<<CRED_OPENAI_API_KEY>>"},
        {"openAIApiKey": "sk-proj-" + "x" * 156},
    ),
    "PostgresApi": (
        {"user": "app", "password": "<<CRED_PG_PASSWORD>>"},
        {"user": "app", "password": "s3cr3t-" + "p" * 25},
    ),
}


def bench_validation(options: Options, record: Record) -> None:
    """check_spec + finalize of typical credentials; json.dumps of the same spec as a scale reference."""
    types = registry.Registry.builtin()
    for type_name, (data, resolved) in _TYPICAL.items():
        progress(f"validation: timing check_spec+finalize of a {type_name} credential")
        cred_type = types.get(type_name)
        if cred_type is None:
            raise BenchmarkError(f"validation: built-in type {type_name!r} is missing")
        record(_validation_row(cred_type, data, resolved, options))


def _validation_row(
    cred_type: registry.CredentialTypeSpec, data: dict[str, str], resolved: dict[str, str], options: Options
) -> Result:
    spec = {"type": cred_type.name, "data": data}

    def check_and_finalize() -> list[validation.Problem]:
        problems = validation.check_spec(cred_type, cred_type.name, data, ())
        return problems + validation.finalize(cred_type, resolved)[1]

    def dump() -> str:
        return json.dumps(spec)

    problems = check_and_finalize()
    if problems:
        raise BenchmarkError(f"validation: the typical {cred_type.name} credential is invalid: {problems[0].message}")
    value, baseline, details = compare(check_and_finalize, dump, options)
    return Result(
        benchmark="validation",
        name=f"validation {cred_type.name}",
        value=value,
        unit="checks/s",
        baseline_name="json.dumps of the same spec",
        baseline_value=baseline,
        baseline_unit="dumps/s",
        note="json.dumps is only a scale reference (a cheap operation on the same dict), not a competitor",
        details={**details, "fields": sorted(resolved)},
    )
