"""One as-of: parsed once at the edge into :class:`AsOf`, passed on as that, read as an instant in a timezone.

The CLI's parameter type parses with :meth:`AsOf.parse`; a Python caller may
pass text, which :meth:`AsOf.given` parses with the option's name in the
error; subprocesses and Celery tasks get :meth:`AsOf.text` and parse it back.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from retention import commands
from retention.errors import ConfigError
from retention.timing import clock
from retention.timing.clock import AsOf

RULES = Path("builtin:marketplace")  # timezone Europe/Paris


@pytest.mark.parametrize("text", ["2026-03-01", "2026-03-01T02:30", "2026-03-01T02:30:00+01:00", "2026-03-01T01:30Z"])
def test_text_is_parsed_back_to_the_same_as_of(text: str) -> None:
    """What a shard's subprocess or a fleet's task receives means what the operator typed."""
    as_of = AsOf.parse(text)
    assert AsOf.parse(as_of.text()) == as_of


def test_given_passes_a_parsed_as_of_through_and_parses_text() -> None:
    parsed = AsOf.parse("2026-03-01")
    assert AsOf.given(parsed) is parsed
    assert AsOf.given("2026-03-01") == AsOf(day=dt.date(2026, 3, 1))
    assert AsOf.given(None) is None


def test_given_names_the_option_in_a_one_line_error() -> None:
    with pytest.raises(ConfigError) as caught:
        AsOf.given("2026-02-30", "--since")
    assert str(caught.value) == "--since: '2026-02-30' is not a date that exists"


def test_a_date_is_midnight_in_the_packs_timezone() -> None:
    _, instant = commands.load_pack(RULES, "2026-03-01", None)
    assert instant == dt.datetime(2026, 2, 28, 23, 0, tzinfo=dt.UTC)  # 00:00 CET


def test_now_is_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Choosing the pack version and the run's instant must agree on one "now", however late the clock ticks."""
    ticks = (dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC) + dt.timedelta(seconds=n) for n in itertools.count())
    monkeypatch.setattr(clock, "utcnow", lambda: next(ticks))
    _, instant = commands.load_pack(RULES, None, None)
    assert instant == dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def test_a_future_as_of_is_named_as_typed_in_the_pack_zone(tmp_path: Path) -> None:
    """Issue 24: `--as-of 2027-12-06` for a Paris pack was refused as `2027-12-05 23:00 UTC`, a date nobody typed."""
    from click.testing import CliRunner

    from retention.cli import main
    from retention.timing.clock import utcnow

    typed = f"{utcnow().year + 1}-12-06"
    rules = Path(__file__).resolve().parent.parent / "rules" / "marketplace.yaml"  # timezone: Europe/Paris
    args = ["run", "--rules", str(rules), "--db", f"sqlite:///{tmp_path / 'never-opened.sqlite'}", "--as-of", typed]
    result = CliRunner().invoke(main, [*args, "--no-progress"])
    assert result.exit_code == 2
    line = result.output.strip().splitlines()[-1]
    assert f"--as-of {typed} (Europe/Paris) is in the future" in line
    assert "23:00" not in line and "UTC" not in line
    instant = CliRunner().invoke(main, [*args[:-1], f"{typed}T14:30:00+01:00", "--no-progress"])
    assert f"--as-of {typed} 14:30 (Europe/Paris) is in the future" in instant.output
