"""Loading rule packs from YAML with the line of every problem.

PyYAML's composer keeps a mark on every node; we walk the node tree once to
build a map from data paths to lines, then validate with pydantic and turn
its error locations back into ``file:line: sentence``. Duplicate mapping keys,
which YAML parsers silently collapse, are refused here.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
import yaml
from pydantic import BaseModel, ValidationError

from retention.errors import PackError, PackProblem
from retention.policy.model import Dataset, Pack
from retention.policy.rowfilter import parse_where
from retention.timing.clock import MAX_SPAN_YEARS, Period, Schedule

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedPack:
    """A validated pack version with where it came from and its digest."""

    pack: Pack
    source: Path
    digest: str
    text: str
    warnings: tuple[PackProblem, ...] = ()
    """Clauses that take effect but likely not the one meant; ``check`` prints them (docs/rules.md)."""

    @property
    def id(self) -> str:
        return self.pack.pack


@dataclass
class _Located:
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    problems: list[PackProblem] = field(default_factory=list)


MAX_PACK_BYTES = 256 * 1024
"""A pack file larger than this is refused before it is parsed (the reference pack is 6 KiB)."""
MAX_NODES = 20_000
"""YAML nodes a pack may hold, an alias counting as the whole node it repeats (alias bombs)."""
MAX_DEPTH = 32
"""Nesting of lists and mappings (a pack needs 8)."""
MAX_INTEGER = 2**53 - 1
"""Integers beyond this lose precision in JSON (RFC 8785, the pack digest) and are refused."""

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_BOOL = "tag:yaml.org,2002:bool"
_PLAIN_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*|0x[0-9a-fA-F]+)")
"""Integers YAML 1.1 and 1.2 read alike: decimal without leading zeros, and hexadecimal."""
_DROPPED_RESOLVERS = {_BOOL, "tag:yaml.org,2002:merge", "tag:yaml.org,2002:value"}


class _Refused(yaml.MarkedYAMLError):  # type: ignore[misc]  # PyYAML ships no type information
    """A construct the pack loader does not accept, at its place in the file."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type information
    """SafeLoader with YAML 1.2 booleans and the limits that make hostile files cheap to refuse.

    YAML 1.1 reads ``on``, ``off``, ``yes`` and ``no`` as booleans, which
    would turn the ``on:`` key of ``follows`` and clocks into ``True``; merge
    keys (``<<``) and ``=`` are YAML 1.1 oddities too, so both stay strings.

    Composition counts nodes with every alias weighed as the node it repeats,
    so a billion-laughs file is refused after a few dozen events instead of
    being expanded; an alias inside its own anchor, nesting beyond
    :data:`MAX_DEPTH`, tags and ``%TAG`` directives, non-scalar mapping keys
    and control characters (raw or escaped, surrogates included) are refused
    where they stand. Numbers must be finite and within :data:`MAX_INTEGER`,
    dates must exist.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0
        self._open: set[str] = set()
        self._sizes: dict[str, int] = {}

    def _count(self, nodes: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise _Refused(
                f"the pack expands to more than {MAX_NODES} YAML values (aliases count as what they repeat)",
                mark,
            )

    def compose_document(self) -> Any:
        event = self.peek_event()
        if getattr(event, "tags", None):
            raise _Refused("%TAG directives are not allowed in a rule pack", event.start_mark)
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise _Refused(
                    f"alias *{event.anchor} is inside the node it names (a recursive structure)", event.start_mark
                )
            self._count(self._sizes.get(event.anchor, 0), event.start_mark)
            return super().compose_node(parent, index)
        if event.tag is not None:
            raise _Refused(
                f"YAML tag {event.tag!r} is not allowed in a rule pack; write plain values", event.start_mark
            )
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if collection:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Refused(f"lists and mappings are nested more than {MAX_DEPTH} levels deep", event.start_mark)
        before = self._nodes
        self._count(1, event.start_mark)
        anchor = event.anchor
        if anchor is not None:
            self._open.add(anchor)
        node = super().compose_node(parent, index)
        if anchor is not None:
            self._open.discard(anchor)
            self._sizes[anchor] = self._nodes - before
        if collection:
            self._depth -= 1
        if isinstance(node, yaml.ScalarNode):
            bad = _CONTROL.search(node.value)
            if bad is not None:
                raise _Refused(
                    f"character U+{ord(bad.group()):04X} in a value: control characters and lone surrogates "
                    "are not allowed, raw or escaped",
                    node.start_mark,
                )
        elif isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise _Refused("a mapping key must be a plain value, not a list or mapping", key_node.start_mark)
        return node

    def construct_yaml_int(self, node: Any) -> int:
        if not _PLAIN_INT.fullmatch(node.value.replace("_", "")):
            # YAML 1.1 reads 0777 as 511, 12:30 as 750 and 0b101 as 5; YAML 1.2 (and so
            # any other tool reading the pack) reads 777 or text. 1_000 is accepted: the
            # value read (1000) is the number the user wrote.
            raise _Refused(
                f"{node.value} is a number in YAML 1.1 and something else in YAML 1.2 (octal, base 60 or "
                f"binary); quote it if it is text ('{node.value}'), or write the number in decimal",
                node.start_mark,
            )
        digits = node.value.lstrip("+-").replace("_", "")
        if len(digits) > 20:
            raise _Refused(
                f"integer {node.value[:20]}... has {len(digits)} digits; at most {MAX_INTEGER}", node.start_mark
            )
        value = int(super().construct_yaml_int(node))
        if abs(value) > MAX_INTEGER:
            raise _Refused(f"integer {node.value} is out of range; at most {MAX_INTEGER} (2^53 - 1)", node.start_mark)
        return value

    def construct_yaml_float(self, node: Any) -> float:
        if ":" in node.value:
            raise _Refused(
                f"{node.value} is a number in YAML 1.1 and text in YAML 1.2 (base 60); quote it if it is text, "
                "or write the number in decimal",
                node.start_mark,
            )
        value = float(super().construct_yaml_float(node))
        if not math.isfinite(value):
            raise _Refused(f"number {node.value} is not finite", node.start_mark)
        return value

    def construct_yaml_timestamp(self, node: Any) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except (ValueError, OverflowError):
            raise _Refused(f"{node.value!r} is not a date that exists", node.start_mark) from None


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _DROPPED_RESOLVERS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)


def _walk(node: yaml.Node, path: PathKey, lines: dict[PathKey, int], dupes: list[tuple[PathKey, int]]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                dupes.append(((*path, key), key_node.start_mark.line + 1))
            seen.add(key)
            lines[(*path, key)] = key_node.start_mark.line + 1
            _walk(value_node, (*path, key), lines, dupes)
            lines[(*path, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, dupes)


def _read_yaml(source: Path, text: str) -> _Located:
    name = str(source)
    raw = _CONTROL.search(text)
    if raw is not None:
        line = text.count("\n", 0, raw.start()) + 1
        return _Located(
            None, problems=[PackProblem(name, line, f"control character U+{ord(raw.group()):04X} in the file")]
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return _Located(None, problems=[PackProblem(name, 1, "the file is empty")])
        lines: dict[PathKey, int] = {}
        dupes: list[tuple[PathKey, int]] = []
        _walk(node, (), lines, dupes)
        located = _Located(loader.construct_document(node), lines)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where: int | None = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        if problem.startswith("but ") and exc.context:  # "expected a single document ..., but found another"
            problem = f"{exc.context}, {problem}"
        prefix = "" if isinstance(exc, _Refused) else "invalid YAML: "
        return _Located(None, problems=[PackProblem(name, where, f"{prefix}{problem}")])
    except yaml.YAMLError as exc:  # the reader's own checks, which the scan above already covers
        return _Located(None, problems=[PackProblem(name, None, f"invalid YAML: {str(exc).splitlines()[0]}")])
    finally:
        loader.dispose()
    for path, line in dupes:
        what = "dataset" if len(path) == 2 and path[0] == "datasets" else "key"
        located.problems.append(
            PackProblem(name, line, f"duplicate {what} {path[-1]!r} in {_dotted(path[:-1]) or 'the pack'}")
        )
    if not isinstance(located.data, dict):
        located.problems.append(PackProblem(name, 1, "a rule pack must be a mapping with 'pack' and 'datasets'"))
    return located


def _dotted(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_for(lines: dict[PathKey, int], path: PathKey) -> int | None:
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return None


def _model_at(path: PathKey) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``path``, for key hints."""
    from retention.policy import model as m

    shapes: list[tuple[str, type[BaseModel]]] = [
        (r"", m.Pack),
        (r"erasure", m.Erasure),
        (r"backups", m.Backups),
        (r"guard", m.Guard),
        (r"datasets\.[^.]+", m.Dataset),
        (r"datasets\.[^.]+\.guard", m.Guard),
        (r"datasets\.[^.]+\.follows", m.Follow),
        (r"datasets\.[^.]+\.subject", m.Subject),
        (r"datasets\.[^.]+\.subject\.through\.\d+", m.Hop),
        (r"datasets\.[^.]+\.keep\.\d+", m.Keep),
        (r"datasets\.[^.]+\.keep\.\d+\.clock", m.Clock),
        (r"datasets\.[^.]+\.lifecycle\.\d+", m.Step),
        (r"datasets\.[^.]+\.lifecycle\.\d+\.mask\.[^.]+", m.Mask),
    ]
    dotted = ".".join(str(p) for p in path)
    for pattern, model in shapes:
        if re.fullmatch(pattern, dotted):
            return model
    return None


def _valid_keys(model: type[BaseModel]) -> str:
    return ", ".join(f.alias or name for name, f in model.model_fields.items())


def _strip_union_tags(loc: tuple[Any, ...]) -> PathKey:
    """Drop pydantic's internal location parts (union members, validator tags)."""
    cleaned: list[str | int] = []
    for part in loc:
        if isinstance(part, str) and (
            part.startswith("function-") or part in {"str", "int", "float", "bool", "none", "Mask"}
        ):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _describe(error: Any, path: PathKey) -> str:
    kind = error["type"]
    where = _dotted(path)
    if kind == "extra_forbidden":
        parent = _model_at(path[:-1])
        valid = f"; valid: {_valid_keys(parent)}" if parent else ""
        place = _dotted(path[:-1]) or "the pack"
        return f"unknown key {path[-1]!r} in {place}{valid}"
    if kind == "missing":
        place = _dotted(path[:-1]) or "the pack"
        return f"{place} is missing required key {path[-1]!r}"
    if kind in {"literal_error", "enum"}:
        expected = error.get("ctx", {}).get("expected", "")
        valid = re.sub(r"'", "", expected).replace(" or ", ", ")
        return f"unknown value {error['input']!r} for {where}; valid: {valid}"
    if kind == "value_error":
        message = str(error.get("ctx", {}).get("error", error["msg"]))
        return f"{where}: {message}" if where else message
    if kind == "bool_type":
        return f"{where}: {error['input']!r} is not a boolean; write true or false"
    if kind == "assertion_error":
        return f"{where}: {error['msg']}"
    return f"{where}: {error['msg'][0].lower() + error['msg'][1:]}" if where else error["msg"]


def _cross_check(pack: Pack, name: str, lines: dict[PathKey, int]) -> list[PackProblem]:
    """Checks between datasets that no single model can see."""
    problems: list[PackProblem] = []

    def add(path: PathKey, message: str) -> None:
        problems.append(PackProblem(name, _line_for(lines, path), message))

    # Issue 26 clause 3: one table may hold several kinds of records, one
    # dataset each, when every one of them says which rows are its own
    # (disjoint filters, which check --db verifies on the data).
    sharing: dict[tuple[str | None, str], list[str]] = {}
    for ds_name, ds in pack.datasets.items():
        sharing.setdefault((ds.schema_, ds.table), []).append(ds_name)
    for names in sharing.values():
        lacking = [n for n in names if pack.datasets[n].where is None]
        if len(names) < 2 or not lacking:
            continue
        # One error per table, where the sharing shows: the second dataset's table line.
        add(
            ("datasets", names[1], "table"),
            f"table {pack.datasets[names[1]].table!r} is already the table of dataset {names[0]!r}: datasets "
            "sharing a table each need a 'where' saying which rows are theirs (a row belongs to at most one "
            f"dataset); without one: {', '.join(lacking)}",
        )
    for ds_name, ds in pack.datasets.items():
        where = ("datasets", ds_name)
        if ds.follows is not None:
            parent = pack.datasets.get(ds.follows.dataset)
            if parent is None:
                valid = ", ".join(n for n in pack.datasets if n != ds_name)
                add(
                    (*where, "follows", "dataset"),
                    f"dataset {ds_name!r} follows {ds.follows.dataset!r}, which is not a dataset "
                    f"of this pack; valid: {valid}",
                )
                continue
            if ds.follows.dataset == ds_name:
                add((*where, "follows", "dataset"), f"dataset {ds_name!r} cannot follow itself")
                continue
            chain: list[str] = [ds_name]
            cursor: Dataset | None = parent
            while cursor is not None and cursor.follows is not None:
                if cursor.follows.dataset in chain:
                    add(
                        (*where, "follows", "dataset"),
                        f"datasets follow each other in a circle: {' -> '.join([*chain, cursor.follows.dataset])}",
                    )
                    break
                chain.append(cursor.follows.dataset)
                cursor = pack.datasets.get(cursor.follows.dataset)
            if ds.follows.by == "email":
                # A guest has no id: the address is the only thing both records share.
                if ds.email is None:
                    add(
                        (*where, "follows", "by"),
                        f"dataset {ds_name!r} follows by email but declares no 'email' identity; add email: COLUMN",
                    )
                if parent.email is None:
                    add(
                        (*where, "follows", "by"),
                        f"{ds.follows.dataset!r} declares no 'email' identity, so {ds_name!r} cannot follow it "
                        "by email; add email: COLUMN to it",
                    )
            elif ds.follows.via is None:
                if not ds.has_subject:
                    add(
                        (*where, "follows"),
                        f"dataset {ds_name!r} names its leader record by neither subject_key nor follows.via",
                    )
                elif parent.subject_key != parent.key:
                    add(
                        (*where, "follows", "dataset"),
                        f"{ds.follows.dataset!r} is not a subject dataset (its subject_key is not its key), so "
                        f"{ds_name!r} cannot follow it by subject; name the column holding its key with 'via'",
                    )
            problems.extend(_follows_in_vain(ds_name, ds, parent, name, lines))
            for parent_state, own_state in ds.follows.on.items():
                if parent_state not in parent.states:
                    add(
                        (*where, "follows", "on", parent_state),
                        f"{ds.follows.dataset!r} never enters state {parent_state!r}; its states: "
                        f"{', '.join(parent.states[1:])}",
                    )
                if own_state not in ds.states:
                    add(
                        (*where, "follows", "on", parent_state),
                        f"state {own_state!r} is not in the lifecycle of {ds_name!r} ({', '.join(ds.states[1:])})",
                    )
        if ds.on_erasure is not None and not ds.has_identity:
            add(
                (*where, "on_erasure"),
                "on_erasure needs a subject_key, subject or email to find a person's records",
            )
        for column, reader in _read_elsewhere(pack, ds_name).items():
            at: PathKey = (*where, "on_erasure", "mask", column)
            add(
                at,
                f"{_dotted(at)}: {reader} reads {ds.table}.{column}; masking it on erasure would change that "
                "dataset's records, clocks or leaders, so plan and run could not agree; keep it out of the mask",
            )
        problems.extend(_span_problems(pack, ds_name, name, lines))
    erasure = Schedule(pack.erasure.respond_within, (pack.erasure.extension,))
    if not erasure.fits():
        add(("erasure",), f"respond_within and extension add up to more than {MAX_SPAN_YEARS} years")
    return problems


def _follows_in_vain(
    ds_name: str, ds: Dataset, parent: Dataset, name: str, lines: dict[PathKey, int]
) -> list[PackProblem]:
    """A ``follows.on`` entry that an earlier leader state's entry always outruns.

    A leader passes through its states in order, and the furthest mapped
    state wins, so ``{inactive: purged, archived: inactive}`` maps
    ``archived`` to a state the follower has already reached.
    """
    assert ds.follows is not None
    mapped = sorted(
        (parent.states.index(p), p, own) for p, own in ds.follows.on.items() if p in parent.states and own in ds.states
    )
    for (_, early, early_own), (_, late, late_own) in itertools.pairwise(mapped):
        if ds.states.index(late_own) <= ds.states.index(early_own):
            at: PathKey = ("datasets", ds_name, "follows", "on", late)
            return [
                PackProblem(
                    name,
                    _line_for(lines, at),
                    f"{_dotted(at)}: the leader enters {early!r} before {late!r}, and {early!r} already takes "
                    f"{ds_name!r} to {early_own!r}, so mapping {late!r} to {late_own!r} never moves a record; "
                    "remove it or map it to a later state",
                )
            ]
    return []


def _read_elsewhere(pack: Pack, ds_name: str) -> dict[str, str]:
    """Columns a partial erasure masks that another dataset reads (its clock, where, identity or leader)."""
    ds = pack.datasets[ds_name]
    partial = ds.erasure_masking
    if partial is None:
        return {}
    found: dict[str, str] = {}
    for other_name, other in pack.datasets.items():
        if other_name == ds_name:
            continue
        read: set[str] = set()
        for rule in other.keep:
            if rule.clock.aggregate and rule.clock.table == ds.table:
                clock_filter = parse_where(rule.clock.where) if rule.clock.where else None
                read |= {rule.clock.column, rule.clock.on or ""}
                read |= {t.column for t in clock_filter.tests} if clock_filter else set()
        for row_filter in (other.row_filter, other.erasure_filter):
            for related in row_filter.related if row_filter is not None else ():
                if related.table == ds.table:
                    read |= {related.on, *(t.column for t in related.tests)}
        if other.table == ds.table and other.schema_ == ds.schema_ and other.row_filter is not None:
            read |= {t.column for t in other.row_filter.tests}
        for chain in (other.subject, other.email):
            for hop in chain.through if chain is not None and not isinstance(chain, str) else ():
                if hop.table == ds.table:
                    read |= {hop.key, hop.column}
        follows = other.follows
        if follows is not None and follows.dataset == ds_name and follows.by == "email" and ds.email is not None:
            read.add(ds.email if isinstance(ds.email, str) else ds.email.column)
        for column in sorted(read & set(partial.mask)):
            found.setdefault(column, f"dataset {other_name!r}")
    return found


def _span_problems(pack: Pack, ds_name: str, name: str, lines: dict[PathKey, int]) -> list[PackProblem]:
    """Schedules longer than the date arithmetic supports (see retention.timing.clock.MAX_SPAN_YEARS)."""
    ds = pack.datasets[ds_name]
    last = ds.lifecycle[-1].to
    delays = [str(step.after) for step in ds.lifecycle if step.after != Period()]
    through = f" with the lifecycle delays ({', '.join(delays)})" if delays else ""
    too_long = f"spans more than {MAX_SPAN_YEARS} years{through}, the longest schedule the engine supports"
    schedules = ds.schedules(last, pack.financial_year_end) if ds.keep else []
    for index, schedule in enumerate(schedules):
        if not schedule.fits():
            at: PathKey = ("datasets", ds_name, "keep", index, "period")
            return [
                PackProblem(
                    name, _line_for(lines, at), f"{_dotted(at)}: {ds.keep[index].period or 'expiry'} {too_long}"
                )
            ]
    if not ds.keep and not Schedule(Period(), tuple(step.after for step in ds.lifecycle)).fits():
        at = ("datasets", ds_name, "lifecycle")
        return [PackProblem(name, _line_for(lines, at), f"{_dotted(at)}: the delays {too_long.split(' with ')[0]}")]
    return []


def validate_pack(data: Any, source: Path, text: str, lines: dict[PathKey, int] | None = None) -> LoadedPack:
    """Validate parsed YAML into a pack or raise :class:`PackError`."""
    name = str(source)
    lines = lines or {}
    try:
        pack = Pack.model_validate(data)
    except ValidationError as exc:
        raise PackError(_unique(_problems(exc, name, lines))) from None
    problems = _cross_check(pack, name, lines)
    if problems:
        raise PackError(problems)
    digest = hashlib.sha256(rfc8785.dumps(pack.model_dump(mode="json", by_alias=True))).hexdigest()
    return LoadedPack(pack=pack, source=source, digest=digest, text=text, warnings=_warnings(pack, name, lines))


def _warnings(pack: Pack, name: str, lines: dict[PathKey, int]) -> tuple[PackProblem, ...]:
    """Clauses that do something, though likely not what a reader of the pack expects."""
    found: list[PackProblem] = []
    for key in pack.unused_erasure_settings():
        found.append(
            PackProblem(
                name,
                _line_for(lines, (key,)),
                f"{key}: no dataset has on_erasure, so no new erasure request can be filed under this version; "
                f"{key} still sets the deadlines and basis of requests filed under an earlier version and still "
                "open, so keep it while any is open, else remove it",
            )
        )
    for ds_name, ds in pack.datasets.items():
        for index, longer in ds.dominated_keeps():
            at: PathKey = ("datasets", ds_name, "keep", index)
            found.append(
                PackProblem(
                    name,
                    _line_for(lines, at),
                    f"{_dotted(at)}: keep[{longer}] runs from the same clock for {ds.keep[longer].kept}, so this "
                    f"rule's {ds.keep[index].kept} never decides when a record is due (its basis is still "
                    "reported); give it its own clock if it should decide",
                )
            )
        for index, step in enumerate(ds.lifecycle[1:], start=1):
            previous = ds.lifecycle[index - 1]
            same_day = step.after == Period() and step.counted_from != "clock"
            if previous.action == "archive" and step.to == "purged" and same_day:
                at = ("datasets", ds_name, "lifecycle", index)
                found.append(
                    PackProblem(
                        name,
                        _line_for(lines, at),
                        f"{_dotted(at)}: the archive payload is purged the day it is written (no 'after', or "
                        "P0D), so the intermediate archive keeps nothing; give the step the archive's term",
                    )
                )
        state = ds.erasure_state
        if state is not None and ds.step_to(state).action is None:
            at = ("datasets", ds_name, "on_erasure")
            found.append(
                PackProblem(
                    name,
                    _line_for(lines, at),
                    f"{_dotted(at)}: an erasure request takes records to {state!r}, whose step has no action, so "
                    "it changes no data (the state is recorded only); name a later state if the data must go",
                )
            )
    return tuple(found)


def _problems(exc: ValidationError, name: str, lines: dict[PathKey, int]) -> list[PackProblem]:
    """Pydantic's errors as located sentences, typos with a suggestion instead of two errors."""
    import difflib

    errors = list(exc.errors())
    suggested: set[PathKey] = set()
    problems = []
    for error in errors:
        path = _strip_union_tags(error["loc"])
        message = _describe(error, path)
        if error["type"] == "value_error":
            text = str(error.get("ctx", {}).get("error", error["msg"]))
            if text.startswith("@"):
                sub, _, text = text[1:].partition(": ")
                path = path + tuple(int(p) if p.isdigit() else p for p in sub.split("."))
                message = f"{_dotted(path)}: {text}"
        if error["type"] == "extra_forbidden":
            parent = _model_at(path[:-1])
            if parent is not None:
                valid = [f.alias or n for n, f in parent.model_fields.items()]
                close = difflib.get_close_matches(str(path[-1]), valid, n=1, cutoff=0.75)
                if close:
                    suggested.add((*path[:-1], close[0]))
                    place = _dotted(path[:-1]) or "the pack"
                    message = f"unknown key {path[-1]!r} in {place}; did you mean {close[0]!r}?"
        problems.append((path, error["type"], PackProblem(name, _line_for(lines, path), message)))
    return [p for path, kind, p in problems if not (kind == "missing" and path in suggested)]


def _unique(problems: list[PackProblem]) -> list[PackProblem]:
    seen: set[str] = set()
    result = []
    for problem in problems:
        if str(problem) not in seen:
            seen.add(str(problem))
            result.append(problem)
    return result


def read_pack_text(path: Path) -> str:
    """The text of a pack file: a regular file of at most :data:`MAX_PACK_BYTES`, in UTF-8."""
    try:
        if not path.is_file():
            raise PackError([PackProblem(str(path), None, "not a regular file")])
        with path.open("rb") as handle:
            data = handle.read(MAX_PACK_BYTES + 1)
    except OSError as exc:
        raise PackError([PackProblem(str(path), None, f"cannot read the file: {exc.strerror}")]) from None
    if len(data) > MAX_PACK_BYTES:
        raise PackError(
            [PackProblem(str(path), None, f"the file is larger than {MAX_PACK_BYTES // 1024} KiB; a rule pack is not")]
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PackError([PackProblem(str(path), line, "the file is not UTF-8 text")]) from None


def load_file(path: Path) -> LoadedPack:
    """Load and validate one pack file."""
    text = read_pack_text(path)
    located = _read_yaml(path, text)
    if located.problems:
        raise PackError(located.problems)
    return validate_pack(located.data, path, text, located.lines)


def pack_files(path: Path) -> list[Path]:
    """The YAML files a ``--rules`` value names: one file, every pack in a folder, or ``builtin:NAME``."""
    from retention.resources import builtin_pack_names, resolve_rules

    path = resolve_rules(path)
    if path.is_dir():
        # Hidden entries are skipped: a Kubernetes ConfigMap volume holds every file
        # twice, once under a hidden timestamped folder (..2026_11_26_...), once linked.
        files = sorted(
            p
            for p in path.rglob("*")
            if p.suffix in {".yaml", ".yml"}
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise PackError([PackProblem(str(path), None, "no .yaml rule packs in this folder")])
        return files
    if not path.exists():
        builtin = ", ".join(f"builtin:{name}" for name in builtin_pack_names())
        raise PackError([PackProblem(str(path), None, f"no such file or folder (reference packs: {builtin})")])
    return [path]


@dataclass(frozen=True)
class Catalog:
    """Every pack version found under a ``--rules`` path."""

    packs: tuple[LoadedPack, ...]

    def ids(self) -> list[str]:
        return sorted({p.id for p in self.packs})

    def in_force(self, as_of_date: Any, pack_id: str | None = None) -> LoadedPack:
        """The version of the pack in force on ``as_of_date`` (latest effective_from <= it)."""
        ids = self.ids()
        if pack_id is None:
            if len(ids) > 1:
                raise PackError(
                    [
                        PackProblem(
                            "--rules",
                            None,
                            f"several packs found ({', '.join(ids)}); choose one with --pack",
                        )
                    ]
                )
            pack_id = ids[0]
        if pack_id not in ids:
            raise PackError([PackProblem("--pack", None, f"no pack {pack_id!r}; valid: {', '.join(ids)}")])
        versions = sorted((p for p in self.packs if p.id == pack_id), key=lambda p: p.pack.effective_from)
        in_force = [p for p in versions if p.pack.effective_from <= as_of_date]
        if not in_force:
            first = versions[0].pack.effective_from
            raise PackError(
                [
                    PackProblem(
                        str(versions[0].source),
                        None,
                        f"pack {pack_id!r} is not in force on {as_of_date}; its first version starts {first}",
                    )
                ]
            )
        return in_force[-1]


def load_catalog(path: Path) -> Catalog:
    """Load every pack under ``path``; report all problems of all files at once."""
    problems: list[PackProblem] = []
    packs: list[LoadedPack] = []
    for file in pack_files(path):
        try:
            packs.append(load_file(file))
        except PackError as exc:
            problems.extend(exc.problems)
    seen: dict[tuple[str, Any], Path] = {}
    for loaded in packs:
        key = (loaded.id, loaded.pack.effective_from)
        if key in seen:
            problems.append(
                PackProblem(
                    str(loaded.source),
                    None,
                    f"pack {loaded.id!r} has two versions effective from {key[1]} (also {seen[key]})",
                )
            )
        seen[key] = loaded.source
    if problems:
        raise PackError(problems)
    return Catalog(tuple(packs))


__all__ = ["Catalog", "Dataset", "LoadedPack", "load_catalog", "load_file", "validate_pack"]
