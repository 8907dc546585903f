"""State metrics: what a scrape shows about credentials and shares, computed from the operator's view."""

from __future__ import annotations

import prometheus_client

from credbridge.operator import metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(collector: metrics.StateCollector | metrics.VerificationCollector) -> Samples:
    """Every sample of one collect(), keyed by metric name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in collector.collect()
        for sample in family.samples
    }


def credentials(samples: Samples) -> dict[tuple[str, str, str], float]:
    return {
        (labels["ready"], labels["type"], labels["key_id"]): value
        for (name, label_items), value in samples.items()
        if name == "credbridge_credentials"
        for labels in [dict(label_items)]
    }


def shares(samples: Samples) -> dict[str, float]:
    return {
        dict(label_items)["state"]: value
        for (name, label_items), value in samples.items()
        if name == "credbridge_share_targets"
    }


def test_a_fresh_collector_exposes_both_families_empty() -> None:
    collector = metrics.StateCollector()

    families = {family.name: family for family in collector.collect()}

    assert set(families) == {"credbridge_credentials", "credbridge_share_targets"}
    assert all(family.samples == [] for family in families.values())


def test_credentials_are_counted_by_ready_type_and_key_id() -> None:
    collector = metrics.StateCollector()
    collector.set_credential(("team-a", "openai"), "True", "openAIApi", "aaaaaaaa")
    collector.set_credential(("team-b", "openai"), "True", "openAIApi", "aaaaaaaa")
    collector.set_credential(("team-a", "db"), "False", "PostgresApi", "bbbbbbbb")

    assert credentials(scrape(collector)) == {
        ("True", "openAIApi", "aaaaaaaa"): 2,
        ("False", "PostgresApi", "bbbbbbbb"): 1,
    }


def test_setting_a_credential_again_moves_it_instead_of_counting_it_twice() -> None:
    collector = metrics.StateCollector()
    collector.set_credential(("team-a", "openai"), "True", "openAIApi", "aaaaaaaa")

    collector.set_credential(("team-a", "openai"), "True", "openAIApi", "cccccccc")

    assert credentials(scrape(collector)) == {("True", "openAIApi", "cccccccc"): 1}
    assert collector.key_ids() == {"cccccccc": 1}


def test_a_forgotten_credential_disappears_from_the_counts() -> None:
    collector = metrics.StateCollector()
    collector.set_credential(("team-a", "openai"), "True", "openAIApi", "aaaaaaaa")
    collector.set_credential(("team-a", "db"), "True", "PostgresApi", "aaaaaaaa")

    collector.forget_credential(("team-a", "openai"))
    collector.forget_credential(("team-a", "never-seen"))

    assert credentials(scrape(collector)) == {("True", "PostgresApi", "aaaaaaaa"): 1}
    assert collector.key_ids() == {"aaaaaaaa": 1}


def test_key_ids_count_credentials_per_key_for_reencryption_progress() -> None:
    collector = metrics.StateCollector()
    collector.set_credential(("team-a", "one"), "True", "openAIApi", "aaaaaaaa")
    collector.set_credential(("team-a", "two"), "False", "openAIApi", "aaaaaaaa")
    collector.set_credential(("team-b", "one"), "True", "openAIApi", "bbbbbbbb")

    assert collector.key_ids() == {"aaaaaaaa": 2, "bbbbbbbb": 1}


def test_share_targets_come_from_the_share_source_at_scrape_time() -> None:
    collector = metrics.StateCollector()
    counts = {"Shared": 3, "NotAccepted": 1}
    collector.set_share_source(lambda: dict(counts))

    first = shares(scrape(collector))
    counts["Failed"] = 2
    second = shares(scrape(collector))

    assert first == {"Shared": 3, "NotAccepted": 1}
    assert second == {"Shared": 3, "NotAccepted": 1, "Failed": 2}


def test_the_module_registry_exposes_the_state_and_counters_in_text_format() -> None:
    key = ("test-metrics-ns", "test-metrics-credential")
    metrics.STATE.set_credential(key, "True", "testMetricsType", "dddddddd")
    try:
        text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    finally:
        metrics.STATE.forget_credential(key)

    assert 'credbridge_credentials{key_id="dddddddd",ready="True",type="testMetricsType"} 1.0' in text
    assert "# TYPE credbridge_reconciles_total counter" in text
    assert "# TYPE credbridge_reconcile_duration_seconds histogram" in text
    assert "# TYPE credbridge_reencryption_pending gauge" in text
    after = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert "testMetricsType" not in after


def test_verification_gauges_follow_cert_manager_s_shape_with_names_never_values() -> None:
    collector = metrics.VerificationCollector()
    collector.set_credential(
        ("team-a", "gh"),
        "githubApi",
        outcome="Valid",
        expires_at=1_900_000_000.0,
        last_verified=1_800_000_000.0,
        last_rotated=1_700_000_000.0,
    )
    collector.set_credential(
        ("team-a", "openai"),
        "openAIApi",
        outcome="Invalid",
        expires_at=None,
        last_verified=1_800_000_100.0,
        last_rotated=None,
    )
    samples = scrape(collector)
    gh = (("name", "gh"), ("namespace", "team-a"), ("type", "githubApi"))
    assert samples[("credbridge_credential_expiration_timestamp_seconds", gh)] == 1_900_000_000.0
    assert samples[("credbridge_credential_last_rotated_timestamp_seconds", gh)] == 1_700_000_000.0
    openai = (("name", "openai"), ("namespace", "team-a"), ("outcome", "Invalid"), ("type", "openAIApi"))
    assert samples[("credbridge_credential_verified", openai)] == 1
    assert not [
        key for key in samples if key[0].startswith("credbridge_credential_expiration") and ("name", "openai") in key[1]
    ]
    collector.forget_credential(("team-a", "gh"))
    assert not [key for key in scrape(collector) if ("name", "gh") in key[1]]


def test_verification_gauges_are_served_by_the_operator_registry() -> None:
    text = prometheus_client.generate_latest(metrics.REGISTRY).decode()
    assert "credbridge_credential_verified" in text
