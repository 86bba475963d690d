"""Hostile rule packs: refused quickly with file:line and exit 2, never a traceback, never a bomb.

Three layers: a corpus of known attacks (tests/packs/hostile/) with the exact
line each one gets; a strict check that the billion-laughs file costs well
under a second of CPU; and a fuzzer whose hypothesis strategies write hostile
YAML (mutated valid packs, random nesting, weird scalars, tags, anchors and
aliases, byte-level damage, alias bombs). Every fuzzed input goes through
``retention check`` (and ``plan`` when it passes) in a separate worker
process that reports exit codes, CPU time and peak memory.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention.cli import main
from retention.errors import PackError
from retention.policy import load_file
from retention.policy.loader import MAX_PACK_BYTES

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "tests/packs/hostile"
WORKER = Path(__file__).resolve().parent / "pack_worker.py"

# file -> the exact line a person reads (after "error: FILE:"), hand-checked against each file
REFUSALS = {
    "billion_laughs.yaml": "6: the pack expands to more than 20000 YAML values (aliases count as what they repeat)",
    "python_tag.yaml": "2: YAML tag 'tag:yaml.org,2002:python/object/apply:os.system' is not allowed in a rule "
    "pack; write plain values",
    "unknown_tag.yaml": "7: YAML tag '!invoice_table' is not allowed in a rule pack; write plain values",
    "tag_directive.yaml": "1: %TAG directives are not allowed in a rule pack",
    "nul.yaml": "9: control character U+0000 in the file",
    "bel.yaml": "9: control character U+0007 in the file",
    "bel_escaped.yaml": "9: character U+0007 in a value: control characters and lone surrogates are not allowed, "
    "raw or escaped",
    "escaped_surrogate.yaml": "9: character U+D83D in a value: control characters and lone surrogates are not "
    "allowed, raw or escaped",
    "deep_nesting.yaml": "16: lists and mappings are nested more than 32 levels deep",
    "self_alias.yaml": "9: alias *loop is inside the node it names (a recursive structure)",
    "int_2_53.yaml": "9: integer 9007199254740992 is out of range; at most 9007199254740991 (2^53 - 1)",
    "int_5000_digits.yaml": "9: integer 99999999999999999999... has 5000 digits; at most 9007199254740991",
    "list_key.yaml": "9: a mapping key must be a plain value, not a list or mapping",
    "period_1100y.yaml": "12: datasets.invoices.keep[0].period: P1100Y spans more than 1000 years, the longest "
    "schedule the engine supports",
    "review_yes.yaml": "9: datasets.invoices.review: 'yes' is not a boolean; write true or false",
    "partitioned_on.yaml": "9: datasets.invoices.partitioned: 'on' is not a boolean; write true or false",
    "review_string_1.yaml": "9: datasets.invoices.review: '1' is not a boolean; write true or false",
    "timezone_localtime.yaml": "4: timezone: unknown timezone 'localtime'; use an IANA name such as "
    "Europe/Paris or UTC",
    "batch_size_string.yaml": "9: datasets.invoices.batch_size: input should be a valid integer",
    "date_that_does_not_exist.yaml": "3: '2026-02-30' is not a date that exists",
    "not_a_number.yaml": "9: number .nan is not finite",
    "merge_key.yaml": "9: unknown key '<<' in datasets.invoices; valid: table, schema, key, subject_key, "
    "subject, email, description, basis, keep, lifecycle, follows, on_erasure, ledger, review, guard, partitioned, "
    "batch_size, where, review_columns, erasure_where",
    "two_documents.yaml": "16: invalid YAML: expected a single document in the stream, but found another document",
    "not_utf8.yaml": "9: the file is not UTF-8 text",
}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_every_hostile_file_is_covered() -> None:
    """Each file of the hostile corpus has its expected refusal here."""
    assert sorted(p.name for p in (ROOT / HOSTILE).glob("*.yaml")) == sorted(REFUSALS)


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_hostile_pack_is_refused_with_file_line_and_exit_2(name: str) -> None:
    """`retention check` refuses each attack with one located sentence and exit 2."""
    result = CliRunner().invoke(main, ["check", "--rules", f"{HOSTILE}/{name}"])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [f"error: {HOSTILE}/{name}:{REFUSALS[name]}"]


def test_billion_laughs_is_refused_in_well_under_a_second_of_cpu() -> None:
    """The 9-level alias bomb (387 million strings expanded) costs under 1 s of CPU time, measured in-process."""
    started = time.process_time()
    with pytest.raises(PackError) as refused:
        load_file(ROOT / HOSTILE / "billion_laughs.yaml")
    spent = time.process_time() - started
    assert "the pack expands to more than 20000 YAML values" in str(refused.value)
    assert spent < 1.0, f"{spent:.2f} s of CPU"


def test_a_pack_larger_than_the_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    """A file over the size limit is refused whole, without reading past the limit."""
    big = tmp_path / "big.yaml"
    big.write_text("pack: big\n" + "# padding\n" * (MAX_PACK_BYTES // 10 + 1), encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--rules", str(big)])
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: {big}: the file is larger than 256 KiB; a rule pack is not"]


def test_a_rules_path_that_is_not_a_regular_file_is_refused() -> None:
    """`--rules /dev/zero` would read forever; it is refused at once."""
    result = CliRunner().invoke(main, ["check", "--rules", "/dev/zero"])
    assert result.exit_code == 2
    assert result.output.splitlines() == ["error: /dev/zero: not a regular file"]


@pytest.mark.parametrize(
    ("period", "accepted"),
    [("P1000Y", True), ("P12000M", True), ("P1000Y1D", False), ("P365243D", True), ("P365244D", False)],
)
def test_the_longest_schedule_is_1000_years(tmp_path: Path, period: str, accepted: bool) -> None:
    """A clock on 31 Dec 1999 must fall due by 1 Jan 3000: P1000Y passes, a day more does not."""
    text = (ROOT / HOSTILE / "period_1100y.yaml").read_text(encoding="utf-8").replace("P1100Y", period)
    pack = tmp_path / "pack.yaml"
    pack.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["check", "--rules", str(pack)])
    assert (result.exit_code == 0) is accepted, result.output


# --------------------------------------------------------------------------
# The fuzzer
# --------------------------------------------------------------------------

# A valid pack matching the worker's SQLite shop; leaves are YAML source text.
BASE: dict[str, Any] = {
    "pack": "fuzz",
    "version": '"1"',
    "effective_from": "2020-01-01",
    "timezone": "Europe/Paris",
    "financial_year_end": '"12-31"',
    "erasure": {"respond_within": "P1M", "extension": "P2M", "basis": "GDPR art. 12(3)"},
    "guard": {"max_share": "1.0"},
    "batch_size": "100",
    "datasets": {
        "customers": {
            "table": "customers",
            "key": "id",
            "subject_key": "id",
            "basis": "policy",
            "keep": [
                {"clock": {"column": "seen_at", "type": "timestamp", "timezone": "UTC"}, "period": "P3Y"},
                {
                    "clock": {
                        "aggregate": "max",
                        "table": "orders",
                        "on": "customer_id",
                        "column": "created_at",
                        "type": "date",
                    },
                    "period": "P6Y",
                },
            ],
            "on_erasure": "archived",
            "lifecycle": [
                {"to": "inactive", "action": "deactivate", "set": {"active": "false"}},
                {
                    "to": "archived",
                    "action": "archive",
                    "columns": ["id", "email"],
                    "then": "anonymise",
                    "mask": {"email": "hash", "name": "null", "postcode": {"strategy": "generalise", "chars": "2"}},
                },
                {"to": "purged", "after": "P5Y"},
            ],
        },
        "orders": {
            "table": "orders",
            "key": "id",
            "subject_key": "customer_id",
            "basis": "Code de commerce",
            "keep": [
                {
                    "clock": {"column": "created_at", "type": "date"},
                    "period": "P10Y",
                    "anchor": "financial_year_end",
                }
            ],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
        "events": {
            "table": "events",
            "key": "id",
            "subject_key": "customer_id",
            "basis": "policy",
            "follows": {"dataset": "customers", "on": {"inactive": "purged"}},
            "ledger": "summary",
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
        "logs": {
            "table": "logs",
            "key": "id",
            "basis": "8 days",
            "keep": [
                {"clock": {"column": "at", "type": "epoch"}, "period": "P8D"},
                {
                    "clock": {
                        "aggregate": "max",
                        "table": "meta",
                        "on": "log_id",
                        "column": "value",
                        "type": "epoch_text",
                        "where": {"name": "seen"},
                    },
                    "period": "P1M",
                },
            ],
            "lifecycle": [{"to": "purged", "action": "delete"}],
        },
    },
}

# fmt: off
WEIRD_SCALARS = [
    # booleans that YAML 1.1 or pydantic's lax mode would take
    "yes", "no", "on", "off", "Y", "n", '"1"', "1", "0", "true", "True", "FALSE", "~", "null", '""', "''",
    # integers and floats at and beyond the limits, in every YAML notation
    "9007199254740991", "9007199254740992", "-9007199254740993", "9" * 30, "9" * 5000, "0x7fffffffffffffff",
    "0o777", "0b101", "1_000", "1:30:00", "010", "-0", ".inf", "-.inf", ".nan", "1e999", "1.0e+999", "-0.0",
    "3.14", "1.0e-400", "0.0000000000000000000001",
    # dates and times that do not exist or sit at the edges
    "2026-02-30", "0000-00-00", "2026-13-01", "9999-12-31", "0001-01-01", "2026-01-01T25:00:00",
    "2026-01-01 00:00:00 +99:00", "2026-1-1", "10000-01-01", "1900-01-01", "2026-01-01T00:00:00.999999999Z",
    # periods
    "P1100Y", "P1000Y", "P9999999Y", "P99999999999999999999D", "PT12H", "-P1Y", "P0D", "P1Y2M3W4D", "P",
    "P1.5Y", "p3y", "P3Y ", "P0Y0M0D", "P12000M", "P365243D", "P1000Y1D",
    # timezones
    "localtime", "UTC", "Etc/GMT+14", "../../etc/passwd", "/etc/localtime", "posixrules", "Factory",
    "Europe/Pariss", "EST5EDT", "right/UTC", "America/Argentina/ComodRivadavia",
    # escapes: controls, surrogates, odd code points
    '"\\x00"', '"\\a"', '"\\ud800"', '"\\udfff"', '"\\U0010FFFF"', '"\\x85"', '"\\u202e"', '"\\uFEFF"', '"\\e"',
    '"\\N"', '"\\_"', '"\\L"', '"\\P"', '"\\x9b"', '"\\uFFFE"',
    # tags
    '!!python/object/apply:os.system ["true"]', "!!python/name:os.system", "!!binary aGVsbG8=", "!!set {a, b}",
    "!!omap [a: 1]", "!custom x", "!!str 5", '!!int "12"', '!!float "nan"', "!!timestamp 2026-99-99", "! x",
    "!<tag:example.com,2000:x> y", "!!null ''", "!!bool yes",
    # structure in scalar position
    "*undefined", "<<", "=", "{}", "[]", "[[[[[]]]]]", "{a: {b: {c: d}}}", "[a, [b, [c]]]", "{? [a]: b}",
    '"' + "x" * 3000 + '"', "'it''s'", '"\\"quoted\\""', '"caf\\u00e9"', "émoji 🎉", '"\\t tab"', "a # comment",
    "@reserved", "`tick", "%percent", "&anchor value", "- dash", "? q", ": colon", "|", ">", "|-", "'", '"',
    "[", "]", "{", "}", ",", "a: b", "...", "---", "\\", "x" * 300,
]

NAMES = [
    "pack", "version", "datasets", "table", "key", "keep", "clock", "period", "lifecycle", "to", "action", "after",
    "mask", "strategy", "chars", "review", "partitioned", "batch_size", "guard", "max_share", "max_count", "follows",
    "on", "where", "aggregate", "type", "timezone", "anchor", "schema", "subject_key", "ledger", "set", "columns",
    "then", "basis", "on_erasure", "erasure", "respond_within", "extension", "financial_year_end", "value", "keep",
    "x" * 200, '"k\\x00"', "1", "true", "null", "2026-01-01", "<<", "?", "-", "&a", "*a", "!!str k",
]
# fmt: on


@st.composite
def _tree(draw: st.DrawFn, depth: int = 0) -> Any:
    """Random nesting of mappings and lists with weird scalars at the leaves."""
    if depth > 3 and draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(WEIRD_SCALARS))
    kind = draw(st.sampled_from(["map", "list", "scalar", "deep"]))
    if kind == "scalar":
        return draw(st.sampled_from(WEIRD_SCALARS))
    if kind == "deep":
        levels = draw(st.integers(20, 80))
        leaf = draw(st.sampled_from(WEIRD_SCALARS))
        node: Any = leaf
        for _ in range(levels):
            node = [node] if draw(st.booleans()) else {"k": node}
        return node
    size = draw(st.integers(0, 4))
    if kind == "list":
        return [draw(_tree(depth + 1)) for _ in range(size)]
    return {draw(st.sampled_from(NAMES)): draw(_tree(depth + 1)) for _ in range(size)}


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*path, index))


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    copy[path[0]] = _set(node[path[0]], path[1:], value)
    return copy


class Anchored:
    """A node emitted with ``&name``."""

    def __init__(self, name: str, node: Any) -> None:
        self.name, self.node = name, node


@st.composite
def _mutated(draw: st.DrawFn) -> Any:
    """The base pack with a few structure-aware mutations."""
    tree: Any = BASE
    for _ in range(draw(st.integers(1, 4))):
        paths = list(_paths(tree))
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["scalar", "tree", "delete", "add", "rename", "anchor_alias", "duplicate"]))
        target = _get(tree, path)
        if op == "scalar":
            tree = _set(tree, path, draw(st.sampled_from(WEIRD_SCALARS)))
        elif op == "tree":
            tree = _set(tree, path, draw(_tree()))
        elif op == "delete" and path:
            parent = _get(tree, path[:-1])
            if isinstance(parent, dict):
                tree = _set(tree, path[:-1], {k: v for k, v in parent.items() if k != path[-1]})
            elif isinstance(parent, list):
                tree = _set(tree, path[:-1], [v for i, v in enumerate(parent) if i != path[-1]])
        elif op == "add" and isinstance(target, dict):
            tree = _set(tree, path, {**target, draw(st.sampled_from(NAMES)): draw(_tree(2))})
        elif op == "rename" and path and isinstance(_get(tree, path[:-1]), dict):
            parent = _get(tree, path[:-1])
            new = draw(st.sampled_from(NAMES))
            tree = _set(tree, path[:-1], {(new if k == path[-1] else k): v for k, v in parent.items()})
        elif op == "anchor_alias" and path:
            name = draw(st.sampled_from(["a", "b", "loop"]))
            tree = _set(tree, path, Anchored(name, target))
            other = draw(st.sampled_from(list(_paths(tree))))
            if other and not isinstance(_get(tree, other[:-1]), Anchored):
                tree = _set(tree, other, f"*{name}")
        elif op == "duplicate" and isinstance(target, list) and target:
            tree = _set(tree, path, target * draw(st.integers(2, 50)))
    return tree


def _emit(node: Any, indent: int, flow: bool, draw: Callable[[Any], Any]) -> str:
    """YAML text for a tree whose leaves are YAML source: block style, with flow style chosen at random."""
    pad = " " * indent
    if isinstance(node, Anchored):
        inner = node.node
        if not flow and isinstance(inner, dict | list) and inner:
            return f"{pad}&{node.name}\n" + _emit(inner, indent, False, draw)
        return f"&{node.name} " + _emit(inner, indent, True, draw)
    if isinstance(node, dict | list) and (flow or not node):
        if isinstance(node, dict):
            return "{" + ", ".join(f"{k}: {_emit(v, indent, True, draw)}" for k, v in node.items()) + "}"
        return "[" + ", ".join(_emit(v, indent, True, draw) for v in node) + "]"
    if isinstance(node, dict):
        lines = []
        for key, value in node.items():
            nested = isinstance(value, dict | list | Anchored) and draw(st.integers(0, 4)) != 0
            if nested and not (isinstance(value, dict | list) and not value):
                lines.append(f"{pad}{key}:\n" + _emit(value, indent + 2, False, draw))
            else:
                lines.append(f"{pad}{key}: {_emit(value, indent + 2, True, draw)}")
        return "\n".join(lines)
    if isinstance(node, list):
        return "\n".join(f"{pad}- {_emit(v, indent + 2, True, draw)}" for v in node)
    return str(node)


@st.composite
def mutated_pack(draw: st.DrawFn) -> bytes:
    """A valid pack with structure-aware mutations, emitted in random styles."""
    text = _emit(draw(_mutated()), 0, False, draw) + "\n"
    prefix = draw(st.sampled_from(["", "", "", "%YAML 1.1\n---\n", "%TAG ! tag:x,2000:\n---\n", "--- \n", "\ufeff"]))
    suffix = draw(st.sampled_from(["", "", "...\n", "---\npack: again\n", "# end\n"]))
    return (prefix + text + suffix).encode("utf-8", "surrogatepass")


@st.composite
def random_nesting(draw: st.DrawFn) -> bytes:
    """A document of random nesting, not shaped like a pack at all."""
    return (_emit(draw(_tree()), 0, draw(st.booleans()), draw) + "\n").encode("utf-8", "surrogatepass")


@st.composite
def damaged_bytes(draw: st.DrawFn) -> bytes:
    """The valid base pack with random byte-level damage."""
    data = bytearray((_emit(BASE, 0, False, draw) + "\n").encode("utf-8"))
    alphabet = b":[]{}&*!|>-?#%@`'\"\\\n\t \x00\x07\x1b\x85\xff\xfe\xc3"
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from(alphabet))
        if op == "insert":
            data[where:where] = bytes([byte]) * draw(st.integers(1, 3))
        elif op == "delete":
            del data[where : where + draw(st.integers(1, 20))]
        elif where < len(data):
            data[where] = byte
    return bytes(data)


@st.composite
def alias_bomb(draw: st.DrawFn) -> bytes:
    """Billion-laughs variants of random width and depth, in a pack position or alone."""
    width, depth = draw(st.integers(2, 12)), draw(st.integers(3, 12))
    lines = ["l0: &l0 [" + ", ".join(['"lol"'] * width) + "]"]
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    body = "\n".join(lines)
    if draw(st.booleans()):
        body = "pack: bomb\nversion: x\neffective_from: 2026-01-01\ndatasets:\n  d:\n    description:\n" + "\n".join(
            "      " + line for line in lines
        )
    return (body + "\n").encode("utf-8")


def _period(years: int, months: int, days: int) -> str:
    text = "P" + (f"{years}Y" if years else "") + (f"{months}M" if months else "") + (f"{days}D" if days else "")
    return text if text != "P" else "P0D"


PERIODS = st.builds(
    _period,
    st.one_of(st.integers(0, 12), st.integers(0, 1200)),
    st.one_of(st.integers(0, 13), st.integers(0, 13000)),
    st.one_of(st.integers(0, 31), st.integers(0, 400_000)),
)
ZONES = st.sampled_from(sorted(zoneinfo.available_timezones() - {"localtime", "posixrules"}))
VALUE_PATHS: list[tuple[tuple[Any, ...], st.SearchStrategy[str]]] = [
    (("timezone",), ZONES),
    (("datasets", "customers", "keep", 0, "clock", "timezone"), ZONES),
    (("financial_year_end",), st.dates().map(lambda d: f'"{d:%m-%d}"')),
    (("effective_from",), st.dates(dt.date(1900, 1, 1), dt.date(2030, 6, 1)).map(str)),
    (("batch_size",), st.integers(-1, 200_000).map(str)),
    (("guard", "max_share"), st.floats(-1, 2).map(str)),
    (("datasets", "customers", "lifecycle", 1, "mask", "postcode", "chars"), st.integers(-1, 2000).map(str)),
    (("erasure", "respond_within"), PERIODS),
    (("erasure", "extension"), PERIODS),
    *((("datasets", "customers", "keep", i, "period"), PERIODS) for i in (0, 1)),
    (("datasets", "customers", "lifecycle", 2, "after"), PERIODS),
    (("datasets", "orders", "keep", 0, "period"), PERIODS),
    (("datasets", "logs", "keep", 0, "period"), PERIODS),
    (("datasets", "logs", "keep", 1, "period"), PERIODS),
]
AS_OF = st.one_of(
    st.sampled_from(["1900-01-01", "1970-01-01", "2030-06-01", "8998-12-31", "2026-03-29T01:30:00+01:00"]),
    st.dates(dt.date(2020, 1, 1), dt.date(8998, 12, 31)).map(str),
    st.dates(dt.date(1900, 1, 1), dt.date(8998, 12, 31)).map(str),
)


@st.composite
def revalued_pack(draw: st.DrawFn) -> bytes:
    """The base pack with values changed within their types: long periods, far zones, odd year ends.

    These mostly pass ``check``, so ``plan`` runs with them: the date
    arithmetic at the limits is exercised, not only the loader.
    """
    tree: Any = BASE
    for path, values in draw(st.lists(st.sampled_from(VALUE_PATHS), min_size=1, max_size=4)):
        tree = _set(tree, path, draw(values))
    return (_emit(tree, 0, False, draw) + "\n").encode("utf-8")


HOSTILE_YAML = st.one_of(mutated_pack(), random_nesting(), damaged_bytes(), alias_bomb(), revalued_pack())


class Worker:
    """The pack worker process (tests/pack_worker.py) and its answers."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "RETENTION_PSEUDONYM_KEY": "fuzz"},
        )
        self.answers: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.baseline_mb = float(json.loads(self._answer(120))["rss_mb"])
        self.count = 0
        self.outcomes: Counter[str] = Counter()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.answers.put(line)

    def _answer(self, timeout: float) -> str:
        try:
            return self.answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the worker gave no answer within {timeout} s (exit {self.process.poll()})") from None

    def load(self, data: bytes, as_of: str = "2030-06-01") -> dict[str, Any]:
        self.count += 1
        path = self.folder / f"input-{self.count}.yaml"
        path.write_bytes(data)
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"path": str(path), "as_of": as_of}) + "\n")
        self.process.stdin.flush()
        # Wall-clock only guards against a hang; the limit that counts is the worker's CPU time.
        report: dict[str, Any] = json.loads(self._answer(60))
        path.unlink()
        plan = report["plan"]
        self.outcomes[f"check {report['check']['exit']}" + (f", plan {plan['exit']}" if plan else "")] += 1
        self.peak_cpu = max(getattr(self, "peak_cpu", 0.0), report["cpu_seconds"])
        return report

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    process = Worker(tmp_path_factory.mktemp("pack-worker"))
    yield process
    process.close()
    grown = json.dumps({"inputs": process.count, "outcomes": dict(process.outcomes)})
    print(f"\npack fuzzer: {grown}; peak CPU per input {getattr(process, 'peak_cpu', 0):.2f} s")


CPU_LIMIT_SECONDS = 2.0
MEMORY_LIMIT_MB = 200.0


def assert_handled(worker: Worker, data: bytes, as_of: str = "2030-06-01") -> None:
    """Exit 0 or 2, no traceback, under 2 s of CPU and 200 MB above the worker's baseline."""
    report = worker.load(data, as_of)
    shown = data[:300].decode("utf-8", "replace")
    for step in ("check", "plan"):
        outcome = report[step]
        if outcome is None:
            continue
        assert outcome["exit"] in (0, 2), f"{step} exit {outcome['exit']} on {shown!r}: {outcome['output']}"
        assert not outcome["traceback"], f"{step} traceback on {shown!r}: {outcome['exception']} {outcome['output']}"
        if outcome["exit"] == 2:
            first = outcome["output"].splitlines()[0] if outcome["output"] else ""
            assert first.startswith("error: "), f"{step} on {shown!r} printed {outcome['output']!r}"
    assert report["cpu_seconds"] < CPU_LIMIT_SECONDS, f"{report['cpu_seconds']:.2f} s of CPU on {shown!r}"
    grown = report["rss_mb"] - worker.baseline_mb
    assert grown < MEMORY_LIMIT_MB, f"peak memory grew {grown:.0f} MB on {shown!r}"


def test_worker_accepts_the_base_pack_and_plans_it(worker: Worker) -> None:
    """The fuzzer's base pack is valid and plans on the worker's shop: mutations start from a working pack."""
    report = worker.load((_emit(BASE, 0, False, lambda _: 1) + "\n").encode())
    assert report["check"]["exit"] == 0, report["check"]["output"]
    assert report["plan"]["exit"] == 0, report["plan"]["output"]
    assert re.search(r"plan for pack fuzz \(\w+\) as of 2030-06-01 00:00 CEST", report["plan"]["output"])


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_corpus_within_limits(worker: Worker, name: str) -> None:
    """Every corpus file, through the worker: exit 2, within the CPU and memory limits."""
    assert_handled(worker, (ROOT / HOSTILE / name).read_bytes())


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=HOSTILE_YAML, as_of=AS_OF)
def test_fuzz_smoke(worker: Worker, data: bytes, as_of: str) -> None:
    """A fast sample of hostile YAML: exit 0 or 2, in time and memory, never a traceback."""
    assert_handled(worker, data, as_of)


SLOW_EXAMPLES = int(os.environ.get("RETENTION_FUZZ_EXAMPLES", "400"))


@pytest.mark.slow  # the long fuzz: ten times the smoke test's inputs, random draws (the smoke test's are fixed)
@settings(max_examples=max(SLOW_EXAMPLES, 1), deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=HOSTILE_YAML, as_of=AS_OF)
def test_fuzz_long(worker: Worker, data: bytes, as_of: str) -> None:
    """The long fuzz run (400 inputs, or RETENTION_FUZZ_EXAMPLES, e.g. 20000): the same guarantees as the smoke test."""
    assert_handled(worker, data, as_of)
