"""Pack clauses that could never take effect are refused where they stand (docs/rules.md, 'Clauses that take effect').

Each case writes one clause into an otherwise valid pack and runs ``retention
check`` on it: exit 2 and one line, the file, the clause's line and why. The
accepted cases next to them show where each refusal stops: the same clause
written so that it does something passes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from retention.cli import main
from retention.policy import load_file, validate_pack

BASE = """\
pack: effect
version: "1"
effective_from: 2026-01-01
timezone: Europe/Paris
datasets:
  customers:
    table: customers
    key: id
    subject_key: id
    basis: policy
    keep:
      - clock: {column: last_activity_at, type: timestamp}
        period: P3Y
    on_erasure: archived
    lifecycle:
      - to: inactive
        action: deactivate
        set: {is_active: false}
      - to: archived
        action: archive
        columns: [id, email]
        then: anonymise
        mask: {email: hash, name: null}
      - to: purged
        after: P5Y
  events:
    table: events
    key: id
    subject_key: customer_id
    basis: policy
    follows: {dataset: customers, on: {inactive: purged}}
    lifecycle:
      - to: purged
        action: delete
"""

FOLLOWER = """\
    follows: {dataset: customers, on: {inactive: purged}}
    lifecycle:
      - to: purged
        action: delete
"""

# (id, text replaced in BASE, replacement, line of the error, what the sentence says[, more text, replacement])
REFUSED: list[tuple[Any, ...]] = [
    ("octal_in_where", "    follows:", "    where: {postcode: 0777}\n    follows:", 31, "0777 is a number in YAML 1.1"),
    ("base_60_in_where", "    follows:", "    where: {slot: 12:30}\n    follows:", 31, "12:30 is a number in YAML 1.1"),
    ("binary_in_where", "    follows:", "    where: {flags: 0b101}\n    follows:", 31, "0b101 is a number in YAML 1.1"),
    (
        "octal_with_underscore",
        "    follows:",
        "    where: {code: 0_777}\n    follows:",
        31,
        "0_777 is a number in YAML 1.1",
    ),
    (
        "base_60_float",
        "    follows:",
        "    where: {slot: 12:30.5}\n    follows:",
        31,
        "12:30.5 is a number in YAML 1.1",
    ),
    ("octal_in_set", "{is_active: false}", "{is_active: false, zip: 0123}", 18, "quote it if it is text ('0123')"),
    (
        "octal_subdivision",
        "timezone: Europe/Paris\n",
        "timezone: Europe/Paris\ncountry: FR\nsubdivision: 057\n",
        6,
        "057 is a number in YAML 1.1",
    ),
    ("mask_hash_chars", "email: hash,", "email: {strategy: hash, chars: 3},", 23, "option 'chars' does not apply"),
    (
        "mask_fixed_keep",
        "name: null}",
        "name: {strategy: fixed, value: x, keep: first}}",
        23,
        "option 'keep' does not apply to strategy 'fixed'",
    ),
    (
        "mask_redact_domain_chars",
        "email: hash,",
        "email: {strategy: redact, keep: domain, chars: 3},",
        23,
        "option 'chars' does not apply to strategy 'redact'",
    ),
    (
        "mask_generalise_to",
        "name: null}",
        "name: {strategy: generalise, chars: 2, to: month}}",
        23,
        "option 'to' does not apply",
    ),
    (
        "mask_null_value",
        "name: null}",
        "name: {strategy: null, value: x}}",
        23,
        "option 'value' does not apply to strategy 'null' (its options: none)",
    ),
    (
        "mask_truncate_value",
        "name: null}",
        "name: {strategy: truncate_date, to: year, value: x}}",
        23,
        "option 'value' does not apply",
    ),
    ("mask_the_key", "name: null}", "name: null, id: hash}", 23, "mask.id: id is the dataset's key"),
    ("set_the_key", "{is_active: false}", "{is_active: false, id: 0}", 18, "set.id: id is the dataset's key"),
    ("archive_column_twice", "columns: [id, email]", "columns: [id, email, email]", 21, "a column is named twice"),
    (
        "review_without_purge",
        FOLLOWER,
        "    review: true\n    follows: {dataset: customers, on: {inactive: inactive}}\n    lifecycle:\n"
        "      - to: inactive\n",
        31,
        "review: review holds back purges for approval, and the lifecycle has no step to purged",
    ),
    ("partitioned_without_drop", "    follows:", "    partitioned: true\n    follows:", 31, "partitioned: partitioned"),
    (
        "first_after_without_keep",
        "        action: delete\n",
        "        after: P1Y\n        action: delete\n",
        34,
        "lifecycle[0].after: the first step's 'after' runs from the end of the keep periods, and the dataset has none",
    ),
    (
        "follows_later_state_same_target",
        "on: {inactive: purged}}",
        "on: {inactive: purged, archived: purged}}",
        31,
        "follows.on.archived: the leader enters 'inactive' before 'archived'",
    ),
    (
        "follows_later_state_earlier_target",
        FOLLOWER,
        "    follows: {dataset: customers, on: {inactive: purged, archived: inactive}}\n    lifecycle:\n"
        "      - to: inactive\n      - to: purged\n        action: delete\n",
        31,
        "mapping 'archived' to 'inactive' never moves a record",
    ),
    (
        "keep_twice",
        "        period: P3Y\n",
        "        period: P3Y\n      - clock: {column: last_activity_at, type: timestamp}\n        period: P3Y\n",
        14,
        "keep[1]: keep[0] is the same rule (clock, period, anchor and basis)",
    ),
    (
        "year_end_without_anchor",
        "timezone: Europe/Paris\n",
        'timezone: Europe/Paris\nfinancial_year_end: "03-31"\n',
        5,
        "financial_year_end: no keep rule has anchor: financial_year_end",
    ),
    (
        "where_bounds_cross",
        "    follows:",
        "    where: {total: {gt: 10, lt: 5}}\n    follows:",
        31,
        "no value of total is gt 10 and lt 5",
    ),
    (
        "where_bounds_touch",
        "    follows:",
        "    where: {total: {ge: 5, lt: 5}}\n    follows:",
        31,
        "no value of total is ge 5 and lt 5",
    ),
    (
        "where_dates_cross",
        "    follows:",
        "    where: {created: {ge: 2025-01-01, le: 2024-01-01}}\n    follows:",
        31,
        "no value of created is ge 2025-01-01 and le 2024-01-01",
    ),
]

ACCEPTED = [
    ("underscore_in_where", "    follows:", "    where: {code: 1_000}\n    follows:"),  # read as the 1000 written
    ("underscore_float", "    follows:", "    where: {total: 1_000.5}\n    follows:"),
    ("hex_in_where", "    follows:", "    where: {flags: 0x1F}\n    follows:"),
    ("quoted_octal", "{is_active: false}", "{is_active: false, zip: '0123'}"),
    ("redact_first_chars", "email: hash,", "email: {strategy: redact, keep: first, chars: 3},"),
    ("null_written_long", "name: null}", "name: {strategy: null}}"),
    ("fixed_null_value", "name: null}", "name: {strategy: fixed, value: null}}"),
    ("review_with_purge", "    follows:", "    review: true\n    follows:"),
    ("first_after_with_keep", "      - to: inactive\n", "      - to: inactive\n        after: P1M\n"),
    (
        "follows_further",
        FOLLOWER,
        "    follows: {dataset: customers, on: {inactive: inactive, archived: purged}}\n    lifecycle:\n"
        "      - to: inactive\n      - to: purged\n        action: delete\n",
    ),
    (
        "keep_longer_other_clock",
        "        period: P3Y\n",
        "        period: P3Y\n      - clock: {column: created_at, type: timestamp}\n        period: P1Y\n",
    ),
    (
        "keep_same_clock_other_anchor",
        "        period: P3Y\n",
        "        period: P3Y\n      - clock: {column: last_activity_at, type: timestamp}\n        period: P1Y\n"
        "        anchor: financial_year_end\n",
    ),
    (
        "keep_months_against_days",  # P1M against P30D: neither is always the longer
        "        period: P3Y\n",
        "        period: P1M\n      - clock: {column: last_activity_at, type: timestamp}\n        period: P30D\n",
    ),
    ("year_end_default_written", "timezone: Europe/Paris\n", 'timezone: Europe/Paris\nfinancial_year_end: "12-31"\n'),
    (
        "no_on_erasure_dumped",  # its dump carries the erasure defaults, which are accepted
        "    on_erasure: archived\n",
        "    on_erasure: null\n",
    ),
    ("where_bounds_equal", "    follows:", "    where: {total: {ge: 5, le: 5}}\n    follows:"),
    ("where_text_bounds", "    follows:", "    where: {code: {gt: b, lt: a}}\n    follows:"),  # the collation decides
]


def _check(tmp_path: Path, old: str, new: str, *more: str) -> tuple[int, list[str], Path]:
    text = BASE
    replacements = (old, new, *more)
    for at in range(0, len(replacements), 2):
        assert replacements[at] in text, replacements[at]
        text = text.replace(replacements[at], replacements[at + 1], 1)
    path = tmp_path / "pack.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--rules", str(path)])
    return result.exit_code, result.output.splitlines(), path


@pytest.mark.parametrize(
    ("old", "new", "line", "sentence", "more"), [(*c[1:5], c[5:]) for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_a_clause_that_cannot_take_effect_is_refused_at_its_line(
    tmp_path: Path, old: str, new: str, line: int, sentence: str, more: tuple[str, ...]
) -> None:
    """One line naming the file and the clause's line; exit 2. ``more``: further replacements."""
    code, output, path = _check(tmp_path, old, new, *more)
    assert code == 2, output
    assert len(output) == 1, output
    assert output[0].startswith(f"error: {path}:{line}: "), output
    assert sentence in output[0], output


@pytest.mark.parametrize(("old", "new"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED])
def test_the_same_clause_taking_effect_is_accepted(tmp_path: Path, old: str, new: str) -> None:
    """Accepted, and so is its dump (which writes every key, defaults and nulls included)."""
    code, output, path = _check(tmp_path, old, new)
    assert code == 0, output
    dumped = load_file(path).pack.model_dump(mode="json", by_alias=True)
    assert validate_pack(dumped, path, "").pack == load_file(path).pack


def test_the_base_pack_is_accepted(tmp_path: Path) -> None:
    assert _check(tmp_path, "pack: effect", "pack: effect")[0] == 0


# Clauses that take effect, though likely not the one meant: check warns and passes.
WARNED = [
    (
        "archive_purged_the_same_day",
        "        after: P5Y\n",
        "        after: P0D\n",
        24,
        "datasets.customers.lifecycle[2]: the archive payload is purged the day it is written",
    ),
    (
        "erasure_into_a_recorded_state",
        "    on_erasure: archived\n    lifecycle:\n      - to: inactive\n        action: deactivate\n"
        "        set: {is_active: false}\n",
        "    on_erasure: inactive\n    lifecycle:\n      - to: inactive\n",
        14,
        "datasets.customers.on_erasure: an erasure request takes records to 'inactive', whose step has no action",
    ),
    (
        "keep_shorter_on_same_clock",  # each rule documents its own basis, which explain reports
        "        period: P3Y\n",
        "        period: P3Y\n        basis: accounting\n      - clock: {column: last_activity_at, type: timestamp}\n"
        "        period: P1Y\n        basis: tax\n",
        15,
        "keep[1]: keep[0] runs from the same clock for P3Y, so this rule's P1Y never decides",
    ),
    (
        "keep_same_period_other_basis",
        "        period: P3Y\n",
        "        period: P3Y\n      - clock: {column: last_activity_at, type: timestamp}\n        period: P3Y\n"
        "        basis: tax\n",
        14,
        "keep[1]: keep[0] runs from the same clock for P3Y, so this rule's P3Y never decides",
    ),
    (
        "country_without_on_erasure",  # open requests filed under an earlier version still read it
        "    on_erasure: archived\n    lifecycle:",
        "    lifecycle:",
        5,
        "country: no dataset has on_erasure, so no new erasure request can be filed under this version",
        "timezone: Europe/Paris\n",
        "timezone: Europe/Paris\ncountry: FR\n",
    ),
    (
        "erasure_without_on_erasure",
        "    on_erasure: archived\n    lifecycle:",
        "    lifecycle:",
        5,
        "erasure: no dataset has on_erasure, so no new erasure request can be filed under this version",
        "timezone: Europe/Paris\n",
        "timezone: Europe/Paris\nerasure: {respond_within: P2M}\n",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "sentence", "more"), [(*c[1:5], c[5:]) for c in WARNED], ids=[c[0] for c in WARNED]
)
def test_a_likely_mistake_is_a_warning_that_passes(
    tmp_path: Path, old: str, new: str, line: int, sentence: str, more: tuple[str, ...]
) -> None:
    """Exit 0 with the warning located; json and csv carry it too."""
    code, output, path = _check(tmp_path, old, new, *more)
    assert code == 0, output
    assert output[1:] == [f"warning: {path}:{line}: {output[1].split(': ', 2)[2]}"], output
    assert sentence in output[1]
    as_json = CliRunner().invoke(main, ["check", "--rules", str(path), "--format", "json"])
    assert json.loads(as_json.output)["warnings"] == output[1:]
    as_csv = CliRunner().invoke(main, ["check", "--rules", str(path), "--format", "csv"])
    assert as_csv.output.splitlines()[1].startswith(f'warning,,,,"{path}:{line}: ')


def test_the_base_pack_has_no_warning(tmp_path: Path) -> None:
    code, output, _ = _check(tmp_path, "pack: effect", "pack: effect")
    assert (code, len(output)) == (0, 1), output


def test_a_version_without_on_erasure_keeps_the_erasure_terms_of_open_requests(tmp_path: Path) -> None:
    """v2 stops new requests, but the requests filed under v1 read v2's extension and holidays: a warning only."""
    header = "timezone: Europe/Paris\ncountry: FR\nerasure: {extension: P1M}\n"
    folder = tmp_path / "versions"
    folder.mkdir()
    (folder / "v1.yaml").write_text(BASE.replace("timezone: Europe/Paris\n", header), encoding="utf-8")
    v2 = BASE.replace('version: "1"\neffective_from: 2026-01-01', 'version: "2"\neffective_from: 2026-06-01')
    v2 = v2.replace("timezone: Europe/Paris\n", header).replace("    on_erasure: archived\n", "")
    (folder / "v2.yaml").write_text(v2, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--rules", str(folder)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    v2_at = f"{folder / 'v2.yaml'}"
    expected = [[f"{v2_at}:5", "country"], [f"{v2_at}:6", "erasure"]]
    assert [w.split(": ", 3)[1:3] for w in warnings] == expected, result.output


def test_the_readme_short_example_loads() -> None:
    """The pack README.md shows as 'A short example' is whole, so it must pass check as written."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    block = readme.split("A short example:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    loaded = validate_pack(yaml.safe_load(block), Path("README.md"), block)
    assert loaded.pack.pack == "marketplace"
