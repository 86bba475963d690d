"""Every CLI command has help text and a README entry; the README's commands exist."""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from retention.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix}{name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{path} "))
    return found


def test_every_command_has_help_text() -> None:
    """No command or group is left without a help sentence."""
    missing = [path for path, command in _commands(main) if not (command.help or "").strip()]
    assert missing == []


def test_every_command_list_entry_is_a_whole_sentence() -> None:
    """The line `retention --help` lists for a command is its first sentence, not cut at an abbreviation.

    Click ends the listed line at the first word ending in a full stop: `erasure` was listed as
    "Erasure requests (GDPR art." (an unclosed parenthesis marks the cut).
    """
    cut = []
    for path, command in _commands(main):
        line = command.get_short_help_str(limit=10_000)
        if line.count("(") != line.count(")") or line.count("`") % 2:
            cut.append(f"{path}: {line}")
    assert cut == []


def test_every_command_is_in_the_readme() -> None:
    """Each top-level command and group is documented in README.md."""
    undocumented = [path for path, _ in _commands(main) if " " not in path and f"retention {path}" not in README]
    assert undocumented == []


def test_help_runs_for_every_command() -> None:
    """`--help` works for every command, so no option declaration is broken."""
    runner = CliRunner()
    for path, _ in _commands(main):
        result = runner.invoke(main, [*path.split(), "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


# --------------------------------------------------------------------------
# Docs that run: every `retention ...` line of the docs, executed or parsed
# --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "deploy" / "README.md"]
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:\.[a-z]+)?|\.\.\.)$")  # ID, DATE, FILE, CP.json, ...
SERVER_URL = re.compile(r"\b(?:postgresql|mysql|mariadb)(?:\+\w+)?://")
MACHINE_PATH = re.compile(r"^/(?:etc|opt|var|srv|run)/")  # a file of the machine the docs set up
SEPARATORS = {"&&", "||", ";", "|"}


@dataclass(frozen=True)
class DocLine:
    """One command line quoted in the docs, where it was, and its words."""

    source: str
    line: int
    text: str
    words: tuple[str, ...]  # after `retention`

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}: {self.text}"

    @property
    def template(self) -> bool:
        """A syntax line (`--key K`, `[--dir D]`, `a | b`) rather than a command to paste."""
        return any(PLACEHOLDER.match(w) or w.startswith("[") or w.endswith("]") or "|" in w for w in self.words)


def _segments(text: str) -> list[list[str]]:
    """Shell words split at `&&`, `||`, `;`, `|`; comments dropped."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    found: list[list[str]] = [[]]
    for word in lexer:
        if word in SEPARATORS:
            found.append([])
        else:
            found[-1].append(word)
    return [s for s in found if s]


def _retention_words(text: str) -> list[tuple[str, ...]]:
    """The argument words of every `retention` (or .../bin/retention) command in a shell line."""
    result = []
    for words in _segments(text):
        while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value retention ...
            words = words[1:]
        if words and Path(words[0]).name == "retention":
            result.append(tuple(words[1:]))
    return result


SHELL_FENCES = {"", "sh", "bash", "shell", "console"}


def doc_lines(files: list[Path] = DOCS) -> list[DocLine]:
    """Every `retention` command line in fenced shell blocks and inline code spans of the docs."""
    lines: list[DocLine] = []
    for path in files:
        name = str(path.relative_to(ROOT))
        prose: list[str] = []
        fence: str | None = None  # the language of the open fenced block
        pending = ""
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if raw.startswith("```"):
                fence = raw[3:].strip() if fence is None else None
                prose.append("")
                continue
            if fence is None:
                prose.append(raw)
                continue
            prose.append("")
            if fence not in SHELL_FENCES:
                continue
            if raw.endswith("\\"):
                pending += raw[:-1] + " "
                continue
            text, pending = pending + raw, ""
            for words in _retention_words(text):
                lines.append(DocLine(name, number, text.strip(), words))
        joined = "\n".join(prose)
        for span in re.finditer(r"`([^`]+)`", joined):
            code = " ".join(span.group(1).split()).replace("\\|", "|")
            if code.startswith("retention ") or code == "retention":
                line = joined[: span.start()].count("\n") + 1
                try:
                    words = shlex.split(code)[1:]
                except ValueError:
                    words = code.split()[1:]
                lines.append(DocLine(name, line, code, tuple(words)))
    return lines


def _command_path(words: tuple[str, ...]) -> tuple[click.Command, list[str], list[str]]:
    """The command the words name (skipping options given before it), its path, and the other words."""
    command: click.Command = main
    path: list[str] = []
    rest = list(words)
    while isinstance(command, click.Group):
        index = next((i for i, w in enumerate(rest) if not w.startswith("-")), None)
        if index is None or rest[index] not in command.commands:
            break
        command = command.commands[rest[index]]
        path.append(rest[index])
        rest = rest[:index] + rest[index + 1 :]
    return command, path, rest


def _parse_errors(words: tuple[str, ...], template: bool) -> list[str]:
    """Click's own complaints about a doc line: unknown commands or options, missing required options."""
    cleaned = [w.strip("[]") for w in words if w not in {"|", "..."}]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # a required option must be on the line, not in this process's environment
    try:
        ctx = main.make_context("retention", list(cleaned), resilient_parsing=False)
        with ctx:
            args = [*ctx._protected_args, *ctx.args]
            command: click.Command = main
            parent = ctx
            while isinstance(command, click.Group) and args:
                name, sub, args = command.resolve_command(parent, args)
                assert sub is not None and name is not None
                parent = sub.make_context(name, list(args), parent=parent)
                args = [*parent._protected_args, *parent.args] if isinstance(sub, click.Group) else []
                command = sub
    except click.exceptions.Exit:  # --help, --version
        return []
    except (click.NoSuchOption, click.MissingParameter) as exc:
        return [exc.format_message()]
    except click.BadParameter as exc:
        # A template's placeholders, or a file of the machine the deploy docs set up (/etc/retention/...,
        # checked when parsed since output paths are probed): values this machine cannot judge.
        machine = any(MACHINE_PATH.match(w) for w in cleaned)
        return [] if template or machine else [exc.format_message()]
    except click.UsageError as exc:
        message = exc.format_message()
        if template and "Got unexpected extra argument" in message:
            return []
        return [message]
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return []


def _reference(line: DocLine) -> bool:
    """A command named in prose (`retention hold add`, `retention review`), not a line to run."""
    command, _, rest = _command_path(line.words)
    needs = isinstance(command, click.Group) or any(
        isinstance(p, click.Option | click.Argument) and p.required for p in command.params
    )
    return not rest and needs


def _runnable(line: DocLine) -> bool:
    """Executed for real: not a template, no server, not the long-running scheduler or console, not a reference."""
    if line.template or _reference(line) or any(SERVER_URL.search(w) or MACHINE_PATH.match(w) for w in line.words):
        return False
    command, _, _ = _command_path(line.words)
    return command.name not in ("scheduler", "serve", "worker")


def test_docs_quote_command_lines() -> None:
    """The extraction finds the README's examples (a guard against a test that silently checks nothing)."""
    lines = doc_lines()
    texts = [line.text for line in lines]
    assert any(t.startswith("retention plan  --rules builtin:marketplace --as-of") for t in texts), texts
    assert sum(_runnable(line) for line in lines) >= 10
    assert len(lines) >= 40


def test_every_doc_command_line_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each `retention ...` line of README.md, docs/*.md and deploy/README.md works as written.

    Lines one can paste run for real, in order, against a demo database; syntax
    lines (`--key K`, `[--dir D]`), lines naming a server or a file of the
    machine the deploy docs set up (/etc/retention/...), and the scheduler are
    parsed by click (unknown command or option, missing required option) and
    their command's --help runs.
    """
    monkeypatch.chdir(tmp_path)
    env = {
        "RETENTION_DATABASE_URL": f"sqlite:///{tmp_path / 'retention-demo.sqlite'}",
        "RETENTION_PSEUDONYM_KEY": "docs-test-key",
        "RETENTION_RULES": "",
        "RETENTION_PSEUDONYM_KEY_FILE": "",
    }
    runner = CliRunner()
    built = runner.invoke(main, ["demo", "--customers", "200", "--db", env["RETENTION_DATABASE_URL"]], env=env)
    assert built.exit_code == 0, built.output
    failures: list[str] = []
    ran = checked = restored = 0
    # The docs quote `retention demo` eight times; each rebuilds the same demo database (8-10 s, most of this
    # test). A demo line identical to one that already ran and exited 0 restores the copy kept of what that run
    # built instead, so the lines after it still start from a fresh demo database.
    demo_db = tmp_path / "retention-demo.sqlite"
    demos: dict[tuple[str, ...], Path] = {}
    for line in doc_lines():
        for problem in [] if _reference(line) else _parse_errors(line.words, line.template):
            failures.append(f"{line.where}\n    {problem}")
        _, path, _ = _command_path(line.words)
        helped = runner.invoke(main, [*path, "--help"])
        if helped.exit_code != 0:
            failures.append(f"{line.where}\n    --help failed: {helped.output.strip()}")
        if _runnable(line):
            args = [
                os.path.expandvars(w.replace("$RETENTION_DATABASE_URL", env["RETENTION_DATABASE_URL"]))
                for w in line.words
            ]
            if tuple(args) in demos:
                _sqlite_copy(demos[tuple(args)], demo_db)
                restored += 1
                continue
            # A command that asks for a password (user add) gets one, twice (entry and confirmation).
            result = runner.invoke(main, args, env=env, input="docs-test-password\ndocs-test-password\n")
            ran += 1
            if result.exit_code != 0:
                failures.append(f"{line.where}\n    exit {result.exit_code}: {result.output.strip()[-500:]}")
            elif args[:1] == ["demo"]:
                demos[tuple(args)] = tmp_path / f"demo-{len(demos)}.sqlite"
                _sqlite_copy(demo_db, demos[tuple(args)])
        else:
            checked += 1
    print(f"{ran + checked + restored} doc command lines: {ran} run, {restored} demo lines restored, {checked} parsed")
    assert failures == [], "\n".join(failures)


def _sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of a SQLite database (the backup API), replacing what ``target`` held."""
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def test_a_misspelled_option_fails_the_docs_test() -> None:
    """The checker itself: a typo in an option, a missing required option and an unknown command are caught."""
    typo = DocLine("x.md", 1, "", ("plan", "--rules", "builtin:marketplace", "--as-off", "2027-01-01"))
    assert _parse_errors(typo.words, template=False) == ["No such option '--as-off'. Did you mean '--as-of'?"]
    missing = DocLine("x.md", 1, "", ("erasure", "add", "--subject", "ID", "--received", "2024-05-02"))
    assert _parse_errors(missing.words, template=True) == ["Missing option '--rules'."]
    unknown = ("ledger", "verfiy")
    assert _parse_errors(unknown, template=False) == ["No such command 'verfiy'. Did you mean 'verify'?"]


def test_every_usage_line_names_the_required_options() -> None:
    """`--help` starts with a usage line that spells out each required option, not only [OPTIONS]."""
    runner = CliRunner()
    for path, command in _commands(main):
        if isinstance(command, click.Group):
            continue
        usage = runner.invoke(main, [*path.split(), "--help"]).output.split("\n\n")[0]
        for param in command.params:
            if isinstance(param, click.Option) and param.required:
                assert param.opts[0] in usage, (path, usage)
