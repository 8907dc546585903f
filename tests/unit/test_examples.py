"""The manifests in examples/ (used by the README, `make demo` and the e2e tier) pass `credbridge validate`,
and the demo gives the operator every variable they reference except the one meant to be missing."""

from __future__ import annotations

import pathlib

import pytest
import yaml

from credbridge.cli import dev, main
from credbridge.core import envrefs

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
