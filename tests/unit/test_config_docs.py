"""docs/configuration.md is the settings model written out: the test fails when one changes without the other."""

from __future__ import annotations

from pathlib import Path

from hatchway.config_docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_reference_matches_the_settings_model() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is out of date: run `.venv/bin/python -m hatchway.config_docs > docs/configuration.md`"
    )


def test_every_setting_is_in_the_reference_with_its_variable() -> None:
    text = render()
    for key in ("worker_id", "default_limits.timeout_s", "pools", "sources", "api_tokens"):
        assert f"| `{key}` |" in text
    assert "`HATCHWAY_DEFAULT_LIMITS__TIMEOUT_S`" in text
    assert "/root/" not in text and "the host name" in text, "machine-dependent defaults are said, not computed"


def test_every_setting_says_what_it_means() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    unexplained = [row.split(" | ")[0] for row in rows if row.rstrip().endswith("|  |")]
    assert rows and not unexplained, f"settings without a description: {unexplained}"
