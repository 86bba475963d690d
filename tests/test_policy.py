"""Rule packs: every mistake is refused with file, line and a sentence; good packs load."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner

from retention.cli import main
from retention.policy import load_catalog, load_file

ROOT = Path(__file__).resolve().parent.parent
BAD = "tests/packs/bad"

# file -> the exact line a person reads (hand-checked against each file)
MISTAKES = {
    "typo_key.yaml": "12: unknown key 'perod' in datasets.invoices.keep[0]; did you mean 'period'?",
    "period_words.yaml": "12: datasets.invoices.keep[0].period: 'P3 years' is not an ISO 8601 "
    "duration such as P3Y, P13M or P8D",
    "negative_period.yaml": "12: datasets.invoices.keep[0].period: '-P3Y' is not an ISO 8601 duration "
    "such as P3Y, P13M or P8D (periods cannot be negative)",
    "time_component_period.yaml": "12: datasets.invoices.keep[0].period: 'PT12H' is not an ISO 8601 "
    "duration such as P3Y, P13M or P8D (time components are not allowed; use days)",
    "unknown_action.yaml": "15: unknown value 'shred' for datasets.invoices.lifecycle[0].action; "
    "valid: deactivate, archive, anonymise, delete, drop_partition",
    "archive_without_columns.yaml": "14: datasets.customers.lifecycle[0]: action 'archive' needs "
    "'columns', the minimised payload to keep",
    "archive_without_then.yaml": "14: datasets.customers.lifecycle[0]: action 'archive' needs 'then': "
    "delete or anonymise the source row",
    "states_backwards.yaml": "16: datasets.customers.lifecycle[1].to: state 'inactive' cannot come "
    "after 'purged'; states go active -> inactive -> archived -> purged",
    "duplicate_state.yaml": "17: datasets.customers.lifecycle[1].to: state 'inactive' appears twice in the lifecycle",
    "follows_missing_dataset.yaml": "23: dataset 'browsing' follows 'clients', which is not a dataset "
    "of this pack; valid: customers",
    "duplicate_dataset.yaml": "16: duplicate dataset 'invoices' in datasets",
    "unknown_clock_type.yaml": "11: unknown value 'datetime' for datasets.invoices.keep[0].clock.type; "
    "valid: timestamptz, timestamp, date, epoch, epoch_text",
    "bad_timezone.yaml": "4: timezone: unknown timezone 'Europe/Pariss'; use an IANA name such as Europe/Paris or UTC",
    "missing_basis.yaml": "13: datasets.invoices.lifecycle[0]: state 'purged' has no legal basis; "
    "add 'basis' to the step or the dataset",
    "aggregate_without_table.yaml": "11: datasets.customers.keep[0].clock: an aggregate clock needs "
    "table and on (the related table's key column)",
    "deactivate_without_set.yaml": "14: datasets.customers.lifecycle[0]: action 'deactivate' needs "
    "'set' with at least one column",
    "unknown_strategy.yaml": "17: unknown value 'hsh' for datasets.customers.lifecycle[0].mask.email."
    "strategy; valid: null, fixed, hash, redact, truncate_date, generalise",
    "on_erasure_state_not_used.yaml": "14: datasets.payment_tokens.on_erasure: on_erasure state "
    "'archived' is not in this dataset's lifecycle (purged)",
    "yaml_syntax.yaml": "13: invalid YAML: expected ',' or ']', but got ':'",
    "effective_from_not_a_date.yaml": "3: effective_from: 'next monday' is not a date (YYYY-MM-DD)",
    "same_table_twice.yaml": "17: table 'invoices' is already the table of dataset 'invoices': datasets sharing "
    "a table each need a 'where' saying which rows are theirs (a row belongs to at most one dataset); without "
    "one: invoices, old_invoices",
    "empty.yaml": "1: the file is empty",
    "timezone_on_date_clock.yaml": "11: datasets.invoices.keep[0].clock: timezone applies only to "
    "naive 'timestamp' clocks, not to 'date'",
    "unknown_country.yaml": "5: country: unknown country 'FX'; use an ISO 3166-1 alpha-2 code with public "
    "holidays in the holidays package, such as FR, NL, BE, LU or DE",
    "unknown_subdivision.yaml": "6: subdivision: unknown subdivision '67' of FR; valid: 57, 6AE, 971, 972, 973, "
    "974, 976, BL, MF, NC, PF, PM, TF, WF, Zone A, Zone B, Zone C",
    "subdivision_without_country.yaml": "5: subdivision: a subdivision needs 'country' (e.g. country: FR, "
    "subdivision: '57')",
}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_every_bad_file_is_covered() -> None:
    """Each YAML fixture under tests/packs/bad has its expected message here."""
    assert sorted(p.name for p in (ROOT / BAD).glob("*.yaml")) == sorted(MISTAKES)


@pytest.mark.parametrize("name", sorted(MISTAKES))
def test_mistake_gives_file_line_sentence_and_exit_2(name: str) -> None:
    """`retention check` names file and line, says what is wrong, exits 2, shows no traceback."""
    result = CliRunner().invoke(main, ["check", "--rules", f"{BAD}/{name}"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"error: {BAD}/{name}:{MISTAKES[name]}"]
    assert "Traceback" not in result.output


def test_reference_packs_pass_check() -> None:
    """Both reference packs load, together and on their own."""
    runner = CliRunner()
    assert runner.invoke(main, ["check", "--rules", "rules/"]).exit_code == 0
    for name in ("rules/marketplace.yaml", "rules/nl-shop.yaml"):
        result = runner.invoke(main, ["check", "--rules", name])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"ok: {name}: pack ")


def test_folder_selects_the_version_in_force(tmp_path: Path) -> None:
    """With two versions of a pack, the as-of date picks the one whose effective_from last passed."""
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    (tmp_path / "v1.yaml").write_text(text, encoding="utf-8")
    later = text.replace("effective_from: 2026-01-01", "effective_from: 2027-03-01").replace(
        'version: "2026.1"', 'version: "2027.1"'
    )
    (tmp_path / "v2.yaml").write_text(later, encoding="utf-8")
    catalog = load_catalog(tmp_path)
    assert catalog.in_force(dt.date(2026, 6, 1)).pack.version == "2026.1"
    assert catalog.in_force(dt.date(2027, 2, 28)).pack.version == "2026.1"
    assert catalog.in_force(dt.date(2027, 3, 1)).pack.version == "2027.1"
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "--rules",
            str(tmp_path),
            "--as-of",
            "2025-01-01",
            "--db",
            f"sqlite:///{tmp_path / 'x.sqlite'}",
        ],
    )
    assert result.exit_code == 2
    assert "is not in force on 2025-01-01; its first version starts 2026-01-01" in result.output


def test_digest_ignores_layout_but_not_content(tmp_path: Path) -> None:
    """Comments and whitespace leave the digest unchanged; a changed period changes it."""
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    original = load_file(ROOT / "rules" / "marketplace.yaml").digest
    (tmp_path / "a.yaml").write_text("# reformatted\n" + text.replace("key: id", "key:   id"), encoding="utf-8")
    assert load_file(tmp_path / "a.yaml").digest == original
    (tmp_path / "b.yaml").write_text(text.replace("period: P13M", "period: P12M"), encoding="utf-8")
    assert load_file(tmp_path / "b.yaml").digest != original


def test_reference_packs_by_name_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`builtin:NAME` finds a shipped pack whatever the current folder; a wrong name lists the valid ones."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["check", "--rules", "builtin:nl-shop"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ") and ": pack nl-shop 2026.1 " in result.output
    assert runner.invoke(main, ["check", "--rules", "builtin:"]).output.count("ok: ") == 4
    wrong = runner.invoke(main, ["check", "--rules", "builtin:marketplac"])
    assert wrong.exit_code == 2
    assert wrong.output == (
        "error: builtin:marketplac: no reference pack 'marketplac'; valid: builtin:marketplace, builtin:nl-shop, "
        "builtin:woocommerce-nl, builtin:woocommerce-nl-posts\n"
    )
    missing = runner.invoke(main, ["check", "--rules", "rules/marketplace.yaml"])
    assert missing.output == (
        "error: rules/marketplace.yaml: no such file or folder "
        "(reference packs: builtin:marketplace, builtin:nl-shop, builtin:woocommerce-nl, "
        "builtin:woocommerce-nl-posts)\n"
    )


def test_hidden_folders_are_not_read(tmp_path: Path) -> None:
    """A ConfigMap volume's hidden copy (..2026_11_26_02_00/) is not a second version of each pack."""
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    hidden = tmp_path / "..2026_11_26_02_00_00.123"
    hidden.mkdir()
    (hidden / "marketplace.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "..data").symlink_to(hidden.name)
    (tmp_path / "marketplace.yaml").symlink_to(Path("..data") / "marketplace.yaml")
    catalog = load_catalog(tmp_path)
    assert [p.source.name for p in catalog.packs] == ["marketplace.yaml"]


def test_a_pack_without_country_keeps_its_digest(tmp_path: Path) -> None:
    """Adding the optional country key to the model left the digest of packs that omit it unchanged."""
    text = (ROOT / "rules" / "marketplace.yaml").read_text(encoding="utf-8")
    without = tmp_path / "without.yaml"
    without.write_text("\n".join(line for line in text.splitlines() if not line.startswith("country:")))
    # The reference pack's digest before country existed (retention 0.1.0 as of 2026-11-26).
    before = "6539305447b2f5c755dc72f8c0baa8ec18e9e0ca6ea4ee6719b500cd4ed60900"
    assert load_file(without).digest == before
    assert load_file(ROOT / "rules" / "marketplace.yaml").digest != before
