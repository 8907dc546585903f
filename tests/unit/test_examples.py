"""The manifests in examples/ (used by the README, `make demo` and the e2e tier) pass `credbridge validate`,
and the demo gives the operator every variable they reference except the one meant to be missing."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from credbridge.cli import dev, main
from credbridge.core import envrefs, release

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_examples_validate_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main.main(["validate", "-f", str(EXAMPLES)]) == 0
    assert "0 problems" in capsys.readouterr().out


def test_demo_environment_covers_every_reference_but_the_deliberate_failure() -> None:
    referenced = set()
    for path in EXAMPLES.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "Credential":
                for value in (document["spec"].get("data") or {}).values():
                    referenced.update(envrefs.references(value))
    assert referenced - set(dev.DEMO_ENV) == {"CRED_DEMO_ANTHROPIC_KEY"}


def test_the_demo_grants_the_variables_its_bindings_render_to_their_namespace() -> None:
    documents = [doc for path in EXAMPLES.glob("*.yaml") for doc in yaml.safe_load_all(path.read_text()) if doc]
    credentials = {
        (doc["metadata"]["namespace"], doc["metadata"]["name"]): doc for doc in documents if doc["kind"] == "Credential"
    }
    bindings = [doc for doc in documents if doc["kind"] == "CredentialBinding"]
    assert bindings, "examples/ should show CredentialBindings"
    policy = envrefs.parse_policy(["CRED_*"], list(dev.DEMO_ENV_POLICY))
    for binding in bindings:
        namespace = binding["metadata"]["namespace"]
        credential = credentials[(namespace, binding["spec"]["credential"])]
        data = credential["spec"].get("data") or {}
        assert release.env_denial(data, namespace, policy, output="a binding") is None, binding["metadata"]


def test_the_sealing_example_seals_its_password_and_keeps_the_rest_readable(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from credbridge.core import sealing

    private_key = bytes(range(32))
    certificate = tmp_path / "sealing.pem"
    certificate.write_text(sealing.public_key_pem(sealing.public_key_of(private_key)))
    output = tmp_path / "sealed.yaml"
    (example,) = sorted(dev.SEALING_EXAMPLES_DIR.glob("*.yaml"))
    assert main.main(["seal", "--cert", str(certificate), "-f", str(example), "-o", str(output)]) == 0
    (sealed,) = list(yaml.safe_load_all(output.read_text()))
    (plain,) = list(yaml.safe_load_all(example.read_text()))
    (field,) = sealed["spec"]["sealedData"]
    assert field not in sealed["spec"]["data"] and len(sealed["spec"]["data"]) == len(plain["spec"]["data"]) - 1
    key_id = sealing.key_id_for(sealing.public_key_of(private_key))
    assert (
        sealing.open_value(sealed["spec"]["sealedData"][field], {key_id: private_key}) == plain["spec"]["data"][field]
    )
    assert main.main(["validate", "-f", str(output)]) == 0
    assert "0 problems" in capsys.readouterr().out
