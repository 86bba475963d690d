"""Loading rule packs from YAML with the line of every problem.

PyYAML's composer keeps a mark on every node; we walk the node tree once to
build a map from data paths to lines, then validate with pydantic and turn
its error locations back into ``file:line: sentence``. Duplicate mapping keys,
which YAML parsers silently collapse, are refused here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rfc8785
import yaml
from pydantic import BaseModel, ValidationError

from retention.errors import PackError, PackProblem
from retention.policy.model import Dataset, Pack

PathKey = tuple[str | int, ...]


@dataclass(frozen=True)
class LoadedPack:
    """A validated pack version with where it came from and its digest."""

    pack: Pack
    source: Path
    digest: str
    text: str

    @property
    def id(self) -> str:
        return self.pack.pack


@dataclass
class _Located:
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict)
    problems: list[PackProblem] = field(default_factory=list)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type information
    """SafeLoader with YAML 1.2 booleans: only true/false.

    YAML 1.1 reads ``on``, ``off``, ``yes`` and ``no`` as booleans, which
    would turn the ``on:`` key of ``follows`` and clocks into ``True``.
    """


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


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
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or "invalid YAML"
        return _Located(None, problems=[PackProblem(name, line, f"invalid YAML: {problem}")])
    if node is None:
        return _Located(None, problems=[PackProblem(name, 1, "the file is empty")])
    lines: dict[PathKey, int] = {}
    dupes: list[tuple[PathKey, int]] = []
    _walk(node, (), lines, dupes)
    located = _Located(yaml.load(text, Loader=_Loader), lines)
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
        (r"guard", m.Guard),
        (r"datasets\.[^.]+", m.Dataset),
        (r"datasets\.[^.]+\.guard", m.Guard),
        (r"datasets\.[^.]+\.follows", m.Follow),
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
    if kind == "assertion_error":
        return f"{where}: {error['msg']}"
    return f"{where}: {error['msg'][0].lower() + error['msg'][1:]}" if where else error["msg"]


def _cross_check(pack: Pack, name: str, lines: dict[PathKey, int]) -> list[PackProblem]:
    """Checks between datasets that no single model can see."""
    problems: list[PackProblem] = []

    def add(path: PathKey, message: str) -> None:
        problems.append(PackProblem(name, _line_for(lines, path), message))

    tables: dict[tuple[str | None, str], str] = {}
    for ds_name, ds in pack.datasets.items():
        where = ("datasets", ds_name)
        previous = tables.setdefault((ds.schema_, ds.table), ds_name)
        if previous != ds_name:
            add(
                (*where, "table"),
                f"table {ds.table!r} is already the table of dataset {previous!r}",
            )
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
            if ds.follows.via is None:
                if ds.subject_key is None:
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
        if ds.on_erasure is not None and ds.subject_key is None:
            add((*where, "on_erasure"), "on_erasure needs a subject_key to find a subject's records")
    return problems


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
    return LoadedPack(pack=pack, source=source, digest=digest, text=text)


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


def load_file(path: Path) -> LoadedPack:
    """Load and validate one pack file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PackError([PackProblem(str(path), None, f"cannot read the file: {exc}")]) from exc
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
